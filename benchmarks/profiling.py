"""Sampling linkd with py-spy (from PyPI, in the ``bench`` extra) and summarising the collapsed stacks."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path


def py_spy_binary() -> str:
    local = Path(sys.executable).with_name("py-spy")
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("py-spy is not installed: pip install -e '.[bench]'")
    return found


class PySpy:
    """``py-spy record`` attached to a running process; ``stop()`` makes it write the profile."""

    def __init__(self, pid: int, out: Path, log: Path, rate: int = 200) -> None:
        self.argv = [py_spy_binary(), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "--nolineno", "--nonblocking", "-o", str(out)]
        self.out = out
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self) -> PySpy:
        self.process = subprocess.Popen(self.argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115
        time.sleep(0.5)  # attached before the work starts
        if self.process.poll() is not None:
            raise RuntimeError(f"py-spy exited at once (status {self.process.returncode}); see {self.log}")
        return self

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.process = None


def _short(frame: str) -> str:
    """``fn (path/to/linkd/storage/log.py)`` -> ``linkd/storage/log.py:fn``."""
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    for marker in ("/linkd/", "/protocol/", "/trio/", "/site-packages/", "/lib/python3"):
        if marker in where:
            where = marker.strip("/") + "/" + where.split(marker, 1)[1]
            break
    return f"{where}:{name}" if where else name


def summarize(path: Path, top: int = 12) -> dict:
    """Self (leaf) and inclusive sample shares per function, from py-spy's raw collapsed-stack output.

    Shares are of the event-loop thread's samples, the one that bounds linkd's throughput; samples of
    trio's worker threads (the periodic fsync of the logs) are counted apart, since they run outside the
    GIL most of the time.
    """
    self_counts: Counter = Counter()
    inclusive: Counter = Counter()
    total = workers = 0
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_short(f) for f in stack.split(";")[1:]]  # the first frame names the thread
        if not frames:
            continue
        if any("_thread_cache.py" in f for f in frames):
            workers += n
            continue
        total += n
        self_counts[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    share = (lambda c: round(100.0 * c / total, 1)) if total else (lambda c: 0.0)
    boring = ("trio/", "<module>", "<frozen", "linkd/cli.py", "linkd/daemon.py")
    return {
        "samples": total,
        "worker_thread_samples": workers,
        "self": [{"function": f, "percent": share(c)} for f, c in self_counts.most_common(top)],
        "inclusive": [{"function": f, "percent": share(c)} for f, c in inclusive.most_common(top * 4) if not any(f.startswith(b) for b in boring)][:top],
    }
