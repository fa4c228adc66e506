"""Fuzz entry points, one per decoder that reads a peer's bytes.

Each takes arbitrary bytes and must only return or raise ``ProtocolError``; anything else (an
IndexError, a construct exception, MemoryError, a hang) is a bug. They run under hypothesis in the test
suite and can be handed as-is to atheris or any other byte-oriented fuzzer.

``seed_corpus()`` gives valid frames to mutate, so a fuzzer starts past the header checks.
"""

from __future__ import annotations

from .framing import FrameReader
from .messages import API_SPECS, RequestHeader, decode_request, decode_response, encode_request, encode_response
from .primitives import UnsignedVarint, Varint, Varlong
from .records import split_batches

_FRAME_LIMIT = 1 << 20


def fuzz_request_frame(data: bytes) -> None:
    """A server receiving ``data`` on a connection: cut frames, decode each as a request (both decoders)."""
    reader = FrameReader(_FRAME_LIMIT)
    reader.feed(data)
    for frame in reader.frames():
        decode_request(frame, fast=True)
        decode_request(frame, fast=False)
    decode_request(data)  # and the same bytes taken as one bare frame


def fuzz_response_frame(data: bytes) -> None:
    """A client reading ``data`` as the answer to a request; the first 3 bytes choose API and version."""
    if len(data) < 3:
        return
    keys = list(API_SPECS)
    spec = API_SPECS[keys[data[0] % len(keys)]]
    version = spec.min_version + int.from_bytes(data[1:3], "big") % (spec.max_version - spec.min_version + 1)
    frame = memoryview(data)[3:]
    decode_response(spec.api_key, version, frame, fast=True)
    decode_response(spec.api_key, version, frame, fast=False)


def fuzz_batch_header(data: bytes) -> None:
    """A records blob from a Fetch response: split into batches and verify each one."""
    for batch in split_batches(data).batches:
        batch.verify()


def fuzz_varint(data: bytes) -> None:
    """Every varint flavour at every starting offset, fast path and construct path."""
    view = memoryview(data)
    for codec in (UnsignedVarint, Varint, Varlong):
        for start in range(min(len(view), 12)):
            codec.read(view, start)
            codec.parse(bytes(view[start:]))


def seed_corpus() -> dict[str, list[bytes]]:
    """Valid inputs to mutate, by entry point: request frames (size prefix included) and response
    payloads in ``fuzz_response_frame``'s layout, for every API at its oldest and newest versions with
    bodies at their defaults."""
    requests, responses = [], []
    for index, (api_key, spec) in enumerate(API_SPECS.items()):
        for version in sorted({spec.min_version, spec.max_version}):
            requests.append(encode_request(RequestHeader(api_key, version, 7, "fuzz"), {}))
            response = encode_response(api_key, version, 7, {})[4:]
            responses.append(bytes([index]) + (version - spec.min_version).to_bytes(2, "big") + response)
    return {"fuzz_request_frame": requests, "fuzz_response_frame": responses}
