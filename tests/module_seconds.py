"""Seconds each test module took in a full run, for the order in which xdist hands modules to workers.

``--dist loadfile`` gives each worker whole modules. By default xdist hands out the modules with the most
tests first, which puts the slowest modules (one or two long integration tests each) last, where one of
them keeps a single worker busy while the other idles. tests/conftest.py instead orders modules slowest
first (longest-processing-time first), by the seconds in ``module_seconds.json``, and the Makefile turns
xdist's own reordering off (``--no-loadscope-reorder``). A module missing from the file counts as
``UNKNOWN_SECONDS``: new integration tests are the likely slow ones. A stale file costs balance, never
correctness.

Refresh after a full run: ``make test PYTEST_ARGS=--junitxml=/tmp/run.xml`` then
``.venv/bin/python tests/module_seconds.py /tmp/run.xml``.
"""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

FILE = Path(__file__).with_name("module_seconds.json")
UNKNOWN_SECONDS = 30.0


def load() -> dict[str, float]:
    try:
        return json.loads(FILE.read_text())
    except (OSError, ValueError):
        return {}


def from_junit(path: str) -> dict[str, float]:
    seconds: Counter[str] = Counter()
    for case in ET.parse(path).getroot().iter("testcase"):
        parts = case.get("classname", "").split(".")
        for i, part in enumerate(parts):
            if part.startswith("test_"):
                seconds["/".join(parts[: i + 1]) + ".py"] += float(case.get("time") or 0)
                break
    return {module: round(s, 1) for module, s in sorted(seconds.items())}


if __name__ == "__main__":
    FILE.write_text(json.dumps(from_junit(sys.argv[1]), indent=0, sort_keys=True) + "\n")
    print(f"wrote {FILE}")
