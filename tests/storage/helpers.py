"""Batch builders and log openers shared by the storage tests."""

from __future__ import annotations

import os
from pathlib import Path

from linkd.storage import LogConfig, PartitionLog
from protocol.records import BatchSpec, NewRecord, build_batch, build_control_batch

TOPIC = "t"
BASE_TS = 1_700_000_000_000


def batch(base_offset: int = 0, records: int = 2, *, epoch: int = 0, ts: int = BASE_TS, value_size: int = 20,
          producer_id: int = -1, producer_epoch: int = -1, sequence: int = -1, transactional: bool = False) -> bytes:
    return build_batch(BatchSpec(
        base_offset=base_offset,
        partition_leader_epoch=epoch,
        producer_id=producer_id,
        producer_epoch=producer_epoch,
        base_sequence=sequence,
        transactional=transactional,
        records=[NewRecord(value=bytes([65 + i % 26]) * value_size, timestamp=ts + i) for i in range(records)],
    ))


def marker(kind: int, producer_id: int, producer_epoch: int = 0, base_offset: int = 0, epoch: int = 0) -> bytes:
    return build_control_batch(kind, producer_id, producer_epoch, base_offset=base_offset,
                               partition_leader_epoch=epoch, timestamp=BASE_TS)


def open_log(directory: str | os.PathLike[str], **config) -> PartitionLog:
    return PartitionLog.open(Path(directory) / f"{TOPIC}-0", LogConfig(**config), TOPIC, 0)


def log_dir(directory: str | os.PathLike[str]) -> Path:
    return Path(directory) / f"{TOPIC}-0"


def segment_files(directory: str | os.PathLike[str], suffix: str = ".log") -> list[Path]:
    return sorted(log_dir(directory).glob(f"*{suffix}"))
