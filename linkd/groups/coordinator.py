"""The classic consumer-group coordinator (JoinGroup/SyncGroup/Heartbeat/LeaveGroup, offsets, admin).

Theory of operation
-------------------
A group is a set of members that agree, once per *generation*, on who consumes what. linkd only brokers
that agreement; the assignment itself is computed by one member, the *leader*, and is opaque bytes here.

1. **Join phase** (``PreparingRebalance``). Anything that changes membership (a new member, a rejoin, a
   leave, a session expiry) opens a join phase. Every member must send JoinGroup again; those calls are
   *parked* until every known member has rejoined, or until the rebalance deadline (the largest
   ``rebalance_timeout_ms`` of the members) passes, at which point members that did not rejoin are dropped.
   Members still in the group learn about the join phase from their next Heartbeat
   (``REBALANCE_IN_PROGRESS``). Completing the phase bumps the generation, keeps the leader if it rejoined
   (else elects the first member), and picks the protocol (assignor) every member supports with the most
   first-choice votes. All parked joins are answered; only the leader's answer lists the members.
2. **Sync phase** (``CompletingRebalance``). Followers' SyncGroup calls are parked until the leader's
   SyncGroup brings the assignments; then everyone gets their own and the group is ``Stable``. If the leader
   does not sync before the rebalance deadline, members that did not sync are dropped and a new join phase
   starts, so a dead leader cannot wedge the group.
3. **Stable**. Heartbeats keep sessions alive. A member that stays silent (no heartbeat, join, sync or
   commit) longer than its ``session_timeout_ms`` is removed by the timer task (``run``), which opens a join
   phase for the others. Members with a parked call are not expired: they are waiting on us, not silent.
4. **Empty**. No members; committed offsets may exist (standalone ``assign()`` consumers commit with
   generation -1 and no member id, which is only accepted while the group has no members, as in Kafka).
5. **Dead**. The group was deleted (DeleteGroups); it leaves the registry, and a later JoinGroup with the
   same id creates a fresh group.
   An Empty group with no pending ids is also dropped from memory after ``empty_group_retention_ms``
   (its offsets, if any, stay and keep it listed as Empty), so throw-away group ids do not accumulate.

First joins at JoinGroup v4+ without a member id get ``MEMBER_ID_REQUIRED`` and a fresh id to retry with
(KIP-394: the coordinator never parks a request from a member it cannot yet name). The id is *pending*
until it comes back; a join phase waits for pending ids too, up to their session timeout.

Static membership (``group.instance.id``, KIP-345), basic support: the instance id maps to one member id.
A restarted instance (empty member id, known instance id) takes the existing member over under a new id
(the old id is fenced with ``FENCED_INSTANCE_ID``); if the group is Stable and its protocols are unchanged it
gets the current generation back without a rebalance, which is the point of static membership.

Not persisted: membership, generations, assignments. After a restart every client rejoins (its heartbeat
or commit gets UNKNOWN_MEMBER_ID / ILLEGAL_GENERATION), exactly what Kafka clients do after a coordinator
failover. Committed offsets are durable (``offsets.py``).

A JoinGroup from a known member whose metadata is unchanged does not always open a join phase. As in Kafka,
a follower of a Stable group, or any member of a group waiting for its leader's SyncGroup, gets the current
generation back (the leader gets the member list again) and then syncs as usual; only the leader rejoining a
Stable group, or a member with new metadata, starts a rebalance. Clients send such joins when they lost a join
response (a reconnect, or kafka-python 3 abandoning a join that outlived its ``poll`` timeout); answering each
with a full rebalance could keep a group rebalancing for ever.

``group.initial.rebalance.delay.ms`` (``GroupConfig.initial_rebalance_delay_ms``) defaults to 0 here, not
Kafka's 3000: it only saves rebalances when many consumers start at once, and linkd's consumers are mostly
fail-over consumers that should start reading at once. The delay is a floor on the first join phase of an
Empty group, capped by the rebalance timeout.

Timers: every deadline (session, pending id, rebalance, sync) is checked by ``expire_due()``; ``run()``
sleeps until the earliest one and is woken early whenever a handler creates an earlier deadline.
"""

from __future__ import annotations

import enum
import logging
import math
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import trio

from protocol.errors import ErrorCode

from .offsets import CommittedOffset, OffsetStore, TopicPartition
from .subscription import subscribed_topics

Body = dict[str, Any]

log = logging.getLogger(__name__)


class GroupState(enum.Enum):
    EMPTY = "Empty"
    PREPARING_REBALANCE = "PreparingRebalance"
    COMPLETING_REBALANCE = "CompletingRebalance"
    STABLE = "Stable"
    DEAD = "Dead"


class GroupEvent(enum.Enum):
    REBALANCE_NEEDED = "rebalance needed"  # a member joined or rejoined and a new generation is needed
    MEMBER_GONE = "member gone"  # leave, session expiry or sync timeout
    JOIN_COMPLETED = "join completed"  # join phase over, at least one member
    JOIN_COMPLETED_EMPTY = "join completed empty"  # join phase over, nobody rejoined
    LEADER_SYNCED = "leader synced"  # the leader's SyncGroup delivered the assignments
    DELETED = "deleted"


_S, _E = GroupState, GroupEvent
# Every legal transition. Anything else is a bug in this module and raises.
TRANSITIONS: dict[tuple[GroupState, GroupEvent], GroupState] = {
    (_S.EMPTY, _E.REBALANCE_NEEDED): _S.PREPARING_REBALANCE,
    (_S.EMPTY, _E.DELETED): _S.DEAD,
    (_S.PREPARING_REBALANCE, _E.REBALANCE_NEEDED): _S.PREPARING_REBALANCE,
    (_S.PREPARING_REBALANCE, _E.MEMBER_GONE): _S.PREPARING_REBALANCE,
    (_S.PREPARING_REBALANCE, _E.JOIN_COMPLETED): _S.COMPLETING_REBALANCE,
    (_S.PREPARING_REBALANCE, _E.JOIN_COMPLETED_EMPTY): _S.EMPTY,
    (_S.COMPLETING_REBALANCE, _E.REBALANCE_NEEDED): _S.PREPARING_REBALANCE,
    (_S.COMPLETING_REBALANCE, _E.MEMBER_GONE): _S.PREPARING_REBALANCE,
    (_S.COMPLETING_REBALANCE, _E.LEADER_SYNCED): _S.STABLE,
    (_S.STABLE, _E.REBALANCE_NEEDED): _S.PREPARING_REBALANCE,
    (_S.STABLE, _E.MEMBER_GONE): _S.PREPARING_REBALANCE,
}


class IllegalTransition(RuntimeError):
    """A (state, event) pair missing from TRANSITIONS: a bug in the coordinator, never a client error."""


def next_state(state: GroupState, event: GroupEvent) -> GroupState:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise IllegalTransition(f"{event.value!r} is not allowed in state {state.value}") from None


@dataclass(frozen=True, slots=True)
class GroupConfig:
    initial_rebalance_delay_ms: int = 0
    # Kafka's broker defaults; a session outside the range gets INVALID_SESSION_TIMEOUT.
    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 1_800_000
    offset_metadata_max_bytes: int = 4096
    # An Empty group with no pending ids is forgotten after this long (its committed offsets stay, and
    # keep it listed); without it, every throw-away group id (console consumers) would stay in memory.
    empty_group_retention_ms: int = 600_000


@dataclass(frozen=True, slots=True)
class GroupCoordinatorStatistics:
    groups: int  # groups in memory or with committed offsets
    members: int  # members of all groups, pending MEMBER_ID_REQUIRED ids excluded
    rebalances: int  # join phases completed since start
    commits: int  # partition offsets committed since start (client commits and link syncs)


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    member_id: str
    group_instance_id: str | None
    client_id: str
    assignment: bytes | None  # None until the leader's sync of the current generation


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    group_id: str
    state: GroupState
    generation_id: int
    protocol_type: str | None
    protocol_name: str | None
    leader_id: str | None
    members: tuple[MemberSnapshot, ...]


class _Waiter:
    """A parked JoinGroup or SyncGroup call: answered once, by whoever completes the phase."""

    __slots__ = ("event", "result")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.result: Body | None = None

    def complete(self, result: Body) -> None:
        if self.result is None:
            self.result = result
            self.event.set()


@dataclass(eq=False)
class _Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout: float  # seconds
    rebalance_timeout: float  # seconds
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    last_seen: float
    assignment: bytes | None = None
    join_waiter: _Waiter | None = None
    sync_waiter: _Waiter | None = None

    def metadata(self, protocol: str | None) -> bytes:
        return next((meta for name, meta in self.protocols if name == protocol), b"")

    @property
    def parked(self) -> bool:
        return self.join_waiter is not None or self.sync_waiter is not None


@dataclass(eq=False)
class _Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)
    pending: dict[str, float] = field(default_factory=dict)  # member id handed out -> deadline to come back
    static: dict[str, str] = field(default_factory=dict)  # group instance id -> member id
    rebalance_deadline: float = math.inf
    delay_deadline: float = -math.inf
    empty_since: float = 0.0
    sync_deadline: float = math.inf

    def rebalance_timeout(self) -> float:
        return max((m.rebalance_timeout for m in self.members.values()), default=0.0)


def _join_result(
    error: ErrorCode,
    member_id: str,
    generation_id: int = -1,
    protocol_type: str | None = None,
    protocol_name: str | None = None,
    leader: str = "",
    members: list[Body] | None = None,
) -> Body:
    return {
        "error_code": int(error),
        "generation_id": generation_id,
        "protocol_type": protocol_type,
        "protocol_name": protocol_name,
        "leader": leader,
        "skip_assignment": False,
        "member_id": member_id,
        "members": members or [],
    }


def _sync_result(error: ErrorCode, group: _Group | None = None, assignment: bytes = b"") -> Body:
    return {
        "error_code": int(error),
        "protocol_type": group.protocol_type if group else None,
        "protocol_name": group.protocol_name if group else None,
        "assignment": assignment,
    }


class GroupCoordinator:
    """All consumer groups of this node. Handlers take a decoded request body and return a response body.

    ``clock`` returns seconds and must advance with trio's clock (``run`` sleeps on trio deadlines).
    ``partition_exists(topic, partition)``, when given, refuses commits for unknown partitions.
    ``topic_name_for_id`` / ``topic_id_for_name`` are only needed to serve OffsetCommit/OffsetFetch v10.
    """

    def __init__(
        self,
        store: Any,
        clock: Callable[[], float] = trio.current_time,
        *,
        config: GroupConfig | None = None,
        partition_exists: Callable[[str, int], bool] | None = None,
        topic_name_for_id: Callable[[Any], str | None] | None = None,
        topic_id_for_name: Callable[[str], Any] | None = None,
    ) -> None:
        self._offsets = OffsetStore(store)
        self._clock = clock
        self._config = config or GroupConfig()
        self._partition_exists = partition_exists
        # OffsetCommit/OffsetFetch v10 name topics by id; without these callables v10 topics are unknown.
        self._topic_name_for_id = topic_name_for_id
        self._topic_id_for_name = topic_id_for_name
        self._groups: dict[str, _Group] = {}
        self._rebalances = 0
        self._commits = 0
        self._wakeup = trio.Event()
        self._armed_deadline = -math.inf  # until run() arms a deadline, any new deadline wakes it

    # ------------------------------------------------------------------ timers

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Expire sessions, pending ids, and rebalance/sync deadlines, for the coordinator's lifetime."""
        task_status.started()
        while True:
            self._wakeup = trio.Event()
            deadline = self.expire_due()
            self._armed_deadline = deadline
            delay = max(0.0, deadline - self._clock())
            with trio.move_on_after(delay):
                await self._wakeup.wait()

    def _touch(self, member: _Member, now: float) -> None:
        """Restart the member's session clock (any request from it proves it is alive)."""
        member.last_seen = now
        self._schedule(now + member.session_timeout)

    def _schedule(self, deadline: float) -> None:
        if deadline < self._armed_deadline:
            self._armed_deadline = deadline
            self._wakeup.set()

    def expire_due(self) -> float:
        """Act on every deadline that has passed; return the earliest one still ahead (inf if none)."""
        now = self._clock()
        retention = self._config.empty_group_retention_ms / 1000
        for group in list(self._groups.values()):
            self._expire_group(group, now)
            if group.state is GroupState.EMPTY and not group.pending and now >= group.empty_since + retention:
                del self._groups[group.group_id]
        return min((self._next_deadline(g, now) for g in self._groups.values()), default=math.inf)

    def _expire_group(self, group: _Group, now: float) -> None:
        for member_id in [mid for mid, deadline in group.pending.items() if deadline <= now]:
            del group.pending[member_id]
        silent = [m for m in group.members.values() if not m.parked and m.last_seen + m.session_timeout <= now]
        for member in silent:
            log.info("group %r: member %s removed, no heartbeat within its %.0f s session", group.group_id, member.member_id, member.session_timeout)
            self._remove_member(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        if silent:
            self._after_member_gone(group, now)
        if group.state is GroupState.COMPLETING_REBALANCE and now >= group.sync_deadline:
            # The leader never synced: drop whoever did not sync (the leader among them) and start over.
            for member in [m for m in group.members.values() if m.sync_waiter is None]:
                log.info("group %r: member %s removed, no SyncGroup for generation %d in time", group.group_id, member.member_id, group.generation_id)
                self._remove_member(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
            self._after_member_gone(group, now)
        if group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group, now, force=now >= group.rebalance_deadline)

    def _next_deadline(self, group: _Group, now: float) -> float:
        deadlines = list(group.pending.values())
        if group.state is GroupState.EMPTY and not group.pending:
            deadlines.append(group.empty_since + self._config.empty_group_retention_ms / 1000)
        deadlines += [m.last_seen + m.session_timeout for m in group.members.values() if not m.parked]
        if group.state is GroupState.PREPARING_REBALANCE:
            deadlines.append(group.rebalance_deadline)
            if group.delay_deadline > now:  # a passed delay only matters once everyone is in, which is not timed
                deadlines.append(group.delay_deadline)
        elif group.state is GroupState.COMPLETING_REBALANCE:
            deadlines.append(group.sync_deadline)
        return min(deadlines, default=math.inf)

    # ------------------------------------------------------------------ state machine helpers

    @staticmethod
    def _transition(group: _Group, event: GroupEvent) -> None:
        group.state = next_state(group.state, event)

    def _prepare_rebalance(self, group: _Group, now: float, event: GroupEvent, reason: str) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            # Followers parked in SyncGroup will never get this generation's assignment: send them to rejoin.
            for member in group.members.values():
                if member.sync_waiter is not None:
                    member.sync_waiter.complete(_sync_result(ErrorCode.REBALANCE_IN_PROGRESS, group))
                    member.sync_waiter = None
                    self._touch(member, now)
        was_empty = group.state is GroupState.EMPTY
        log.info("group %r: rebalance starts in state %s (%s), generation %d", group.group_id, group.state.value, reason, group.generation_id)
        self._transition(group, event)
        timeout = group.rebalance_timeout()
        group.rebalance_deadline = now + timeout
        delay = min(self._config.initial_rebalance_delay_ms / 1000, timeout) if was_empty else 0.0
        group.delay_deadline = now + delay
        group.sync_deadline = math.inf
        self._schedule(min(group.rebalance_deadline, group.delay_deadline))

    def _after_member_gone(self, group: _Group, now: float) -> None:
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, now, GroupEvent.MEMBER_GONE, "a member left")
        if group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group, now)

    def _remove_member(self, group: _Group, member: _Member, error: ErrorCode) -> None:
        del group.members[member.member_id]
        if member.group_instance_id is not None and group.static.get(member.group_instance_id) == member.member_id:
            del group.static[member.group_instance_id]
        self._answer_parked(member, error, group)

    @staticmethod
    def _answer_parked(member: _Member, error: ErrorCode, group: _Group) -> None:
        if member.join_waiter is not None:
            member.join_waiter.complete(_join_result(error, member.member_id))
            member.join_waiter = None
        if member.sync_waiter is not None:
            member.sync_waiter.complete(_sync_result(error, group))
            member.sync_waiter = None

    def _maybe_complete_join(self, group: _Group, now: float, *, force: bool = False) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        everyone_in = not group.pending and all(m.join_waiter is not None for m in group.members.values())
        if not force and not (everyone_in and now >= group.delay_deadline):
            return
        for member in [m for m in group.members.values() if m.join_waiter is None]:
            log.info("group %r: member %s removed, it did not rejoin within the rebalance timeout", group.group_id, member.member_id)
            self._remove_member(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        group.pending.clear()
        group.generation_id += 1
        self._rebalances += 1
        if not group.members:
            group.protocol_name = None
            group.leader_id = None
            self._transition(group, GroupEvent.JOIN_COMPLETED_EMPTY)
            log.info("group %r: generation %d is empty", group.group_id, group.generation_id)
            group.empty_since = now
            self._schedule(now + self._config.empty_group_retention_ms / 1000)
            return
        group.protocol_name = self._select_protocol(group)
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        self._transition(group, GroupEvent.JOIN_COMPLETED)
        log.info(
            "group %r: generation %d formed with %d member(s), leader %s, protocol %s",
            group.group_id, group.generation_id, len(group.members), group.leader_id, group.protocol_name,
        )
        group.sync_deadline = now + group.rebalance_timeout()
        self._schedule(group.sync_deadline)
        listing = [
            {"member_id": m.member_id, "group_instance_id": m.group_instance_id, "metadata": m.metadata(group.protocol_name)}
            for m in group.members.values()
        ]
        for member in group.members.values():
            member.assignment = None
            self._touch(member, now)
            waiter, member.join_waiter = member.join_waiter, None
            assert waiter is not None
            is_leader = member.member_id == group.leader_id
            waiter.complete(self._current_generation(group, member.member_id, listing if is_leader else None))

    @staticmethod
    def _current_generation(group: _Group, member_id: str, listing: list[Body] | None, leader: str | None = None) -> Body:
        return _join_result(
            ErrorCode.NONE,
            member_id,
            group.generation_id,
            group.protocol_type,
            group.protocol_name,
            leader if leader is not None else group.leader_id or "",
            listing,
        )

    @staticmethod
    def _select_protocol(group: _Group) -> str:
        members = list(group.members.values())
        candidates = set.intersection(*({name for name, _ in m.protocols} for m in members))
        if not candidates:  # joins are checked against the others, so this cannot happen
            raise IllegalTransition(f"group {group.group_id!r} has no common protocol")
        votes: Counter[str] = Counter()
        for m in members:
            votes[next(name for name, _ in m.protocols if name in candidates)] += 1
        # Counter.most_common keeps insertion order among ties: the first member's choice wins a tie.
        return votes.most_common(1)[0][0]

    @staticmethod
    def _supports(group: _Group, member_id: str, protocol_type: str, names: set[str]) -> bool:
        others = [m for mid, m in group.members.items() if mid != member_id]
        if not others:
            return True
        if protocol_type != group.protocol_type:
            return False
        return bool(names.intersection(*({n for n, _ in m.protocols} for m in others)))

    def _fenced(self, group: _Group, member_id: str, instance_id: str | None) -> bool:
        if instance_id is None:
            return False
        owner = group.static.get(instance_id)
        return owner is not None and owner != member_id

    # ------------------------------------------------------------------ JoinGroup

    async def join_group(self, body: Body, version: int, *, client_id: str = "", client_host: str = "") -> Body:
        response = await self._join(body, version, client_id, client_host)
        log.debug(
            "group %r: JoinGroup v%d from %r -> %s, generation %d",
            body.get("group_id"), version, body.get("member_id"), ErrorCode(response["error_code"]).name, response["generation_id"],
        )
        response["throttle_time_ms"] = 0
        if version < 7 and response["protocol_name"] is None:
            response["protocol_name"] = ""  # nullable only from v7
        return response

    async def _join(self, body: Body, version: int, client_id: str, client_host: str) -> Body:
        group_id: str = body.get("group_id") or ""
        member_id: str = body.get("member_id") or ""
        instance_id: str | None = body.get("group_instance_id") if version >= 5 else None
        session_ms: int = body["session_timeout_ms"]
        rebalance_ms: int = body.get("rebalance_timeout_ms", -1) if version >= 1 else -1
        if rebalance_ms is None or rebalance_ms < 0:
            rebalance_ms = session_ms  # v0 has no rebalance timeout; Kafka uses the session timeout
        protocol_type: str = body.get("protocol_type") or ""
        protocols = [(p["name"], bytes(p["metadata"] or b"")) for p in body.get("protocols") or []]

        if not group_id:
            return _join_result(ErrorCode.INVALID_GROUP_ID, member_id)
        if not self._config.min_session_timeout_ms <= session_ms <= self._config.max_session_timeout_ms:
            return _join_result(ErrorCode.INVALID_SESSION_TIMEOUT, member_id)
        group = self._groups.get(group_id)
        if group is None:
            if member_id:
                return _join_result(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            group = self._groups[group_id] = _Group(group_id, empty_since=self._clock())
        if not protocol_type or not protocols:
            return _join_result(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)
        if not self._supports(group, member_id, protocol_type, {name for name, _ in protocols}):
            return _join_result(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)

        if not any(mid != member_id for mid in group.members):
            group.protocol_type = protocol_type  # the first (or only) member decides the group's type
        now = self._clock()

        def fresh_member(new_id: str, instance: str | None) -> _Member:
            return _Member(
                new_id,
                instance,
                client_id,
                client_host,
                session_ms / 1000,
                rebalance_ms / 1000,
                protocol_type,
                protocols,
                now,
            )

        if not member_id:
            if instance_id is not None and instance_id in group.static:
                return await self._static_takeover(group, instance_id, fresh_member, now)
            new_id = f"{instance_id or client_id}-{uuid.uuid4()}"
            if instance_id is None and version >= 4:
                deadline = now + session_ms / 1000
                group.pending[new_id] = deadline
                self._schedule(deadline)
                return _join_result(ErrorCode.MEMBER_ID_REQUIRED, new_id)
            return await self._add_and_wait(group, fresh_member(new_id, instance_id), now)

        if self._fenced(group, member_id, instance_id):
            return _join_result(ErrorCode.FENCED_INSTANCE_ID, member_id)
        if member_id in group.pending:
            del group.pending[member_id]
            return await self._add_and_wait(group, fresh_member(member_id, instance_id), now)
        member = group.members.get(member_id)
        if member is None:
            return _join_result(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
        unchanged = member.protocols == protocols and member.protocol_type == protocol_type
        member.client_id, member.client_host = client_id, client_host
        member.session_timeout, member.rebalance_timeout = session_ms / 1000, rebalance_ms / 1000
        member.protocols, member.protocol_type = protocols, protocol_type
        self._touch(member, now)
        follower_of_stable = group.state is GroupState.STABLE and member_id != group.leader_id
        if (group.state is GroupState.COMPLETING_REBALANCE or follower_of_stable) and unchanged and member.join_waiter is None:
            # The member lost our join response: give the same generation again (see the module docstring).
            listing = None
            if member_id == group.leader_id:
                listing = [
                    {
                        "member_id": m.member_id,
                        "group_instance_id": m.group_instance_id,
                        "metadata": m.metadata(group.protocol_name),
                    }
                    for m in group.members.values()
                ]
            return self._current_generation(group, member_id, listing)
        return await self._park_join(group, member, now)

    async def _static_takeover(
        self, group: _Group, instance_id: str, fresh_member: Callable[[str, str | None], _Member], now: float
    ) -> Body:
        old_id = group.static[instance_id]
        member = group.members[old_id]
        incoming = fresh_member("", instance_id)
        new_id = f"{instance_id}-{uuid.uuid4()}"
        # The previous incarnation may still have a call parked; it is fenced now.
        self._answer_parked(member, ErrorCode.FENCED_INSTANCE_ID, group)
        leader_before = group.leader_id
        del group.members[old_id]
        member.member_id = new_id
        group.members[new_id] = member
        group.static[instance_id] = new_id
        if leader_before == old_id:
            group.leader_id = new_id
        unchanged = member.protocols == incoming.protocols and member.protocol_type == incoming.protocol_type
        member.client_id, member.client_host = incoming.client_id, incoming.client_host
        member.session_timeout, member.rebalance_timeout = incoming.session_timeout, incoming.rebalance_timeout
        member.protocols, member.protocol_type = incoming.protocols, incoming.protocol_type
        self._touch(member, now)
        if group.state is GroupState.STABLE and unchanged:
            # No rebalance for a restarted static member. Report the leader as it was before the takeover so a
            # restarted leader does not run an assignment a Stable group would ignore; its sync gets its
            # current assignment back.
            return self._current_generation(group, new_id, None, leader=leader_before or "")
        return await self._park_join(group, member, now)

    async def _add_and_wait(self, group: _Group, member: _Member, now: float) -> Body:
        group.members[member.member_id] = member
        if member.group_instance_id is not None:
            group.static[member.group_instance_id] = member.member_id
        return await self._park_join(group, member, now)

    async def _park_join(self, group: _Group, member: _Member, now: float) -> Body:
        if member.join_waiter is not None:
            # A retried join supersedes the parked one (its connection is most likely gone).
            member.join_waiter.complete(_join_result(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id))
        waiter = member.join_waiter = _Waiter()
        if group.state is not GroupState.PREPARING_REBALANCE:
            self._prepare_rebalance(group, now, GroupEvent.REBALANCE_NEEDED, f"join from {member.member_id}")
        self._maybe_complete_join(group, now)
        try:
            await waiter.event.wait()
        finally:
            if waiter.result is None and member.join_waiter is waiter:
                # Cancelled (the connection went away): the member counts as not rejoined, and its session
                # clock restarts so it can still come back before it expires.
                member.join_waiter = None
                self._touch(member, self._clock())
        assert waiter.result is not None
        return dict(waiter.result)

    # ------------------------------------------------------------------ SyncGroup

    async def sync_group(self, body: Body, version: int) -> Body:
        response = await self._sync(body, version)
        log.debug(
            "group %r: SyncGroup v%d from %r generation %r -> %s, %d assignment bytes",
            body.get("group_id"), version, body.get("member_id"), body.get("generation_id"),
            ErrorCode(response["error_code"]).name, len(response["assignment"] or b""),
        )
        response["throttle_time_ms"] = 0
        return response

    async def _sync(self, body: Body, version: int) -> Body:
        group_id: str = body.get("group_id") or ""
        member_id: str = body.get("member_id") or ""
        instance_id = body.get("group_instance_id") if version >= 3 else None
        if not group_id:
            return _sync_result(ErrorCode.INVALID_GROUP_ID)
        group = self._groups.get(group_id)
        if group is None:
            return _sync_result(ErrorCode.UNKNOWN_MEMBER_ID)
        if self._fenced(group, member_id, instance_id):
            return _sync_result(ErrorCode.FENCED_INSTANCE_ID, group)
        member = group.members.get(member_id)
        if member is None:
            return _sync_result(ErrorCode.UNKNOWN_MEMBER_ID, group)
        if body.get("generation_id") != group.generation_id:
            return _sync_result(ErrorCode.ILLEGAL_GENERATION, group)
        if version >= 5:
            ptype, pname = body.get("protocol_type"), body.get("protocol_name")
            if (ptype is not None and ptype != group.protocol_type) or (pname is not None and pname != group.protocol_name):
                return _sync_result(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, group)
        now = self._clock()
        self._touch(member, now)
        if group.state is GroupState.PREPARING_REBALANCE:
            return _sync_result(ErrorCode.REBALANCE_IN_PROGRESS, group)
        if group.state is GroupState.STABLE:
            return _sync_result(ErrorCode.NONE, group, member.assignment or b"")
        # CompletingRebalance
        if member.sync_waiter is not None:
            member.sync_waiter.complete(_sync_result(ErrorCode.REBALANCE_IN_PROGRESS, group))
        waiter = member.sync_waiter = _Waiter()
        if member_id == group.leader_id:
            given = {a["member_id"]: bytes(a["assignment"] or b"") for a in body.get("assignments") or []}
            self._transition(group, GroupEvent.LEADER_SYNCED)
            log.info("group %r: generation %d stable, assignments from leader %s", group.group_id, group.generation_id, member_id)
            group.sync_deadline = math.inf
            for m in group.members.values():
                # Members the leader left out get an empty assignment, as in Kafka.
                m.assignment = given.get(m.member_id, b"")
                if m.sync_waiter is not None:
                    m.sync_waiter.complete(_sync_result(ErrorCode.NONE, group, m.assignment))
                    m.sync_waiter = None
                    self._touch(m, now)
        try:
            await waiter.event.wait()
        finally:
            if waiter.result is None and member.sync_waiter is waiter:
                member.sync_waiter = None
                self._touch(member, self._clock())
        assert waiter.result is not None
        return dict(waiter.result)

    # ------------------------------------------------------------------ Heartbeat

    async def heartbeat(self, body: Body, version: int) -> Body:
        error = self._heartbeat(body, version)
        if error is not ErrorCode.NONE:
            log.debug("group %r: Heartbeat from %r -> %s", body.get("group_id"), body.get("member_id"), error.name)
        return {"throttle_time_ms": 0, "error_code": int(error)}

    def _heartbeat(self, body: Body, version: int) -> ErrorCode:
        group_id: str = body.get("group_id") or ""
        member_id: str = body.get("member_id") or ""
        instance_id = body.get("group_instance_id") if version >= 3 else None
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if self._fenced(group, member_id, instance_id):
            return ErrorCode.FENCED_INSTANCE_ID
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._touch(member, self._clock())
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        if body.get("generation_id") != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        return ErrorCode.NONE

    # ------------------------------------------------------------------ LeaveGroup

    async def leave_group(self, body: Body, version: int) -> Body:
        group_id: str = body.get("group_id") or ""
        if version <= 2:
            identities: list[tuple[str, str | None]] = [(body.get("member_id") or "", None)]
        else:
            identities = [(m.get("member_id") or "", m.get("group_instance_id")) for m in body.get("members") or []]
        if not group_id:
            return {"throttle_time_ms": 0, "error_code": int(ErrorCode.INVALID_GROUP_ID), "members": []}
        group = self._groups.get(group_id)
        now = self._clock()
        results = []
        left = False
        for member_id, instance_id in identities:
            error, removed = self._leave_one(group, member_id, instance_id) if group else (ErrorCode.UNKNOWN_MEMBER_ID, False)
            left |= removed
            results.append({"member_id": member_id, "group_instance_id": instance_id, "error_code": int(error)})
        if group is not None and left:
            self._after_member_gone(group, now)
        elif group is not None:
            self._maybe_complete_join(group, now)  # a pending id that left may be the last one awaited
        if version <= 2:
            return {"throttle_time_ms": 0, "error_code": results[0]["error_code"]}
        return {"throttle_time_ms": 0, "error_code": 0, "members": results}

    def _leave_one(self, group: _Group, member_id: str, instance_id: str | None) -> tuple[ErrorCode, bool]:
        """Returns the member's error and whether a member (not just a pending id) left."""
        if instance_id is not None:
            owner = group.static.get(instance_id)
            if owner is None:
                return ErrorCode.UNKNOWN_MEMBER_ID, False
            if member_id and member_id != owner:
                return ErrorCode.FENCED_INSTANCE_ID, False
            member_id = owner
        if group.pending.pop(member_id, None) is not None:
            return ErrorCode.NONE, False
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID, False
        log.info("group %r: member %s left", group.group_id, member_id)
        self._remove_member(group, member, ErrorCode.UNKNOWN_MEMBER_ID)
        return ErrorCode.NONE, True

    # ------------------------------------------------------------------ OffsetCommit / OffsetFetch

    async def offset_commit(self, body: Body, version: int) -> Body:
        group_id: str | None = body.get("group_id")
        generation: int = body.get("generation_id_or_member_epoch", -1)
        member_id: str = body.get("member_id") or ""
        instance_id = body.get("group_instance_id") if version >= 7 else None
        group_error = self._validate_commit(group_id, generation, member_id, instance_id)
        limit = self._config.offset_metadata_max_bytes
        accepted: dict[TopicPartition, CommittedOffset] = {}
        topics_out = []
        for topic in body.get("topics") or []:
            name = self._topic_name(topic, version)
            partitions_out = []
            for p in topic.get("partitions") or []:
                index = p["partition_index"]
                metadata = p.get("committed_metadata") or ""  # null is stored as "", as Kafka does
                error = group_error
                if error is ErrorCode.NONE:
                    if name is None:
                        error = ErrorCode.UNKNOWN_TOPIC_ID
                    elif self._partition_exists is not None and not self._partition_exists(name, index):
                        error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    elif len(metadata.encode()) > limit:
                        error = ErrorCode.OFFSET_METADATA_TOO_LARGE
                    else:
                        epoch = p.get("committed_leader_epoch", -1) if version >= 6 else -1
                        accepted[(name, index)] = CommittedOffset(p["committed_offset"], epoch, metadata)
                partitions_out.append({"partition_index": index, "error_code": int(error)})
            topics_out.append(
                {"name": name or topic.get("name") or "", "topic_id": topic.get("topic_id"), "partitions": partitions_out}
            )
        if accepted:
            assert group_id is not None
            self._offsets.commit(group_id, accepted)
            self._commits += len(accepted)
            group = self._groups.get(group_id)
            if group is not None and member_id in group.members:
                self._touch(group.members[member_id], self._clock())  # a commit proves the member is alive
        return {"throttle_time_ms": 0, "topics": topics_out}

    def txn_offset_commit(self, transactional_id: str, body: Body, version: int) -> Body:
        """TxnOffsetCommit, once the transaction coordinator has accepted the producer: the group checks of
        OffsetCommit (generation and member from v3), then the offsets are staged, pending until the
        transaction's outcome (``complete_txn_offsets``)."""
        group_id: str | None = body.get("group_id")
        generation = body.get("generation_id", -1) if version >= 3 else -1
        member_id = (body.get("member_id") or "") if version >= 3 else ""
        instance_id = body.get("group_instance_id") if version >= 3 else None
        group_error = self._validate_commit(group_id, generation, member_id, instance_id)
        limit = self._config.offset_metadata_max_bytes
        staged: dict[TopicPartition, CommittedOffset] = {}
        topics_out = []
        for topic in body.get("topics") or []:
            name = topic.get("name")
            partitions_out = []
            for p in topic.get("partitions") or []:
                index = p["partition_index"]
                metadata = p.get("committed_metadata") or ""
                error = group_error
                if error is ErrorCode.NONE:
                    if self._partition_exists is not None and not self._partition_exists(name, index):
                        error = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                    elif len(metadata.encode()) > limit:
                        error = ErrorCode.OFFSET_METADATA_TOO_LARGE
                    else:
                        epoch = p.get("committed_leader_epoch", -1) if version >= 2 else -1
                        staged[(name, index)] = CommittedOffset(p["committed_offset"], epoch, metadata)
                partitions_out.append({"partition_index": index, "error_code": int(error)})
            topics_out.append({"name": name, "partitions": partitions_out})
        if staged:
            assert group_id is not None
            self._offsets.stage(transactional_id, group_id, staged)
        return {"throttle_time_ms": 0, "topics": topics_out}

    def complete_txn_offsets(self, transactional_id: str, commit: bool) -> int:
        """Apply or discard a transaction's pending offsets (joins the caller's control-store transaction)."""
        applied = self._offsets.complete_staged(transactional_id, commit)
        if commit:
            self._commits += applied
        return applied

    def _topic_name(self, topic: Body, version: int) -> str | None:
        if version < 10:
            return topic.get("name")
        if self._topic_name_for_id is None:
            return None
        return self._topic_name_for_id(topic.get("topic_id"))

    def _validate_commit(self, group_id: str | None, generation: int, member_id: str, instance_id: str | None) -> ErrorCode:
        if group_id is None:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            # No live group: only a commit that does not claim membership makes sense (assign() consumers).
            if generation < 0 and not member_id and instance_id is None:
                return ErrorCode.NONE
            return ErrorCode.ILLEGAL_GENERATION if generation >= 0 else ErrorCode.UNKNOWN_MEMBER_ID
        if generation >= 0 or member_id or instance_id is not None:
            if self._fenced(group, member_id, instance_id):
                return ErrorCode.FENCED_INSTANCE_ID
            if member_id not in group.members:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if generation != group.generation_id:
                return ErrorCode.ILLEGAL_GENERATION
            if group.state is GroupState.COMPLETING_REBALANCE:
                # The member's partitions are about to be reassigned; it must finish the rebalance first.
                return ErrorCode.REBALANCE_IN_PROGRESS
            return ErrorCode.NONE
        if group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID  # a group with members only takes commits from its members
        return ErrorCode.NONE

    async def offset_fetch(self, body: Body, version: int) -> Body:
        if version <= 7:
            topics_out, error = self._fetch_group(body.get("group_id"), body.get("topics"), version, bool(body.get("require_stable")))
            return {"throttle_time_ms": 0, "topics": topics_out, "error_code": int(error)}
        groups_out = []
        for request in body.get("groups") or []:
            topics_out, error = self._fetch_group(request.get("group_id"), request.get("topics"), version, bool(body.get("require_stable")))
            groups_out.append({"group_id": request.get("group_id"), "topics": topics_out, "error_code": int(error)})
        return {"throttle_time_ms": 0, "groups": groups_out}

    def _fetch_group(self, group_id: str | None, topics: list[Body] | None, version: int,
                     require_stable: bool = False) -> tuple[list[Body], ErrorCode]:
        if group_id is None:
            return [], ErrorCode.INVALID_GROUP_ID
        committed = self._offsets.fetch(group_id)
        # require_stable (v7+): a partition whose offset an open transaction may still change is not answered.
        unstable = self._offsets.unstable(group_id) if require_stable else set()

        def partition(name: str | None, index: int) -> Body:
            found = committed.get((name, index)) if name is not None else None
            error = ErrorCode.UNKNOWN_TOPIC_ID if name is None else ErrorCode.NONE
            if (name, index) in unstable:
                error, found = ErrorCode.UNSTABLE_OFFSET_COMMIT, None
            if found is None:
                found = CommittedOffset(-1, -1, "")
            return {
                "partition_index": index,
                "committed_offset": found.offset,
                "committed_leader_epoch": found.leader_epoch,
                "metadata": found.metadata,
                "error_code": int(error),
            }

        out: list[Body] = []
        if topics is None:
            by_topic: dict[str, list[int]] = {}
            for name, index in committed:
                by_topic.setdefault(name, []).append(index)
            for name, indexes in by_topic.items():
                topic_id = self._topic_id_for_name(name) if self._topic_id_for_name and version >= 10 else None
                out.append({"name": name, "topic_id": topic_id, "partitions": [partition(name, i) for i in indexes]})
            return out, ErrorCode.NONE
        for topic in topics:
            resolved = self._topic_name(topic, version)
            out.append(
                {
                    "name": resolved if resolved is not None else topic.get("name") or "",
                    "topic_id": topic.get("topic_id"),
                    "partitions": [partition(resolved, i) for i in topic.get("partition_indexes") or []],
                }
            )
        return out, ErrorCode.NONE

    # ------------------------------------------------------------------ ListGroups / DescribeGroups / DeleteGroups

    def _group_state(self, group_id: str) -> tuple[GroupState, _Group | None]:
        group = self._groups.get(group_id)
        if group is not None:
            return group.state, group
        if self._offsets.has_group(group_id):
            return GroupState.EMPTY, None  # offsets only: an Empty group, as Kafka reports it
        return GroupState.DEAD, None

    async def list_groups(self, body: Body, version: int) -> Body:
        states = {s.lower() for s in body.get("states_filter") or []} if version >= 4 else set()
        types = {t.lower() for t in body.get("types_filter") or []} if version >= 5 else set()
        out = []
        for group_id in sorted(set(self._groups) | self._offsets.group_ids()):
            state, group = self._group_state(group_id)
            if state is GroupState.DEAD:
                continue
            if states and state.value.lower() not in states:
                continue
            if types and "classic" not in types:
                continue
            out.append(
                {
                    "group_id": group_id,
                    "protocol_type": (group.protocol_type if group else None) or "",
                    "group_state": state.value,
                    "group_type": "classic",
                }
            )
        return {"throttle_time_ms": 0, "error_code": 0, "groups": out}

    async def describe_groups(self, body: Body, version: int) -> Body:
        out = []
        for group_id in body.get("groups") or []:
            state, group = self._group_state(group_id)
            members = []
            protocol_data = ""
            if group is not None:
                stable = state is GroupState.STABLE
                if stable:
                    protocol_data = group.protocol_name or ""
                for m in group.members.values():
                    # Like Kafka, metadata and assignment are only shown once the generation is settled.
                    members.append(
                        {
                            "member_id": m.member_id,
                            "group_instance_id": m.group_instance_id,
                            "client_id": m.client_id,
                            "client_host": m.client_host,
                            "member_metadata": m.metadata(group.protocol_name) if stable else b"",
                            "member_assignment": (m.assignment or b"") if stable else b"",
                        }
                    )
            out.append(
                {
                    "error_code": 0,
                    "error_message": None,
                    "group_id": group_id,
                    "group_state": state.value,
                    "protocol_type": (group.protocol_type if group else None) or "",
                    "protocol_data": protocol_data,
                    "members": members,
                    "authorized_operations": -(2**31),  # "not requested / unknown": linkd has no ACLs
                }
            )
        return {"throttle_time_ms": 0, "groups": out}

    async def delete_groups(self, body: Body, version: int) -> Body:
        results = []
        for group_id in body.get("groups_names") or []:
            state, group = self._group_state(group_id)
            if state is GroupState.DEAD:
                error = ErrorCode.GROUP_ID_NOT_FOUND
            elif group is not None and group.state is not GroupState.EMPTY:
                error = ErrorCode.NON_EMPTY_GROUP
            else:
                self._offsets.delete_group(group_id)
                if group is not None:
                    self._transition(group, GroupEvent.DELETED)
                    del self._groups[group_id]
                error = ErrorCode.NONE
            results.append({"group_id": group_id, "error_code": int(error)})
        return {"throttle_time_ms": 0, "results": results}

    async def offset_delete(self, body: Body, version: int) -> Body:
        """OffsetDelete: an Empty group loses the offsets asked for; a live consumer group keeps those of
        topics it subscribes to (GROUP_SUBSCRIBED_TO_TOPIC); another live group refuses (NON_EMPTY_GROUP)."""
        group_id = body.get("group_id") or ""
        state, group = self._group_state(group_id)
        subscribed: set[str] | None = set()
        if state is GroupState.DEAD:
            return {"error_code": int(ErrorCode.GROUP_ID_NOT_FOUND), "throttle_time_ms": 0, "topics": []}
        if group is not None and state is not GroupState.EMPTY:
            if group.protocol_type != "consumer":
                return {"error_code": int(ErrorCode.NON_EMPTY_GROUP), "throttle_time_ms": 0, "topics": []}
            subscribed = subscribed_topics(m.metadata(group.protocol_name) for m in group.members.values())
        doomed: list[TopicPartition] = []
        topics_out = []
        for topic in body.get("topics") or []:
            name = topic["name"]
            refused = subscribed is None or name in subscribed
            error = ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC if refused else ErrorCode.NONE
            if not refused:
                doomed += [(name, p["partition_index"]) for p in topic.get("partitions") or []]
            topics_out.append({"name": name, "partitions": [{"partition_index": p["partition_index"], "error_code": int(error)}
                                                            for p in topic.get("partitions") or []]})
        self._offsets.delete_offsets(group_id, doomed)
        return {"error_code": 0, "throttle_time_ms": 0, "topics": topics_out}

    # ------------------------------------------------------------------ consumer-offset sync (link) and admin

    def has_live_members(self, group_id: str) -> bool:
        group = self._groups.get(group_id)
        return group is not None and bool(group.members or group.pending)

    def store_synced_offsets(self, group_id: str, offsets: Mapping[TopicPartition, tuple[int, int, str | None]]) -> bool:
        """Store offsets copied from the source cluster, unless the group is in use here (then theirs win)."""
        if self.has_live_members(group_id):
            return False
        if offsets:
            self._offsets.commit(
                group_id,
                {tp: CommittedOffset(offset, epoch, metadata or "") for tp, (offset, epoch, metadata) in offsets.items()},
            )
            self._commits += len(offsets)
        return True

    def committed_offsets(self, group_id: str) -> dict[TopicPartition, tuple[int, int, str]]:
        return {tp: (c.offset, c.leader_epoch, c.metadata) for tp, c in self._offsets.fetch(group_id).items()}

    def delete_topic_offsets(self, topic: str) -> int:
        return self._offsets.delete_topic(topic)

    def group_snapshot(self, group_id: str) -> GroupSnapshot | None:
        group = self._groups.get(group_id)
        if group is None:
            return None
        members = tuple(
            MemberSnapshot(m.member_id, m.group_instance_id, m.client_id, m.assignment) for m in group.members.values()
        )
        return GroupSnapshot(
            group.group_id, group.state, group.generation_id, group.protocol_type, group.protocol_name, group.leader_id, members
        )

    def statistics(self) -> GroupCoordinatorStatistics:
        return GroupCoordinatorStatistics(
            groups=len(set(self._groups) | self._offsets.group_ids()),
            members=sum(len(g.members) for g in self._groups.values()),
            rebalances=self._rebalances,
            commits=self._commits,
        )
