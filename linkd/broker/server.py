"""The Kafka listener: one trio task per connection.

A connection handles one request at a time and answers in order, as a Kafka broker does (it mutes the
channel while a request is in flight), so pipelined requests are answered in request order without any
reordering buffer. A long-polling Fetch therefore holds only its own connection.

Every limit of ``limits.py`` that concerns connections is applied here: admission (descriptor headroom,
``max.connections``, ``max.connections.per.ip``, the accept rate), the idle and request-arrival deadlines,
and the ``queued.max.request.bytes`` budget, reserved from a frame's size prefix before its buffer exists.

One ``KafkaListener`` serves every named listener (``serve`` once per ``Endpoint``): limits and
statistics are the daemon's, not per name. An SSL/SASL_SSL endpoint runs the TLS handshake under the
request-arrival deadline before reading a request; a SASL endpoint puts a ``SaslConnection``
(saslgate.py) in front of dispatch. Over TLS, records are sent from the segment files through the TLS
stream (``os.sendfile`` would bypass the encryption).
"""

from __future__ import annotations

import collections
import errno
import logging
import os
import ssl
import time
from dataclasses import dataclass, field

import trio

from protocol.errors import FrameTooLarge

from .context import Broker
from .dispatch import CloseConnection, handle_frame
from .fetch import SegmentRecords
from .limits import AcceptRate, ByteBudget, Limits, descriptor_limit, open_descriptors
from .requeststats import RequestStats, api_key_of
from .saslgate import SaslConnection, SaslSettings
from .session import Session
from .tls import principal_of

log = logging.getLogger(__name__)

RECEIVE_CHUNK = 256 * 1024
_PREFIX = 4
# Errors an accept() fails with when the process or the system is out of something; trio's own
# serve_listeners sleeps on them too, rather than ending the listener.
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
_DESCRIPTOR_RECOUNT_S = 0.1


@dataclass(frozen=True)
class ListenerStatistics:
    connections_open: int
    connections_total: int
    requests_total: int
    protocol_errors: int
    # Connections closed at accept, by limit: "max.connections", "max.connections.per.ip", "descriptors".
    connections_rejected: dict[str, int] | None = None
    idle_closed: int = 0
    request_arrival_timeouts: int = 0
    request_bytes_in_use: int = 0
    request_bytes_peak: int = 0
    request_budget_waits: int = 0
    tls_handshake_failures: int = 0
    authentication_failures: int = 0  # SASL exchanges refused (the connection was closed after the answer)


@dataclass(frozen=True)
class Endpoint:
    """One named listener's security: the TLS context (SSL, SASL_SSL) and the SASL settings (SASL_*)."""

    name: str = "PLAINTEXT"
    protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = field(default=None, compare=False)
    sasl: SaslSettings | None = None


class _Timeout(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class _Closed(Exception):
    """The peer closed its end."""


class KafkaListener:
    def __init__(self, broker: Broker, idle_timeout_s: float | None = None, limits: Limits | None = None) -> None:
        self.broker = broker
        self.limits = limits or broker.limits
        self.idle_timeout_s = idle_timeout_s if idle_timeout_s is not None else self.limits.connections_max_idle_ms / 1000
        self.arrival_timeout_s = self.limits.request_arrival_timeout_ms / 1000
        self.budget = ByteBudget(self.limits.queued_max_request_bytes)
        self._accept_rate = AcceptRate(self.limits.max_connection_creation_rate)
        self._open = 0
        self._total = 0
        self._requests = 0
        self.request_stats = RequestStats()
        self._errors = 0
        self._idle_closed = 0
        self._arrival_timeouts = 0
        self._rejected: collections.Counter[str] = collections.Counter()
        self._per_ip: collections.Counter[str] = collections.Counter()
        self._descriptors_counted_at = -1e9
        self._descriptors = 0
        self.port: int | None = None  # the first listener's
        self.ports: dict[str, int] = {}  # listener name -> bound port
        self.tls_handshake_failures = 0
        self.authentication_failures = 0

    def statistics(self) -> ListenerStatistics:
        return ListenerStatistics(
            self._open, self._total, self._requests, self._errors, dict(self._rejected), self._idle_closed,
            self._arrival_timeouts, self.budget.in_use, self.budget.peak, self.budget.waits,
            self.tls_handshake_failures, self.authentication_failures,
        )

    async def serve(self, host: str, port: int, endpoint: Endpoint | None = None, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        endpoint = endpoint or Endpoint()
        if endpoint.protocol.startswith("SASL_") and (endpoint.sasl is None or self.broker.users is None):
            raise ValueError(f"listener {endpoint.name} is {endpoint.protocol} but has no SASL settings or user store")
        if endpoint.protocol in ("SSL", "SASL_SSL") and endpoint.ssl_context is None:
            raise ValueError(f"listener {endpoint.name} is {endpoint.protocol} but has no TLS context")
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = listeners[0].socket.getsockname()[1]
        if self.port is None:
            self.port = bound
        self.ports[endpoint.name] = bound
        log.info("Kafka listener %s (%s) on %s:%d", endpoint.name, endpoint.protocol, host, bound)
        async with trio.open_nursery() as nursery:
            for listener in listeners:
                nursery.start_soon(self._accept_loop, listener, nursery, endpoint)
            task_status.started(bound)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery, endpoint: Endpoint) -> None:
        async with listener:
            while True:
                delay = self._accept_rate.delay(trio.current_time())
                if delay > 0:
                    await trio.sleep(delay)  # max.connection.creation.rate: the backlog holds the rest
                    continue
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in _ACCEPT_CAPACITY_ERRNOS:
                        raise
                    self._rejected["descriptors"] += 1
                    log.error("cannot accept a Kafka connection: %s; retrying in 100 ms", os.strerror(exc.errno))
                    await trio.sleep(0.1)
                    continue
                host = _peer_host(stream)
                refused = self._refusal(stream, host)
                if refused is not None:
                    self._rejected[refused] += 1
                    stream.socket.close()
                    if self._rejected[refused] & (self._rejected[refused] - 1) == 0:  # 1, 2, 4, ...: no log flood
                        log.warning("refused a Kafka connection from %s: %s (%d refused so far)", host, refused, self._rejected[refused])
                    continue
                self._open += 1
                self._per_ip[host] += 1
                nursery.start_soon(self._connection, stream, host, endpoint)

    def _refusal(self, stream: trio.SocketStream, host: str) -> str | None:
        """The limit a new connection would break, or None to admit it."""
        limits = self.limits
        if limits.fd_headroom and self._free_descriptors(stream.socket.fileno()) < limits.fd_headroom:
            return "descriptors"
        if limits.max_connections is not None and self._open >= limits.max_connections:
            return "max.connections"
        per_ip = limits.per_ip_limit(host)
        if per_ip is not None and self._per_ip[host] >= per_ip:
            return "max.connections.per.ip"
        return None

    def _free_descriptors(self, newest_fd: int) -> int:
        limit = descriptor_limit()
        # Descriptors are handed out lowest first, so the new one's number is a lower bound of those in use.
        # A recount from /proc costs a directory listing; between recounts each accept counts as one more.
        now = trio.current_time()
        if now - self._descriptors_counted_at >= _DESCRIPTOR_RECOUNT_S:
            self._descriptors = open_descriptors()
            self._descriptors_counted_at = now
        else:
            self._descriptors += 1
        return limit - max(self._descriptors, newest_fd + 1)

    async def _connection(self, stream: trio.SocketStream, host: str, endpoint: Endpoint) -> None:
        self._total += 1
        client_host = f"/{host}"
        session = Session(host=host, listener=endpoint.name, security_protocol=endpoint.protocol, authenticated=endpoint.sasl is None)
        try:
            async with stream:
                if endpoint.ssl_context is None:
                    await self._serve_requests(stream, client_host, session, endpoint)
                    return
                tls = trio.SSLStream(stream, endpoint.ssl_context, server_side=True)
                with trio.move_on_after(self.arrival_timeout_s) as handshaking:
                    try:
                        await tls.do_handshake()
                    except trio.BrokenResourceError as exc:
                        self.tls_handshake_failures += 1
                        log.info("TLS handshake with %s on listener %s failed: %s", client_host, endpoint.name, exc.__cause__ or exc)
                        return
                if handshaking.cancelled_caught:
                    self.tls_handshake_failures += 1
                    log.warning("TLS handshake with %s on listener %s did not finish within %.1f s", client_host, endpoint.name, self.arrival_timeout_s)
                    return
                if endpoint.protocol == "SSL":
                    session.principal = principal_of(tls.getpeercert(binary_form=True))
                try:
                    await self._serve_requests(tls, client_host, session, endpoint)
                finally:
                    with trio.move_on_after(1):
                        await tls.aclose()
        except (CloseConnection, FrameTooLarge) as exc:
            self._errors += 1
            log.warning("closing connection from %s: %s", client_host, exc)
        except _Timeout as exc:
            if exc.kind == "idle":
                self._idle_closed += 1
                log.debug("closing connection from %s: idle for %.0f s (connections.max.idle.ms)", client_host, self.idle_timeout_s)
            elif exc.kind == "send":
                self._idle_closed += 1
                log.warning("closing connection from %s: it read none of an answer for %.0f s (connections.max.idle.ms)", client_host, self.idle_timeout_s)
            else:
                self._arrival_timeouts += 1
                log.warning("closing connection from %s: a request did not arrive whole within %.1f s of its first byte (request.arrival.timeout.ms)", client_host, self.arrival_timeout_s)
        except (_Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except OSError as exc:
            if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                self._errors += 1
                log.warning("closing connection from %s: %s", client_host, exc)
        except Exception:
            # Left to the nursery this would end the listener and with it the daemon: one bad request on
            # one connection must never take every other client down.
            self._errors += 1
            log.exception("unexpected error on the connection from %s; closing it", client_host)
        finally:
            self._open -= 1
            self._per_ip[host] -= 1
            if not self._per_ip[host]:
                del self._per_ip[host]

    async def _serve_requests(self, stream: trio.abc.Stream, client_host: str, session: Session, endpoint: Endpoint) -> None:
        reader = _RequestReader(stream, self.broker.max_request_bytes, self.budget, self.idle_timeout_s, self.arrival_timeout_s)
        sasl = SaslConnection(endpoint.sasl, self.broker.users, session) if endpoint.sasl is not None and self.broker.users is not None else None
        while True:
            if sasl is not None:
                # Before authentication a client may send only small SASL frames (Kafka's
                # sasl.server.max.receive.size), so an anonymous peer cannot make us buffer 100 MB.
                reader.max_frame = self.broker.max_request_bytes if session.authenticated and not sasl.raw_tokens else sasl.settings.max_receive_size
            frame, reserved = await reader.next_frame()
            started = time.perf_counter()
            api_key = api_key_of(frame)
            close_after = False
            response: bytes | list | None  # None: nothing to send (acks=0 produce)
            try:
                self._requests += 1
                self.request_stats.arrived(api_key)
                if sasl is not None and sasl.wants(frame, api_key):
                    response, close_after = await sasl.answer(frame)
                else:
                    response = await handle_frame(self.broker, frame, client_host, session)
            finally:
                del frame
                self.budget.release(reserved)
            if response is not None:
                # A client that stops reading would otherwise hold its connection (and its answer) forever.
                with trio.move_on_after(self.idle_timeout_s) as sending:
                    await _send(stream, response)
                if sending.cancelled_caught:
                    raise _Timeout("send")
            self.request_stats.answered(api_key, time.perf_counter() - started)
            if close_after:
                self.authentication_failures += 1
                # Kafka closes after a failed exchange; the client has its error answer first.
                await trio.sleep(0.1)
                raise _Closed()


class _RequestReader:
    """Reads one request frame at a time under the idle deadline, the arrival deadline and the byte budget.

    Bytes received past a frame stay in ``_pending`` (pipelined requests); a frame within them is handed out
    as a zero-copy view, one that is not is read straight into a buffer of its final size, allocated only
    once its bytes are reserved."""

    def __init__(self, stream: trio.abc.Stream, max_frame: int, budget: ByteBudget, idle_s: float, arrival_s: float) -> None:
        self._stream = stream
        self.max_frame = max_frame
        self._budget = budget
        self._idle_s = idle_s
        self._arrival_s = arrival_s
        self._pending = memoryview(b"")

    async def _receive(self, deadline: float, kind: str) -> memoryview:
        with trio.move_on_at(deadline):
            data = await self._stream.receive_some(RECEIVE_CHUNK)
            if not data:
                raise _Closed()
            return memoryview(data)
        raise _Timeout(kind)

    async def next_frame(self) -> tuple[memoryview, int]:
        if not self._pending:
            self._pending = await self._receive(trio.current_time() + self._idle_s, "idle")
        deadline = trio.current_time() + self._arrival_s
        while len(self._pending) < _PREFIX:
            self._pending = memoryview(bytes(self._pending) + bytes(await self._receive(deadline, "arrival")))
        size = int.from_bytes(self._pending[:_PREFIX], "big", signed=True)
        if size < 0 or size > self.max_frame:
            raise FrameTooLarge(f"frame size {size} is outside 0..{self.max_frame}")
        waited_from = trio.current_time()
        reserved = await self._budget.acquire(_PREFIX + size)
        deadline += trio.current_time() - waited_from  # the wait is ours, not the client's
        try:
            return await self._read_body(size, deadline), reserved
        except BaseException:
            self._budget.release(reserved)
            raise

    async def _read_body(self, size: int, deadline: float) -> memoryview:
        have = len(self._pending) - _PREFIX
        if have >= size:
            frame = self._pending[_PREFIX : _PREFIX + size]
            self._pending = self._pending[_PREFIX + size :]
            return frame
        buffer = bytearray(size)
        view = memoryview(buffer)
        view[:have] = self._pending[_PREFIX:]
        self._pending = memoryview(b"")
        filled = have
        sock = self._stream.socket if isinstance(self._stream, trio.SocketStream) else None
        while filled < size:
            with trio.move_on_at(deadline) as scope:
                if sock is not None:
                    got = await sock.recv_into(view[filled:], min(size - filled, RECEIVE_CHUNK))
                else:  # TLS: through the stream, which decrypts
                    data = await self._stream.receive_some(min(size - filled, RECEIVE_CHUNK))
                    got = len(data)
                    view[filled : filled + got] = data
            if scope.cancelled_caught:
                raise _Timeout("arrival")
            if not got:
                raise _Closed()
            filled += got
        return view


def _peer_host(stream: trio.SocketStream) -> str:
    try:
        return str(stream.socket.getpeername()[0])
    except OSError:
        return "unknown"


async def _send(stream: trio.abc.Stream, response: bytes | list) -> None:
    if isinstance(response, (bytes, bytearray, memoryview)):
        await stream.send_all(response)
        return
    pending = bytearray()
    for chunk in response:
        if isinstance(chunk, SegmentRecords):  # the only RecordsRef the broker puts in a response
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


async def _send_records(stream: trio.abc.Stream, ref: SegmentRecords) -> None:
    """Send segment-file byte ranges with os.sendfile: the payload never enters Python.

    Each range is sent from its segment's own descriptor (``FileRange.open_fd``: a duplicate), so a
    segment that retention, a truncation or the log cleaner's swap removed from the log meanwhile still
    sends the bytes that were read. Only once that descriptor is closed is the path opened, and a file
    replaced under it (a cleaned segment) is refused. The frame's size prefix already promised
    ``ref.length`` bytes, so a range that cannot be sent whole (refused, or cut short by a truncation in
    place) breaks the connection; the client reconnects and fetches again.
    """
    sock = stream.socket if isinstance(stream, trio.SocketStream) else None
    for file_range in ref.ranges:
        try:
            fd = file_range.open_fd()
        except OSError as exc:
            raise trio.BrokenResourceError(f"segment {file_range.path} vanished or was replaced while serving it") from exc
        if sock is None:
            try:
                await _send_range_through(stream, fd, file_range)
            finally:
                os.close(fd)
            continue
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


async def _send_range_through(stream: trio.abc.Stream, fd: int, file_range) -> None:
    """A segment range through a stream that transforms bytes (TLS): read in chunks, send each."""
    offset, remaining = file_range.position, file_range.length
    while remaining:
        chunk = os.pread(fd, min(remaining, RECEIVE_CHUNK), offset)
        if not chunk:
            raise trio.BrokenResourceError(f"segment {file_range.path} is shorter than the range being sent")
        await stream.send_all(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
