"""verify.compare, the pure batch-by-batch comparison behind ``mirror verify``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from linkd.link.verify import compare
from protocol.records import BatchSpec, NewRecord, build_batch, split_batches


def _batches(sizes: list[int], start: int = 0, tag: bytes = b"v") -> list:
    out, offset = b"", start
    for n in sizes:
        records = [NewRecord(tag + b"%d" % i, timestamp=1_700_000_000_000 + i) for i in range(n)]  # fixed times: equal bytes
        out += build_batch(BatchSpec(base_offset=offset, records=records))
        offset += n
    return split_batches(out).batches


@given(st.lists(st.integers(1, 5), min_size=1, max_size=6))
def test_identical_sides_compare_equal_to_the_end(sizes):
    result = compare(_batches(sizes), _batches(sizes), 0, sum(sizes))
    assert result.divergence is None
    assert (result.batches, result.position) == (len(sizes), sum(sizes))
    assert result.bytes == sum(b.size for b in _batches(sizes))


def test_the_first_differing_batch_is_named_with_both_crcs():
    ours = _batches([2, 2]) [:1] + _batches([2], start=2, tag=b"x")
    theirs = _batches([2, 2])
    result = compare(theirs, ours, 0, 4)
    assert (result.batches, result.position) == (1, 2)
    assert result.divergence.offset == 2
    assert (result.divergence.source_crc, result.divergence.mirror_crc) == (theirs[1].crc, ours[1].crc)


def test_a_mirror_batch_that_fails_its_own_crc_is_named_even_with_the_right_header():
    theirs = _batches([3])
    rotten = bytearray(bytes(theirs[0].buffer))
    rotten[-1] ^= 1
    result = compare(theirs, split_batches(bytes(rotten)).batches, 0, 3)
    assert result.divergence is not None and "own CRC" in result.divergence.reason


def test_one_side_running_out_stops_without_a_verdict():
    result = compare(_batches([2, 2]), _batches([2]), 0, 4)
    assert (result.batches, result.position, result.divergence) == (1, 2, None)


def test_batches_past_the_end_are_not_compared():
    result = compare(_batches([2, 2]), _batches([2]) + _batches([2], start=2, tag=b"x"), 0, 2)
    assert (result.batches, result.position, result.divergence) == (1, 2, None)
