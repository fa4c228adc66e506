"""Our codec against an independent one: kafka-python 3's protocol classes.

Bytes we encode must decode with kafka-python to the same values, and bytes kafka-python encodes must
decode with ours, requests and responses alike, headers included.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.consumer import (
    FetchRequest,
    FetchResponse,
    JoinGroupRequest,
    JoinGroupResponse,
    ListOffsetsRequest,
    ListOffsetsResponse,
    OffsetCommitRequest,
    OffsetCommitResponse,
    OffsetFetchRequest,
    OffsetFetchResponse,
    SyncGroupRequest,
    SyncGroupResponse,
)
from kafka.protocol.metadata import ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse
from kafka.protocol.producer import ProduceRequest, ProduceResponse

from protocol.messages import (
    API_SPECS,
    ApiKey,
    RequestHeader,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    request_struct,
    response_struct,
)
from protocol.primitives import ZERO_UUID

from .test_messages import materialise, strategy_for

PAIRS = {
    ApiKey.API_VERSIONS: (ApiVersionsRequest, ApiVersionsResponse),
    ApiKey.METADATA: (MetadataRequest, MetadataResponse),
    ApiKey.PRODUCE: (ProduceRequest, ProduceResponse),
    ApiKey.FETCH: (FetchRequest, FetchResponse),
    ApiKey.LIST_OFFSETS: (ListOffsetsRequest, ListOffsetsResponse),
    ApiKey.JOIN_GROUP: (JoinGroupRequest, JoinGroupResponse),
    ApiKey.SYNC_GROUP: (SyncGroupRequest, SyncGroupResponse),
    ApiKey.OFFSET_COMMIT: (OffsetCommitRequest, OffsetCommitResponse),
    ApiKey.OFFSET_FETCH: (OffsetFetchRequest, OffsetFetchResponse),
    ApiKey.CREATE_TOPICS: (CreateTopicsRequest, CreateTopicsResponse),
}


def _versions(api_key: int) -> list[int]:
    """Oldest, newest, and a flexible one in between (or the first flexible one)."""
    spec = API_SPECS[api_key]
    chosen = {spec.min_version, spec.max_version}
    flexible = list(range(max(spec.flexible_min_version, spec.min_version), spec.max_version + 1))
    if flexible:
        chosen.add(flexible[len(flexible) // 2] if len(flexible) > 2 else flexible[0])
    return sorted(chosen)


CASES = [(key, version) for key in PAIRS for version in _versions(key)]


# kafka-python renames the *AuthorizedOperations int32 fields to ``authorized_operations`` and exposes
# them as a set of bit numbers ({31} meaning "not provided" becomes None). Translate at the boundary.
_KP_BITFIELD = "authorized_operations"
_NOT_PROVIDED = -(2**31)


def _our_bitfield_key(value: dict) -> str | None:
    return next((key for key in value if key.endswith(_KP_BITFIELD)), None)


def _int_to_bits(number: int) -> set[int] | None:
    if number == _NOT_PROVIDED:
        return None
    return {bit for bit in range(32) if (number >> bit) & 1}


def _bits_to_int(bits: set[int] | None) -> int:
    if bits is None:
        return _NOT_PROVIDED
    number = sum(1 << bit for bit in bits)
    return number - (1 << 32) if number >= 1 << 31 else number


def _to_kafka_python(container_cls, value: dict, version: int):
    kwargs = {}
    for name, field in container_cls._struct.fields.items():
        if name == _KP_BITFIELD and name not in value:
            ours = _our_bitfield_key(value)
            if ours is not None:
                kwargs[name] = _int_to_bits(value[ours])
            continue
        if name not in value:
            continue
        item = value[name]
        if field.is_struct() and item is not None:
            item = _to_kafka_python(field.data_class, item, version)
        elif field.is_struct_array() and item is not None:
            item = [_to_kafka_python(field.data_class, element, version) for element in item]
        kwargs[name] = item
    return container_cls(version=version, **kwargs)


def _align(theirs, ours):
    """kafka-python's decoded dict, with its renamed bitfields put back the way our schema names them."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        out = {}
        for key, item in theirs.items():
            if key == _KP_BITFIELD and key not in ours and _our_bitfield_key(ours):
                out[_our_bitfield_key(ours)] = _bits_to_int(item)
            else:
                out[key] = _align(item, ours.get(key))
        return out
    if isinstance(theirs, list) and isinstance(ours, list) and len(theirs) == len(ours):
        return [_align(a, b) for a, b in zip(theirs, ours, strict=True)]
    return theirs


def _from_kafka_python(message, ours: dict) -> dict:
    return _align(materialise(message.to_dict(json=False)), ours)


_SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _id(case):
    return f"{ApiKey(case[0]).name}-v{case[1]}"


def _bytes_fields(value):
    """Make both sides comparable: kafka-python hands back blobs as bytes and the all-zero uuid as None."""
    if value == ZERO_UUID:
        return None
    if isinstance(value, dict):
        return {k: _bytes_fields(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_bytes_fields(v) for v in value]
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    return value


def _same_bytes_but_default_tags(theirs: bytes, ours: bytes, decode) -> None:
    """Re-encoding what kafka-python wrote must give its bytes back, except that kafka-python also writes a
    tagged field holding its default value (e.g. Fetch v17+ ReplicaDirectoryId = zero uuid), which Kafka's own
    serializers and linkd leave out. Such bytes may only be shorter and must decode to the same message."""
    if theirs == ours:
        return
    assert len(ours) < len(theirs), "linkd's encoding differs from kafka-python's by more than omitted default tags"
    assert _bytes_fields(decode(ours)) == _bytes_fields(decode(theirs))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_requests_agree_with_kafka_python(case):
    api_key, version = case
    request_cls = PAIRS[api_key][0]

    @_SETTINGS
    @given(body=strategy_for(request_struct(api_key, version), unknown_tags=False), correlation_id=st.integers(0, 2**31 - 1))
    def check(body, correlation_id):
        ours = encode_request(RequestHeader(api_key, version, correlation_id, "linkd-test"), body)
        theirs_decoded = request_cls.decode(bytes(ours[4:]), version=version, header=True)
        assert theirs_decoded.header.correlation_id == correlation_id
        assert theirs_decoded.header.client_id == "linkd-test"
        assert _bytes_fields(_from_kafka_python(theirs_decoded, body)) == _bytes_fields(body)

        message = _to_kafka_python(request_cls[version], body, version)
        message.with_header(correlation_id=correlation_id, client_id="kp")
        theirs = bytes(message.encode(header=True, framed=True))
        decoded = decode_request(theirs[4:])
        assert decoded.header == RequestHeader(api_key, version, correlation_id, "kp")
        assert _bytes_fields(decoded.body) == _bytes_fields(body)
        _same_bytes_but_default_tags(theirs[4:], bytes(encode_request(decoded.header, decoded.body)[4:]), lambda b: decode_request(b).body)

    check()


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_responses_agree_with_kafka_python(case):
    api_key, version = case
    response_cls = PAIRS[api_key][1]

    @_SETTINGS
    @given(body=strategy_for(response_struct(api_key, version), unknown_tags=False), correlation_id=st.integers(0, 2**31 - 1))
    def check(body, correlation_id):
        if api_key == ApiKey.API_VERSIONS:
            body["error_code"] = 0  # both sides switch to the v0 layout on errors
        ours = encode_response(api_key, version, correlation_id, body)
        theirs_decoded = response_cls.decode(bytes(ours[4:]), version=version, header=True)
        assert theirs_decoded.header.correlation_id == correlation_id
        assert _bytes_fields(_from_kafka_python(theirs_decoded, body)) == _bytes_fields(body)

        message = _to_kafka_python(response_cls[version], body, version)
        message.with_header(correlation_id=correlation_id)
        theirs = bytes(message.encode(header=True, framed=True))
        cid, decoded = decode_response(api_key, version, theirs[4:])
        assert cid == correlation_id
        assert _bytes_fields(decoded) == _bytes_fields(body)
        _same_bytes_but_default_tags(theirs, bytes(encode_response(api_key, version, correlation_id, decoded)), lambda b: decode_response(api_key, version, b[4:])[1])

    check()


def test_kafka_python_reads_our_api_versions_fallback():
    from protocol.messages import encode_api_versions_fallback

    frame = encode_api_versions_fallback(9, [(0, 3, 11), (18, 0, 4)])
    decoded = ApiVersionsResponse.decode(frame[4:], version=4, header=True)
    assert decoded.header.correlation_id == 9
    assert decoded.error_code == 35
    assert [(k.api_key, k.min_version, k.max_version) for k in decoded.api_keys] == [(0, 3, 11), (18, 0, 4)]
