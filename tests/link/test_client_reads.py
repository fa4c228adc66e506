"""How the link client reads a response frame off a real TCP socket: whole and exact, waking once per
RCVLOWAT_MAX of arrived data rather than once per segment, and never hanging on a peer that goes away."""

from __future__ import annotations

import os
import socket

import pytest
import trio

from linkd.link.client import RCVLOWAT_MAX, Connection, SourceUnavailable
from linkd.link.readturn import YIELD_BYTES, ReadTurn

CHUNK = 32 * 1024


async def _serve_once(payload_parts: list[bytes], close_early: bool, task_status=trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    async with stream:
        for part in payload_parts:
            await stream.send_all(part)
            await trio.sleep(0.0005)  # trickle, as a remote broker's segments arrive
        if not close_early:
            await trio.sleep(5)
    for listener in listeners:
        await listener.aclose()


def _frame_parts(payload: bytes, keep: int | None = None) -> list[bytes]:
    data = len(payload).to_bytes(4, "big") + payload
    if keep is not None:
        data = data[:keep]
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


async def _read_frame(parts: list[bytes], close_early: bool = False) -> bytes:
    failure: SourceUnavailable | None = None
    async with trio.open_nursery() as nursery:
        port = await nursery.start(_serve_once, parts, close_early)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = Connection("127.0.0.1", port, stream, "test", 64 << 20, {})
        try:
            with trio.fail_after(20):
                frame = bytes(await conn._next_frame())
        except SourceUnavailable as exc:
            failure = exc
        finally:
            await conn.aclose()
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return frame


@pytest.fixture
def wakeups(monkeypatch) -> list[int]:
    """Counts the reader's waits for the socket (a spy: every call goes through to trio)."""
    counted: list[int] = []
    real = trio.lowlevel.wait_readable

    async def counting(sock):
        counted.append(1)
        await real(sock)

    monkeypatch.setattr(trio.lowlevel, "wait_readable", counting)
    return counted


def test_a_trickling_frame_is_read_whole_with_one_wakeup_per_rcvlowat(wakeups):
    payload = os.urandom(3 * RCVLOWAT_MAX + 12345)
    assert trio.run(_read_frame, _frame_parts(payload)) == payload
    # ~100 chunks arrived one by one; the reader woke about once per RCVLOWAT_MAX of them.
    assert len(wakeups) <= 3 * (len(payload) // RCVLOWAT_MAX + 2), f"{len(wakeups)} wake-ups for {len(payload)} bytes"


def test_small_frames_still_arrive_byte_exact(wakeups):
    for size in (0, 1, 5000, CHUNK * 3 + 7):
        payload = os.urandom(size)
        assert trio.run(_read_frame, _frame_parts(payload)) == payload


def test_a_peer_closing_mid_frame_is_an_error_not_a_hang():
    payload = os.urandom(2 * RCVLOWAT_MAX)
    with pytest.raises(SourceUnavailable, match="closed the connection"):
        trio.run(lambda: _read_frame(_frame_parts(payload, keep=RCVLOWAT_MAX // 2), close_early=True))


# -- taking turns on the loop (readturn.py) ------------------------------------------------------------


def _buffered_connection(payload: bytes, turn) -> tuple[Connection, socket.socket]:
    """A connection whose answer frame is already all in its socket's buffer (a Unix socket pair with
    room for it), as when a WAN proxy delivers faster than one reader copies."""
    ours, theirs = socket.socketpair()
    for sock in (ours, theirs):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    theirs.sendall(len(payload).to_bytes(4, "big") + payload)
    ours.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    return Connection("127.0.0.1", 0, stream, "test", 64 << 20, {}, read_turn=turn), theirs


def test_fetch_connections_read_whole_answers_in_turn_and_let_the_loop_run_between_pieces(monkeypatch):
    """Two answers are there at once: one is read whole, then the other (first come, first served), and
    a task that is not a reader (a fetcher whose answer is whole) runs while they are being copied."""
    reads: list = []
    real_readv = os.readv

    def piecewise_readv(fd, buffers):  # what arrives at a time across a WAN: a piece, not the whole frame
        got = real_readv(fd, [buffers[0][: 256 * 1024]])
        reads.append(fd)
        return got

    monkeypatch.setattr(os, "readv", piecewise_readv)
    payloads = [os.urandom(3 * YIELD_BYTES + 777), os.urandom(3 * YIELD_BYTES + 999)]

    async def main() -> list[bytes]:
        turn = ReadTurn()
        pairs = [_buffered_connection(p, turn) for p in payloads]
        frames: dict[int, bytes] = {}
        reading = True

        async def read(i: int) -> None:
            frames[i] = bytes(await pairs[i][0]._next_frame())

        async def bystander() -> None:
            while reading:
                reads.append("bystander")
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(bystander)
            async with trio.open_nursery() as readers:
                for i in range(2):
                    readers.start_soon(read, i)
            reading = False
        for conn, theirs in pairs:
            await conn.aclose()
            theirs.close()
        return [frames[0], frames[1]]

    assert trio.run(main) == payloads
    fds = [r for r in reads if r != "bystander"]
    switches = sum(1 for a, b in zip(fds, fds[1:], strict=False) if a != b)
    assert switches == 1, f"the answers' reads interleaved: {fds}"
    first_reader = [i for i, r in enumerate(reads) if r == fds[0]]
    between = reads[first_reader[0] : first_reader[-1]]
    assert "bystander" in between, "nothing else ran while the first answer was copied"


def test_a_connection_without_a_turn_still_lets_the_loop_run_while_it_copies(monkeypatch):
    reads: list = []
    real_readv = os.readv

    def piecewise_readv(fd, buffers):
        reads.append("read")
        return real_readv(fd, [buffers[0][: 256 * 1024]])

    monkeypatch.setattr(os, "readv", piecewise_readv)
    payload = os.urandom(4 * YIELD_BYTES)

    async def main() -> bytes:
        conn, theirs = _buffered_connection(payload, None)
        reading = True
        frame = b""

        async def read() -> None:
            nonlocal frame, reading
            frame = bytes(await conn._next_frame())
            reading = False

        async def bystander() -> None:
            while reading:
                reads.append("bystander")
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(bystander)
        await conn.aclose()
        theirs.close()
        return frame

    assert trio.run(main) == payload
    first, last = reads.index("read"), len(reads) - 1 - reads[::-1].index("read")
    # Three yields mid-frame: the bystander runs once per scheduler batch, and trio may order a batch
    # either way, so at least the two batches between the reader's first and last slices show it.
    assert reads[first:last].count("bystander") >= 2, f"the loop was held for the whole frame: {reads}"
