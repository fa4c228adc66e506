"""Fetch sizes that grow while a partition is far behind and drop back once it is caught up
(linkd/link/fetchsize.py, and PartitionCore carrying them out); pure, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from linkd.link import fetchsize
from linkd.link.mirror import PartitionProgress
from linkd.link.partition import Append, CaughtUp, PartitionCore
from linkd.link.wire import FetchedPartition
from linkd.storage import LogConfig, PartitionLog
from protocol.errors import ErrorCode

from .corehelpers import batch

MiB = 1 << 20
sizes = st.integers(1024, 256 * MiB)


@given(floor=sizes, ceiling=st.integers(0, 256 * MiB), current=sizes, returned=st.integers(0, 300 * MiB), behind=st.booleans(), remaining=st.integers(0, 1 << 50))
def test_the_next_size_never_leaves_the_configured_bounds(floor, ceiling, current, returned, behind, remaining):
    size = fetchsize.after_answer(current, floor, ceiling, returned, behind, remaining)
    assert floor <= size <= max(floor, ceiling)


@given(floor=sizes, ceiling=st.integers(0, 256 * MiB), current=sizes, returned=st.integers(0, 300 * MiB), remaining=st.integers(0, 1 << 50))
def test_a_caught_up_partition_asks_the_configured_size_again(floor, ceiling, current, returned, remaining):
    assert fetchsize.after_answer(current, floor, ceiling, returned, False, remaining) == floor


def test_far_behind_the_size_goes_straight_to_what_is_left_within_the_share():
    left = fetchsize.remaining_bytes(MiB, 1000, 50_000)  # 1 MiB held 1,000 offsets; 50,000 to go
    assert left == 50 * MiB
    assert fetchsize.after_answer(MiB, MiB, 10 * MiB, MiB, True, left) == 10 * MiB
    assert fetchsize.after_answer(MiB, MiB, 10 * MiB, MiB, True, 3 * MiB) == 3 * MiB
    assert fetchsize.after_answer(MiB, MiB, 10 * MiB, MiB, True, 0) == 2 * MiB  # nothing known: doubles
    assert fetchsize.remaining_bytes(MiB, 0, 10) == fetchsize.remaining_bytes(MiB, 10, 0) == 0


@given(floor=st.integers(1024, 4 * MiB), factor=st.integers(1, 64))
def test_full_answers_while_behind_double_the_size_up_to_the_share(floor, factor):
    ceiling = floor * factor
    size, rounds = floor, 0
    while size < ceiling:
        grown = fetchsize.after_answer(size, floor, ceiling, size, behind=True)
        assert grown == min(size * 2, ceiling)
        size, rounds = grown, rounds + 1
    assert rounds <= factor.bit_length()
    assert fetchsize.after_answer(size, floor, ceiling, size, behind=True) == ceiling


def test_a_short_answer_while_behind_keeps_the_size():
    # Cut short by the response limit (other partitions took it), not by our size: no reason to grow.
    assert fetchsize.after_answer(4 * MiB, MiB, 10 * MiB, MiB, behind=True) == 4 * MiB


@given(floor=sizes, response_max=sizes, partitions=st.integers(0, 10_000))
def test_a_partitions_share_of_the_response_is_at_least_the_configured_size(floor, response_max, partitions):
    share = fetchsize.share(floor, response_max, partitions)
    assert share >= floor
    assert share == floor or share * max(partitions, 1) <= response_max


@given(current=st.integers(0, 128 * MiB), floor=sizes)
def test_an_oversized_batch_grows_the_size_to_a_bound(current, floor):
    assert fetchsize.for_oversized_batch(current, floor) <= max(fetchsize.OVERSIZED_MAX, floor)


@pytest.fixture
def plog(tmp_path):
    log = PartitionLog.open(tmp_path / "m-0", LogConfig(), "m", 0)
    yield log
    log.close()


def test_the_core_grows_a_partition_far_behind_and_shrinks_it_once_caught_up(plog):
    """Far behind (the source's end at 1,000, every answer full): one round at the configured size, then
    the share at once; the answer that catches it up sets it back."""
    floor = len(batch(0, 1)) * 2  # two small batches fill the configured size
    core = PartitionCore(PartitionProgress(0, validated=True, source_end_seen_ms=1), floor, grow_to=floor * 8)
    offset, asked = 0, []
    for _ in range(5):
        asked.append(core.request_max_bytes())
        blob = b"".join(batch(offset + i, 1) for i in range(asked[-1] // len(batch(0, 1))))
        action = core.on_answer(FetchedPartition(0, ErrorCode.NONE, 1000, 0, blob, None), plog, 1)
        assert isinstance(action, Append)
        plog.append_mirrored(action.slice)
        core.appended(plog, 1)
        core.append_ended()
        offset = plog.log_end_offset
    assert asked == [floor, 8 * floor, 8 * floor, 8 * floor, 8 * floor]
    # The answer that brings it to the source's end: back to the configured size at once.
    action = core.on_answer(FetchedPartition(0, ErrorCode.NONE, offset + 1, 0, batch(offset, 1), None), plog, 2)
    assert isinstance(action, Append) and core.request_max_bytes() == floor
    plog.append_mirrored(action.slice)
    core.appended(plog, 2)
    core.append_ended()
    core.progress.max_bytes = 4 * floor  # say it had grown again: an empty answer at the end shrinks it too
    assert isinstance(core.on_answer(FetchedPartition(0, ErrorCode.NONE, offset + 1, 0, b"", None), plog, 3), CaughtUp)
    assert core.request_max_bytes() == floor


def test_before_its_first_answer_a_partition_asks_its_share_and_a_caught_up_answer_sets_it_back(plog):
    core = PartitionCore(PartitionProgress(0, validated=True), MiB, grow_to=10 * MiB)
    assert core.request_max_bytes() == 10 * MiB  # how far behind is unknown: ask much, it costs nothing
    assert isinstance(core.on_answer(FetchedPartition(0, ErrorCode.NONE, 0, 0, b"", None), plog, 1), CaughtUp)
    assert core.request_max_bytes() == MiB
