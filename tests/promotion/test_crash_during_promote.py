"""linkd SIGKILLed at random moments during promote: after a restart the mirror is consistent, either
still a mirror (and promote then succeeds) or fully promoted, and the mirrored bytes are intact."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time

import pytest

from tests.peers.rawclient import fetch_raw, list_offsets

from .helpers import cli_json, create_topic, mirror, produce

pytestmark = pytest.mark.timeout(300)


def test_sigkill_during_promote_leaves_mirror_or_promoted_never_in_between(linkd_factory):
    rng = random.Random(int(os.environ.get("LINKD_CRASH_SEED", "1234")))
    source = linkd_factory()
    dest = linkd_factory()
    topics = [f"crash-{i}" for i in range(4)]
    for topic in topics:
        create_topic(source.bootstrap, topic, 2)
        produce(source.bootstrap, topic, 400, 2, prefix=topic)
    mirror(dest, "l", source.bootstrap, topics)
    outcomes = []
    for topic in topics:
        env = dict(os.environ, LINKD_ADMIN=dest.admin_address)
        promote = subprocess.Popen([sys.executable, "-m", "linkd", "mirror", "promote", topic, "--json"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(rng.uniform(0.3, 1.2))  # the CLI takes ~0.3 s to start; kill before, during or after
        dest.kill()
        promote.communicate(timeout=30)
        dest.start()
        described, _ = cli_json(dest, "mirror", "describe", topic)
        state = described["mirror_status"]
        outcomes.append(state)
        assert state in ("ACTIVE", "STOPPED", "SOURCE_UNAVAILABLE"), described
        if state != "STOPPED":
            results, _ = cli_json(dest, "mirror", "promote", topic, "--timeout", "30")
            assert results[0]["mirror_status"] == "STOPPED", results
        # Fully promoted now: writable, offsets continue from the mirrored end, mirrored bytes intact.
        ends = {p: list_offsets(source.bootstrap, topic, p)[1] for p in range(2)}
        for p in range(2):
            assert fetch_raw(dest.bootstrap, topic, p, 0, ends[p]) == fetch_raw(source.bootstrap, topic, p, 0, ends[p])
        delivered = produce(dest.bootstrap, topic, 2, 2, prefix="after")
        assert sorted(delivered) == [(0, ends[0]), (1, ends[1])]
        again, _ = cli_json(dest, "mirror", "describe", topic)
        assert again["mirror_status"] == "STOPPED"
    print("states found after each crash:", outcomes)
