"""docs/runbook-failover.md shows what the commands print: its examples are replayed here, in the same
situation (orders: 2 partitions of 500 records, payments: 1 of 300, link primary), and compared with
what `linkd` prints, line for line for tables and messages, and key for key for JSON."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from protocol.records import split_batches
from tests.link.mirroring import admin, produce_confluent, wait_for, wait_mirrored
from tests.peers.rawclient import fetch_raw

RUNBOOK = Path(__file__).resolve().parents[2] / "docs" / "runbook-failover.md"

pytestmark = pytest.mark.timeout(180)


def _examples() -> list[tuple[str, str]]:
    """(command, printed) for every ``$ linkd ...`` in the runbook's code blocks, in order."""
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", RUNBOOK.read_text(), re.S):
        for part in re.split(r"^\$ ", block, flags=re.M)[1:]:
            command, _, printed = part.partition("\n")
            out.append((command.strip(), printed))
    return out


def _json_blocks() -> list[str]:
    return re.findall(r"```json\n(.*?)```", RUNBOOK.read_text(), re.S)


def _covers(shown, actual, where: str = "") -> None:
    """Everything the runbook shows is in the actual output with the same value (lists: a prefix, since
    the runbook abbreviates them with '...')."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{where}: {actual!r} is not an object"
        for key, value in shown.items():
            assert key in actual, f"{where}.{key} is in the runbook, not in linkd's output {sorted(actual)}"
            _covers(value, actual[key], f"{where}.{key}")
    elif isinstance(shown, list):
        assert isinstance(actual, list) and len(actual) >= len(shown), f"{where}: {actual!r}"
        for i, (s, a) in enumerate(zip(shown, actual, strict=False)):
            _covers(s, a, f"{where}[{i}]")
    else:
        assert shown == actual, f"{where}: runbook shows {shown!r}, linkd printed {actual!r}"


def _parse_shown_json(text: str):
    return json.loads(re.sub(r",\s*\.\.\.\s*\]", "]", text))


def _timeless(lines: list[str]) -> list[str]:
    """Ages ("seen 3.1s before the stop") depend on the run's timing and batch counts on the producer's
    batching (checked against the source separately); everything else must match."""
    lines = [re.sub(r"seen \d+(\.\d+)?s", "seen Ns", line) for line in lines]
    return [re.sub(r"identical, \d+ batches, \d+ bytes", "identical, N batches, M bytes", line) for line in lines]


def test_the_runbook_examples_are_what_linkd_prints(kafka_broker_factory, linkd, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # lost-records writes its --output relative to the working directory
    source = kafka_broker_factory()
    source.create_topic("orders", 2)
    source.create_topic("payments", 1)
    produce_confluent(source.bootstrap, "orders", [(p, None, b"o%d" % i) for p in range(2) for i in range(500)])
    produce_confluent(source.bootstrap, "payments", [(0, None, b"p%d" % i) for i in range(300)])
    client = admin(linkd)
    client.create_link("primary", {"bootstrap.servers": source.bootstrap, "retry.backoff.max.ms": "500", "metadata.max.age.ms": "1000"})
    client.create_mirror("orders", "primary")
    client.create_mirror("payments", "primary")
    wait_mirrored(client, "orders", {0: 500, 1: 500})
    wait_mirrored(client, "payments", {0: 300})
    wait_for(lambda: all(p["lag"] == 0 for m in ("orders", "payments") for p in client.describe_mirror(m)["partitions"]), 30, "lag 0")

    examples = _examples()
    commands = [c for c, _ in examples]
    assert commands == [
        "linkd mirror list", "linkd mirror describe orders", "linkd mirror promote orders", "linkd mirror verify orders",
        "linkd mirror promote payments --timeout 5", "echo $?", "linkd mirror failover payments",
        "linkd mirror failover payments --json", "linkd mirror describe payments --json",
        "linkd mirror lost-records payments --output lost.jsonl --decode",
    ], "the runbook's examples changed: update this replay"
    status = None
    for command, printed in examples:
        if command == "echo $?":
            assert printed.strip() == str(status)
            continue
        if command.startswith("linkd mirror promote payments"):
            # The disaster part: 20 records reach the source that the mirror sees there but never gets
            # (held back here by a pause), then the source is gone.
            client.mirror_action("pause", ["payments"])
            produce_confluent(source.bootstrap, "payments", [(0, None, b"late%d" % i) for i in range(20)])
            wait_for(lambda: client.describe_mirror("payments")["mirror_lags"][0]["source_high_watermark"] == 320, 30, "the source's end seen")
            source.stop()
            client.mirror_action("resume", ["payments"])
            wait_for(lambda: client.describe_mirror("payments")["mirror_status"] == "SOURCE_UNAVAILABLE", 30, "the link to notice")
        if command == "linkd mirror describe payments --json":
            source.start()  # the source comes back: reconciliation finds the lost range
            wait_for(lambda: client.describe_mirror("payments")["lost_offsets"], 40, "reconciliation")
        result = linkd.cli(*command.split()[1:])
        status = result.returncode
        if command.endswith("--json"):
            _covers(_parse_shown_json(printed), json.loads(result.stdout), command)
            continue
        actual = [line.rstrip() for line in (result.stdout + result.stderr).splitlines()]
        assert _timeless(actual) == _timeless(printed.rstrip("\n").splitlines()), f"{command}: linkd printed\n" + "\n".join(actual)
    # verify's batch and byte counts are the source's own.
    verified = json.loads(linkd.cli("mirror", "verify", "orders", "--json").stdout)
    for p in verified["partitions"]:
        source_bytes = fetch_raw(source.bootstrap, "orders", p["partition"], 0, 500)
        assert (p["identical"], p["batches"], p["bytes"]) == (True, len(split_batches(source_bytes).batches), len(source_bytes))
    lost = [json.loads(line) for line in (tmp_path / "lost.jsonl").read_text().splitlines()]
    assert [(r["offset"], r["value"]) for r in lost] == [(300 + i, f"late{i}") for i in range(20)]
    # The JSON of a promote (shown without a command line) is what `promote orders --json` prints now.
    promote_json = next(block for block in _json_blocks() if '"stop_kind": "promote"' in block)
    _covers(_parse_shown_json(promote_json), json.loads(linkd.cli("mirror", "promote", "orders", "--json").stdout), "promote --json")
