"""Promotion and failover: making mirror topics writable, as tasks of the link manager.

Both follow the table in ``states.py`` and are crash-safe in two phases:

1. the decision is persisted (the mirror enters ``FINALIZING`` with the new leader epoch in its stop info),
   after which nothing fetches or syncs for the mirror;
2. open transactions are closed with ABORT markers (``storage.markers``), the producer-id floor is raised
   above every mirrored producer id, logs are flushed, and ``STOPPED`` is persisted with the stop offsets.

A restart that finds a mirror ``FINALIZING`` completes phase 2 with the recorded epoch, so a crash leaves a
mirror either still a mirror or fully promoted, and repeating the command is harmless.

Each command runs as a task in the link manager's nursery, not in the task of whoever asked: the admin
API's request awaits the result, and a client that goes away (cancelling the request) cannot stop a
promotion between its phases. A promotion waits for the mirror to catch up on progress events (a fetch
answer, an append landing, a state change; ``MirrorTransitions.change_event``), not by polling.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import trio

from protocol.errors import ErrorCode

from .. import storage_calls
from ..storage import LogClosed, PartitionLog
from ..storage.markers import abort_open_transactions
from .client import SourceProtocolError, SourceUnavailable
from .errors import DomainError, ErrorKind
from .loss import partition_report
from .mirror import Mirror, PartitionProgress
from .partition import fetch_position
from .runtime import now_ms
from .states import InvalidTransition, LinkState, MirrorEvent, MirrorState, next_state
from .status import CommandResult, StopSummary

if TYPE_CHECKING:
    from .manager import LinkManager

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PROMOTE_TIMEOUT_S = 60.0
FAILOVER_SOURCE_READ_S = 5.0  # at most this long asking a (maybe dead) source for its end offsets
# Partitions whose phase-2 storage work (markers, fsync) runs at once: fsyncs in parallel share the file
# system's commits, so a failover of thousands of partitions is not thousands of commits in a row.
FINALIZE_PARALLELISM = 32


def _close_partition(plog: PartitionLog, epoch: int) -> tuple[list[dict], int]:
    """Phase 2's storage work for one partition, in a worker thread: ABORT markers, fsync, producer ids."""
    aborted = abort_open_transactions(plog, epoch)
    plog.flush()
    return aborted, plog.producer_ids_seen_max()


class Promotions:
    def __init__(self, manager: LinkManager) -> None:
        self.m = manager
        self._finalizing: dict[str, trio.Lock] = {}  # one phase 2 at a time per mirror (a retry may ask again)

    async def detached(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` as a task of the manager and await its result; cancelling the caller leaves it running."""
        nursery = self.m.nursery
        if nursery is None:
            return await fn()
        done = trio.Event()
        outcome: dict[str, object] = {}

        async def task() -> None:
            try:
                outcome["result"] = await fn()
            except Exception as exc:  # the caller's to see; never the manager's nursery
                outcome["error"] = exc
            finally:
                done.set()

        nursery.start_soon(task)
        await done.wait()
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        if "result" not in outcome:
            raise DomainError(ErrorKind.UNAVAILABLE, ErrorCode.BROKER_NOT_AVAILABLE, "the daemon is shutting down; the command did not finish (repeat it after the restart)")
        return outcome["result"]  # type: ignore[return-value]

    # -- promote ----------------------------------------------------------------------------------

    async def promote(self, topics: list[str], timeout_s: float = DEFAULT_PROMOTE_TIMEOUT_S) -> list[CommandResult]:
        async def run() -> list[CommandResult]:
            results: dict[str, CommandResult] = {}

            async def one(topic: str) -> None:
                results[topic] = await self._promote_one(topic, timeout_s)

            async with trio.open_nursery() as nursery:
                for topic in dict.fromkeys(topics):
                    nursery.start_soon(one, topic)
            return [results[t] for t in dict.fromkeys(topics)]

        return await self.detached(run)

    async def _promote_one(self, topic: str, timeout_s: float) -> CommandResult:
        m = self.m
        try:
            mirror = m.mirror(topic)
        except DomainError as exc:
            return result(topic, exc.error_code, exc.message)
        if mirror.state in (MirrorState.STOPPED, MirrorState.FINALIZING):
            if mirror.state is MirrorState.FINALIZING:
                await self.finalize(mirror)  # a stop already committed: finish it (idempotent)
            return result(topic, mirror_status=mirror.state.reported, partitions=tuple(m.partition_status(mirror)), stop=stop_summary(mirror))
        entry = m.links.get(mirror.link)
        if entry is None:
            return result(topic, ErrorCode.INVALID_REQUEST, f"link '{mirror.link}' no longer exists; use failover")
        if mirror.state == MirrorState.SOURCE_UNAVAILABLE or entry.runtime.state == LinkState.UNAVAILABLE:
            return result(topic, ErrorCode.BROKER_NOT_AVAILABLE, "promote needs the source cluster reachable; it is not (use failover to stop without it)", mirror_status=mirror.state.reported, partitions=tuple(m.partition_status(mirror)))
        try:
            m.transitions.apply(mirror, MirrorEvent.PROMOTE)
        except InvalidTransition as exc:
            return result(topic, ErrorCode.INVALID_REQUEST, str(exc), mirror_status=mirror.state.reported)
        started = now_ms()
        caught_up = False
        with trio.move_on_after(timeout_s):
            while True:
                progressed = m.transitions.change_event(mirror)  # taken before looking: no progress is missed
                if mirror.state != MirrorState.PENDING_STOPPED or mirror.deleted:
                    break
                if self._caught_up(mirror, started):
                    caught_up = True
                    break
                if self._at_known_end(mirror):
                    # Looks caught up, but the proof (a fetch since the promote began that found nothing
                    # more) may sit behind the fetch loop's long poll: ask the source directly.
                    await entry.runtime.probe_caught_up(mirror)
                    if self._caught_up(mirror, started):
                        continue
                await progressed.wait()
        if mirror.deleted:
            return deleted_while_promoting(topic)
        if not caught_up:
            lags = tuple(m.partition_status(mirror))
            reason = (
                f"mirror failed while promoting: {mirror.error_message}" if mirror.state == MirrorState.FAILED
                else f"source unreachable or lag did not reach 0 within {timeout_s:g}s; mirror left as it was"
            )
            if mirror.state == MirrorState.PENDING_STOPPED:
                m.transitions.apply(mirror, MirrorEvent.PROMOTE_ABORT)
            return result(topic, ErrorCode.REQUEST_TIMED_OUT if mirror.state != MirrorState.FAILED else ErrorCode.INVALID_REQUEST, reason, mirror_status=mirror.state.reported, partitions=lags)
        if entry.offset_sync.status.enabled:
            try:
                await entry.offset_sync.sync_once(only_topic=mirror.topic)
            except (SourceUnavailable, SourceProtocolError) as exc:
                m.transitions.apply(mirror, MirrorEvent.PROMOTE_ABORT)
                return result(topic, ErrorCode.BROKER_NOT_AVAILABLE, f"final consumer offset sync failed: {exc}", mirror_status=mirror.state.reported, partitions=tuple(m.partition_status(mirror)))
        if mirror.deleted:  # while the final offset sync ran
            return deleted_while_promoting(topic)
        try:
            self.begin_stop(mirror, MirrorEvent.COMMIT_STOP, "promote")
        except InvalidTransition as exc:  # it failed (or was failed over) while the offset sync ran
            return result(topic, ErrorCode.INVALID_REQUEST, str(exc), mirror_status=mirror.state.reported, partitions=tuple(m.partition_status(mirror)))
        await entry.runtime.quiesce()  # an append still landing would race the ABORT markers
        if mirror.deleted:
            return deleted_while_promoting(topic)
        await self.finalize(mirror)
        return result(topic, mirror_status=mirror.state.reported, partitions=tuple(m.partition_status(mirror)), stop=stop_summary(mirror))

    def _at_known_end(self, mirror: Mirror) -> bool:
        """Every partition's next fetch starts at (or past) the source high watermark last seen."""
        local = self.m.topics.get(mirror.topic)
        if local is None or len(mirror.partitions) < len(local.logs):
            return False
        return all(
            p.source_high_watermark >= 0 and fetch_position(p, local.logs[p.partition]) >= p.source_high_watermark
            for p in mirror.partitions
        )

    def _caught_up(self, mirror: Mirror, since_ms: int) -> bool:
        """Every partition fetched after the promote began, up to the source's high watermark, and the
        fetch answered with no more data (so a source whose high watermark lags what it serves, like Tansu,
        is judged by fetching)."""
        local = self.m.topics.get(mirror.topic)
        if local is None or len(mirror.partitions) < len(local.logs):
            return False
        for progress in mirror.partitions:
            plog = local.logs[progress.partition]
            if progress.last_fetch_ms < since_ms or progress.source_high_watermark < 0:
                return False
            position = fetch_position(progress, plog)
            if position < progress.source_high_watermark:
                return False
            if progress.last_source_fetch_offset != position:
                return False
        return True

    # -- failover ---------------------------------------------------------------------------------

    async def failover(self, topics: list[str]) -> list[CommandResult]:
        return await self.detached(lambda: self._failover(topics))

    async def _failover(self, topics: list[str]) -> list[CommandResult]:
        """Phase 1 for every mirror named, in one control-store transaction; then phase 2 for all of them
        at once (``finalize_many``): a failover of 1,000 mirrors costs about what one costs."""
        m = self.m
        names = list(dict.fromkeys(topics))
        await self._read_source_ends_before_stop([m.mirrors[t] for t in names if t in m.mirrors and m.mirrors[t].state not in (MirrorState.STOPPED, MirrorState.FINALIZING)])
        unknown: dict[str, CommandResult] = {}
        stopping: list[Mirror] = []
        with m.control_store.transaction():
            for topic in names:
                try:
                    mirror = m.mirror(topic)
                except DomainError as exc:
                    unknown[topic] = result(topic, exc.error_code, exc.message)
                    continue
                if mirror.state not in (MirrorState.STOPPED, MirrorState.FINALIZING):
                    self.begin_stop(mirror, MirrorEvent.FAILOVER, "failover")
                stopping.append(mirror)
        for name in dict.fromkeys(mirror.link for mirror in stopping if mirror.state is MirrorState.FINALIZING):
            entry = m.links.get(name)
            if entry is not None:
                await entry.runtime.quiesce()  # an append still landing would race the ABORT markers
        await self.finalize_many(stopping)
        return [
            unknown[topic] if topic in unknown else result(topic, mirror_status=m.mirrors[topic].state.reported, partitions=tuple(m.partition_status(m.mirrors[topic])), stop=stop_summary(m.mirrors[topic]))
            if topic in m.mirrors else deleted_while_promoting(topic)
            for topic in names
        ]

    async def _read_source_ends_before_stop(self, mirrors: list[Mirror]) -> None:
        """A paused mirror, or one whose source is up, has a stale idea of where the source ends: ask the
        source now (bounded; a dead source just leaves what was last seen), then checkpoint it."""
        by_link: dict[str, list[Mirror]] = {}
        for mirror in mirrors:
            by_link.setdefault(mirror.link, []).append(mirror)
        for name, group in by_link.items():
            entry = self.m.links.get(name)
            if entry is None:
                continue
            with trio.move_on_after(min(FAILOVER_SOURCE_READ_S, entry.settings.request_timeout_ms / 1000)):
                try:
                    answered = await entry.runtime.refresh_source_ends(group)
                    log.info("link %s: read the source's end offsets of %d partition(s) before stopping %s", name, answered, ", ".join(m.topic for m in group))
                except (SourceUnavailable, SourceProtocolError) as exc:
                    log.info("link %s: source unreachable before stopping %s (%s); reporting the end offsets last seen", name, ", ".join(m.topic for m in group), exc)
        self.m.checkpoint_source_ends()

    # -- the two phases ---------------------------------------------------------------------------

    def begin_stop(self, mirror: Mirror, event: MirrorEvent, kind: str) -> None:
        """Phase 1: persist the decision and the new epoch (-> FINALIZING); nothing fetches the mirror after."""
        topic = self.m.topics.get(mirror.topic)
        assert topic is not None, f"mirror {mirror.topic} has no topic"  # deleting a topic forgets its mirror
        epoch = max(topic.advertised_epoch(p) for p in range(len(topic.logs))) + 1
        info = {"phase": "finalizing", "kind": kind, "epoch": epoch, "started_ms": now_ms()}
        self.m.transitions.apply(mirror, event, stop_info=info)

    async def finalize(self, mirror: Mirror) -> None:
        """Phase 2 (FINALIZING -> STOPPED) for one mirror; see ``finalize_many``."""
        await self.finalize_many([mirror])

    async def finalize_many(self, mirrors: list[Mirror]) -> None:
        """Phase 2 (FINALIZING -> STOPPED) for each of ``mirrors`` still finalizing: idempotent; safe to
        repeat after a crash.

        Their partitions' storage work (markers, fsync) runs in worker threads through ``storage_calls``,
        ``FINALIZE_PARALLELISM`` partitions at once, so every other client keeps being served meanwhile;
        then one control-store transaction records every one of them STOPPED. It is shielded, so nothing
        stops it half-way once begun. Each mirror's lock is held throughout (taken in name order, so two
        of these never wait for each other): one phase 2 at a time per mirror."""
        ordered = sorted({id(x): x for x in mirrors}.values(), key=lambda x: x.topic)
        with trio.CancelScope(shield=True):
            locks = []
            try:
                for mirror in ordered:
                    lock = self._finalizing.setdefault(mirror.topic, trio.Lock())
                    await lock.acquire()
                    locks.append((mirror.topic, lock))
                todo = [x for x in ordered if x.state is MirrorState.FINALIZING and not x.deleted]
                closed: dict[str, tuple[list[dict], list[dict], int, int]] = {}
                limiter = trio.CapacityLimiter(FINALIZE_PARALLELISM)
                async with trio.open_nursery() as nursery:
                    for mirror in todo:
                        nursery.start_soon(self._close_storage, mirror, limiter, closed)
                if not todo:
                    return  # no transaction: a start on a full disk (read-only control store) has nothing to record
                with self.m.control_store.transaction():
                    for mirror in todo:
                        if mirror.topic in closed and not mirror.deleted and mirror.state is MirrorState.FINALIZING:
                            self._commit_stopped(mirror, *closed[mirror.topic])
            finally:
                for topic, lock in locks:
                    lock.release()
                    if not lock.locked() and self._finalizing.get(topic) is lock:
                        del self._finalizing[topic]

    async def _close_storage(self, mirror: Mirror, limiter: trio.CapacityLimiter, closed: dict) -> None:
        """Phase 2's storage work for every partition of ``mirror``; records (partition reports, aborted
        transactions, highest producer id, stop time) in ``closed`` unless the mirror was deleted meanwhile."""
        topic = self.m.topics.get(mirror.topic)
        assert topic is not None, f"mirror {mirror.topic} has no topic"  # deleting a topic forgets its mirror
        epoch = (mirror.stop_info or {})["epoch"]
        stopped_ms = now_ms()
        reports: list[dict | None] = [None] * len(topic.logs)
        aborted: list[list[dict]] = [[] for _ in topic.logs]
        seen: list[int] = [-1] * len(topic.logs)
        deleted = False

        async def one(index: int, plog: PartitionLog) -> None:
            nonlocal deleted
            progress = mirror.partitions[index] if index < len(mirror.partitions) else PartitionProgress(index)
            # Where mirroring of the source stopped: before the ABORT markers below, which take offsets
            # that on the source hold records the mirror never got.
            stop_offset = fetch_position(progress, plog)
            async with limiter:
                try:
                    done, seen[index] = await storage_calls.call(plog, _close_partition, plog, epoch)
                except LogClosed:
                    deleted = True
                    return
            for entry in done:
                aborted[index].append({"partition": index, **entry})
                log.warning("mirror %s partition %d: aborted open transaction of producer %d (from offset %d)", mirror.topic, index, entry["producer_id"], entry["first_offset"])
            reports[index] = partition_report(index, stop_offset, plog.log_end_offset, progress, stopped_ms)

        async with trio.open_nursery() as nursery:
            for index, plog in enumerate(topic.logs):
                nursery.start_soon(one, index, plog)
        if deleted or mirror.deleted:
            log.info("mirror %s was deleted while it was being made writable", mirror.topic)
            return
        earlier = list((mirror.stop_info or {}).get("aborted_transactions", []))
        closed[mirror.topic] = ([r for r in reports if r is not None], earlier + [a for each in aborted for a in each], max(seen, default=-1), stopped_ms)

    def _commit_stopped(self, mirror: Mirror, partitions: list[dict], aborted: list[dict], highest_pid: int, stopped_ms: int) -> None:
        """Record ``mirror`` STOPPED with its stop offsets (inside the caller's transaction)."""
        m = self.m
        info = dict(mirror.stop_info or {})
        epoch = info["epoch"]
        lost_each = [p["records_possibly_lost"] for p in partitions]
        lost = None if None in lost_each else sum(lost_each)
        m.producer_ids.raise_floor(highest_pid)
        m.topics.set_leader_epoch(mirror.topic, epoch)
        info.update(phase="done", partitions=partitions, aborted_transactions=aborted, records_possibly_lost=lost, stopped_ms=stopped_ms)
        info.pop("possible_data_loss_records", None)
        m.transitions.apply(mirror, MirrorEvent.FINALIZED, stop_info=info)
        log.info("mirror %s is now writable (%s; leader epoch %d; %s records possibly lost)", mirror.topic, info["kind"], epoch, "unknown" if lost is None else lost)


def result(topic: str, code: int = ErrorCode.NONE, message: str | None = None, **fields) -> CommandResult:
    return CommandResult(topic, int(code), message, **fields)


def deleted_while_promoting(topic: str) -> CommandResult:
    return result(topic, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"mirror topic '{topic}' was deleted while it was being promoted")


def stop_summary(mirror: Mirror) -> StopSummary:
    info = mirror.stop_info or {}
    return StopSummary(
        kind=info.get("kind"),
        offsets=info.get("partitions", []),
        records_possibly_lost=info.get("records_possibly_lost", info.get("possible_data_loss_records")),
        aborted_transactions=info.get("aborted_transactions", []),
    )


COMMAND_EVENTS = {"promote": MirrorEvent.PROMOTE, "failover": MirrorEvent.FAILOVER, "pause": MirrorEvent.PAUSE, "resume": MirrorEvent.RESUME}


def validate_command(m: LinkManager, action: str, topics: list[str]) -> list[CommandResult]:
    """``validate_only``: what ``action`` would answer for each topic, from the transition table and the
    checks the command itself makes first; nothing is applied, persisted or fetched. A promote that would
    pass here can still time out waiting for lag 0 when it runs."""
    event = COMMAND_EVENTS[action]
    stops = action in ("promote", "failover")
    out = []
    for topic in dict.fromkeys(topics):
        try:
            mirror = m.mirror(topic)
        except DomainError as exc:
            out.append(result(topic, exc.error_code, exc.message, validate_only=True))
            continue
        partitions = tuple(m.partition_status(mirror)) if stops else None
        now = mirror.state.reported
        if stops and mirror.state in (MirrorState.STOPPED, MirrorState.FINALIZING):
            out.append(result(topic, mirror_status=MirrorState.STOPPED.value, partitions=partitions, validate_only=True))
            continue
        entry = m.links.get(mirror.link)
        if action == "promote" and entry is None:
            out.append(result(topic, ErrorCode.INVALID_REQUEST, f"link '{mirror.link}' no longer exists; use failover", mirror_status=now, validate_only=True))
            continue
        if action == "promote" and (mirror.state == MirrorState.SOURCE_UNAVAILABLE or (entry is not None and entry.runtime.state == LinkState.UNAVAILABLE)):
            out.append(result(topic, ErrorCode.BROKER_NOT_AVAILABLE, "promote needs the source cluster reachable; it is not (use failover to stop without it)", mirror_status=now, partitions=partitions, validate_only=True))
            continue
        try:
            after = next_state(mirror.state, event)
        except InvalidTransition as exc:
            out.append(result(topic, ErrorCode.INVALID_REQUEST, str(exc), mirror_status=now, partitions=partitions, validate_only=True))
            continue
        would_be = MirrorState.STOPPED.value if stops else after.reported
        out.append(result(topic, mirror_status=would_be, partitions=partitions, validate_only=True))
    return out
