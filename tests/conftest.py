"""Fixtures for real peers (see tests/peers/ and /work/shared/peers.md).

* ``kafka_broker``       session: one Apache Kafka 4.1 KRaft broker for the whole run; give each test its own topics.
* ``kafka_broker_factory`` function: private brokers for tests that stop, kill or reconfigure one.
* ``tansu_broker``       module: one Tansu broker per test module (in-memory; restart comes back empty).
* ``linkd`` / ``linkd_factory`` function: the daemon under test as a subprocess.
* ``unique_topic``       function: a topic name nobody else in this session uses.

A peer that cannot run here (no JDK, no Maven, no tansu binary) skips its tests locally and fails them
under CI (``CI=true``), where every peer must be present.
"""

from __future__ import annotations

import os
import re
import time
import uuid

import pytest

from tests.peers import PeerUnavailable

_PEER_MARKERS = {
    "kafka_broker": "kafka",
    "kafka_broker_factory": "kafka",
    "tansu_broker": "tansu",
    "java_client": "java",
}


def running_under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def peer_unavailable(reason: str):
    """Skip locally; fail under CI, where a missing peer means the tests it serves silently stop running."""
    if running_under_ci():
        pytest.fail(f"required test peer unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"test peer unavailable: {reason}")


def pytest_configure(config):
    # kafka-python 3.x loads its JSON schemas with a deprecated importlib.resources call, 109 times per run.
    config.addinivalue_line("filterwarnings", "ignore:.*is deprecated. Use files:DeprecationWarning")
    from tests.peers import kafka

    kafka.use_test_jvm_opts()  # C1-only JIT for the brokers tests start (see tests/peers/kafka.py)


def pytest_collection_modifyitems(config, items):
    # Tests are marked by the peers they use, so `-m "not kafka"` works without anyone remembering to mark.
    for item in items:
        for fixture_name, marker in _PEER_MARKERS.items():
            if fixture_name in getattr(item, "fixturenames", ()):
                item.add_marker(getattr(pytest.mark, marker))
    _slowest_modules_first(items)


def _slowest_modules_first(items) -> None:
    """Order whole modules by their last measured duration, slowest first (see tests/module_seconds.py),
    so that xdist's ``--dist loadfile`` ends the run on short modules instead of a long one. Within a
    module the order is unchanged; the sort depends only on the collected ids, so every xdist worker
    collects the same order."""
    from tests import module_seconds

    seconds = module_seconds.load()
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(item.nodeid.split("::", 1)[0], len(first_seen))

    def key(item) -> tuple[float, int]:
        module = item.nodeid.split("::", 1)[0]
        return (-seconds.get(module, module_seconds.UNKNOWN_SECONDS), first_seen[module])

    items.sort(key=key)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    timings = config.stash.get(_peer_timings_key, None)
    if timings:
        terminalreporter.write_sep("-", "real peers")
        for line in timings:
            terminalreporter.write_line(line)


_peer_timings_key = pytest.StashKey[list]()


def _note(config, line: str) -> None:
    config.stash.setdefault(_peer_timings_key, []).append(line)


@pytest.fixture
def unique_topic(request) -> str:
    """``t-<test name>-<8 hex>``: readable in broker logs, unique across tests, sessions and parametrizations."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:60]
    return f"t-{base}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_broker(request):
    from tests.peers.kafka import KafkaBroker, ensure_kafka_libs

    try:
        started = time.monotonic()
        ensure_kafka_libs()
        resolve_seconds = time.monotonic() - started
        broker = KafkaBroker()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    try:
        broker.start()
    except Exception:
        broker.close()
        raise
    _note(request.config, f"kafka_broker {broker.bootstrap}: jars ready in {resolve_seconds:.1f}s, broker up in {broker.startup_seconds:.1f}s")
    yield broker
    broker.close()


@pytest.fixture
def kafka_broker_factory(request):
    """``make(extra_config=None, start=True) -> KafkaBroker``; every broker made is closed after the test."""
    from tests.peers.kafka import KafkaBroker, ensure_kafka_libs

    made = []
    try:
        ensure_kafka_libs()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))

    def make(extra_config: dict[str, str] | None = None, start: bool = True) -> KafkaBroker:
        broker = KafkaBroker(extra_config=extra_config)
        made.append(broker)
        return broker.start() if start else broker

    yield make
    for broker in made:
        broker.close()


@pytest.fixture(scope="module")
def tansu_broker():
    from tests.peers.tansu import TansuBroker

    try:
        broker = TansuBroker()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    with broker:
        yield broker


@pytest.fixture
def linkd_factory():
    """``make(**LinkdProcess kwargs) -> LinkdProcess`` (started); all are stopped after the test."""
    from tests.peers.linkd import LinkdProcess

    made = []

    def make(start: bool = True, **kwargs) -> LinkdProcess:
        daemon = LinkdProcess(**kwargs)
        made.append(daemon)
        return daemon.start() if start else daemon

    yield make
    for daemon in made:
        daemon.close()


@pytest.fixture
def linkd(linkd_factory):
    return linkd_factory()


@pytest.fixture(scope="session")
def java_client():
    """The compiled reference Java client (tests/peers/javaclient); see tests.peers.java."""
    from tests.peers import java

    try:
        return java.ensure_compiled()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
