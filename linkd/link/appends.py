"""The worker-thread half of a fetcher's append pipeline: a round's append jobs, appended off the event
loop (write syscalls release the GIL). ``append_all`` touches only the logs it is given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocol.records import BatchSlice

from .mirror import Mirror
from .partition import PartitionCore

if TYPE_CHECKING:
    from ..storage import PartitionLog


class AppendsRefused(Exception):
    """The local disk refused a round's appends (full, read-only, failing) or appending hit a bug: nothing
    of the refused jobs was written, and their partitions are fetched again from their log ends."""


@dataclass(frozen=True)
class AppendJob:
    mirror: Mirror
    core: PartitionCore
    plog: PartitionLog
    slice: BatchSlice


def append_all(jobs: list[AppendJob]) -> list:
    """Worker-thread body: append each job's slice; an exception is returned, not raised, per job."""
    outcomes: list = []
    for job in jobs:
        try:
            job.plog.append_mirrored(job.slice)
            outcomes.append(None)
        except Exception as exc:  # reported per job by the caller; never lost with the worker thread
            outcomes.append(exc)
    return outcomes
