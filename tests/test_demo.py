"""The README's main command, `make demo` (`linkd demo` with no source), runs end to end: a throwaway
source, a mirror, `mirror verify` proving it byte-identical, a promotion and a produce that continues the
offsets. It exits non-zero if any step fails, so this test fails with it."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.timeout(180)
def test_the_demo_mirrors_verifies_and_promotes(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "linkd", "demo", "--records", "20000"],
        capture_output=True, text=True, timeout=170, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Byte-identical" in result.stdout
    assert "offsets continue at" in result.stdout
