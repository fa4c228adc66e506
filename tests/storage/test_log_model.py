"""The partition log against a list model: appends of both kinds, reads, truncation, log-start moves,
retention, and crashes of three kinds (process death, power loss with a torn tail, a flipped byte)."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from linkd.storage import PartitionLog
from protocol.errors import CorruptBatch
from protocol.records import split_batches
from tests.storage.helpers import BASE_TS, batch, log_dir, open_log

CONFIG = dict(segment_bytes=600, index_interval_bytes=128, retention_bytes=-1, retention_ms=-1)


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Crashes are simulated by restoring the files as of the last flush, so real fsyncs (8 ms each on this
    disk) would only slow the machine down."""
    monkeypatch.setattr("os.fsync", lambda fd: None)
    storage_log = logging.getLogger("linkd.storage")
    monkeypatch.setattr(storage_log, "level", logging.ERROR)  # thousands of expected truncation warnings


class Entry:
    __slots__ = ("base", "last", "data")

    def __init__(self, base: int, last: int, data: bytes) -> None:
        self.base, self.last, self.data = base, last, data


class LogModel(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="logmodel"))
        self.log: PartitionLog = open_log(self.tmp, **CONFIG)
        self.entries: list[Entry] = []
        self.start = 0
        self.end = 0
        self.epoch = 0
        self.ts = BASE_TS
        self._mark_durable()

    def teardown(self) -> None:
        if hasattr(self, "log"):
            self.log.abandon()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------------------

    def _mark_durable(self) -> None:
        durable = self.tmp / "durable"
        shutil.rmtree(durable, ignore_errors=True)
        shutil.copytree(log_dir(self.tmp), durable)
        self.durable_end = self.end
        self.durable_start = self.start

    def _visible(self) -> list[Entry]:
        return [e for e in self.entries if e.last >= self.start]

    def _adopt_reopened_log(self, floor: int) -> None:
        """After a crash the log holds a prefix of the model at least as long as what was flushed."""
        end = self.log.log_end_offset
        assert floor <= end <= self.end, (floor, end, self.end)
        self.entries = [e for e in self.entries if e.last < end]
        self.end = end
        assert self.log.log_start_offset == self.start

    # -- appends -------------------------------------------------------------------------------------

    @rule(count=st.integers(1, 4), records=st.integers(1, 5), gap=st.sampled_from([0, 0, 0, 3]),
          bump_epoch=st.booleans(), value_size=st.integers(1, 120), presplit=st.booleans())
    def append_mirrored(self, count: int, records: int, gap: int, bump_epoch: bool, value_size: int, presplit: bool) -> None:
        if bump_epoch:
            self.epoch += 1
        blobs, offset = [], self.end + gap
        for _ in range(count):
            self.ts += 7
            blobs.append(batch(offset, records, epoch=self.epoch, ts=self.ts, value_size=value_size))
            offset += records
        data = b"".join(blobs)
        # The link hands over the batches it already cut from the Fetch response; both ways must agree.
        result = self.log.append_mirrored(data, split_batches(data).batches if presplit else None)
        assert result.base_offset == self.end + gap and result.last_offset == offset - 1
        for i, blob in enumerate(blobs):
            base = self.end + gap + i * records
            self.entries.append(Entry(base, base + records - 1, blob))
        self.end = offset

    @rule(records=st.integers(1, 5), damage=st.integers(61, 100))
    def append_mirrored_corrupt_is_all_or_nothing(self, records: int, damage: int) -> None:
        good = batch(self.end, records, epoch=self.epoch, ts=self.ts)
        bad = bytearray(batch(self.end + records, records, epoch=self.epoch, ts=self.ts))
        bad[min(damage, len(bad) - 1)] ^= 0x40
        try:
            self.log.append_mirrored(good + bytes(bad))
        except CorruptBatch:
            pass
        else:
            raise AssertionError("a corrupt batch was accepted")

    @rule(records=st.integers(1, 5), epoch_step=st.integers(0, 1), value_size=st.integers(1, 200))
    def append_assigned(self, records: int, epoch_step: int, value_size: int) -> None:
        self.epoch += epoch_step
        self.ts += 5
        produced = batch(0, records, epoch=0, ts=self.ts, value_size=value_size)
        result = self.log.append_assigned(produced, self.epoch, self.ts)
        assert result.base_offset == self.end and not result.duplicate
        expected = struct.pack(">q", self.end) + produced[8:12] + struct.pack(">i", self.epoch) + produced[16:]
        self.entries.append(Entry(self.end, self.end + records - 1, expected))
        self.end += records

    # -- reads ---------------------------------------------------------------------------------------

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data(), max_bytes=st.integers(0, 1500), bounded=st.booleans())
    def read(self, data: st.DataObject, max_bytes: int, bounded: bool) -> None:
        offset = data.draw(st.integers(self.start, self.end - 1))
        upper = data.draw(st.integers(offset, self.end)) if bounded else None
        result = self.log.read(offset, max_bytes, upper)
        expected, size = [], 0
        for e in self.entries:
            if e.last < offset:
                continue
            if upper is not None and e.last >= upper:
                break
            if expected and size + len(e.data) > max_bytes:
                break
            expected.append(e.data)
            size += len(e.data)
        assert result.to_bytes() == b"".join(expected)

    # -- cutting -------------------------------------------------------------------------------------

    @precondition(lambda self: self.end > self.start)
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start, self.end))
        self.log.truncate_to(offset)
        self.entries = [e for e in self.entries if e.last < offset]
        kept_end = self.entries[-1].last + 1 if self.entries else None
        if kept_end is not None and kept_end > self.start:
            assert self.log.log_end_offset == kept_end
        else:
            assert self.start <= self.log.log_end_offset <= max(offset, self.start)
        self.end = self.log.log_end_offset
        self.log.flush()
        self._mark_durable()

    @rule(data=st.data())
    def advance_start(self, data: st.DataObject) -> None:
        offset = data.draw(st.integers(self.start, self.end))
        self.log.advance_log_start(offset)
        self.start = offset
        self.log.flush()
        self._mark_durable()

    @rule(keep=st.integers(0, 2000))
    def retention_by_size(self, keep: int) -> None:
        from dataclasses import replace

        self.log.config = replace(self.log.config, retention_bytes=keep)
        self.log.apply_retention(BASE_TS)
        self.log.config = replace(self.log.config, retention_bytes=-1)
        assert self.start <= self.log.log_start_offset <= self.end
        self.start = self.log.log_start_offset
        sizes = [s.size for s in self.log._segments]
        assert len(sizes) == 1 or sum(sizes) - sizes[0] < keep  # Kafka's rule: delete while what is left >= keep
        self.log.flush()
        self._mark_durable()

    # -- durability ----------------------------------------------------------------------------------

    @rule()
    def flush(self) -> None:
        assert self.log.flush() == self.end
        self._mark_durable()

    @rule()
    def reopen_clean(self) -> None:
        self.log.close()
        self.log = open_log(self.tmp, **CONFIG)
        assert self.log.log_end_offset == self.end

    @rule()
    def crash_process(self) -> None:
        """kill -9: the page cache keeps every write."""
        self.log.abandon()
        self.log = open_log(self.tmp, **CONFIG)
        assert self.log.log_end_offset == self.end

    @rule(keep_fraction=st.floats(0, 1))
    def crash_power(self, keep_fraction: float) -> None:
        """Power loss: only what was fsynced survives, plus a torn prefix of the active segment's tail."""
        self.log.abandon()
        live = log_dir(self.tmp)
        durable = self.tmp / "durable"
        segments = sorted(live.glob("*.log"))
        tail = b""
        if segments:
            last = segments[-1]
            flushed = durable / last.name
            flushed_size = flushed.stat().st_size if flushed.exists() else 0
            data = last.read_bytes()
            if flushed.exists() and data[:flushed_size] == flushed.read_bytes():
                extra = data[flushed_size:]
                tail = extra[: int(len(extra) * keep_fraction)]
        shutil.rmtree(live)
        shutil.copytree(durable, live)
        if tail:
            with open(live / segments[-1].name, "ab") as f:
                f.write(tail)
        self.log = open_log(self.tmp, **CONFIG)
        self._adopt_reopened_log(self.durable_end)

    @rule(data=st.data())
    def crash_with_flipped_byte(self, data: st.DataObject) -> None:
        """A byte of unflushed data in the active segment goes bad: recovery cuts at its batch."""
        self.log.abandon()
        last = sorted(log_dir(self.tmp).glob("*.log"))[-1]
        flushed = self.tmp / "durable" / last.name
        flushed_size = flushed.stat().st_size if flushed.exists() else 0
        size = last.stat().st_size
        # Only bytes under the CRC: baseOffset and partitionLeaderEpoch lie outside it in Kafka's format.
        covered, position = [], 0
        content = last.read_bytes()
        while position + 12 <= size:
            end = position + 12 + int.from_bytes(content[position + 8 : position + 12], "big")
            if position >= flushed_size:
                covered.append((position + 17, end))
            position = end
        if covered:
            start, end = data.draw(st.sampled_from(covered))
            position = data.draw(st.integers(start, end - 1))
            with open(last, "r+b") as f:
                f.seek(position)
                byte = f.read(1)
                f.seek(position)
                f.write(bytes([byte[0] ^ 0x01]))
        self.log = open_log(self.tmp, **CONFIG)
        self._adopt_reopened_log(self.durable_end)

    # -- invariants ----------------------------------------------------------------------------------

    @invariant()
    def contents_match_the_model(self) -> None:
        if not hasattr(self, "log"):
            return
        assert self.log.log_start_offset == self.start
        assert self.log.log_end_offset == self.end
        visible = self._visible()
        if self.end > self.start:
            assert self.log.read(self.start, 1 << 30).to_bytes() == b"".join(e.data for e in visible)
        assert self.log.latest_epoch <= self.epoch

    @invariant()
    def readers_see_what_the_writer_left(self) -> None:
        """After every operation the published view is the writer's state (no change forgot to publish)."""
        if not hasattr(self, "log"):
            return
        log, view = self.log, self.log.view
        assert [(v.segment, v.size, v.next_offset) for v in view.segments] == [(s, s.size, s.next_offset) for s in log._segments]
        assert view.bases == tuple(log._bases)
        assert (view.log_start, view.log_end, view.closed) == (log._log_start, log._log_end, log._closed)
        assert view.epochs.epochs == tuple(e.epoch for e in log._epochs.entries())


# LINKD_LOG_MODEL_EXAMPLES: a longer hunt (e.g. 2000, with several --hypothesis-seed values) before a storage change lands.
LogModel.TestCase.settings = settings(max_examples=int(os.environ.get("LINKD_LOG_MODEL_EXAMPLES", "60")), stateful_step_count=30, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
TestPartitionLogAgainstModel = LogModel.TestCase
