"""Mirror creations asked for together share their source round trips and their commit (creations.py), each
still answered on its own, and every answered one survives a SIGKILL of the daemon right after."""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from linkd.adminclient import AdminClient, AdminClientError
from tests.link.mirroring import admin, create_link, wait_for
from tests.promotion.helpers import create_topic

pytestmark = pytest.mark.timeout(120)

CREATIONS = 16


def _counter(daemon, name: str, labels: str = "", before_first: float | None = None) -> float:
    """A counter from ``daemon``'s /metrics; ``before_first`` when a labelled one has not been counted yet."""
    text = httpx.get(f"{daemon.admin_url}/metrics", timeout=10).text
    found = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    if found is None and before_first is not None:
        return before_first
    assert found, f"{name}{labels} not in /metrics"
    return float(found.group(1))


def test_concurrent_creations_are_answered_each_on_its_own_and_all_survive_a_sigkill_right_after(linkd_factory):
    source = linkd_factory()
    dest = linkd_factory()
    topics = [f"many-{i:02d}" for i in range(CREATIONS)]
    for t in topics:
        create_topic(source.bootstrap, t, 2)
    client = admin(dest)
    create_link(client, "l", source.bootstrap, **{"cluster.link.paused": "true"})

    def create(topic: str) -> str:
        own = AdminClient(dest.admin_address, timeout=60)
        try:
            return own.create_mirror(topic, "l")["mirror_topic_name"] if topic != "many-05" else own.create_mirror("bad/name", "l", topic)
        except AdminClientError as exc:
            return f"refused: {exc}"
        finally:
            own.close()

    with ThreadPoolExecutor(CREATIONS + 1) as pool:
        answers = list(pool.map(create, [*topics, "absent-topic"]))

    # A bad creation is refused alone; the others that shared its batch are created.
    assert answers[5].startswith("refused") and "bad/name" in answers[5], answers[5]
    assert answers[-1].startswith("refused") and "does not exist" in answers[-1], answers[-1]
    created = [t for t in topics if t != "many-05"]
    assert answers[:5] + answers[6:-1] == created

    dest.kill()  # right after the last answer: nothing had a chance to flush or checkpoint
    dest.start()
    client = admin(dest)
    listed = {m["mirror_topic_name"]: m for m in client.list_mirrors("l")}
    assert sorted(listed) == created
    assert all(len(m["mirror_lags"]) == 2 for m in listed.values())


def test_an_auto_create_round_reads_its_new_topics_and_commits_them_together(linkd_factory):
    source = linkd_factory()  # linkd as the source: its /metrics counts the requests the link sends it
    dest = linkd_factory()
    topics = [f"auto-{i:02d}" for i in range(CREATIONS)]
    for t in topics:
        create_topic(source.bootstrap, t, 1)
    metadata = _counter(source, "linkd_requests_total", '{api="Metadata"}')
    configs = _counter(source, "linkd_requests_total", '{api="DescribeConfigs"}', before_first=0.0)
    commits = _counter(dest, "linkd_control_store_commits_total")
    client = admin(dest)
    filters = json.dumps({"topicFilters": [{"name": "auto-", "patternType": "PREFIXED", "filterType": "INCLUDE"}]})
    create_link(client, "auto", source.bootstrap, **{"auto.create.mirror.topics.enable": "true", "auto.create.mirror.topics.filters": filters,
                                                      "metadata.max.age.ms": "60000"})  # one auto-create round in this test
    wait_for(lambda: len(client.list_mirrors("auto")) == CREATIONS, 60, "every topic auto-mirrored")
    assert sorted(client.describe_link("auto")["auto_create"]["created"]) == topics
    # Kafka's partition.metadata (for its tools) follows the answers, off their path.
    wait_for(lambda: all((dest.data_dir / "logs" / f"{t}-0" / "partition.metadata").exists() for t in topics), 20, "partition.metadata written")

    # Mirror after mirror, that was a Metadata, a DescribeConfigs and a commit each: 16 of every kind.
    # Now a batch of them (besides the link's own start: its validation, first refresh and config sync).
    assert _counter(source, "linkd_requests_total", '{api="DescribeConfigs"}') - configs <= 3
    assert _counter(source, "linkd_requests_total", '{api="Metadata"}') - metadata <= 6
    assert _counter(dest, "linkd_control_store_commits_total") - commits <= 6
