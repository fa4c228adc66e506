"""A small file system a test can fill: a tmpfs mounted for the test (root only; skipped otherwise)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def small_tmpfs(size: str, prefix: str = "linkd-smallfs-") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "16m") on a fresh directory; unmounted and removed afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = Path(tempfile.mkdtemp(prefix=prefix))
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True).returncode:
        os.rmdir(mount)
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        os.rmdir(mount)


def fill(path: Path) -> None:
    """Write ``path`` until its file system has no byte left (largest pieces first, then single bytes)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
