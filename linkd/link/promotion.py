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

import outcome
import trio

from protocol.errors import ErrorCode

from .. import gcpolicy, storage_calls
from ..storage import LogClosed, PartitionLog
from ..storage.markers import abort_open_transactions
from .client import SourceProtocolError, SourceUnavailable
from .commandresults import deleted_while_promoting, result, stop_summary
from .commandresults import validate_command as validate_command  # the manager's import
from .errors import DomainError, ErrorKind
from .loss import partition_report
from .mirror import Mirror, PartitionProgress
from .partition import fetch_position
from .runtime import now_ms
from .states import InvalidTransition, LinkState, MirrorEvent, MirrorState
from .status import CommandResult

if TYPE_CHECKING:
    from .manager import LinkManager

log = logging.getLogger(__name__)

T = TypeVar("T")
DEFAULT_PROMOTE_TIMEOUT_S = 60.0
FAILOVER_SOURCE_READ_S = 5.0  # at most this long asking a (maybe dead) source for its end offsets
# A mirror being fetched whose every partition's source end was read this recently (beyond the link's
# long-poll wait, which an idle fetch session answers within) is not asked again before a failover.
FAILOVER_FRESH_END_MS = 1000
# Worker-thread jobs that share phase 2's storage work (markers, fsync) of every partition: fsyncs in
# parallel share the file system's commits, so a failover of thousands of partitions is neither thousands
# of commits in a row nor thousands of thread hand-offs.
FINALIZE_PARALLELISM = 16


def _close_partition(plog: PartitionLog, epoch: int) -> tuple[list[dict], int]:
    """Phase 2's storage work for one partition, in a worker thread: ABORT markers, then the log made
    durable up to its end (what failover promises before STOPPED is recorded), then its producer ids.

    Only the data is fsynced (``flush(checkpoints=False)``), and only in a log not yet durable to its
    end: the checkpoint files a due flush rewrites (producer snapshot, epochs, recovery point: derived
    data, rebuilt by recovery) are each a write and two fsyncs, which at 10,000 partitions was most of a
    failover's time; the periodic flush writes them later."""
    aborted = abort_open_transactions(plog, epoch)
    if aborted or plog.recovery_point < plog.log_end_offset:
        plog.flush(checkpoints=False)
    return aborted, plog.producer_ids_seen_max()


def _quiet_partition(plog: PartitionLog) -> tuple[list[dict], int] | None:
    """``_close_partition``'s answer for a log with nothing to do (no open transaction, durable to its
    end), read on the event loop from the log's published view (readers never wait); None when the log
    needs the worker thread. Raises ``LogClosed`` for a deleted log, as the thread call would. At 10,000
    quiet partitions this spares a failover as many lock hand-offs and calls across the GIL."""
    view = plog.view
    if view.closed:
        raise LogClosed(f"{plog.name}: log is closed")
    if view.open_transactions or plog.recovery_point < view.log_end:
        return None
    return [], plog.producer_ids_seen_max()


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
        began = trio.current_time()
        # The mirrors made since the start are long-lived state a full collection would walk, with the
        # loop stopped, inside this failover and the first Produce after it (see linkd.gcpolicy).
        gcpolicy.settle("failover")
        await self._read_source_ends_before_stop([m.mirrors[t] for t in names if t in m.mirrors and m.mirrors[t].state not in (MirrorState.STOPPED, MirrorState.FINALIZING)])
        asked = trio.current_time()
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
        decided = trio.current_time()
        for name in dict.fromkeys(mirror.link for mirror in stopping if mirror.state is MirrorState.FINALIZING):
            entry = m.links.get(name)
            if entry is not None:
                await entry.runtime.quiesce()  # an append still landing would race the ABORT markers
        quiet = trio.current_time()
        await self.finalize_many(stopping)
        log.info("failover of %d mirror(s): %.2f s (source end offsets %.2f, decision %.2f, fetchers quiet %.2f, partitions closed and recorded %.2f)",
                 len(stopping), trio.current_time() - began, asked - began, decided - asked, quiet - decided, trio.current_time() - quiet)
        return [
            unknown[topic] if topic in unknown else result(topic, mirror_status=m.mirrors[topic].state.reported, partitions=tuple(m.partition_status(m.mirrors[topic])), stop=stop_summary(m.mirrors[topic]))
            if topic in m.mirrors else deleted_while_promoting(topic)
            for topic in names
        ]

    async def _read_source_ends_before_stop(self, mirrors: list[Mirror]) -> None:
        """A paused mirror, or one whose fetches have not answered lately, has a stale idea of where the
        source ends: ask the source now (bounded; a dead source just leaves what was last seen), then
        checkpoint it. A mirror being fetched whose source ends were all read within the long poll's wait
        plus ``FAILOVER_FRESH_END_MS`` is not asked again: at 10,000 partitions that ListOffsets and its
        probe Fetch were most of a failover's time, for a reading a few hundred ms newer."""
        by_link: dict[str, list[Mirror]] = {}
        for mirror in mirrors:
            by_link.setdefault(mirror.link, []).append(mirror)
        for name, group in by_link.items():
            entry = self.m.links.get(name)
            if entry is None:
                continue
            fresh = entry.runtime.seen_ends_fresh(group, entry.settings.fetch_wait_max_ms + FAILOVER_FRESH_END_MS)
            if fresh:
                log.info("link %s: %d of %d mirror(s) to stop have every source end read within %d ms by fetching; not asked again",
                         name, len(fresh), len(group), entry.settings.fetch_wait_max_ms + FAILOVER_FRESH_END_MS)
                group = [m for m in group if m.topic not in fresh]
                if not group:
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

        Their partitions' storage work (markers, fsync) runs in ``FINALIZE_PARALLELISM`` worker-thread
        jobs (``storage_calls.call_batched``), so every other client keeps being served meanwhile; a quiet
        partition (durable, no open transaction: most of them) is read on the loop instead;
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
                if not todo:
                    return  # no transaction: a start on a full disk (read-only control store) has nothing to record
                closed = await self._close_storage(todo)
                with self.m.control_store.transaction():
                    for mirror in todo:
                        if mirror.topic in closed and not mirror.deleted and mirror.state is MirrorState.FINALIZING:
                            self._commit_stopped(mirror, *closed[mirror.topic])
                gcpolicy.settle("mirrors stopped")  # their stop reports stay as long as the mirrors
            finally:
                for topic, lock in locks:
                    lock.release()
                    if not lock.locked() and self._finalizing.get(topic) is lock:
                        del self._finalizing[topic]

    async def _close_storage(self, mirrors: list[Mirror]) -> dict[str, tuple[list[dict], list[dict], int, int]]:
        """Phase 2's storage work for every partition of ``mirrors``, as one ``storage_calls.call_batched``
        (``FINALIZE_PARALLELISM`` worker-thread jobs, not a hand-off per partition). Returns, per mirror
        not deleted meanwhile: (partition reports, aborted transactions, highest producer id, stop time)."""
        stopped_ms = now_ms()
        calls: list[tuple[PartitionLog, Callable[..., tuple[list[dict], int]], tuple]] = []
        where: list[tuple[Mirror, int, PartitionProgress, int, PartitionLog]] = []
        quiet: dict[int, outcome.Outcome] = {}  # index in ``where`` -> the answer read on the loop
        for mirror in mirrors:
            topic = self.m.topics.get(mirror.topic)
            assert topic is not None, f"mirror {mirror.topic} has no topic"  # deleting a topic forgets its mirror
            epoch = (mirror.stop_info or {})["epoch"]
            for index, plog in enumerate(topic.logs):
                progress = mirror.partitions[index] if index < len(mirror.partitions) else PartitionProgress(index)
                # Where mirroring of the source stopped: before the ABORT markers, which take offsets that
                # on the source hold records the mirror never got.
                where.append((mirror, index, progress, fetch_position(progress, plog), plog))
                answer = outcome.capture(_quiet_partition, plog)
                if isinstance(answer, outcome.Value) and answer.value is None:
                    calls.append((plog, _close_partition, (plog, epoch)))
                else:
                    quiet[len(where) - 1] = answer
        threaded = iter(await storage_calls.call_batched(calls, FINALIZE_PARALLELISM) if calls else [])
        outcomes = [quiet[i] if i in quiet else next(threaded) for i in range(len(where))]
        reports: dict[str, list[dict]] = {}
        aborted: dict[str, list[dict]] = {}
        seen: dict[str, int] = {}
        deleted: set[str] = set()
        for (mirror, index, progress, stop_offset, plog), done in zip(where, outcomes, strict=True):
            try:
                ended, highest = done.unwrap()
            except LogClosed:
                deleted.add(mirror.topic)
                continue
            for entry in ended:
                aborted.setdefault(mirror.topic, []).append({"partition": index, **entry})
                log.warning("mirror %s partition %d: aborted open transaction of producer %d (from offset %d)", mirror.topic, index, entry["producer_id"], entry["first_offset"])
            reports.setdefault(mirror.topic, []).append(partition_report(index, stop_offset, plog.log_end_offset, progress, stopped_ms))
            seen[mirror.topic] = max(seen.get(mirror.topic, -1), highest)
        closed = {}
        for mirror in mirrors:
            if mirror.topic in deleted or mirror.deleted:
                log.info("mirror %s was deleted while it was being made writable", mirror.topic)
                continue
            earlier = list((mirror.stop_info or {}).get("aborted_transactions", []))
            closed[mirror.topic] = (reports.get(mirror.topic, []), earlier + aborted.get(mirror.topic, []), seen.get(mirror.topic, -1), stopped_ms)
        return closed

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
