"""Round trips for every API, direction and version, with bodies drawn from the schemas themselves."""

from __future__ import annotations

import struct
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import primitives as p
from protocol.errors import LocalProtocolError, RemoteProtocolError, UnsupportedVersion
from protocol.messages import (
    API_SPECS,
    ApiKey,
    RecordsRef,
    RequestHeader,
    decode_request,
    decode_response,
    encode_api_versions_fallback,
    encode_request,
    encode_response,
    encode_response_chunks,
    peek_correlation_id,
    request_struct,
    response_struct,
)
from protocol.schema import UNKNOWN_TAGS, KafkaStruct

_INT_RANGES = {"b": 8, "h": 16, "i": 32, "q": 64}


def strategy_for(codec: p.KafkaPrimitive, depth: int = 0, unknown_tags: bool = True) -> st.SearchStrategy:
    """A strategy for values of one construct, read off the construct tree built from the JSON."""
    if isinstance(codec, KafkaStruct):
        members = {m.key: strategy_for(m.codec, depth + 1, unknown_tags) for m in codec.members}
        members.update({m.key: strategy_for(m.codec, depth + 1, unknown_tags) for m in codec.tagged.values()})
        base = st.fixed_dictionaries(members)
        if not codec.flexible or not unknown_tags:
            return base
        known = set(codec.tagged)
        unknown = st.lists(
            st.tuples(st.integers(0, 300).filter(lambda t: t not in known), st.binary(max_size=6)),
            max_size=2,
            unique_by=lambda item: item[0],
        ).map(lambda tags: sorted(tags))
        return st.tuples(base, unknown).map(lambda pair: {**pair[0], UNKNOWN_TAGS: pair[1]} if pair[1] else pair[0])
    if isinstance(codec, p.NullableStruct):
        return st.none() | strategy_for(codec.inner, depth, unknown_tags)
    if isinstance(codec, p._Array):
        element = strategy_for(codec.element, depth + 1, unknown_tags)
        lists = st.lists(element, max_size=3 if depth < 2 else 1)
        return st.none() | lists if codec.nullable else lists
    if isinstance(codec, p._Bool):
        return st.booleans()
    if isinstance(codec, p._Uuid):
        return st.uuids(allow_nil=True)
    if isinstance(codec, p._Fixed):
        fmt = codec._struct.format[-1]
        if fmt == "d":
            return st.floats(allow_nan=False)
        if fmt in "HI":
            return st.integers(0, (1 << (16 if fmt == "H" else 32)) - 1)
        bits = _INT_RANGES[fmt]
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    if isinstance(codec, p._String):
        text = st.text(max_size=12)
        return st.none() | text if codec.nullable else text
    if isinstance(codec, p._Bytes):
        blob = st.binary(max_size=16)
        return st.none() | blob if codec.nullable else blob
    raise AssertionError(f"no strategy for {codec!r}")


def materialise(value):
    """Decoded record blobs are memoryviews; compare them as bytes."""
    if isinstance(value, dict):
        return {k: materialise(v) for k, v in value.items()}
    if isinstance(value, list):
        return [materialise(v) for v in value]
    if isinstance(value, memoryview):
        return bytes(value)
    return value


ALL_VERSIONS = [(key, version) for key, spec in API_SPECS.items() for version in range(spec.min_version, spec.max_version + 1)]


def _id(param):
    return f"{ApiKey(param[0]).name}-v{param[1]}"


_SETTINGS = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.mark.parametrize("api", ALL_VERSIONS, ids=_id)
def test_request_round_trips_at_every_version(api):
    api_key, version = api
    struct_ = request_struct(api_key, version)

    @_SETTINGS
    @given(body=strategy_for(struct_), correlation_id=st.integers(-(2**31), 2**31 - 1), client_id=st.none() | st.text(max_size=8))
    def check(body, correlation_id, client_id):
        frame = encode_request(RequestHeader(api_key, version, correlation_id, client_id), body)
        assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
        fast = decode_request(frame[4:], fast=True)
        generic = decode_request(memoryview(frame)[4:], fast=False)
        assert fast.header == RequestHeader(api_key, version, correlation_id, client_id)
        assert materialise(fast.body) == body
        assert materialise(generic.body) == body
        assert encode_request(fast.header, fast.body) == frame

    check()


@pytest.mark.parametrize("api", ALL_VERSIONS, ids=_id)
def test_response_round_trips_at_every_version(api):
    api_key, version = api
    struct_ = response_struct(api_key, version)

    @_SETTINGS
    @given(body=strategy_for(struct_), correlation_id=st.integers(-(2**31), 2**31 - 1))
    def check(body, correlation_id):
        if api_key == ApiKey.API_VERSIONS and body["error_code"] == 35:
            body["error_code"] = 0  # 35 is read in the v0 fallback layout; tested on its own below
        frame = encode_response(api_key, version, correlation_id, body)
        assert peek_correlation_id(frame[4:]) == correlation_id
        cid, fast = decode_response(api_key, version, frame[4:], fast=True)
        _, generic = decode_response(api_key, version, frame[4:], fast=False)
        assert cid == correlation_id
        assert materialise(fast) == body
        assert materialise(generic) == body
        assert encode_response(api_key, version, correlation_id, fast) == frame

    check()


@pytest.mark.parametrize("api", ALL_VERSIONS, ids=_id)
def test_missing_keys_take_json_defaults(api):
    api_key, version = api
    frame = encode_request(RequestHeader(api_key, version, 1, "c"), {})
    assert decode_request(frame[4:]).body == request_struct(api_key, version).default()
    frame = encode_response(api_key, version, 1, {})
    assert decode_response(api_key, version, frame[4:])[1] == response_struct(api_key, version).default()


def test_api_key_names_follow_the_json_names():
    assert ApiKey.PRODUCE == 0 and ApiKey.FETCH == 1 and ApiKey.LIST_OFFSETS == 2 and ApiKey.METADATA == 3
    assert ApiKey.OFFSET_FOR_LEADER_EPOCH == 23
    assert ApiKey.API_VERSIONS == 18
    assert ApiKey.INIT_PRODUCER_ID == 22
    assert ApiKey.DESCRIBE_CLUSTER == 60
    for name in (
        "SASL_HANDSHAKE SASL_AUTHENTICATE CREATE_PARTITIONS INCREMENTAL_ALTER_CONFIGS DESCRIBE_ACLS CREATE_ACLS "
        "DELETE_ACLS ADD_PARTITIONS_TO_TXN ADD_OFFSETS_TO_TXN END_TXN TXN_OFFSET_COMMIT DELETE_RECORDS FIND_COORDINATOR "
        "JOIN_GROUP SYNC_GROUP HEARTBEAT LEAVE_GROUP OFFSET_COMMIT OFFSET_FETCH LIST_GROUPS DESCRIBE_GROUPS DELETE_GROUPS "
        "CREATE_TOPICS DELETE_TOPICS DESCRIBE_CONFIGS"
    ).split():
        assert name in ApiKey.__members__


def test_api_specs_come_from_valid_versions():
    fetch = API_SPECS[ApiKey.FETCH]
    assert (fetch.api_key, fetch.name, fetch.flexible_min_version) == (1, "Fetch", 12)
    assert fetch.min_version <= 4 and fetch.max_version >= 17
    assert API_SPECS[ApiKey.API_VERSIONS].flexible_min_version == 3


def test_snake_case_keys():
    body = decode_response(3, 12, encode_response(3, 12, 1, {"topics": [{"partitions": [{}]}]})[4:])[1]
    partition = body["topics"][0]["partitions"][0]
    assert {"partition_index", "isr_nodes", "leader_epoch", "offline_replicas"} <= set(partition)
    assert {"throttle_time_ms", "cluster_id", "controller_id"} <= set(body)
    assert isinstance(body["topics"][0]["topic_id"], uuid.UUID)


def test_fields_absent_from_a_version_are_ignored_when_encoding():
    old = encode_request(RequestHeader(ApiKey.FETCH, 4, 1, "c"), {"topics": [], "topic_id": uuid.uuid4(), "rack_id": "r1"})
    assert old == encode_request(RequestHeader(ApiKey.FETCH, 4, 1, "c"), {"topics": []})


def test_request_header_v2_keeps_client_id_non_compact():
    frame = encode_request(RequestHeader(ApiKey.API_VERSIONS, 3, 5, "abc"), {"client_software_name": "x"})
    assert frame[4:14] == b"\x00\x12\x00\x03\x00\x00\x00\x05\x00\x03"
    assert frame[14:17] == b"abc" and frame[17] == 0  # then the header's empty tagged-field section


def test_api_versions_response_uses_header_v0_even_when_flexible():
    frame = encode_response(ApiKey.API_VERSIONS, 3, 7, {})
    assert frame[4:8] == b"\x00\x00\x00\x07" and frame[8:10] == b"\x00\x00"  # error code right after the id
    fetch = encode_response(ApiKey.FETCH, 12, 7, {})
    assert fetch[8] == 0  # header v1: empty tagged-field section


def test_api_versions_fallback_decodes_as_v0_response():
    frame = encode_api_versions_fallback(42, [(0, 3, 11), (1, 4, 17), (18, 0, 4)])
    assert struct.unpack(">i", frame[:4])[0] == len(frame) - 4
    cid, body = decode_response(ApiKey.API_VERSIONS, 0, frame[4:])
    assert cid == 42 and body["error_code"] == 35
    assert [(k["api_key"], k["min_version"], k["max_version"]) for k in body["api_keys"]] == [(0, 3, 11), (1, 4, 17), (18, 0, 4)]
    # A client that asked at v3 gets these bytes too and must still read them.
    assert decode_response(ApiKey.API_VERSIONS, 3, frame[4:]) == (cid, body)


def test_unknown_api_key_and_version_raise_unsupported_version_with_ids():
    frame = encode_request(RequestHeader(ApiKey.API_VERSIONS, 3, 99, "c"), {})
    bad_version = bytearray(frame[4:])
    bad_version[2:4] = (77).to_bytes(2, "big")
    with pytest.raises(UnsupportedVersion) as info:
        decode_request(bytes(bad_version))
    assert (info.value.api_key, info.value.api_version, info.value.correlation_id) == (18, 77, 99)
    bad_key = bytearray(frame[4:])
    bad_key[0:2] = (999).to_bytes(2, "big")
    with pytest.raises(UnsupportedVersion) as info:
        decode_request(bytes(bad_key))
    assert (info.value.api_key, info.value.correlation_id) == (999, 99)


def test_malformed_body_carries_correlation_id():
    frame = encode_request(RequestHeader(ApiKey.METADATA, 1, 1234, "c"), {"topics": [{"name": "t"}]})
    with pytest.raises(RemoteProtocolError) as info:
        decode_request(frame[4:-2])
    assert info.value.correlation_id == 1234 and info.value.api_key == ApiKey.METADATA
    with pytest.raises(RemoteProtocolError):
        decode_request(frame[4:-2], fast=False)


def test_records_decode_without_copy():
    blob = bytes(range(256)) * 10
    frame = encode_response(ApiKey.FETCH, 12, 1, {"responses": [{"topic": "t", "partitions": [{"records": blob}]}]})
    view = memoryview(frame)[4:]
    _, body = decode_response(ApiKey.FETCH, 12, view)
    records = body["responses"][0]["partitions"][0]["records"]
    assert isinstance(records, memoryview) and records.obj is view.obj
    assert bytes(records) == blob


class SegmentSlice(RecordsRef):
    def __init__(self, length: int, path: str) -> None:
        super().__init__(length)
        self.path = path


@pytest.mark.parametrize("version", [4, 11, 12, 16])
def test_response_chunks_leave_records_refs_in_place(version):
    ref = SegmentSlice(1000, "/x/00000000000000000000.log")
    blob = memoryview(b"B" * 5000)
    body = {
        "responses": [
            {
                "topic": "t",
                "topic_id": uuid.UUID(int=1),
                "partitions": [
                    {"partition_index": 0, "records": ref},
                    {"partition_index": 1, "records": blob},
                    {"partition_index": 2, "records": None},
                ],
            }
        ]
    }
    chunks = encode_response_chunks(ApiKey.FETCH, version, 5, body)
    assert sum(1 for c in chunks if c is ref) == 1
    assert any(c is blob for c in chunks)
    wire = b"".join(b"R" * c.length if isinstance(c, RecordsRef) else bytes(c) for c in chunks)
    assert struct.unpack(">i", wire[:4])[0] == len(wire) - 4
    _, decoded = decode_response(ApiKey.FETCH, version, wire[4:])
    parts = decoded["responses"][0]["partitions"]
    assert bytes(parts[0]["records"]) == b"R" * 1000 and bytes(parts[1]["records"]) == b"B" * 5000 and parts[2]["records"] is None
    body["responses"][0]["partitions"][0]["records"] = b"R" * 1000
    assert wire == encode_response(ApiKey.FETCH, version, 5, body)


def test_response_chunks_do_not_copy_large_bytes_blobs():
    blob = bytes(64 * 1024)
    body = {"responses": [{"topic": "t", "partitions": [{"records": blob}]}]}
    chunks = encode_response_chunks(ApiKey.FETCH, 11, 5, body)
    assert any(c is blob for c in chunks)
    assert b"".join(chunks) == encode_response(ApiKey.FETCH, 11, 5, body)


def test_encode_response_refuses_records_ref():
    with pytest.raises(LocalProtocolError):
        encode_response(ApiKey.FETCH, 12, 1, {"responses": [{"partitions": [{"records": RecordsRef(10)}]}]})


def test_encoding_bad_values_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        encode_request(RequestHeader(ApiKey.METADATA, 1, 1, "c"), {"topics": [{"name": None}]})
    with pytest.raises(LocalProtocolError):
        encode_request(RequestHeader(ApiKey.FETCH, 4, 1, "c"), {"max_wait_ms": 2**40})
    with pytest.raises(LocalProtocolError):
        encode_request(RequestHeader(ApiKey.FETCH, 99, 1, "c"), {})


def test_unknown_tags_survive_in_nested_structs():
    body = {"responses": [{"topic_id": uuid.UUID(int=3), "partitions": [{"partition_index": 4, UNKNOWN_TAGS: [(77, b"hi")]}]}]}
    frame = encode_response(ApiKey.FETCH, 16, 1, body)
    _, decoded = decode_response(ApiKey.FETCH, 16, frame[4:])
    assert decoded["responses"][0]["partitions"][0][UNKNOWN_TAGS] == [(77, b"hi")]
    assert encode_response(ApiKey.FETCH, 16, 1, decoded) == frame


def test_tagged_fields_equal_to_default_are_not_written():
    plain = encode_response(ApiKey.FETCH, 12, 1, {"responses": [{"partitions": [{}]}]})
    explicit = encode_response(
        ApiKey.FETCH, 12, 1, {"responses": [{"partitions": [{"current_leader": {"leader_id": -1, "leader_epoch": -1}}]}]}
    )
    assert plain == explicit
    moved = encode_response(ApiKey.FETCH, 12, 1, {"responses": [{"partitions": [{"current_leader": {"leader_id": 3}}]}]})
    assert len(moved) > len(plain)
    leader = decode_response(ApiKey.FETCH, 12, moved[4:])[1]["responses"][0]["partitions"][0]["current_leader"]
    assert leader == {"leader_id": 3, "leader_epoch": -1}


def test_decoded_defaults_are_fresh_objects_never_shared_with_the_schema_or_each_other():
    struct_ = response_struct(ApiKey.FETCH, 12)
    body = {**struct_.default(), "responses": [{"topic": "t", "partitions": [{"partition_index": i, "records": b""} for i in range(2)]}]}
    out: list = []
    struct_.write(out, body)
    wire = memoryview(b"".join(out))
    first, _ = struct_.read(wire, 0)
    [a, b] = first["responses"][0]["partitions"]
    assert a["diverging_epoch"] == b["diverging_epoch"] == {"epoch": -1, "end_offset": -1}
    a["diverging_epoch"]["epoch"] = 7
    a["aborted_transactions"].append({"producer_id": 1, "first_offset": 0})
    again, _ = struct_.read(wire, 0)
    assert b["diverging_epoch"]["epoch"] == -1 and not b["aborted_transactions"]
    assert again["responses"][0]["partitions"][0]["diverging_epoch"] == {"epoch": -1, "end_offset": -1}
    assert struct_.default()["responses"] == [] and struct_.default() is not struct_.default()
