"""Liberal in what peers answer, strict everywhere else: a lenient response decode reads a null
non-nullable array as empty and a missing trailing tagged-field section as none (Tansu's OffsetFetch v7
answer has both), keeps unknown tags, and is otherwise the strict decoder; requests stay strict."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import primitives as p
from protocol.errors import RemoteProtocolError
from protocol.messages import ApiKey, RequestHeader, decode_request, decode_response, encode_request, encode_response
from protocol.schema import UNKNOWN_TAGS

# Tansu 0.6's answer to OffsetFetch v7 with topics=null: correlation id 1, empty header tags, throttle 0,
# topics encoded as null (compact length 0), error code 0, and no tagged-field section after it.
TANSU_OFFSET_FETCH_V7 = bytes.fromhex("00000001" "00" "00000000" "00" "0000")


def test_tansus_offset_fetch_answer_reads_as_no_topics_when_lenient():
    assert decode_response(ApiKey.OFFSET_FETCH, 7, TANSU_OFFSET_FETCH_V7, lenient=True) == (1, {"throttle_time_ms": 0, "topics": [], "error_code": 0})


def test_the_strict_decoder_still_refuses_it():
    with pytest.raises(RemoteProtocolError):
        decode_response(ApiKey.OFFSET_FETCH, 7, TANSU_OFFSET_FETCH_V7)


def test_a_null_non_nullable_array_is_empty_only_when_lenient():
    data = memoryview(b"\xff\xff\xff\xff")
    assert p._Array(p.Int32, nullable=False, compact=False, lenient=True).read(data, 0) == ([], 4)
    with pytest.raises(RemoteProtocolError, match="non-nullable array encoded as null"):
        p._Array(p.Int32, nullable=False, compact=False).read(data, 0)
    assert p._Array(p.Int32, nullable=True, compact=False, lenient=True).read(data, 0) == (None, 4)


def test_unknown_tagged_fields_in_an_answer_are_kept_not_fatal():
    body = {"throttle_time_ms": 0, "topics": [], "error_code": 0, UNKNOWN_TAGS: [(99, b"future")]}
    frame = encode_response(ApiKey.OFFSET_FETCH, 7, 5, body)[4:]
    _, decoded = decode_response(ApiKey.OFFSET_FETCH, 7, frame, lenient=True)
    assert decoded[UNKNOWN_TAGS] == [(99, b"future")]


def test_requests_are_never_decoded_leniently():
    frame = bytearray(encode_request(RequestHeader(ApiKey.OFFSET_FETCH, 7, 1, "c"), {"group_id": "g", "topics": [], "require_stable": False})[4:])
    frame = frame[:-1]  # drop the trailing tagged-field section, which a lenient answer may lack
    with pytest.raises(RemoteProtocolError):
        decode_request(bytes(frame))


offsets = st.lists(st.tuples(st.text(min_size=1, max_size=8), st.lists(st.integers(0, 2**31 - 1), max_size=3)), max_size=3)


@given(offsets, st.integers(-1, 100))
def test_lenient_and_strict_agree_on_every_well_formed_answer(topics, error_code):
    body = {
        "throttle_time_ms": 0,
        "topics": [{"name": name, "partitions": [{"partition_index": i, "committed_offset": o} for i, o in enumerate(offs)]} for name, offs in topics],
        "error_code": error_code,
    }
    frame = encode_response(ApiKey.OFFSET_FETCH, 7, 3, body)[4:]
    assert decode_response(ApiKey.OFFSET_FETCH, 7, frame, lenient=True) == decode_response(ApiKey.OFFSET_FETCH, 7, frame)


def test_a_newer_brokers_error_code_reads_as_unknown_server_error_with_a_debug_log(caplog):
    import logging

    from linkd.link.sourceerrors import source_error
    from protocol.errors import ErrorCode

    with caplog.at_level(logging.DEBUG, logger="linkd.link.sourceerrors"):
        assert source_error(9999) == ErrorCode.UNKNOWN_SERVER_ERROR
    assert "9999" in caplog.text
    assert source_error(0) == ErrorCode.NONE
