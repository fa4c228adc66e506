"""How the link client reads a response frame off a real TCP socket: whole and exact, waking once per
RCVLOWAT_MAX of arrived data rather than once per segment, and never hanging on a peer that goes away."""

from __future__ import annotations

import os

import pytest
import trio

from linkd.link.client import RCVLOWAT_MAX, Connection, SourceUnavailable

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
