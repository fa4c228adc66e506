"""FrameReader: frames survive any chunking; bad sizes fail before anything is buffered."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.errors import FrameTooLarge, RemoteProtocolError
from protocol.framing import FrameReader


def framed(payloads: list[bytes]) -> bytes:
    return b"".join(struct.pack(">i", len(x)) + x for x in payloads)


@settings(max_examples=200, deadline=None)
@given(payloads=st.lists(st.binary(max_size=300), max_size=8), data=st.data())
def test_frames_survive_arbitrary_chunk_boundaries(payloads, data):
    stream = framed(payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    reader = FrameReader()
    received = []
    start = 0
    for cut in [*cuts, len(stream)]:
        reader.feed(stream[start:cut])
        received.extend(bytes(frame) for frame in reader.frames())
        start = cut
    assert received == payloads
    assert reader.buffered == 0


def test_partial_frame_stays_buffered():
    reader = FrameReader()
    reader.feed(framed([b"hello"])[:7])
    assert list(reader.frames()) == []
    assert reader.buffered == 7
    reader.feed(b"lo")
    assert [bytes(f) for f in reader.frames()] == [b"hello"]


def test_frame_inside_one_chunk_is_not_copied():
    chunk = framed([b"a" * 1000, b"b" * 10])
    reader = FrameReader()
    reader.feed(chunk)
    first, second = reader.frames()
    assert isinstance(first, memoryview) and first.obj is chunk
    assert bytes(second) == b"b" * 10


def test_feeding_a_reused_buffer_does_not_corrupt_frames():
    buffer = bytearray(framed([b"abc"]))
    reader = FrameReader()
    reader.feed(buffer)
    buffer[4:] = b"xyz"
    assert [bytes(f) for f in reader.frames()] == [b"abc"]


@pytest.mark.parametrize("size", [-1, -(2**31), 1025])
def test_negative_or_oversized_length_raises(size):
    reader = FrameReader(max_frame_size=1024)
    with pytest.raises(FrameTooLarge) as info:
        reader.feed(struct.pack(">i", size))
        list(reader.frames())
    assert isinstance(info.value, RemoteProtocolError)


def test_two_gib_length_prefix_raises_without_allocating():
    tracemalloc.start()
    try:
        reader = FrameReader()
        with pytest.raises(FrameTooLarge):
            reader.feed(b"\x7f\xff\xff\xff" + b"x" * 100)
            list(reader.frames())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_length_prefix_split_across_chunks_is_still_vetted():
    reader = FrameReader(max_frame_size=100)
    reader.feed(b"\x00\x00")
    assert list(reader.frames()) == []
    with pytest.raises(FrameTooLarge):
        reader.feed(b"\x10\x00")
        list(reader.frames())


def test_big_frame_in_small_chunks_is_assembled_once():
    payload = bytes(range(256)) * (32 << 10)  # 8 MiB
    stream = framed([payload, b"tail"])
    reader = FrameReader()
    frames = []
    tracemalloc.start()
    try:
        for at in range(0, len(stream), 16 << 10):
            reader.feed(stream[at : at + (16 << 10)])
            frames.extend(reader.frames())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [bytes(f) for f in frames] == [payload, b"tail"]
    # chunks held until complete, then one frame-sized copy: about twice the frame, never more
    assert peak < 2.5 * len(payload)
