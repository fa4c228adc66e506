"""Wire primitives: bounds, nullability, compact encodings, hostile length prefixes."""

from __future__ import annotations

import tracemalloc
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import primitives as p
from protocol.errors import LocalProtocolError, RemoteProtocolError


def build(codec, value) -> bytes:
    out: list = []
    codec.write(out, value)
    fast = b"".join(out)
    assert codec.build(value) == fast  # construct's own build goes through the same writer
    return fast


def parse_both(codec, data: bytes):
    """Decode with the fast path and with construct's stream path; they must agree, error or not."""
    try:
        fast, end = codec.read(memoryview(data), 0)
    except RemoteProtocolError:
        with pytest.raises(RemoteProtocolError):
            codec.parse(data)
        raise
    assert codec.parse(data) == (bytes(fast) if isinstance(fast, memoryview) else fast)
    return fast, end


@pytest.mark.parametrize(
    "codec, low, high",
    [
        (p.Int8, -128, 127),
        (p.Int16, -(2**15), 2**15 - 1),
        (p.Int32, -(2**31), 2**31 - 1),
        (p.Int64, -(2**63), 2**63 - 1),
        (p.UInt16, 0, 2**16 - 1),
        (p.UInt32, 0, 2**32 - 1),
    ],
)
def test_fixed_integers_round_trip_at_bounds_and_reject_overflow(codec, low, high):
    for value in (low, high, 0 if low <= 0 else low):
        assert parse_both(codec, build(codec, value))[0] == value
    with pytest.raises(LocalProtocolError):
        build(codec, high + 1)
    with pytest.raises(LocalProtocolError):
        build(codec, low - 1)
    with pytest.raises(RemoteProtocolError):
        parse_both(codec, build(codec, high)[:-1])


def test_bool_float_uuid():
    assert build(p.Bool, True) == b"\x01" and parse_both(p.Bool, b"\x05")[0] is True
    assert parse_both(p.Float64, build(p.Float64, -1.5))[0] == -1.5
    value = uuid.uuid4()
    assert parse_both(p.Uuid, build(p.Uuid, value))[0] == value
    with pytest.raises(RemoteProtocolError):
        parse_both(p.Uuid, b"\x00" * 15)


@settings(max_examples=300)
@given(st.integers(0, 2**32 - 1))
def test_unsigned_varint_round_trips(value):
    data = build(p.UnsignedVarint, value)
    assert len(data) <= 5
    assert parse_both(p.UnsignedVarint, data) == (value, len(data))


@settings(max_examples=300)
@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1))
def test_zigzag_varint_and_varlong_round_trip(small, large):
    assert parse_both(p.Varint, build(p.Varint, small))[0] == small
    assert parse_both(p.Varlong, build(p.Varlong, large))[0] == large


def test_zigzag_encoding_matches_kafka():
    assert build(p.Varint, 0) == b"\x00"
    assert build(p.Varint, -1) == b"\x01"
    assert build(p.Varint, 1) == b"\x02"
    assert build(p.Varint, -64) == b"\x7f"
    assert build(p.Varint, 64) == b"\x80\x01"
    assert build(p.Varint, 2**31 - 1) == b"\xfe\xff\xff\xff\x0f"


def test_six_byte_unsigned_varint_is_rejected():
    with pytest.raises(RemoteProtocolError):
        parse_both(p.UnsignedVarint, b"\x80\x80\x80\x80\x80\x01")
    with pytest.raises(RemoteProtocolError):  # five bytes but wider than 32 bits
        parse_both(p.UnsignedVarint, b"\xff\xff\xff\xff\x7f")
    assert parse_both(p.UnsignedVarint, b"\xff\xff\xff\xff\x0f")[0] == 2**32 - 1


def test_varint_and_varlong_length_bounds():
    with pytest.raises(RemoteProtocolError):
        parse_both(p.Varint, b"\x80" * 5 + b"\x01")
    with pytest.raises(RemoteProtocolError):
        parse_both(p.Varlong, b"\x80" * 10 + b"\x01")
    assert parse_both(p.Varlong, b"\xff" * 9 + b"\x01")[0] == -(2**63)
    with pytest.raises(RemoteProtocolError):
        parse_both(p.Varint, b"\x80\x80")  # truncated


def test_varint_out_of_range_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        build(p.Varint, 2**31)
    with pytest.raises(LocalProtocolError):
        build(p.UnsignedVarint, -1)


def test_nullable_and_empty_strings_differ():
    classic = p.String(nullable=True)
    assert build(classic, None) == b"\xff\xff"
    assert build(classic, "") == b"\x00\x00"
    assert parse_both(classic, b"\xff\xff")[0] is None
    assert parse_both(classic, b"\x00\x00")[0] == ""
    compact = p.CompactString(nullable=True)
    assert build(compact, None) == b"\x00"
    assert build(compact, "") == b"\x01"
    assert build(compact, "héllo") == b"\x07h\xc3\xa9llo"
    assert parse_both(compact, b"\x00")[0] is None
    assert parse_both(compact, b"\x01")[0] == ""


def test_non_nullable_values_refuse_null_both_ways():
    for codec, null in [
        (p.String(), b"\xff\xff"),
        (p.CompactString(), b"\x00"),
        (p.Bytes(), b"\xff\xff\xff\xff"),
        (p.CompactBytes(), b"\x00"),
    ]:
        with pytest.raises(RemoteProtocolError):
            parse_both(codec, null)
        with pytest.raises(LocalProtocolError):
            build(codec, None)


def test_bytes_and_compact_bytes():
    assert build(p.Bytes(nullable=True), None) == b"\xff\xff\xff\xff"
    assert build(p.Bytes(), b"ab") == b"\x00\x00\x00\x02ab"
    assert build(p.CompactBytes(nullable=True), b"ab") == b"\x03ab"
    assert parse_both(p.CompactBytes(nullable=True), b"\x03ab") == (b"ab", 3)


def test_invalid_utf8_is_remote_error():
    with pytest.raises(RemoteProtocolError):
        parse_both(p.String(), b"\x00\x02\xff\xfe")


def test_arrays_classic_and_compact_nullable():
    classic = p.Array(p.Int32, nullable=True)
    assert build(classic, None) == b"\xff\xff\xff\xff"
    assert build(classic, []) == b"\x00\x00\x00\x00"
    assert parse_both(classic, build(classic, [1, -2]))[0] == [1, -2]
    compact = p.CompactArray(p.CompactString(), nullable=True)
    assert build(compact, None) == b"\x00"
    assert build(compact, []) == b"\x01"
    assert build(compact, ["a"]) == b"\x02\x02a"
    assert parse_both(compact, b"\x00")[0] is None
    with pytest.raises(RemoteProtocolError):
        parse_both(p.Array(p.Int32), b"\xff\xff\xff\xff")
    with pytest.raises(RemoteProtocolError):
        parse_both(p.Array(p.Int32), b"\xff\xff\xff\xfe")


@pytest.mark.parametrize(
    "codec, prefix",
    [
        (p.String(), b"\x7f\xff"),
        (p.Bytes(), b"\x7f\xff\xff\xff"),
        (p.Records(), b"\x7f\xff\xff\xff"),
        (p.CompactBytes(), b"\xff\xff\xff\xff\x0f"),
        (p.CompactString(), b"\xff\xff\xff\xff\x0f"),
        (p.Array(p.Int8), b"\x7f\xff\xff\xff"),
        (p.CompactArray(p.Int8), b"\xff\xff\xff\xff\x0f"),
        (p.TaggedFieldSection, b"\xff\xff\xff\xff\x0f"),
    ],
)
def test_huge_length_prefixes_fail_without_allocating(codec, prefix):
    tracemalloc.start()
    try:
        with pytest.raises(RemoteProtocolError):
            parse_both(codec, prefix + b"abc")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_records_decode_as_view_and_accept_references():
    records = p.Records(compact=True)
    data = build(records, b"xyz")
    view, end = records.read(memoryview(data), 0)
    assert isinstance(view, memoryview) and bytes(view) == b"xyz" and end == 4
    assert parse_both(records, b"\x00")[0] is None

    class Ref:
        length = 10

    ref = Ref()
    out: list = []
    records.write(out, ref)
    assert out == [b"\x0b", ref]
    with pytest.raises(LocalProtocolError):
        records.write([], object())


def test_tagged_field_section_sorts_and_round_trips():
    section = p.TaggedFieldSection
    data = build(section, [(5, b"x"), (1, b"")])
    assert data == b"\x02\x01\x00\x05\x01x"
    assert parse_both(section, data)[0] == [(1, b""), (5, b"x")]
    with pytest.raises(RemoteProtocolError):
        parse_both(section, b"\x01\x01\x05ab")


def test_nullable_struct_presence_marker():
    inner = p.NullableStruct(p.Int32)
    assert build(inner, None) == b"\xff"
    assert build(inner, 3) == b"\x01\x00\x00\x00\x03"
    assert parse_both(inner, b"\xff")[0] is None
