"""One fetcher of a source broker: it owns a fetch connection's rounds, the fetch session and the append
pipeline for its share of the mirror partitions that broker leads (``num.cluster.link.fetchers`` fetchers
per broker, disjoint shares: ``assignment.spread``), and carries out what the partition cores decide.

Each round reads the link's assignment afresh (``LinkRuntime.active_parts``), validates partitions that
need it (``Validation``), sends one Fetch (bounded by ``replica.fetch.response.max.bytes``, so the link's
memory is bounded whatever the number of partitions), and hands each partition's answer to its
``PartitionCore``. Appends run in a worker thread while the next Fetch is in flight (write syscalls
release the GIL); a round waits for the previous round's appends before it reads its own answer, and
before validation (which may truncate). A partition that moves between fetchers (the fetcher count or
leadership changed) is *claimed* (``PartitionProgress.fetcher``): its new fetcher takes it only once the
old one has let it go, after its append in flight landed, so one partition never has two appends
running. All of this runs on the link's trio event loop except
``appends.append_all``, the worker-thread body, which touches only the logs it is given.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from protocol.errors import CorruptBatch, ErrorCode
from protocol.messages import ApiKey

from .. import storage_calls
from ..storage import StorageError
from . import fetchsize
from .appends import AppendJob, AppendsRefused, append_all
from .client import SourceProtocolError, SourceUnavailable
from .fetchplan import FetchPlan
from .fetchsession import SESSION_ERRORS, FetchSession
from .mirror import Mirror, PartitionProgress
from .partition import (
    Append,
    CheckRange,
    Denied,
    Fail,
    FetchAgain,
    PartitionCore,
    RefreshMetadata,
    Revalidate,
    SkipTo,
    TruncateTo,
)
from .states import LinkState, MirrorError, MirrorEvent, MirrorState
from .validation import AskBatch, AskEpochEnd, AskOffset, Unavailable, Validated, Validation, asks_start_offset
from .wire import (
    EARLIEST,
    LATEST,
    FetchedPartition,
    epoch_end_request,
    fetch_partition,
    fetch_request,
    list_offsets_request,
    only,
    read_epoch_end,
    read_fetch,
    read_list_offsets,
)

if TYPE_CHECKING:
    from .runtime import LinkRuntime

log = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class Fetcher:
    def __init__(self, runtime: LinkRuntime, broker_id: int, index: int = 0) -> None:
        self.rt = runtime
        self.broker_id = broker_id
        self.index = index
        self.key = (broker_id, index)
        self.session = FetchSession()
        self.plan = FetchPlan(self.session)  # the request's entries, kept between rounds
        self._settings = runtime.settings  # the settings the entries were computed with
        self._changes = -1  # the runtime's change count then (``LinkRuntime.changes``)
        self._pending: trio.Event | None = None  # set when the last round's appends have landed
        self._refused: str | None = None  # why the last round's appends failed
        self._held: dict[int, PartitionProgress] = {}  # the partitions this fetcher has claimed, by id
        self._grow_to = 0  # what a partition far behind may ask for, this round (``fetchsize.share``)
        self.taking_since_ms = 0  # when it last began taking partitions after holding none (epoch ms)

    def core(self, progress: PartitionProgress) -> PartitionCore:
        return PartitionCore(progress, self.rt.settings.fetch_max_bytes, self._grow_to)

    def _take(self) -> tuple[list[tuple[Mirror, PartitionProgress]], list[tuple[Mirror, PartitionProgress]]]:
        """This round's partitions, and those of them not validated: the ones assigned here that no other
        fetcher still holds. Partitions assigned elsewhere now are let go once no append of theirs is in
        flight (none is fetched now). One pass over the share (10,000 partitions, every round)."""
        key = self.key
        held = self._held
        taken, unvalidated = [], []
        for item in self.rt.active_parts(self.broker_id, self.index):
            progress = item[1]
            holder = progress.fetcher
            if holder != key:
                if holder is not None:
                    continue  # its old fetcher has not let it go yet
                progress.fetcher = key
                held[id(progress)] = progress
            taken.append(item)
            if not progress.validated:
                unvalidated.append(item)
        if len(held) != len(taken):  # something held is not this round's: assigned elsewhere, or gone
            wanted = {id(p) for _m, p in taken}
            released = False
            for ident, progress in list(held.items()):
                if ident not in wanted and progress.inflight_end < 0:
                    del held[ident]
                    if progress.fetcher == key:
                        progress.fetcher = None
                        released = True
            if released:
                self.rt.wake_loops()  # the fetcher they are assigned to now may be waiting for them
        return taken, unvalidated

    def release_all(self) -> None:
        """The fetcher ended (its appends with it): whatever it held is free for another fetcher."""
        for progress in self._held.values():
            if progress.fetcher == self.key:
                progress.fetcher = None
        self._held.clear()

    # -- rounds -------------------------------------------------------------------------------

    async def run(self) -> None:
        rt = self.rt
        backoff = rt.backoff()
        async with trio.open_nursery() as appends:
            while True:
                rt.recount()
                parts, unvalidated = self._take()
                if parts and not self.taking_since_ms:
                    self.taking_since_ms = now_ms()
                if not parts:
                    self.taking_since_ms = 0
                    changed = rt.changed
                    if self._pending is not None and not self._pending.is_set():
                        await self.quiesce()  # then the next _take lets go of what moved elsewhere
                        continue
                    if not rt.assigned(self.broker_id, self.index):
                        await self._drop_connection()  # its partitions went elsewhere (or away): nothing held
                        return
                    with trio.move_on_after(5):
                        await changed.wait()
                    continue
                try:
                    conn = await rt.source.fetch_connection(self.broker_id, self.index)
                    if unvalidated:
                        await self.appends_landed()  # validation may truncate: nothing may be in flight
                        try:
                            await self._start_new_partitions(conn, unvalidated)
                            for mirror, progress in unvalidated:
                                if not progress.validated:
                                    await self._validate(conn, mirror, progress)
                        finally:
                            for _mirror, progress in unvalidated:
                                self.plan.touch(progress)  # its log may have been cut or reset
                        parts, _unvalidated = self._take()
                    if any(p.validated for _m, p in parts):
                        await self._round(conn, parts, appends)
                    backoff.reset()
                except SourceUnavailable as exc:
                    log.warning("link %s: source broker %d unavailable: %s", rt.name, self.broker_id, exc)
                    await self._drop_connection()
                    rt.broker_lost(self.broker_id)
                    await trio.sleep(backoff.next())
                except AppendsRefused as exc:
                    # Nothing refused was written; the disk may come back (space freed): retry with back-off
                    # rather than fail the mirrors, and keep the daemon serving everyone else meanwhile.
                    log.error("link %s: could not append what source broker %d sent, fetching it again later: %s", rt.name, self.broker_id, exc)
                    await trio.sleep(backoff.next())
                except (SourceProtocolError, CorruptBatch) as exc:
                    # A malformed answer (the typed readers say which field): a reconnect, never the daemon.
                    log.error("link %s: protocol error from source broker %d: %r", rt.name, self.broker_id, exc)
                    await self._drop_connection()
                    await trio.sleep(backoff.next())
                except Exception:
                    # A bug in this loop must cost this link a retry, never the daemon and every other client.
                    log.exception("link %s: fetch loop for source broker %d failed; retrying", rt.name, self.broker_id)
                    rt.refresh_now()
                    await trio.sleep(backoff.next())

    async def _drop_connection(self) -> None:
        address = self.rt.source.brokers.get(self.broker_id)
        if address:
            await self.rt.source.drop_fetch(address, self.index)

    async def _round(self, conn, parts: list[tuple[Mirror, PartitionProgress]], appends: trio.Nursery) -> None:
        rt, settings = self.rt, self.rt.settings
        # Across a WAN a partition behind grows toward its share of the response; on a LAN one round trip
        # costs little and larger responses only cost (on loopback 8/64 MiB fetches ran at 0.7x 1/10 MiB).
        grow_to = fetchsize.share(settings.fetch_max_bytes, settings.fetch_response_max_bytes, len(parts)) if rt.wide_area() else 0
        if grow_to != self._grow_to or settings is not self._settings or rt.changes != self._changes:
            # What every entry depends on changed (the assignment too: a leader epoch): compute them all.
            self._grow_to, self._settings, self._changes = grow_to, settings, rt.changes
            self.plan.touch_all()
        self.plan.update(parts, rt.topics, lambda progress: self.core(progress).request_max_bytes())
        if not self.plan.by_key:
            # Every partition's topic is gone: wait for the refresh that drops them rather than spin.
            await trio.sleep(settings.retry_backoff_ms / 1000)
            return
        body = {**fetch_request([], max_wait_ms=settings.fetch_wait_max_ms, min_bytes=settings.fetch_min_bytes, max_bytes=settings.fetch_response_max_bytes), **self.session.build()}
        rt.fetch_requests += 1
        rt.incremental_fetch_requests += body["session_id"] != 0
        try:
            response = await conn.request(ApiKey.FETCH, body, timeout=settings.request_timeout_ms / 1000 + settings.fetch_wait_max_ms / 1000)
            answer = read_fetch(response)
        except BaseException:
            self.session.reset()  # unanswered (or unreadable): the broker may or may not have applied it
            raise
        self.session.answered(answer.error, answer.session_id)
        if answer.error in SESSION_ERRORS:
            log.info("link %s: fetch session with source broker %d ended (%s); starting a new one", rt.name, self.broker_id, answer.error.name)
            return
        if answer.error != ErrorCode.NONE:
            raise SourceProtocolError(f"fetch failed with {answer.error.name}")
        await self.appends_landed()  # the previous round's data is in the log before we look at this one
        index = self.plan.by_key
        jobs = []
        try:
            for key, pdata in answer.partitions.items():
                item = index.get(key)
                if item is not None:
                    self.plan.touch(item[1])  # whatever its answer does, its entry is computed again
                    if (job := await self._digest(conn, item[0], item[1], pdata)) is not None:
                        jobs.append(job)
        except BaseException:
            for job in jobs:  # never started: the next fetch starts from the log end again
                job.core.append_ended()
            raise
        if jobs:
            done = self._pending = trio.Event()
            appends.start_soon(self._run_appends, jobs, done)

    async def _digest(self, conn, mirror: Mirror, progress: PartitionProgress, answer: FetchedPartition) -> AppendJob | None:
        """Carry out the action the partition's core makes of its answer; an append job is returned."""
        rt = self.rt
        topic = rt.topics.get(mirror.topic)
        if topic is None or not mirror.fetching or rt.state == LinkState.PAUSED:
            # A long poll sent before the link was paused may answer after it: nothing of it is appended.
            return None
        plog = topic.logs[progress.partition]
        core = self.core(progress)
        if answer.error == ErrorCode.NONE:
            if mirror.state == MirrorState.SOURCE_UNAVAILABLE:
                rt.transition(mirror, MirrorEvent.SOURCE_BACK)
            rt.source_readable(mirror)
        action = core.on_answer(answer, plog, now_ms())
        if isinstance(action, CheckRange):
            earliest = await self._list_offset(conn, mirror, progress.partition, EARLIEST)
            latest = await self._list_offset(conn, mirror, progress.partition, LATEST)
            action = core.on_range(earliest, latest, plog)
        if isinstance(action, Append):
            return AppendJob(mirror, core, plog, action.slice)
        await self._apply(mirror, progress, plog, action)
        rt.transitions.progressed(mirror)
        return None

    async def _apply(self, mirror: Mirror, progress: PartitionProgress, plog, action) -> None:
        rt = self.rt
        if isinstance(action, TruncateTo):
            log.warning("mirror %s partition %d: source diverged at epoch %d; truncating mirror from %d to %d", mirror.topic, progress.partition, action.epoch, plog.log_end_offset, action.offset)
            rt.store.record_gap(mirror.topic, progress.partition, action.offset, plog.log_end_offset, f"truncated: source diverged at leader epoch {action.epoch}")
            await storage_calls.call(plog, plog.truncate_to, action.offset)
        elif isinstance(action, SkipTo):  # from == to: a new mirror starts at the source's log start, no gap
            (log.warning if action.from_offset < action.offset else log.info)("mirror %s partition %d: source log start %d, mirror end %d: %s", mirror.topic, progress.partition, action.offset, action.from_offset, action.reason)
            if action.restart_log:
                rt.store.record_gap(mirror.topic, progress.partition, action.from_offset, action.offset, action.reason)
                await storage_calls.call(plog, plog.reset_to, action.offset)
            else:
                # The log keeps its data; the first batch appended from the new offset leaves the hole, as
                # compaction does. The skip record is the durable resume point until then.
                rt.store.record_skip(mirror.topic, progress.partition, action.from_offset, action.offset, action.reason)
        elif isinstance(action, Fail):
            rt.fail(mirror, action.error, action.message)
        elif isinstance(action, RefreshMetadata):
            rt.refresh_soon()
        elif isinstance(action, Denied):
            rt.authorization_failed(mirror, "Read")
        elif isinstance(action, FetchAgain) and action.reason.startswith(("source fetch error", "OFFSET_OUT_OF_RANGE")):
            log.warning("mirror %s partition %d: %s; retrying", mirror.topic, progress.partition, action.reason)
        elif isinstance(action, Revalidate):
            log.info("mirror %s partition %d: validating again: %s", mirror.topic, progress.partition, action.reason)

    # -- appends overlap the next fetch ---------------------------------------------------------

    async def appends_landed(self) -> None:
        if self._pending is not None:
            await self._pending.wait()
        refused, self._refused = self._refused, None
        if refused is not None:
            raise AppendsRefused(refused)

    async def quiesce(self) -> None:
        if self._pending is not None:
            await self._pending.wait()

    async def _run_appends(self, jobs: list[AppendJob], done: trio.Event) -> None:
        rt = self.rt
        try:
            outcomes = await trio.to_thread.run_sync(append_all, jobs)
            refused = []
            for job, error in zip(jobs, outcomes, strict=True):
                mirror, progress = job.mirror, job.core.progress
                if mirror.deleted:
                    continue  # its log was closed under the append; nothing to report to anyone
                if isinstance(error, CorruptBatch):
                    kind = MirrorError.UNSUPPORTED_MESSAGE_FORMAT if error.reason == "UNSUPPORTED_MESSAGE_FORMAT" else MirrorError.CORRUPT_BATCH
                    rt.fail(mirror, kind, f"partition {progress.partition} at offset {error.base_offset}: {error}")
                elif isinstance(error, StorageError):
                    rt.fail(mirror, MirrorError.CORRUPT_BATCH, f"partition {progress.partition}: {error}")
                elif error is not None:
                    # The disk said no (ENOSPC, EROFS, EIO, a file size limit) or appending hit a bug; the
                    # segment was cut back, so this partition is fetched again from its log end later.
                    if not isinstance(error, OSError):
                        log.error("mirror %s partition %d: append failed", mirror.topic, progress.partition, exc_info=error)
                    refused.append(f"{mirror.topic}-{progress.partition} at offset {job.slice.batches[0].base_offset}: {error!r}")
                else:
                    rt.fetched_bytes += len(job.slice.data)
                    rt.appended_batches += len(job.slice.batches)
                    job.core.appended(job.plog, now_ms())
                    rt.transitions.progressed(mirror)
            if refused:
                self._refused = "; ".join(refused)
            rt.notify()
        finally:
            for job in jobs:
                job.core.append_ended()
                self.plan.touch(job.core.progress)  # it fetches from its log end (or the append's end) again
            done.set()

    # -- validation -------------------------------------------------------------------------------

    async def _list_offset(self, conn, mirror: Mirror, partition: int, timestamp: int) -> int:
        response = await conn.request(ApiKey.LIST_OFFSETS, list_offsets_request({mirror.source_topic: [partition]}, timestamp))
        p = only(read_list_offsets(response), mirror.source_topic, partition, "ListOffsets")
        if p.error != ErrorCode.NONE:
            raise SourceUnavailable(f"ListOffsets for {mirror.source_topic}-{partition} failed with {p.error.name}")
        return p.offset

    async def _start_new_partitions(self, conn, items: list[tuple[Mirror, PartitionProgress]]) -> None:
        """Empty mirror partitions start where mirror.start.offset.spec says: one ListOffsets for all of them
        instead of one round trip each (a new 8-partition mirror waited 8 round trips for its first fetch).
        Anything this cannot settle (an error, no offset for the timestamp) is left to ``_validate``."""
        fresh = []
        for mirror, progress in items:
            topic = self.rt.topics.get(mirror.topic)
            if topic is not None:
                plog = topic.logs[progress.partition]
                if plog.log_end_offset == plog.log_start_offset == 0:
                    fresh.append((mirror, progress, plog))
        if len(fresh) < 2 or not asks_start_offset(self.rt.start_timestamp(), ApiKey.OFFSET_FOR_LEADER_EPOCH in conn.versions):
            return
        by_topic: dict[str, list[int]] = {}
        for mirror, progress, _plog in fresh:
            by_topic.setdefault(mirror.source_topic, []).append(progress.partition)
        found = read_list_offsets(await conn.request(ApiKey.LIST_OFFSETS, list_offsets_request(by_topic, self.rt.start_timestamp())))
        for mirror, progress, plog in fresh:
            p = found.get((mirror.source_topic, progress.partition))
            if p is None or p.error != ErrorCode.NONE or p.offset < 0:
                continue
            if p.offset > 0:
                await storage_calls.call(plog, plog.reset_to, p.offset)  # an empty mirror starts mid-way: no gap
            progress.validated = True

    async def _validate(self, conn, mirror: Mirror, progress: PartitionProgress) -> None:
        rt = self.rt
        topic = rt.topics.get(mirror.topic)
        if topic is None:
            return
        plog = topic.logs[progress.partition]
        if not (plog.log_end_offset == plog.log_start_offset == 0) and progress.skip_to <= plog.log_end_offset:
            # A skip recorded before a restart: continue past it rather than fetch the deleted range again.
            progress.skip_to = rt.store.skip_resume_offset(mirror.topic, progress.partition, plog.log_end_offset) or -1
        machine = Validation(plog, progress.partition, epochs_supported=ApiKey.OFFSET_FOR_LEADER_EPOCH in conn.versions, start_timestamp=rt.start_timestamp())
        step = machine.start()
        while True:
            if isinstance(step, AskOffset):
                response = await conn.request(ApiKey.LIST_OFFSETS, list_offsets_request({mirror.source_topic: [progress.partition]}, step.timestamp))
                step = machine.receive(only(read_list_offsets(response), mirror.source_topic, progress.partition, "ListOffsets"))
            elif isinstance(step, AskEpochEnd):
                response = await conn.request(ApiKey.OFFSET_FOR_LEADER_EPOCH, epoch_end_request(mirror.source_topic, progress.partition, step.epoch))
                step = machine.receive(read_epoch_end(response, mirror.source_topic, progress.partition))
            elif isinstance(step, AskBatch):
                part = fetch_partition(progress.partition, step.offset, step.max_bytes)
                response = await conn.request(ApiKey.FETCH, fetch_request([{"topic": mirror.source_topic, "partitions": [part]}], max_wait_ms=0, min_bytes=1, max_bytes=step.max_bytes))
                answer = read_fetch(response)
                if answer.error != ErrorCode.NONE:
                    raise SourceProtocolError(f"validation fetch failed with {answer.error.name}")
                step = machine.receive(only(answer.partitions, mirror.source_topic, progress.partition, "Fetch"))
            else:
                break
        if isinstance(step, Validated):
            if step.reset_to is not None:
                await storage_calls.call(plog, plog.reset_to, step.reset_to)
            self.core(progress).validated(truncated=False, start_unconfirmed=step.start_unconfirmed)
        elif isinstance(step, Unavailable):
            raise SourceUnavailable(f"{mirror.source_topic}: {step.message}")
        else:
            await self._apply(mirror, progress, plog, step)
            if isinstance(step, TruncateTo):
                self.core(progress).validated(truncated=True)
