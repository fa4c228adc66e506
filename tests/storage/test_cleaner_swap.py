"""A crash at every step of a cleaned segment's swap: on reopen the log holds either the old segments or the
cleaned one over the whole range, never a mix, and no swap file is left behind."""

from __future__ import annotations

import os
import shutil
import types

import pytest

from linkd.storage import swap
from linkd.storage.cleaner import CleanerConfig, clean_log
from protocol.records import BatchSpec, NewRecord, build_batch, split_batches
from tests.storage.helpers import BASE_TS, log_dir, open_log

CONFIG = dict(segment_bytes=700, segment_ms=2, index_interval_bytes=64, cleanup_policy=("compact",), min_cleanable_dirty_ratio=0.0)
NOW = BASE_TS + 10_000


class Crash(Exception):
    pass


class _Steps:
    """Counts the file-system changes the swap makes and raises ``Crash`` instead of making change ``at``."""

    def __init__(self, at: int | None) -> None:
        self.at, self.count, self.names = at, 0, []

    def step(self, name: str) -> None:
        if self.count == self.at:
            raise Crash(name)
        self.names.append(name)
        self.count += 1

    def wrap(self, name, fn):
        def wrapped(*args, **kwargs):
            self.step(f"{name}{tuple(os.path.basename(str(a)) for a in args)}")
            return fn(*args, **kwargs)
        return wrapped


_ORIGINAL_ATOMIC_WRITE, _ORIGINAL_FSYNC_DIR = swap.atomic_write, swap.fsync_dir


@pytest.fixture
def instrument(monkeypatch):
    # The crashes simulated are process deaths (the page cache survives), so real fsyncs would only be slow.
    monkeypatch.setattr("os.fsync", lambda fd: None)

    def install(at: int | None) -> _Steps:
        steps = _Steps(at)
        fake_os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
        fake_os.path = os.path
        fake_os.rename = steps.wrap("rename", os.rename)
        fake_os.replace = steps.wrap("replace", os.replace)
        fake_os.unlink = steps.wrap("unlink", os.unlink)
        monkeypatch.setattr(swap, "os", fake_os)
        monkeypatch.setattr(swap, "atomic_write", steps.wrap("atomic_write", _ORIGINAL_ATOMIC_WRITE))
        monkeypatch.setattr(swap, "fsync_dir", steps.wrap("fsync_dir", _ORIGINAL_FSYNC_DIR))
        return steps
    return install


def _fill(directory) -> None:
    log = open_log(directory, **CONFIG)
    offset = 0
    for i in range(24):
        records = [NewRecord(key=b"k%d" % ((i + j) % 4), value=b"v%d-%d" % (i, j), timestamp=BASE_TS + i) for j in range(3)]
        log.append_mirrored(build_batch(BatchSpec(base_offset=offset, records=records)))
        offset += 3 + (i % 3 == 0)  # some gaps too
    log.close()


def _content(directory) -> bytes:
    log = open_log(directory, **CONFIG)
    try:
        data = log.read(log.log_start_offset, 1 << 30).to_bytes()
        for batch in split_batches(data).batches:
            batch.verify()
        return data
    finally:
        log.close()


def _leftovers(directory) -> list[str]:
    return sorted(n for n in os.listdir(log_dir(directory)) if n.endswith((".cleaned", ".swap", ".swap-range")))


def _by_range(data: bytes, ranges) -> list[bytes]:
    """The bytes of ``data``'s batches within each [base, end) of ``ranges``, then those after the last."""
    batches = split_batches(data).batches
    out = [b"".join(bytes(b) for b in batches if base <= b.base_offset < end) for base, end in ranges]
    out.append(b"".join(bytes(b) for b in batches if b.base_offset >= ranges[-1][1]))
    return out


def test_a_crash_at_any_step_of_the_swap_recovers_to_the_old_or_the_cleaned_segments(tmp_path, instrument, monkeypatch):
    pristine = tmp_path / "pristine"
    _fill(pristine)
    old = _content(pristine)

    reference = tmp_path / "reference"
    shutil.copytree(pristine, reference)
    log = open_log(reference, **CONFIG)
    steps = instrument(None)
    ranges = []
    commit = swap.commit
    monkeypatch.setattr(swap, "commit", lambda d, base, end: (ranges.append((base, end)), commit(d, base, end)))
    stats = clean_log(log, NOW, CleanerConfig(), force=True)
    monkeypatch.setattr(swap, "commit", commit)
    assert stats is not None and stats.segments_in >= 2 and stats.segments_out < stats.segments_in
    log.close()
    cleaned = _content(reference)
    assert cleaned != old and len(cleaned) < len(old)
    total = steps.count
    commit_points = [i for i, name in enumerate(steps.names) if name.startswith("rename") and ".log.cleaned" in name]
    assert total > 10 and commit_points

    outcomes = []
    for at in range(total):
        run = tmp_path / f"crash-{at}"
        shutil.copytree(pristine, run)
        log = open_log(run, **CONFIG)
        instrument(at)
        with pytest.raises(Crash):
            clean_log(log, NOW, CleanerConfig(), force=True)
        log.abandon()  # the process dies here: no flush, no clean-shutdown marker
        instrument(None)
        after = _content(run)
        assert _leftovers(run) == [], f"crash before step {at} left {_leftovers(run)}"
        # Each group's range holds its old batches or its cleaned ones, cleaned groups first.
        states = []
        for got, was, now in zip(_by_range(after, ranges), _by_range(old, ranges), _by_range(cleaned, ranges), strict=True):
            assert got in (was, now), f"crash before step {at} ({steps.names[at]}) left a mix"
            states.append("cleaned" if got == now and got != was else "old")
        assert states[:-1] == sorted(states[:-1]), f"crash before step {at}: groups {states}"
        # A swap commits once its .log is renamed to .swap: before that old, from then on cleaned.
        done = sum(1 for point in commit_points if point < at)
        assert states[:done] == ["cleaned"] * done and "cleaned" not in states[done:len(ranges)], (at, states)
        outcomes.append(after == cleaned)
        # The recovered log keeps cleaning to the same result.
        log = open_log(run, **CONFIG)
        clean_log(log, NOW, CleanerConfig(), force=True)
        log.close()
        assert _content(run) == cleaned
        shutil.rmtree(run)
    assert any(outcomes) and not all(outcomes)


def test_recovery_without_the_range_file_uses_the_cleaned_segments_end(tmp_path, instrument):
    """A committed swap whose range file is gone (not something this code leaves) still completes."""
    _fill(tmp_path)
    log = open_log(tmp_path, **CONFIG)
    steps = instrument(None)
    clean_log(log, NOW, CleanerConfig(), force=True)
    log.abandon()
    names = steps.names
    first_complete = next(i for i, n in enumerate(names) if n.startswith("unlink") or n.startswith("replace"))
    run = tmp_path / "run"
    _fill(run)
    log = open_log(run, **CONFIG)
    instrument(first_complete)
    with pytest.raises(Crash):
        clean_log(log, NOW, CleanerConfig(), force=True)
    log.abandon()
    for name in os.listdir(log_dir(run)):
        if name.endswith(".swap-range"):
            os.unlink(log_dir(run) / name)
    instrument(None)
    data = _content(run)
    assert _leftovers(run) == []
    offsets = [b.base_offset for b in split_batches(data).batches]
    assert offsets == sorted(set(offsets))
