"""kcat (librdkafka's command-line client, Debian package ``kcat``): produce, consume, list metadata."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.broker.clients import create_topic

KCAT = shutil.which("kcat") or shutil.which("kafkacat")
pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat is not installed (apt-get install kcat)")


def _kcat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([KCAT, *args], input=stdin, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.timeout(90)
def test_kcat_produces_consumes_and_lists_metadata(linkd, unique_topic):
    create_topic(linkd.bootstrap, unique_topic, partitions=2)
    lines = [f"k{i}:v{i}" for i in range(500)]
    produced = _kcat("-b", linkd.bootstrap, "-P", "-t", unique_topic, "-K:", "-z", "snappy", "-X", "enable.idempotence=true", stdin="\n".join(lines) + "\n")
    assert produced.returncode == 0, produced.stderr

    consumed = _kcat("-b", linkd.bootstrap, "-C", "-t", unique_topic, "-e", "-f", "%p %o %k %s\n")
    assert consumed.returncode == 0, consumed.stderr
    rows = [line.split(" ") for line in consumed.stdout.splitlines()]
    assert sorted(f"{k}:{v}" for _p, _o, k, v in rows) == sorted(lines)
    per_partition: dict[str, list[int]] = {}
    for partition, offset, _k, _v in rows:
        per_partition.setdefault(partition, []).append(int(offset))
    assert all(offsets == list(range(len(offsets))) for offsets in per_partition.values())

    listed = _kcat("-b", linkd.bootstrap, "-L", "-J", "-t", unique_topic)
    assert listed.returncode == 0, listed.stderr
    (topic,) = json.loads(listed.stdout)["topics"]
    assert topic["topic"] == unique_topic and [p["partition"] for p in topic["partitions"]] == [0, 1]
