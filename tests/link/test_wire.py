"""The link's typed answer readers (linkd/link/wire.py): a malformed answer is the source's protocol
error, never a KeyError or IndexError that would look like our own bug (or hide one)."""

from __future__ import annotations

import pytest

from linkd.link.client import SourceProtocolError
from linkd.link.wire import EpochEnd, FetchedPartition, ListedOffset, only, read_epoch_end, read_fetch, read_list_offsets
from protocol.errors import ErrorCode


def fetch_answer(**partition) -> dict:
    return {"error_code": 0, "session_id": 7, "responses": [{"topic": "t", "partitions": [{"partition_index": 0, "error_code": 0, "high_watermark": 5, **partition}]}]}


def test_a_fetch_answer_reads_into_typed_partitions():
    answer = read_fetch(fetch_answer(records=b"xyz", log_start_offset=2, diverging_epoch={"epoch": 3, "end_offset": 4}))
    assert answer.error == ErrorCode.NONE and answer.session_id == 7
    assert answer.partitions[("t", 0)] == FetchedPartition(0, ErrorCode.NONE, 5, 2, b"xyz", (3, 4))


def test_a_diverging_epoch_of_minus_one_means_none():
    assert read_fetch(fetch_answer(diverging_epoch={"epoch": -1, "end_offset": -1})).partitions[("t", 0)].diverging is None


def test_an_unknown_error_code_reads_as_unknown_server_error():
    assert read_fetch(fetch_answer(error_code=9999)).partitions[("t", 0)].error == ErrorCode.UNKNOWN_SERVER_ERROR


@pytest.mark.parametrize(
    "response",
    [
        {"responses": [{"topic": "t", "partitions": [{"error_code": 0}]}]},  # no partition_index
        {"responses": [{"topic": "t", "partitions": [{"partition_index": "0", "error_code": 0}]}]},
        {"responses": [{"topic": "t", "partitions": [{"partition_index": 0}]}]},  # no error code
        {"responses": "nope"},
        {"responses": [{"topic": "t", "partitions": [{"partition_index": 0, "error_code": 0, "records": 5}]}]},
        {"responses": [{"topic": "t", "partitions": [{"partition_index": 0, "error_code": 0, "diverging_epoch": {"end_offset": 1}}]}]},
    ],
)
def test_a_malformed_fetch_answer_is_a_source_protocol_error(response):
    with pytest.raises(SourceProtocolError):
        read_fetch(response)


def test_list_offsets_answers_read_per_partition_and_an_error_has_no_offset():
    response = {"topics": [{"name": "t", "partitions": [{"partition_index": 0, "error_code": 0, "offset": 9}, {"partition_index": 1, "error_code": 6, "offset": 3}]}]}
    assert read_list_offsets(response) == {("t", 0): ListedOffset(ErrorCode.NONE, 9), ("t", 1): ListedOffset(ErrorCode.NOT_LEADER_OR_FOLLOWER, -1)}
    with pytest.raises(SourceProtocolError):
        read_list_offsets({"topics": [{"partitions": []}]})


def test_an_epoch_end_answer_without_our_partition_is_a_source_protocol_error():
    response = {"topics": [{"topic": "t", "partitions": [{"partition": 0, "error_code": 0, "leader_epoch": 2, "end_offset": 8}]}]}
    assert read_epoch_end(response, "t", 0) == EpochEnd(ErrorCode.NONE, 2, 8)
    with pytest.raises(SourceProtocolError):
        read_epoch_end(response, "t", 1)


def test_only_finds_a_one_partition_answer_or_blames_the_source():
    assert only({("", 3): "x"}, "t", 3, "Fetch") == "x"  # a source that leaves the topic name out
    with pytest.raises(SourceProtocolError, match="no entry for t-4"):
        only({("t", 3): "x"}, "t", 4, "Fetch")
