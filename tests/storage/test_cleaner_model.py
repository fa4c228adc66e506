"""The log cleaner against a dict model: keyed records, tombstones, committed and aborted transactions,
appended (with offset gaps, small segments), cleaned at various times and map sizes, read back, reopened."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from linkd.storage.cleaner import CleanerConfig, clean_log
from protocol.compression import Compression
from protocol.records import (
    CONTROL_ABORT,
    CONTROL_COMMIT,
    BatchSpec,
    NewRecord,
    RecordBatch,
    build_batch,
    build_control_batch,
    decode_records,
    split_batches,
)
from tests.storage.helpers import BASE_TS, open_log

KEYS = [b"a", b"b", b"c", b"d", b"long-key-" + b"x" * 40]
DELETE_RETENTION_MS = 1000


@pytest.fixture(autouse=True)
def quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.fsync", lambda fd: None)  # durability is the swap test's job; keep this fast
    monkeypatch.setattr(logging.getLogger("linkd.storage"), "level", logging.ERROR)


record_st = st.tuples(st.sampled_from(KEYS + [None]), st.one_of(st.none(), st.binary(min_size=0, max_size=12)))
op_st = st.one_of(
    st.tuples(st.just("append"), st.lists(record_st, min_size=1, max_size=4), st.sampled_from([0, 0, 1, 4]),
              st.sampled_from(list(Compression))),
    st.tuples(st.just("txn"), st.sampled_from([1000, 1001]), st.lists(record_st, min_size=1, max_size=3)),
    st.tuples(st.just("end"), st.sampled_from([1000, 1001]), st.sampled_from([CONTROL_COMMIT, CONTROL_ABORT])),
    st.tuples(st.just("clean"), st.integers(0, 3000), st.sampled_from([1024, 1300, 1 << 20])),
)


class Model:
    """Per offset what was appended; which transactions were aborted / committed / are open."""

    def __init__(self) -> None:
        self.records: dict[int, tuple[bytes | None, bytes | None, int, int]] = {}  # offset -> key, value, ts, pid
        self.open: dict[int, list[int]] = {}  # pid -> offsets of its open transaction
        self.aborted: set[int] = set()  # offsets of aborted data
        self.end = 0
        self.ts = BASE_TS
        self.sequences: dict[int, int] = {}

    def visible(self) -> dict[bytes, bytes]:
        """What a read_committed consumer that reads the whole log ends with: the latest value per key."""
        lso = min((offsets[0] for offsets in self.open.values()), default=self.end)
        out: dict[bytes, bytes | None] = {}
        for offset in sorted(self.records):
            key, value, _ts, _pid = self.records[offset]
            if offset >= lso:
                break
            if offset in self.aborted or key is None:
                continue
            out[key] = value
        return {k: v for k, v in out.items() if v is not None}


def _apply(log, model: Model, op) -> None:
    kind = op[0]
    if kind == "append":
        _, recs, gap, codec = op
        base = model.end + gap
        model.ts += 10
        records = [NewRecord(key=k, value=v, timestamp=model.ts + i) for i, (k, v) in enumerate(recs)]
        log.append_mirrored(build_batch(BatchSpec(base_offset=base, compression=codec, records=records)))
        for i, (k, v) in enumerate(recs):
            model.records[base + i] = (k, v, model.ts + i, -1)
        model.end = base + len(recs)
    elif kind == "txn":
        _, pid, recs = op
        base = model.end
        model.ts += 10
        seq = model.sequences.get(pid, 0)
        records = [NewRecord(key=k, value=v, timestamp=model.ts + i) for i, (k, v) in enumerate(recs)]
        log.append_mirrored(build_batch(BatchSpec(base_offset=base, producer_id=pid, producer_epoch=0,
                                                  base_sequence=seq, transactional=True, records=records)))
        model.sequences[pid] = seq + len(recs)
        for i, (k, v) in enumerate(recs):
            model.records[base + i] = (k, v, model.ts + i, pid)
        model.open.setdefault(pid, []).extend(range(base, base + len(recs)))
        model.end = base + len(recs)
    elif kind == "end":
        _, pid, marker = op
        if pid not in model.open:
            return
        model.ts += 10
        log.append_mirrored(build_control_batch(marker, pid, 0, base_offset=model.end, timestamp=model.ts))
        offsets = model.open.pop(pid)
        if marker == CONTROL_ABORT:
            model.aborted.update(offsets)
        model.end += 1


def _read_committed(log) -> tuple[dict[bytes, bytes], list, list[RecordBatch]]:
    """Consume [log start, LSO) as a read_committed Kafka consumer does, from the log's own answers."""
    start, lso = log.log_start_offset, log.last_stable_offset
    data = log.read(start, 1 << 30, upper_bound=lso).to_bytes() if lso > start else b""
    batches = split_batches(data).batches
    aborted = sorted(log.aborted_transactions(start, lso), key=lambda t: t[1])
    aborting: set[int] = set()
    values: dict[bytes, bytes | None] = {}
    seen = []
    for batch in batches:
        batch.verify()
        while aborted and aborted[0][1] <= batch.last_offset:
            aborting.add(aborted.pop(0)[0])
        if batch.is_control:
            if batch.record_count and batch.control_type() == CONTROL_ABORT:
                aborting.discard(batch.producer_id)
            continue
        if batch.is_transactional and batch.producer_id in aborting:
            continue
        for record in decode_records(batch):
            seen.append(record)
            if record.key is not None:
                values[record.key] = record.value
    return {k: v for k, v in values.items() if v is not None}, seen, batches


def _check(log, model: Model) -> None:
    assert log.log_end_offset == model.end
    visible, seen, _ = _read_committed(log)
    assert visible == model.visible()
    # Every record left is the one appended at that offset, untouched.
    everything = split_batches(log.read(log.log_start_offset, 1 << 30).to_bytes()).batches if model.end else []
    previous = -1
    for batch in everything:
        batch.verify()
        assert batch.base_offset > previous
        previous = batch.last_offset
        if batch.is_control:
            continue
        for record in decode_records(batch):
            key, value, ts, _pid = model.records[record.offset]
            assert (record.key, record.value, record.timestamp) == (key, value, ts)
    # Below the cleaned-up-to offset: no aborted data, and at most one record per key.
    cleaned = log.statistics().cleaned_up_to or 0
    keys_below: list[bytes] = []
    for batch in everything:
        if batch.is_control or batch.base_offset >= cleaned:
            continue
        for record in decode_records(batch):
            assert record.offset not in model.aborted, f"aborted record at {record.offset} survived cleaning"
            if record.key is not None:
                keys_below.append(record.key)
    assert len(keys_below) == len(set(keys_below)), "a key appears twice in the cleaned section"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op_st, min_size=1, max_size=40))
def test_cleaning_keeps_exactly_the_latest_committed_value_per_key(ops):
    tmp = Path(tempfile.mkdtemp(prefix="cleanermodel"))
    try:
        config = dict(segment_bytes=300, index_interval_bytes=64, cleanup_policy=("compact",),
                      delete_retention_ms=DELETE_RETENTION_MS, min_cleanable_dirty_ratio=0.0)
        log = open_log(tmp, **config)
        model = Model()
        for op in ops:
            if op[0] == "clean":
                _, later, map_bytes = op
                stats = clean_log(log, model.ts + later, CleanerConfig(dedupe_buffer_size=map_bytes), force=True)
                if stats is not None:
                    assert log.statistics().cleaned_up_to == stats.end_offset
                _check(log, model)
            else:
                _apply(log, model, op)
        # Finish: close open transactions, delete a key, and make it all cleanable.
        for pid in list(model.open):
            _apply(log, model, ("end", pid, CONTROL_COMMIT))
        _apply(log, model, ("append", [(b"b", None)], 0, Compression.NONE))
        log._roll(log.log_end_offset)  # noqa: SLF001 - a segment boundary here makes everything before it cleanable
        _apply(log, model, ("append", [(b"c", b"filler")], 0, Compression.NONE))
        assert clean_log(log, model.ts + 10 * DELETE_RETENTION_MS, force=True) is not None
        first_end = log.statistics().cleaned_up_to or 0
        # A later pass, past every delete horizon the first one set: no tombstone below its end survives.
        log._roll(log.log_end_offset)  # noqa: SLF001 - a segment boundary here makes everything before it cleanable
        _apply(log, model, ("append", [(b"a", b"last")], 0, Compression.NONE))
        assert clean_log(log, model.ts + 20 * DELETE_RETENTION_MS, force=True) is not None
        _check(log, model)
        data = log.read(log.log_start_offset, 1 << 30).to_bytes()
        tombstones = [r.offset for b in split_batches(data).batches if not b.is_control
                      for r in decode_records(b) if r.value is None and r.key is not None and r.offset < first_end]
        assert tombstones == [], f"tombstones past their delete horizon survived at {tombstones}"
        log.close()
        log = open_log(tmp, **config)
        _check(log, model)
        log.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
