"""The Kafka listener: one trio task per connection.

A connection handles one request at a time and answers in order, as a Kafka broker does (it mutes the
channel while a request is in flight), so pipelined requests are answered in request order without any
reordering buffer. A long-polling Fetch therefore holds only its own connection.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass

import trio

from protocol.errors import FrameTooLarge
from protocol.framing import FrameReader
from protocol.messages import RecordsRef

from .context import Broker
from .dispatch import CloseConnection, handle_frame

log = logging.getLogger(__name__)

RECEIVE_CHUNK = 256 * 1024


@dataclass(frozen=True)
class ListenerStatistics:
    connections_open: int
    connections_total: int
    requests_total: int
    protocol_errors: int


class KafkaListener:
    def __init__(self, broker: Broker, idle_timeout_s: float = 600.0) -> None:
        self.broker = broker
        self.idle_timeout_s = idle_timeout_s
        self._open = 0
        self._total = 0
        self._requests = 0
        self._errors = 0
        self.port: int | None = None

    def statistics(self) -> ListenerStatistics:
        return ListenerStatistics(self._open, self._total, self._requests, self._errors)

    async def serve(self, host: str, port: int, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        log.info("Kafka listener on %s:%d", host, self.port)
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self._open += 1
        self._total += 1
        try:
            peer = stream.socket.getpeername()
            client_host = f"/{peer[0]}"
        except OSError:
            client_host = "/unknown"
        reader = FrameReader(self.broker.max_request_bytes)
        try:
            async with stream:
                while True:
                    with trio.move_on_after(self.idle_timeout_s) as idle:
                        data = await stream.receive_some(RECEIVE_CHUNK)
                    if idle.cancelled_caught or not data:
                        return
                    reader.feed(data)
                    for frame in reader.frames():
                        self._requests += 1
                        response = await handle_frame(self.broker, frame, client_host)
                        if response is not None:
                            await _send(stream, response)
        except (CloseConnection, FrameTooLarge) as exc:
            self._errors += 1
            log.warning("closing connection from %s: %s", client_host, exc)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                self._errors += 1
                log.warning("closing connection from %s: %s", client_host, exc)
        except Exception:
            # serve_listeners would let this end the listener and with it the daemon: one bad request on
            # one connection must never take every other client down.
            self._errors += 1
            log.exception("unexpected error on the connection from %s; closing it", client_host)
        finally:
            self._open -= 1


async def _send(stream: trio.SocketStream, response: bytes | list) -> None:
    if isinstance(response, (bytes, bytearray, memoryview)):
        await stream.send_all(response)
        return
    pending = bytearray()
    for chunk in response:
        if isinstance(chunk, RecordsRef):
            if pending:
                await stream.send_all(pending)
                pending = bytearray()
            await _send_records(stream, chunk)
        else:
            pending += chunk
            if len(pending) >= RECEIVE_CHUNK:
                await stream.send_all(pending)
                pending = bytearray()
    if pending:
        await stream.send_all(pending)


async def _send_records(stream: trio.SocketStream, ref: RecordsRef) -> None:
    """Send segment-file byte ranges with os.sendfile: the payload never enters Python.

    Each range is sent from its segment's own descriptor (``FileRange.open_fd``: a duplicate), so a
    segment that retention, a truncation or the log cleaner's swap removed from the log meanwhile still
    sends the bytes that were read. Only once that descriptor is closed is the path opened, and a file
    replaced under it (a cleaned segment) is refused. The frame's size prefix already promised
    ``ref.length`` bytes, so a range that cannot be sent whole (refused, or cut short by a truncation in
    place) breaks the connection; the client reconnects and fetches again.
    """
    sock = stream.socket
    for file_range in ref.ranges:
        try:
            fd = file_range.open_fd()
        except OSError as exc:
            raise trio.BrokenResourceError(f"segment {file_range.path} vanished or was replaced while serving it") from exc
        try:
            offset, remaining = file_range.position, file_range.length
            while remaining:
                try:
                    sent = os.sendfile(sock.fileno(), fd, offset, remaining)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                    continue
                if sent == 0:
                    raise trio.BrokenResourceError(f"segment {file_range.path} is shorter than the range being sent")
                offset += sent
                remaining -= sent
        finally:
            os.close(fd)
