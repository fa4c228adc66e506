"""Each fuzz entry point only returns or raises ProtocolError, on random and on mutated valid input."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol import fuzz
from protocol.errors import ProtocolError
from protocol.records import BatchSpec, NewRecord, build_batch, build_control_batch

ENTRY_POINTS = [fuzz.fuzz_request_frame, fuzz.fuzz_response_frame, fuzz.fuzz_batch_header, fuzz.fuzz_varint]
SEEDS = fuzz.seed_corpus()
BATCHES = [
    build_batch(BatchSpec(base_offset=5, records=[NewRecord(b"v" * 40, key=b"k", timestamp=1)] * 3)),
    build_control_batch(0, producer_id=9, producer_epoch=1, base_offset=8, timestamp=2),
]
_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _survives(entry, data: bytes) -> None:
    try:
        entry(data)
    except ProtocolError:
        pass


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "truncate", "insert", "big"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[at] = draw(st.integers(0, 255))
        elif action == "truncate":
            del data[at:]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:  # a length-sized field pushed to an extreme
            data[at : at + 4] = draw(
                st.sampled_from([b"\x7f\xff\xff\xff", b"\xff\xff\xff\xfe", b"\x80\x00\x00\x00", b"\xff\xff\xff\xff\x0f"])
            )
    return bytes(data)


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda f: f.__name__)
@_SETTINGS
@given(data=st.binary(max_size=200))
def test_random_bytes_only_raise_protocol_errors(entry, data):
    _survives(entry, data)


@pytest.mark.parametrize("entry", [fuzz.fuzz_request_frame, fuzz.fuzz_response_frame], ids=lambda f: f.__name__)
@_SETTINGS
@given(data=st.data())
def test_mutated_valid_frames_only_raise_protocol_errors(entry, data):
    _survives(entry, data.draw(mutated(SEEDS[entry.__name__])))


@_SETTINGS
@given(data=mutated([b"".join(BATCHES), BATCHES[0], BATCHES[1]]))
def test_mutated_batches_only_raise_protocol_errors(data):
    _survives(fuzz.fuzz_batch_header, data)


@_SETTINGS
@given(data=mutated([b"\x80\x80\x80\x80\x01", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x00", b"\x7f"]))
def test_mutated_varints_only_raise_protocol_errors(data):
    _survives(fuzz.fuzz_varint, data)


def test_seeds_are_valid_inputs():
    for seed in SEEDS["fuzz_request_frame"]:
        fuzz.decode_request(seed[4:])
    for seed in SEEDS["fuzz_response_frame"]:
        fuzz.fuzz_response_frame(seed)
    fuzz.fuzz_batch_header(b"".join(BATCHES))
