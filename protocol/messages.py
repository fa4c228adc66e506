"""Kafka requests and responses: frames in, dicts out, and back.

Bodies are plain dicts with snake_case keys (see ``schema``). Every API whose JSON definition ships with
kafka-python is covered at every version in its ``validVersions``.

Header rules (Kafka protocol guide): request header v1, or v2 when the API version is flexible — its
ClientId is a classic nullable string even then; response header v0, or v1 when flexible, except that
ApiVersions responses always use header v0 so a client can read one whatever version it asked for.

Two decoders share the same construct tree: ``construct``'s own stream parsing (the generic path) and
``KafkaStruct.read`` on a memoryview (the fast path, no stream and no copies of record blobs). Every
message is decoded with the fast path (construct's took ~0.3 ms of CPU for a small ListOffsets, more than
answering it); the generic path stays as the reference the tests hold the fast one to, for every API and
version, on valid and on fuzzed input. Only records fields come back as memoryviews of the frame (Produce
requests, Fetch responses); bytes fields are copied, as construct copies them.
"""

from __future__ import annotations

import enum
import io
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import construct

from . import primitives as p
from .errors import ErrorCode, LocalProtocolError, RemoteProtocolError, UnsupportedVersion
from .schema import KafkaStruct, load_all, message_struct, snake_case

__all__ = [
    "ApiKey",
    "ApiSpec",
    "API_SPECS",
    "RequestHeader",
    "Request",
    "RecordsRef",
    "encode_request",
    "decode_request",
    "encode_response",
    "encode_response_chunks",
    "decode_response",
    "peek_correlation_id",
    "encode_api_versions_fallback",
    "is_flexible",
    "request_struct",
    "response_struct",
]


class ApiSpec(NamedTuple):
    api_key: int
    name: str  # JSON name without "Request", e.g. "OffsetForLeaderEpoch"
    min_version: int
    max_version: int
    flexible_min_version: int  # first flexible version; above max_version if none is


def _collect_specs() -> dict[int, ApiSpec]:
    specs: dict[int, ApiSpec] = {}
    for message in load_all().values():
        if message.kind != "request" or message.api_key is None:
            continue
        name = message.name.removesuffix("Request")
        flexible_min = message.flexible.low if message.flexible.low <= message.flexible.high else message.valid.high + 1
        specs[message.api_key] = ApiSpec(message.api_key, name, message.valid.low, message.valid.high, flexible_min)
    return dict(sorted(specs.items()))


API_SPECS: dict[int, ApiSpec] = _collect_specs()

# Built from the schemas at import, so a type checker cannot list its members: to it, any attribute.
if TYPE_CHECKING:
    ApiKey: Any
else:
    ApiKey = enum.IntEnum("ApiKey", [(snake_case(spec.name).upper(), key) for key, spec in API_SPECS.items()], module=__name__)
ApiKey.__doc__ = (
    "Kafka API keys, named after the JSON message definitions (``OffsetForLeaderEpoch`` -> ``OFFSET_FOR_LEADER_EPOCH``)."
)

# The data path: decoded and encoded with the buffer-offset codec. See benchmarks/codec_bench.py.


@dataclass
class RequestHeader:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None


@dataclass
class Request:
    header: RequestHeader
    body: dict


class RecordsRef:
    """A records blob that is not in memory (e.g. a byte range of a segment file).

    ``encode_response_chunks`` puts the object itself in its output where the bytes belong and counts
    ``length`` in the frame size; the caller sends it (``os.sendfile``). Subclass it to carry the source.
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


def is_flexible(api_key: int, api_version: int) -> bool:
    return api_version >= API_SPECS[api_key].flexible_min_version


def _spec(api_key: int, api_version: int) -> ApiSpec:
    spec = API_SPECS.get(api_key)
    if spec is None:
        raise LocalProtocolError(f"unknown API key {api_key}")
    if not spec.min_version <= api_version <= spec.max_version:
        raise LocalProtocolError(f"{spec.name} has no version {api_version} (valid {spec.min_version}-{spec.max_version})")
    return spec


def request_struct(api_key: int, api_version: int) -> KafkaStruct:
    return message_struct(_spec(api_key, api_version).name + "Request", api_version)


def response_struct(api_key: int, api_version: int, lenient: bool = False) -> KafkaStruct:
    return message_struct(_spec(api_key, api_version).name + "Response", api_version, lenient)


# ---------------------------------------------------------------------------------------------------
# Decoding helpers


def _decode_body(struct_: KafkaStruct, buf: memoryview, pos: int, fast: bool) -> dict:
    if fast:
        body, _ = struct_.read(buf, pos)
        return body
    stream = io.BytesIO(buf[pos:])
    return struct_.parse_stream(stream)


def _decode_guarded(struct_: KafkaStruct, buf: memoryview, pos: int, fast: bool, what: str) -> dict:
    try:
        return _decode_body(struct_, buf, pos, fast)
    except RemoteProtocolError:
        raise
    except (construct.ConstructError, ValueError, IndexError, struct.error) as exc:
        # construct's stream errors (and anything a corrupt frame can provoke) are a peer problem.
        raise RemoteProtocolError(f"malformed {what}: {exc}") from None


_REQUEST_PREFIX = struct.Struct(">hhi")
_SIZE = struct.Struct(">i")


def decode_request(frame: bytes | bytearray | memoryview, *, fast: bool = True) -> Request:
    """Decode one request frame (without its size prefix).

    ``fast=False`` selects construct's generic decoder (the reference, for tests).
    """
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    if len(buf) < _REQUEST_PREFIX.size:
        raise RemoteProtocolError(f"request frame of {len(buf)} bytes is shorter than a request header")
    api_key, api_version, correlation_id = _REQUEST_PREFIX.unpack_from(buf, 0)
    spec = API_SPECS.get(api_key)
    if spec is None:
        raise UnsupportedVersion(f"unknown API key {api_key}", api_key, api_version, correlation_id)
    if not spec.min_version <= api_version <= spec.max_version:
        raise UnsupportedVersion(
            f"{spec.name} v{api_version} is not supported (valid {spec.min_version}-{spec.max_version})",
            api_key,
            api_version,
            correlation_id,
        )
    try:
        client_id, pos = _CLIENT_ID.read(buf, _REQUEST_PREFIX.size)
        if api_version >= spec.flexible_min_version:
            _, pos = p.TaggedFieldSection.read(buf, pos)
        body = _decode_guarded(request_struct(api_key, api_version), buf, pos, fast, f"{spec.name} v{api_version} request")
    except RemoteProtocolError as exc:
        exc.api_key = api_key  # type: ignore[attr-defined]
        exc.api_version = api_version  # type: ignore[attr-defined]
        exc.correlation_id = correlation_id  # type: ignore[attr-defined]
        raise
    return Request(RequestHeader(api_key, api_version, correlation_id, client_id), body)


_CLIENT_ID = p.String(nullable=True)


def _response_header_flexible(api_key: int, api_version: int) -> bool:
    return api_key != 18 and api_version >= API_SPECS[api_key].flexible_min_version


def decode_response(
    api_key: int, api_version: int, frame: bytes | bytearray | memoryview, *, fast: bool = True, lenient: bool = False
) -> tuple[int, dict]:
    """Decode one response frame (without its size prefix) to (correlation id, body).

    An ApiVersions response carrying UNSUPPORTED_VERSION is read in the v0 layout, which is how a broker
    answers a version it does not know. ``lenient`` is for a client reading another broker's answers: a
    null where the schema says a non-nullable array reads as an empty one (tests that check linkd's own
    answers keep the strict default).
    """
    spec = _spec(api_key, api_version)
    buf = frame if isinstance(frame, memoryview) else memoryview(frame)
    if len(buf) < 4:
        raise RemoteProtocolError(f"response frame of {len(buf)} bytes has no correlation id")
    correlation_id = _SIZE.unpack_from(buf, 0)[0]
    pos = 4
    try:
        if _response_header_flexible(api_key, api_version):
            _, pos = p.TaggedFieldSection.read(buf, pos)
        if api_key == 18 and len(buf) >= pos + 2 and struct.unpack_from(">h", buf, pos)[0] == ErrorCode.UNSUPPORTED_VERSION:
            api_version = 0
        body = _decode_guarded(response_struct(api_key, api_version, lenient), buf, pos, fast, f"{spec.name} v{api_version} response")
    except RemoteProtocolError as exc:
        exc.api_key = api_key  # type: ignore[attr-defined]
        exc.correlation_id = correlation_id  # type: ignore[attr-defined]
        raise
    return correlation_id, body


def peek_correlation_id(frame: bytes | bytearray | memoryview) -> int:
    """The correlation id of a response frame (its first field), without decoding the rest."""
    if len(frame) < 4:
        raise RemoteProtocolError("frame too short to carry a correlation id")
    return _SIZE.unpack_from(frame, 0)[0]


# ---------------------------------------------------------------------------------------------------
# Encoding


def _encode_body(struct_: KafkaStruct, out: list, body: dict) -> None:
    try:
        struct_.write(out, body)
    except LocalProtocolError:
        raise
    except (TypeError, ValueError, AttributeError, struct.error, OverflowError) as exc:
        raise LocalProtocolError(f"cannot encode {struct_.name}: {exc}") from None


def _frame(out: list) -> bytes:
    size = 0
    for chunk in out:
        if isinstance(chunk, (bytes, bytearray)):
            size += len(chunk)
        elif isinstance(chunk, memoryview):
            size += chunk.nbytes
        else:
            raise LocalProtocolError(f"{chunk!r} cannot be copied into a frame; use encode_response_chunks")
    out.insert(0, _SIZE.pack(size))
    return b"".join(out)


def encode_request(header: RequestHeader, body: dict) -> bytes:
    """A whole request frame, size prefix included."""
    spec = _spec(header.api_key, header.api_version)
    out: list = [_REQUEST_PREFIX.pack(header.api_key, header.api_version, header.correlation_id)]
    _CLIENT_ID.write(out, header.client_id)
    if header.api_version >= spec.flexible_min_version:
        out.append(b"\x00")
    _encode_body(request_struct(header.api_key, header.api_version), out, body)
    return _frame(out)


def _response_parts(api_key: int, api_version: int, correlation_id: int, body: dict) -> list:
    _spec(api_key, api_version)
    out: list = [_SIZE.pack(correlation_id)]
    if _response_header_flexible(api_key, api_version):
        out.append(b"\x00")
    _encode_body(response_struct(api_key, api_version), out, body)
    return out


def encode_response(api_key: int, api_version: int, correlation_id: int, body: dict) -> bytes:
    """A whole response frame, size prefix included. Records must be in memory (see the chunked form)."""
    return _frame(_response_parts(api_key, api_version, correlation_id, body))


# Parts at least this big (record blobs) go out as their own chunk instead of being joined with their
# neighbours: copying them is exactly what the chunked form exists to avoid.
_STANDALONE_CHUNK = 16 * 1024


def encode_response_chunks(api_key: int, api_version: int, correlation_id: int, body: dict) -> list[bytes | memoryview | object]:
    """Like ``encode_response`` but without copying record blobs.

    Returns the frame as a list: ``bytes`` for encoded structure, the caller's own ``memoryview``/``bytes``
    record blobs as given (large ones are not joined), and ``RecordsRef`` objects in place of their bytes.
    The size prefix counts every part, ``RecordsRef.length`` included.
    """
    parts = _response_parts(api_key, api_version, correlation_id, body)
    chunks: list = []
    pending: list = []
    size = 0
    for part in parts:
        if isinstance(part, bytes) and len(part) < _STANDALONE_CHUNK:
            pending.append(part)
            size += len(part)
            continue
        if pending:
            chunks.append(b"".join(pending))
            pending = []
        if isinstance(part, (bytes, bytearray, memoryview)):
            size += memoryview(part).nbytes
        else:
            size += part.length
        chunks.append(part)
    if pending:
        chunks.append(b"".join(pending))
    if chunks and isinstance(chunks[0], bytes) and len(chunks[0]) < _STANDALONE_CHUNK:
        chunks[0] = _SIZE.pack(size) + chunks[0]
    else:
        chunks.insert(0, _SIZE.pack(size))
    return chunks


# ---------------------------------------------------------------------------------------------------
# ApiVersions fallback


def encode_api_versions_fallback(correlation_id: int, supported: list[tuple[int, int, int]]) -> bytes:
    """The answer to an ApiVersions request at a version we do not know: the v0 layout (header v0),
    error UNSUPPORTED_VERSION and our (api_key, min_version, max_version) ranges, so the client retries."""
    body = {
        "error_code": int(ErrorCode.UNSUPPORTED_VERSION),
        "api_keys": [{"api_key": k, "min_version": lo, "max_version": hi} for k, lo, hi in supported],
    }
    return encode_response(18, 0, correlation_id, body)
