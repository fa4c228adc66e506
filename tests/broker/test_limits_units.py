"""Pure pieces of the limits (linkd/broker/limits.py) and the registry's all-or-nothing creation, in process."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from linkd.broker.limits import AcceptRate, ByteBudget, LimitConfigError, Limits, parse_ip_overrides
from linkd.controlstore import ControlStore
from linkd.topics import TopicError, TopicRegistry, validate_topic_name
from protocol.errors import ErrorCode


@pytest.fixture
def registry(tmp_path):
    store = ControlStore(tmp_path / "control.db")
    reg = TopicRegistry(store, tmp_path / "logs")
    yield reg
    reg.close()
    store.close()


def _rows(registry: TopicRegistry) -> list[str]:
    return [r["name"] for r in registry._store.query("SELECT name FROM topics")]


def test_byte_budget_lets_small_requests_past_a_waiting_large_one():
    async def main():
        budget = ByteBudget(100 << 20, small=1 << 20, reserve=16 << 20)
        first = await budget.acquire(60 << 20)
        order = []

        async def large():
            got = await budget.acquire(60 << 20)
            order.append("large")
            budget.release(got)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(large)
            await trio.testing.wait_all_tasks_blocked()
            small = await budget.acquire(1000)  # does not queue behind the large frame
            order.append("small")
            budget.release(small)
            assert order == ["small"] and budget.waits == 1
            budget.release(first)
        assert order == ["small", "large"] and budget.in_use == 0 and budget.peak == (60 << 20) + 1000

    trio.run(main)


def test_byte_budget_keeps_a_reserve_for_small_requests():
    async def main():
        budget = ByteBudget(100 << 20, small=1 << 20, reserve=16 << 20)
        held = await budget.acquire(40 << 20)
        with trio.move_on_after(0.1) as scope:
            await budget.acquire(50 << 20)  # would leave less than the reserve
        assert scope.cancelled_caught
        small = await budget.acquire(1 << 20)
        budget.release(small)
        budget.release(held)
        assert await budget.acquire(200 << 20) == 100 << 20  # never more than the whole budget

    trio.run(main)


def test_accept_rate_delays_past_the_rate():
    rate = AcceptRate(3)
    assert [rate.delay(10.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rate.delay(10.5) == pytest.approx(0.5)
    assert rate.delay(11.0) == 0.0
    assert AcceptRate(None).delay(0.0) == 0.0


def test_limits_validation_names_the_setting():
    with pytest.raises(LimitConfigError, match="queued.max.request.bytes"):
        Limits(queued_max_request_bytes=10).validated()
    with pytest.raises(LimitConfigError, match="max.connections must be positive"):
        Limits(max_connections=0).validated()
    assert Limits(fd_headroom=100).with_descriptor_defaults(1100).max_partitions == 250
    assert Limits(max_partitions=7).with_descriptor_defaults(1100).max_partitions == 7


def test_ip_overrides_parse_as_kafka_writes_them():
    assert parse_ip_overrides("127.0.0.2:4, ::1:9") == {"127.0.0.2": 4, "::1": 9}
    with pytest.raises(LimitConfigError, match="not an IP address"):
        parse_ip_overrides("somehost:3")
    with pytest.raises(LimitConfigError, match="HOST:COUNT"):
        parse_ip_overrides("127.0.0.1")
    assert Limits(max_connections_per_ip=2, max_connections_per_ip_overrides={"127.0.0.2": 4}).per_ip_limit("127.0.0.2") == 4


@pytest.mark.parametrize("name", ["ok\n", "a b", "x" * 250, "", ".", "..", "é"])
def test_illegal_names(name):
    with pytest.raises(TopicError) as info:
        validate_topic_name(name)
    assert info.value.error_code == ErrorCode.INVALID_TOPIC_EXCEPTION


def test_a_failed_creation_leaves_no_row_and_no_directory(registry):
    blocker = registry.data_dir / "t-3"
    blocker.write_text("not a partition directory")  # rmtree of a file fails: partition 3 cannot be made
    with pytest.raises(TopicError) as info:
        registry.create("t", 6)
    assert info.value.error_code == ErrorCode.KAFKA_STORAGE_ERROR and "t-3" in info.value.message
    assert _rows(registry) == [] and registry.get("t") is None
    assert sorted(p.name for p in registry.data_dir.iterdir()) == ["t-3"]
    blocker.unlink()
    assert len(registry.create("t", 6).logs) == 6
    assert _rows(registry) == ["t"]


def test_budget_is_checked_before_the_disk(registry):
    registry.max_partitions = 10
    registry.max_partitions_per_topic = 8
    with pytest.raises(TopicError) as info:
        registry.create("big", 9)
    assert info.value.error_code == ErrorCode.INVALID_PARTITIONS
    registry.create("a", 8)
    with pytest.raises(TopicError) as info:
        registry.create("b", 3)
    assert info.value.error_code == ErrorCode.POLICY_VIOLATION
    with pytest.raises(TopicError):
        registry.add_partitions("a", 11)
    assert sorted(p.name for p in registry.data_dir.iterdir()) == [f"a-{p}" for p in range(8)]


def test_concurrent_async_creations_reserve_their_name_and_partitions(registry):
    registry.max_partitions = 300

    async def main():
        results = {}

        async def create(key, name, partitions):
            try:
                results[key] = len((await registry.create_async(name, partitions)).logs)
            except TopicError as exc:
                results[key] = exc.error_code

        async with trio.open_nursery() as nursery:
            nursery.start_soon(create, "first", "x.y", 200)
            await trio.lowlevel.checkpoint()  # the first one is in its worker thread now
            nursery.start_soon(create, "same", "x.y", 1)
            nursery.start_soon(create, "collides", "x_y", 1)
            nursery.start_soon(create, "over", "z", 150)
        return results

    assert trio.run(main) == {
        "first": 200,
        "same": ErrorCode.TOPIC_ALREADY_EXISTS,
        "collides": ErrorCode.INVALID_TOPIC_EXCEPTION,
        "over": ErrorCode.POLICY_VIOLATION,
    }
    assert registry.partition_count() == 200


def test_internal_names_are_reserved(registry):
    for name in ("__consumer_offsets", "__anything"):
        with pytest.raises(TopicError) as info:
            registry.create(name, 1)
        assert info.value.error_code == ErrorCode.INVALID_REQUEST and "internal" in info.value.message


def test_a_cancelled_async_creation_is_whole_or_absent(registry):
    async def main():
        with trio.move_on_after(0.01):
            await registry.create_async("c", 200)

    trio.run(main)
    topic = registry.get("c")
    on_disk = sorted(p.name for p in registry.data_dir.iterdir())
    if topic is None:
        assert _rows(registry) == [] and on_disk == []
    else:
        assert _rows(registry) == ["c"] and len(topic.logs) == 200 and len(on_disk) == 200
    assert registry.partition_count() == (200 if topic else 0)  # no reservation left behind
