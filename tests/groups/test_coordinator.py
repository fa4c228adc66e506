"""GroupCoordinator: the classic rebalance protocol, offsets, admin APIs.

Timing-dependent tests run under trio's MockClock with autojump, so "wait 30 s for the rebalance
timeout" costs nothing; the model-based test drives a fake clock and the timer step by hand.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from linkd.controlstore import ControlStore
from linkd.groups.coordinator import (
    TRANSITIONS,
    GroupConfig,
    GroupCoordinator,
    GroupEvent,
    GroupState,
    IllegalTransition,
    next_state,
)
from protocol.errors import ErrorCode as E

SESSION_MS = 10_000
REBALANCE_MS = 30_000
RANGE = [{"name": "range", "metadata": b"range-meta"}]


def join_body(group: str, member_id: str = "", *, protocols=None, instance: str | None = None, ptype: str = "consumer") -> dict:
    return {
        "group_id": group,
        "session_timeout_ms": SESSION_MS,
        "rebalance_timeout_ms": REBALANCE_MS,
        "member_id": member_id,
        "group_instance_id": instance,
        "protocol_type": ptype,
        "protocols": RANGE if protocols is None else protocols,
        "reason": None,
    }


def sync_body(group: str, member_id: str, generation: int, assignments: dict[str, bytes] | None = None) -> dict:
    return {
        "group_id": group,
        "generation_id": generation,
        "member_id": member_id,
        "group_instance_id": None,
        "protocol_type": "consumer",
        "protocol_name": None,
        "assignments": [{"member_id": m, "assignment": a} for m, a in (assignments or {}).items()],
    }


def hb_body(group: str, member_id: str, generation: int) -> dict:
    return {"group_id": group, "generation_id": generation, "member_id": member_id, "group_instance_id": None}


def commit_body(group: str, member_id: str, generation: int, offsets: dict[tuple[str, int], int], epoch: int = -1) -> dict:
    topics: dict[str, list] = {}
    for (topic, partition), offset in offsets.items():
        topics.setdefault(topic, []).append(
            {
                "partition_index": partition,
                "committed_offset": offset,
                "committed_leader_epoch": epoch,
                "committed_metadata": None,
            }
        )
    return {
        "group_id": group,
        "generation_id_or_member_epoch": generation,
        "member_id": member_id,
        "group_instance_id": None,
        "topics": [{"name": t, "partitions": ps} for t, ps in topics.items()],
    }


def commit_errors(response: dict) -> set[int]:
    return {p["error_code"] for t in response["topics"] for p in t["partitions"]}


@pytest.fixture
def store(tmp_path):
    s = ControlStore(tmp_path / "control.db")
    yield s
    s.close()


def scenario(store: ControlStore, test: Callable[[GroupCoordinator], Awaitable[None]], **kwargs: Any) -> None:
    """Run ``test`` with a coordinator whose timer task is running, on a virtual clock (a virtual hour at most)."""

    async def main() -> None:
        coordinator = GroupCoordinator(store, **kwargs)
        with trio.fail_after(3600):
            async with trio.open_nursery() as nursery:
                await nursery.start(coordinator.run)
                await test(coordinator)
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


async def gather(*calls: Callable[[], Awaitable[Any]]) -> list[Any]:
    results: list[Any] = [None] * len(calls)

    async def one(i: int) -> None:
        results[i] = await calls[i]()

    async with trio.open_nursery() as nursery:
        for i in range(len(calls)):
            nursery.start_soon(one, i)
    return results


async def new_member_id(c: GroupCoordinator, group: str, client: str = "client") -> str:
    r = await c.join_group(join_body(group), 9, client_id=client)
    assert r["error_code"] == E.MEMBER_ID_REQUIRED and r["member_id"].startswith(f"{client}-")
    return r["member_id"]


async def rebalance(c: GroupCoordinator, group: str, member_ids: list[str], version: int = 9) -> tuple[list[dict], list[dict]]:
    """All members join concurrently, then sync (the leader assigns b'<member id>'); returns both responses.

    In a Stable group a follower's rejoin alone gets the current generation back, so the join that opens the
    join phase (the leader's, else a newcomer's) is sent first and the others once it is parked."""
    snap = c.group_snapshot(group)
    trigger = None
    if snap is not None and snap.state is GroupState.STABLE:
        current = {m.member_id for m in snap.members}
        trigger = snap.leader_id if snap.leader_id in member_ids else next((m for m in member_ids if m not in current), None)
    joins: list[Any] = [None] * len(member_ids)

    async def join(i: int) -> None:
        joins[i] = await c.join_group(join_body(group, member_ids[i]), version, client_id="client")

    async with trio.open_nursery() as nursery:
        order = sorted(range(len(member_ids)), key=lambda i: member_ids[i] != trigger)
        for i in order:
            nursery.start_soon(join, i)
            if member_ids[i] == trigger:
                await trio.testing.wait_all_tasks_blocked()
    leader = joins[0]["leader"]
    generation = joins[0]["generation_id"]
    assignments = {m: m.encode() for m in member_ids}
    syncs = await gather(
        *[lambda m=m: c.sync_group(sync_body(group, m, generation, assignments if m == leader else None), 5) for m in member_ids]
    )
    return joins, syncs


async def form_group(c: GroupCoordinator, group: str, n: int) -> list[str]:
    ids = [await new_member_id(c, group, f"client{i}") for i in range(n)]
    await rebalance(c, group, ids)
    return ids


async def leader_and_follower(c: GroupCoordinator, group: str) -> tuple[str, str]:
    """A Stable two-member group; the leader's rejoin opens a join phase, the follower's does not."""
    a, b = await form_group(c, group, 2)
    return (a, b) if c.group_snapshot(group).leader_id == a else (b, a)


# ---------------------------------------------------------------- rebalance protocol


@pytest.mark.parametrize("n", [2, 3])
def test_members_joining_concurrently_get_one_generation_one_leader_and_their_assignments(store, n):
    async def test(c: GroupCoordinator) -> None:
        ids = [await new_member_id(c, "g", f"client{i}") for i in range(n)]
        joins, syncs = await rebalance(c, "g", ids)
        assert {j["error_code"] for j in joins} == {0}
        assert {j["generation_id"] for j in joins} == {1}
        assert len({j["leader"] for j in joins}) == 1
        leader = joins[0]["leader"]
        assert leader in ids
        for j in joins:
            assert j["protocol_type"] == "consumer" and j["protocol_name"] == "range" and j["skip_assignment"] is False
            if j["member_id"] == leader:
                assert {m["member_id"] for m in j["members"]} == set(ids)
                assert {m["metadata"] for m in j["members"]} == {b"range-meta"}
            else:
                assert j["members"] == []
        assert [s["assignment"] for s in syncs] == [m.encode() for m in ids]
        assert {s["error_code"] for s in syncs} == {0}
        assert c.group_snapshot("g").state is GroupState.STABLE

    scenario(store, test)


def test_new_member_joining_a_stable_group_makes_heartbeats_ask_for_a_rebalance(store):
    async def test(c: GroupCoordinator) -> None:
        a, b = await form_group(c, "g", 2)
        assert (await c.heartbeat(hb_body("g", a, 1), 4))["error_code"] == E.NONE
        newcomer = await new_member_id(c, "g", "late")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.join_group, join_body("g", newcomer), 9)
            await trio.testing.wait_all_tasks_blocked()
            assert c.group_snapshot("g").state is GroupState.PREPARING_REBALANCE
            for m in (a, b):
                assert (await c.heartbeat(hb_body("g", m, 1), 4))["error_code"] == E.REBALANCE_IN_PROGRESS
            nursery.cancel_scope.cancel()  # the newcomer's parked join is re-sent by rebalance() below
        joins, syncs = await rebalance(c, "g", [a, b, newcomer])
        assert {j["generation_id"] for j in joins} == {2}
        assert [s["assignment"] for s in syncs] == [a.encode(), b.encode(), newcomer.encode()]
        assert (await c.heartbeat(hb_body("g", a, 1), 4))["error_code"] == E.ILLEGAL_GENERATION
        assert (await c.heartbeat(hb_body("g", a, 2), 4))["error_code"] == E.NONE

    scenario(store, test)


def test_rejoin_of_a_stable_follower_gets_the_current_generation_without_a_rebalance(store):
    # kafka-python 3 re-sends JoinGroup when a join outlived its poll() timeout; a rebalance per such join
    # kept a mixed group rebalancing for ever (every rebalance outlived the next poll timeout).
    async def test(c: GroupCoordinator) -> None:
        leader, follower = await leader_and_follower(c, "g")
        r = await c.join_group(join_body("g", follower), 9)
        assert (r["error_code"], r["generation_id"], r["leader"], r["members"]) == (E.NONE, 1, leader, [])
        assert c.group_snapshot("g").state is GroupState.STABLE
        assert (await c.heartbeat(hb_body("g", leader, 1), 4))["error_code"] == E.NONE
        s = await c.sync_group(sync_body("g", follower, 1), 5)
        assert (s["error_code"], s["assignment"]) == (E.NONE, follower.encode())

    scenario(store, test)


def test_rejoin_of_a_stable_leader_starts_a_rebalance_and_keeps_its_leadership(store):
    async def test(c: GroupCoordinator) -> None:
        leader, follower = await leader_and_follower(c, "g")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.join_group, join_body("g", leader), 9)
            await trio.testing.wait_all_tasks_blocked()
            assert c.group_snapshot("g").state is GroupState.PREPARING_REBALANCE
            assert (await c.heartbeat(hb_body("g", follower, 1), 4))["error_code"] == E.REBALANCE_IN_PROGRESS
            nursery.cancel_scope.cancel()
        joins, _ = await rebalance(c, "g", [follower, leader])
        assert {j["generation_id"] for j in joins} == {2}
        assert {j["leader"] for j in joins} == {leader}

    scenario(store, test)


def test_rejoin_of_a_stable_follower_with_new_metadata_starts_a_rebalance(store):
    async def test(c: GroupCoordinator) -> None:
        _leader, follower = await leader_and_follower(c, "g")
        changed = [{"name": "range", "metadata": b"now-subscribed-to-more"}]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(c.join_group, join_body("g", follower, protocols=changed), 9)
            await trio.testing.wait_all_tasks_blocked()
            assert c.group_snapshot("g").state is GroupState.PREPARING_REBALANCE
            nursery.cancel_scope.cancel()

    scenario(store, test)


@pytest.mark.parametrize("version", [0, 2, 3, 5])
def test_leave_group_triggers_a_rebalance_for_the_rest(store, version):
    async def test(c: GroupCoordinator) -> None:
        a, b, d = await form_group(c, "g", 3)
        if version <= 2:
            body = {"group_id": "g", "member_id": b}
        else:
            body = {"group_id": "g", "members": [{"member_id": b, "group_instance_id": None, "reason": "bye"}]}
        r = await c.leave_group(body, version)
        assert r["error_code"] == E.NONE
        if version >= 3:
            assert r["members"] == [{"member_id": b, "group_instance_id": None, "error_code": 0}]
        assert (await c.heartbeat(hb_body("g", a, 1), 4))["error_code"] == E.REBALANCE_IN_PROGRESS
        assert (await c.heartbeat(hb_body("g", b, 1), 4))["error_code"] == E.UNKNOWN_MEMBER_ID
        joins, syncs = await rebalance(c, "g", [a, d])
        assert {j["generation_id"] for j in joins} == {2}
        assert {s["error_code"] for s in syncs} == {0}

    scenario(store, test)


def test_leave_of_unknown_members_reports_per_member_errors_and_keeps_the_group_stable(store):
    async def test(c: GroupCoordinator) -> None:
        await form_group(c, "g", 1)
        r = await c.leave_group({"group_id": "g", "members": [{"member_id": "ghost", "group_instance_id": None}]}, 4)
        assert r["members"][0]["error_code"] == E.UNKNOWN_MEMBER_ID
        assert (await c.leave_group({"group_id": "nope", "member_id": "ghost"}, 1))["error_code"] == E.UNKNOWN_MEMBER_ID
        assert c.group_snapshot("g").state is GroupState.STABLE

    scenario(store, test)


def test_last_member_leaving_empties_the_group(store):
    async def test(c: GroupCoordinator) -> None:
        (a,) = await form_group(c, "g", 1)
        await c.leave_group({"group_id": "g", "member_id": a}, 1)
        snap = c.group_snapshot("g")
        assert snap.state is GroupState.EMPTY and snap.members == () and snap.generation_id == 2
        assert [g["group_state"] for g in (await c.list_groups({}, 4))["groups"]] == ["Empty"]
        await trio.sleep(601)  # an Empty group without offsets is forgotten after the retention time
        assert c.group_snapshot("g") is None and (await c.list_groups({}, 4))["groups"] == []

    scenario(store, test)


def test_members_the_leader_leaves_out_get_an_empty_assignment(store):
    async def test(c: GroupCoordinator) -> None:
        ids = [await new_member_id(c, "g") for _ in range(2)]
        joins = await gather(*[lambda m=m: c.join_group(join_body("g", m), 9) for m in ids])
        leader = joins[0]["leader"]
        syncs = await gather(
            *[lambda m=m: c.sync_group(sync_body("g", m, 1, {leader: b"all"} if m == leader else None), 5) for m in ids]
        )
        assert {s["assignment"] for s in syncs} == {b"all", b""}
        assert c.group_snapshot("g").state is GroupState.STABLE

    scenario(store, test)


def test_session_expiry_removes_a_silent_member_and_rebalances_the_rest(store):
    async def test(c: GroupCoordinator) -> None:
        a, silent = await form_group(c, "g", 2)
        errors = []
        for _ in range(5):  # a heartbeats every 3 s, the other stays silent past its 10 s session
            await trio.sleep(3)
            errors.append((await c.heartbeat(hb_body("g", a, 1), 4))["error_code"])
        assert errors[:3] == [E.NONE] * 3 and errors[-1] == E.REBALANCE_IN_PROGRESS
        assert [m.member_id for m in c.group_snapshot("g").members] == [a]
        joins, syncs = await rebalance(c, "g", [a])
        assert joins[0]["leader"] == a and joins[0]["generation_id"] == 2
        assert (await c.heartbeat(hb_body("g", silent, 1), 4))["error_code"] == E.UNKNOWN_MEMBER_ID

    scenario(store, test)


def test_rebalance_timeout_completes_the_join_with_the_members_that_rejoined(store):
    async def test(c: GroupCoordinator) -> None:
        a, b = await leader_and_follower(c, "g")  # a leads: its rejoin opens the join phase
        start = trio.current_time()
        # b keeps heartbeating (so it is not expired) but never rejoins.
        async with trio.open_nursery() as nursery:

            async def heartbeats() -> None:
                while True:
                    await c.heartbeat(hb_body("g", b, 1), 4)
                    await trio.sleep(3)

            nursery.start_soon(heartbeats)
            joined = await c.join_group(join_body("g", a), 9)
            nursery.cancel_scope.cancel()
        assert joined["error_code"] == E.NONE and joined["generation_id"] == 2
        assert trio.current_time() - start == pytest.approx(REBALANCE_MS / 1000)
        assert [m["member_id"] for m in joined["members"]] == [a]

    scenario(store, test)


def test_a_leader_that_never_syncs_is_dropped_and_followers_are_told_to_rejoin(store):
    async def test(c: GroupCoordinator) -> None:
        ids = [await new_member_id(c, "g", f"c{i}") for i in range(2)]
        joins = await gather(*[lambda m=m: c.join_group(join_body("g", m), 9) for m in ids])
        leader = joins[0]["leader"]
        (follower,) = [m for m in ids if m != leader]
        r = await c.sync_group(sync_body("g", follower, 1), 5)  # parks until the sync deadline
        assert r["error_code"] == E.REBALANCE_IN_PROGRESS
        assert [m.member_id for m in c.group_snapshot("g").members] == [follower]

    scenario(store, test)


def test_member_id_required_from_join_v4_and_not_before(store):
    async def test(c: GroupCoordinator) -> None:
        r = await c.join_group(join_body("g"), 4, client_id="rdkafka")
        assert r["error_code"] == E.MEMBER_ID_REQUIRED and r["generation_id"] == -1
        assert r["member_id"].startswith("rdkafka-") and r["protocol_name"] == ""
        assert c.group_snapshot("g").members == ()
        r = await c.join_group(join_body("g", r["member_id"]), 4)
        assert r["error_code"] == E.NONE and r["leader"] == r["member_id"]
        old = await c.join_group(join_body("g2"), 3, client_id="old")  # v3: the id comes with the join itself
        assert old["error_code"] == E.NONE and old["member_id"].startswith("old-")
        unknown = await c.join_group(join_body("g", "made-up"), 9)
        assert unknown["error_code"] == E.UNKNOWN_MEMBER_ID and unknown["protocol_name"] is None

    scenario(store, test)


def test_inconsistent_protocols_are_rejected(store):
    async def test(c: GroupCoordinator) -> None:
        (a,) = await form_group(c, "g", 1)
        other = [{"name": "roundrobin", "metadata": b""}]
        r = await c.join_group(join_body("g", await new_member_id(c, "g"), protocols=other), 9)
        assert r["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
        r = await c.join_group(join_body("g", await new_member_id(c, "g"), ptype="connect"), 9)
        assert r["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
        r = await c.join_group(join_body("fresh", protocols=[]), 9)
        assert r["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
        assert (await c.heartbeat(hb_body("g", a, 1), 4))["error_code"] == E.NONE  # no rebalance caused

    scenario(store, test)


def test_the_protocol_all_members_support_with_most_first_choices_wins(store):
    async def test(c: GroupCoordinator) -> None:
        sticky_first = [
            {"name": "sticky", "metadata": b"s"},
            {"name": "range", "metadata": b"r"},
            {"name": "rr", "metadata": b""},
        ]
        range_first = [{"name": "range", "metadata": b"r"}, {"name": "sticky", "metadata": b"s"}]
        choices = (sticky_first, range_first, sticky_first)  # "rr" is not common; sticky gets 2 first-choice votes
        ids = [await new_member_id(c, "g") for _ in choices]
        joins = await gather(
            *[lambda m=m, p=p: c.join_group(join_body("g", m, protocols=p), 9) for m, p in zip(ids, choices, strict=True)]
        )
        assert {j["protocol_name"] for j in joins} == {"sticky"}
        (leader,) = [j for j in joins if j["members"]]
        assert [m["metadata"] for m in leader["members"]] == [b"s"] * 3

    scenario(store, test)


def test_sync_group_errors(store):
    async def test(c: GroupCoordinator) -> None:
        a, b = await form_group(c, "g", 2)
        assert (await c.sync_group(sync_body("g", "ghost", 1), 5))["error_code"] == E.UNKNOWN_MEMBER_ID
        assert (await c.sync_group(sync_body("nope", a, 1), 5))["error_code"] == E.UNKNOWN_MEMBER_ID
        assert (await c.sync_group(sync_body("g", a, 7), 5))["error_code"] == E.ILLEGAL_GENERATION
        late = await c.sync_group(sync_body("g", b, 1), 5)  # Stable: the current assignment again
        assert late == {
            "error_code": 0,
            "protocol_type": "consumer",
            "protocol_name": "range",
            "assignment": b.encode(),
            "throttle_time_ms": 0,
        }
        wrong = dict(sync_body("g", a, 1), protocol_name="sticky")
        assert (await c.sync_group(wrong, 5))["error_code"] == E.INCONSISTENT_GROUP_PROTOCOL
        await c.leave_group({"group_id": "g", "member_id": b}, 0)
        assert (await c.sync_group(sync_body("g", a, 1), 5))["error_code"] == E.REBALANCE_IN_PROGRESS

    scenario(store, test)


def test_invalid_group_id_and_session_timeout(store):
    async def test(c: GroupCoordinator) -> None:
        assert (await c.join_group(join_body(""), 9))["error_code"] == E.INVALID_GROUP_ID
        assert (await c.join_group(dict(join_body("g"), session_timeout_ms=10), 9))["error_code"] == E.INVALID_SESSION_TIMEOUT
        assert (await c.heartbeat(hb_body("", "m", 1), 4))["error_code"] == E.INVALID_GROUP_ID

    scenario(store, test)


def test_a_cancelled_join_leaves_no_parked_state_behind(store):
    async def test(c: GroupCoordinator) -> None:
        a, b = await leader_and_follower(c, "g")  # a leads: its rejoin opens the join phase
        with trio.move_on_after(1):  # a's connection dies while its join is parked waiting for b
            await c.join_group(join_body("g", a), 9)
        joins, syncs = await rebalance(c, "g", [a, b])
        assert {j["generation_id"] for j in joins} == {2} and {s["error_code"] for s in syncs} == {0}

    scenario(store, test)


def test_static_member_restart_gets_its_assignment_back_without_a_rebalance(store):
    async def test(c: GroupCoordinator) -> None:
        first = await gather(
            lambda: c.join_group(join_body("g", instance="host-1"), 9, client_id="app"),
            lambda: c.join_group(join_body("g", instance="host-2"), 9, client_id="app"),
        )
        ids = [j["member_id"] for j in first]
        assert all(j["error_code"] == E.NONE for j in first) and ids[0].startswith("host-1-")
        leader = first[0]["leader"]
        await gather(
            *[
                lambda m=m: c.sync_group(sync_body("g", m, 1, {i: i.encode() for i in ids} if m == leader else None), 5)
                for m in ids
            ]
        )
        # host-2 restarts: no member id, same instance id.
        again = await c.join_group(join_body("g", instance="host-2"), 9, client_id="app")
        assert again["error_code"] == E.NONE and again["generation_id"] == 1 and again["member_id"] != ids[1]
        assert again["leader"] == leader and again["members"] == []
        r = await c.sync_group(sync_body("g", again["member_id"], 1), 5)
        assert r["assignment"] == ids[1].encode()
        assert c.group_snapshot("g").state is GroupState.STABLE
        stale = dict(hb_body("g", ids[1], 1), group_instance_id="host-2")
        assert (await c.heartbeat(stale, 4))["error_code"] == E.FENCED_INSTANCE_ID

    # Static members get no MEMBER_ID_REQUIRED round trip, so without the initial delay the first one
    # would complete a generation alone before the second arrives (as with Kafka's delay at 0).
    scenario(store, test, config=GroupConfig(initial_rebalance_delay_ms=1000))


# ---------------------------------------------------------------- offsets


def test_commits_from_a_stale_generation_or_unknown_member_are_rejected(store):
    async def test(c: GroupCoordinator) -> None:
        a, b = await form_group(c, "g", 2)
        await rebalance(c, "g", [a, b])  # generation 2
        assert commit_errors(await c.offset_commit(commit_body("g", a, 1, {("t", 0): 5}), 9)) == {E.ILLEGAL_GENERATION}
        assert commit_errors(await c.offset_commit(commit_body("g", "ghost", 2, {("t", 0): 5}), 9)) == {E.UNKNOWN_MEMBER_ID}
        assert commit_errors(await c.offset_commit(commit_body("g", "", -1, {("t", 0): 5}), 9)) == {E.UNKNOWN_MEMBER_ID}
        assert commit_errors(await c.offset_commit(commit_body("g", a, 2, {("t", 0): 5}), 9)) == {E.NONE}
        assert commit_errors(await c.offset_commit(commit_body("other", "x", 3, {("t", 0): 5}), 9)) == {E.ILLEGAL_GENERATION}
        assert c.committed_offsets("g") == {("t", 0): (5, -1, "")}

    scenario(store, test)


def test_standalone_commits_are_accepted_only_while_the_group_has_no_members(store):
    async def test(c: GroupCoordinator) -> None:
        assert commit_errors(await c.offset_commit(commit_body("solo", "", -1, {("t", 1): 9}, epoch=3), 8)) == {E.NONE}
        assert c.committed_offsets("solo") == {("t", 1): (9, 3, "")}
        listed = await c.list_groups({}, 3)
        assert listed["groups"] == [{"group_id": "solo", "protocol_type": "", "group_state": "Empty", "group_type": "classic"}]

    scenario(store, test)


def test_commit_of_unknown_partition_or_oversized_metadata_is_refused(store):
    async def test(c: GroupCoordinator) -> None:
        body = commit_body("g", "", -1, {("t", 0): 1, ("t", 5): 1})
        body["topics"][0]["partitions"][0]["committed_metadata"] = "x" * 5000
        r = await c.offset_commit(body, 9)
        assert [p["error_code"] for p in r["topics"][0]["partitions"]] == [
            E.OFFSET_METADATA_TOO_LARGE,
            E.UNKNOWN_TOPIC_OR_PARTITION,
        ]
        assert c.committed_offsets("g") == {}

    scenario(store, test, partition_exists=lambda topic, partition: partition < 3)


def test_committed_offsets_survive_a_new_coordinator_on_the_same_store(tmp_path):
    path = tmp_path / "control.db"
    store = ControlStore(path)

    async def before(c: GroupCoordinator) -> None:
        (a,) = await form_group(c, "g", 1)
        body = commit_body("g", a, 1, {("t", 0): 17}, epoch=4)
        body["topics"][0]["partitions"][0]["committed_metadata"] = "hello"
        assert commit_errors(await c.offset_commit(body, 9)) == {E.NONE}

    scenario(store, before)
    store.close()
    store = ControlStore(path)

    async def after(c: GroupCoordinator) -> None:
        r = await c.offset_fetch({"group_id": "g", "topics": None, "require_stable": False}, 7)
        assert r["topics"] == [
            {
                "name": "t",
                "topic_id": None,
                "partitions": [
                    {
                        "partition_index": 0,
                        "committed_offset": 17,
                        "committed_leader_epoch": 4,
                        "metadata": "hello",
                        "error_code": 0,
                    }
                ],
            }
        ]
        assert c.group_snapshot("g") is None  # membership is not persisted: clients rejoin
        assert (await c.heartbeat(hb_body("g", "whoever", 1), 4))["error_code"] == E.UNKNOWN_MEMBER_ID

    scenario(store, after)
    store.close()


def test_offset_fetch_v7_and_v8_shapes(store):
    async def test(c: GroupCoordinator) -> None:
        await c.offset_commit(commit_body("g1", "", -1, {("t", 0): 10, ("u", 2): 20}, epoch=1), 9)
        await c.offset_commit(commit_body("g2", "", -1, {("t", 0): 30}), 9)
        r7 = await c.offset_fetch(
            {"group_id": "g1", "topics": [{"name": "t", "partition_indexes": [0, 1]}], "require_stable": True}, 7
        )
        assert r7["error_code"] == 0 and r7["throttle_time_ms"] == 0
        assert r7["topics"] == [
            {
                "name": "t",
                "topic_id": None,
                "partitions": [
                    {"partition_index": 0, "committed_offset": 10, "committed_leader_epoch": 1, "metadata": "", "error_code": 0},
                    {"partition_index": 1, "committed_offset": -1, "committed_leader_epoch": -1, "metadata": "", "error_code": 0},
                ],
            }
        ]
        r8 = await c.offset_fetch(
            {
                "groups": [
                    {"group_id": "g1", "member_id": None, "member_epoch": -1, "topics": None},
                    {"group_id": "g2", "topics": [{"name": "t", "partition_indexes": [0]}]},
                    {"group_id": "nobody", "topics": None},
                ],
                "require_stable": False,
            },
            8,
        )
        assert "topics" not in r8
        g1, g2, nobody = r8["groups"]
        assert g1["group_id"] == "g1" and g1["error_code"] == 0
        assert [(t["name"], [p["committed_offset"] for p in t["partitions"]]) for t in g1["topics"]] == [("t", [10]), ("u", [20])]
        assert g2["topics"][0]["partitions"][0]["committed_offset"] == 30
        assert nobody == {"group_id": "nobody", "topics": [], "error_code": 0}

    scenario(store, test)


# ---------------------------------------------------------------- admin APIs and the link's offset sync


def test_describe_list_and_delete_groups(store):
    async def test(c: GroupCoordinator) -> None:
        a, b = await form_group(c, "busy", 2)
        await c.offset_commit(commit_body("idle", "", -1, {("t", 0): 1}), 9)
        d = await c.describe_groups({"groups": ["busy", "idle", "nope"], "include_authorized_operations": False}, 5)
        busy, idle, nope = d["groups"]
        assert (busy["group_state"], busy["protocol_type"], busy["protocol_data"]) == ("Stable", "consumer", "range")
        assert sorted(
            (m["member_id"], m["client_id"], m["member_metadata"], m["member_assignment"]) for m in busy["members"]
        ) == [
            (a, "client", b"range-meta", a.encode()),
            (b, "client", b"range-meta", b.encode()),
        ]
        assert (idle["group_state"], idle["members"], idle["error_code"]) == ("Empty", [], 0)
        assert (nope["group_state"], nope["error_code"]) == ("Dead", 0)

        everything = await c.list_groups({"states_filter": [], "types_filter": []}, 5)
        assert [(g["group_id"], g["group_state"]) for g in everything["groups"]] == [("busy", "Stable"), ("idle", "Empty")]
        stable = await c.list_groups({"states_filter": ["stable"]}, 4)
        assert [g["group_id"] for g in stable["groups"]] == ["busy"]
        assert (await c.list_groups({"types_filter": ["consumer"]}, 5))["groups"] == []

        r = await c.delete_groups({"groups_names": ["busy", "idle", "nope"]}, 2)
        assert [x["error_code"] for x in r["results"]] == [E.NON_EMPTY_GROUP, E.NONE, E.GROUP_ID_NOT_FOUND]
        assert c.committed_offsets("idle") == {}
        await c.leave_group({"group_id": "busy", "members": [{"member_id": a}, {"member_id": b}]}, 3)
        assert (await c.delete_groups({"groups_names": ["busy"]}, 0))["results"][0]["error_code"] == E.NONE
        assert (await c.list_groups({}, 0))["groups"] == []
        # A deleted group id can be used again from scratch.
        (fresh,) = await form_group(c, "busy", 1)
        assert c.group_snapshot("busy").generation_id == 1

    scenario(store, test)


def test_synced_offsets_are_stored_only_for_groups_without_live_members(store):
    async def test(c: GroupCoordinator) -> None:
        assert not c.has_live_members("g")
        assert c.store_synced_offsets("g", {("t", 0): (100, 5, None), ("t", 1): (7, -1, "m")})
        assert c.committed_offsets("g") == {("t", 0): (100, 5, ""), ("t", 1): (7, -1, "m")}
        (a,) = await form_group(c, "g", 1)
        assert c.has_live_members("g")
        assert not c.store_synced_offsets("g", {("t", 0): (200, 5, None)})
        assert c.committed_offsets("g")[("t", 0)] == (100, 5, "")
        assert c.delete_topic_offsets("t") == 2 and c.committed_offsets("g") == {}
        stats = c.statistics()
        assert (stats.groups, stats.members, stats.rebalances, stats.commits) == (1, 1, 1, 2)

    scenario(store, test)


def test_initial_rebalance_delay_holds_the_first_generation(store):
    async def test(c: GroupCoordinator) -> None:
        start = trio.current_time()
        joined = await c.join_group(join_body("g", await new_member_id(c, "g")), 9)
        assert joined["error_code"] == E.NONE and trio.current_time() - start == pytest.approx(3)

    scenario(store, test, config=GroupConfig(initial_rebalance_delay_ms=3000))


# ---------------------------------------------------------------- the transition table


@pytest.mark.parametrize("state,event", list(itertools.product(GroupState, GroupEvent)))
def test_every_state_event_pair_is_in_the_table_or_refused(state, event):
    if (state, event) in TRANSITIONS:
        assert next_state(state, event) is TRANSITIONS[(state, event)]
    else:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


def test_dead_is_terminal_and_only_reachable_from_empty():
    assert not any(s is GroupState.DEAD for s, _ in TRANSITIONS)
    assert {s for (s, _), t in TRANSITIONS.items() if t is GroupState.DEAD} == {GroupState.EMPTY}


# ---------------------------------------------------------------- model-based test


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class GroupMachine(RuleBasedStateMachine):
    """Clients join/sync/heartbeat/leave/go silent/commit; the model is what well-behaved clients believe.

    Each rule is one ``trio.run`` that drives every call it makes to completion; time is a fake clock the
    rules advance and ``expire_due()`` is the timer task's step, so no real time passes.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.store = ControlStore(Path(self.dir) / "control.db")
        self.clock = FakeClock()
        self.c = GroupCoordinator(self.store, self.clock)
        self.members: list[str] = []  # member ids the group should have
        self.gone: list[str] = []  # member ids that were removed
        self.generation = 0
        self.stable = False
        self.leaders: dict[int, str] = {}
        self.committed: dict[tuple[str, int], tuple[int, int, str]] = {}
        self.clients = itertools.count()

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def _snapshot(self):
        return self.c.group_snapshot("g")

    def _call(self, fn: Callable[[], Awaitable[Any]]) -> Any:
        return trio.run(fn)

    @rule(newcomers=st.integers(0, 2), data=st.data())
    def rebalance(self, newcomers: int, data: st.DataObject) -> None:
        absent = data.draw(st.sets(st.sampled_from(self.members))) if self.members else set()
        joining = [m for m in self.members if m not in absent]
        leader = self.leaders.get(self.generation)
        if (not joining and not newcomers) or (self.stable and leader not in joining and not newcomers):
            newcomers = 1
        trigger: str | None = None

        async def run() -> tuple[list[dict], list[dict]]:
            nonlocal trigger
            ids = list(joining)
            for _ in range(newcomers):
                ids.append(await new_member_id(self.c, "g", f"c{next(self.clients)}"))
            if self.stable:
                trigger = leader if leader in joining else ids[-1]
            joins: dict[str, dict] = {}

            async def join(m: str) -> None:
                joins[m] = await self.c.join_group(join_body("g", m), 9)

            async with trio.open_nursery() as nursery:
                # In a Stable group only the leader's rejoin or a newcomer's join opens a join phase (a
                # follower's rejoin just gets the current generation back): that one goes first.
                if trigger is not None:
                    nursery.start_soon(join, trigger)
                    await trio.testing.wait_all_tasks_blocked()
                for m in ids:
                    if m != trigger:
                        nursery.start_soon(join, m)
                await trio.testing.wait_all_tasks_blocked()
                if len(joins) < len(ids):  # someone did not rejoin: let the rebalance timeout pass
                    self.clock.now += REBALANCE_MS / 1000 + 1
                    self.c.expire_due()
            gen = {j["generation_id"] for j in joins.values()}
            assert {j["error_code"] for j in joins.values()} == {0}, joins
            (generation,) = gen
            leaders = [m for m, j in joins.items() if j["leader"] == m]
            assert len(leaders) == 1 and {j["leader"] for j in joins.values()} == set(leaders)
            assert {x["member_id"] for x in joins[leaders[0]]["members"]} == set(ids)
            assignments = {m: f"{m}@{generation}".encode() for m in ids}
            syncs: dict[str, dict] = {}

            async def sync(m: str) -> None:
                body = sync_body("g", m, generation, assignments if m == leaders[0] else None)
                syncs[m] = await self.c.sync_group(body, 5)

            async with trio.open_nursery() as nursery:
                for m in ids:
                    nursery.start_soon(sync, m)
            for m in ids:
                assert syncs[m]["error_code"] == 0 and syncs[m]["assignment"] == assignments[m]
            return ids, generation, leaders[0]

        ids, generation, leader = self._call(run)
        assert generation > self.generation, "generations strictly increase"
        assert generation not in self.leaders, "one leader per generation"
        self.leaders[generation] = leader
        self.gone += list(absent)
        self.members, self.generation, self.stable = ids, generation, True

    @precondition(lambda self: self.members)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from(self.members))
        r = self._call(lambda: self.c.heartbeat(hb_body("g", m, self.generation), 4))
        assert r["error_code"] == (E.NONE if self.stable else E.REBALANCE_IN_PROGRESS)

    @precondition(lambda self: self.gone)
    @rule(data=st.data())
    def heartbeat_from_a_removed_member(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from(self.gone))
        r = self._call(lambda: self.c.heartbeat(hb_body("g", m, self.generation), 4))
        assert r["error_code"] == E.UNKNOWN_MEMBER_ID

    def _removed(self, m: str) -> None:
        self.members.remove(m)
        self.gone.append(m)
        self.stable = False
        if not self.members:  # the join phase completes at once, with nobody: Empty, next generation
            self.generation += 1

    @precondition(lambda self: self.members)
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from(self.members))
        body = {"group_id": "g", "members": [{"member_id": m, "group_instance_id": None}]}
        r = self._call(lambda: self.c.leave_group(body, 5))
        assert r["members"][0]["error_code"] == E.NONE
        self._removed(m)

    @precondition(lambda self: self.members and self.stable)
    @rule(data=st.data())
    def go_silent(self, data: st.DataObject) -> None:
        victim = data.draw(st.sampled_from(self.members))
        others = [m for m in self.members if m != victim]
        for _ in range(2):  # 2 x 6 s: the victim passes its 10 s session, the others heartbeat in between
            self.clock.now += 6
            for m in others:
                r = self._call(lambda m=m: self.c.heartbeat(hb_body("g", m, self.generation), 4))
                assert r["error_code"] == E.NONE
        self.c.expire_due()
        self._removed(victim)

    @precondition(lambda self: self.members)
    @rule(data=st.data(), partition=st.integers(0, 3), offset=st.integers(0, 2**40), epoch=st.integers(-1, 5))
    def member_commit(self, data: st.DataObject, partition: int, offset: int, epoch: int) -> None:
        m = data.draw(st.sampled_from(self.members))
        r = self._call(lambda: self.c.offset_commit(commit_body("g", m, self.generation, {("t", partition): offset}, epoch), 9))
        assert commit_errors(r) == {E.NONE}
        self.committed[("t", partition)] = (offset, epoch, "")

    @precondition(lambda self: self.members and self.generation > 1)
    @rule(data=st.data())
    def stale_commit(self, data: st.DataObject) -> None:
        m = data.draw(st.sampled_from(self.members))
        r = self._call(lambda: self.c.offset_commit(commit_body("g", m, self.generation - 1, {("t", 0): 1}), 9))
        assert commit_errors(r) == {E.ILLEGAL_GENERATION}

    @rule(partition=st.integers(0, 3), offset=st.integers(0, 100))
    def standalone_commit(self, partition: int, offset: int) -> None:
        r = self._call(lambda: self.c.offset_commit(commit_body("g", "", -1, {("u", partition): offset}), 9))
        if self.members:
            assert commit_errors(r) == {E.UNKNOWN_MEMBER_ID}
        else:
            assert commit_errors(r) == {E.NONE}
            self.committed[("u", partition)] = (offset, -1, "")

    @invariant()
    def membership_matches(self) -> None:
        snap = self._snapshot()
        if snap is None:
            assert not self.members
            return
        assert [m.member_id for m in snap.members] == self.members or {m.member_id for m in snap.members} == set(self.members)
        assert snap.generation_id == self.generation
        assert snap.state is (
            GroupState.STABLE if self.stable else GroupState.PREPARING_REBALANCE if self.members else GroupState.EMPTY
        )

    @invariant()
    def stable_members_all_have_assignments(self) -> None:
        snap = self._snapshot()
        if snap is not None and snap.state is GroupState.STABLE:
            assert all(m.assignment is not None for m in snap.members)
            assert snap.leader_id in {m.member_id for m in snap.members}

    @invariant()
    def committed_offsets_read_back(self) -> None:
        assert self.c.committed_offsets("g") == self.committed


GroupMachine.TestCase.settings = settings(
    max_examples=80, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
test_group_state_machine = GroupMachine.TestCase
