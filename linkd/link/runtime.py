"""A running link: metadata refresh, one fetch loop per source broker, truncation checks.

Theory of operation
-------------------
The link keeps an *assignment*: for each source broker, the mirror partitions it leads. A metadata loop
refreshes it every ``metadata.max.age.ms`` and whenever a fetch reports a leadership error. One fetch
loop runs per source broker that leads something; each round it reads the assignment afresh, so changes
need no restart. A loop keeps one Fetch outstanding (bounded by ``replica.fetch.response.max.bytes``),
which bounds the link's memory whatever the number of partitions.

Before a partition's first fetch, and again after every reconnection or leader change, the partition is
*validated*: its log end must still be a prefix of the source's log. With OffsetForLeaderEpoch (Apache
Kafka) the source says where our last epoch ends there; without it (Tansu) the source must still hold our
last batch with the same CRC. A provable divergence truncates the mirror to the common prefix; an
unprovable one (the source lost data it had served) fails the mirror with UNEXPECTED_TRUNCATION rather
than mixing old and new data at the same offsets.

Every fetched batch is verified before it is appended (design Invariant 3); a partial trailing batch is
dropped and fetched again next round.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from datetime import datetime

import trio

from protocol.errors import CorruptBatch, ErrorCode
from protocol.messages import ApiKey
from protocol.records import split_batches

from ..storage import StorageError
from .client import SourceProtocolError, SourceUnavailable, source_error
from .config import LinkSettings
from .fetchsession import SESSION_ERRORS, FetchSession
from .mirror import Mirror, MirrorStore, PartitionProgress
from .source import SourceCluster
from .states import InvalidTransition, LinkState, MirrorError, MirrorEvent, MirrorState

log = logging.getLogger(__name__)

LEADERSHIP_ERRORS = {
    ErrorCode.NOT_LEADER_OR_FOLLOWER,
    ErrorCode.FENCED_LEADER_EPOCH,
    ErrorCode.UNKNOWN_LEADER_EPOCH,
    ErrorCode.LEADER_NOT_AVAILABLE,
    ErrorCode.REPLICA_NOT_AVAILABLE,
    ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
    ErrorCode.UNKNOWN_TOPIC_ID,
    ErrorCode.OFFSET_NOT_AVAILABLE,
}
MAX_PARTITION_FETCH_BYTES = 64 * 1024 * 1024
PROBE_WAIT_MS = 100  # how long a probe Fetch past the high watermark may wait for data (Kafka: it waits this long)
SERVED_PAST_MAX_ROUNDS = 16  # Fetches spent walking past a source's high watermark to what it serves
SOURCE_END_REFRESH_MAX_MS = 5000  # the source end of a partition not being fetched is read this often, at least
WATCHED_STATES = frozenset({MirrorState.ACTIVE, MirrorState.PAUSED, MirrorState.SOURCE_UNAVAILABLE, MirrorState.PENDING_STOPPED})


class AppendsRefused(Exception):
    """The local disk refused a round's appends (full, read-only, failing) or appending hit a bug: nothing
    of the refused jobs was written, and their partitions are fetched again from their log ends."""


def now_ms() -> int:
    return int(time.time() * 1000)


class LinkRuntime:
    def __init__(
        self,
        name: str,
        settings: LinkSettings,
        mirrors: Callable[[], list[Mirror]],
        mirror_store: MirrorStore,
        topics,
        notify: Callable[[], None],
        on_mirror_change: Callable[[Mirror], None],
    ) -> None:
        self.name = name
        self.settings = settings
        self._mirrors = mirrors
        self._store = mirror_store
        self._topics = topics
        self._notify = notify
        self._on_mirror_change = on_mirror_change
        self.source = SourceCluster(settings.bootstrap_servers, client_id=f"linkd-link-{name}", request_timeout_s=settings.request_timeout_ms / 1000, security=settings.security)
        self.state = LinkState.PAUSED if settings.paused else LinkState.ACTIVE
        self.state_message: str | None = None
        self.link_error = "NO_ERROR"  # typed reason while UNAVAILABLE: SOURCE_UNAVAILABLE or AUTHENTICATION_ERROR
        self._assignment: dict[int, list[tuple[Mirror, PartitionProgress]]] = {}
        self._loops: set[int] = set()
        self._nursery: trio.Nursery | None = None
        self._refreshing = False
        self._refresh = trio.Event()  # set: refresh metadata now (after a 5 ms coalescing pause)
        self._next_refresh = math.inf  # when the loop refreshes unasked (metadata.max.age.ms, or sooner)
        self._waiting: trio.CancelScope | None = None  # the loop's wait for either, while it waits
        self._changed = trio.Event()
        self.fetch_requests = 0
        self.incremental_fetch_requests = 0  # of them, those inside a fetch session (naming changed partitions only)
        self.fetched_bytes = 0
        self.appended_batches = 0
        self._pending_appends: dict[int, trio.Event] = {}
        self._refused_appends: dict[int, str] = {}  # broker id -> why its last round's appends failed
        self._sessions: dict[int, FetchSession] = {}  # broker id -> its fetch loop's incremental fetch session
        self._denied: dict[str, tuple[float, _Backoff]] = {}  # mirror -> (trio time to ask again, its back-off)

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Something changed (mirror added, resumed): refresh metadata and reassign now."""
        self._refresh.set()
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _transition(self, mirror: Mirror, event: MirrorEvent, error: MirrorError | None = None, message: str | None = None) -> None:
        before = mirror.state
        try:
            self._store.transition(mirror, event, error, message)
        except InvalidTransition:
            return
        if mirror.state != before:
            log.info("mirror %s: %s -> %s%s", mirror.topic, before.value, mirror.state.value, f" ({message})" if message else "")
            self._on_mirror_change(mirror)

    def fail(self, mirror: Mirror, error: MirrorError, message: str) -> None:
        log.error("mirror %s failed: %s: %s", mirror.topic, error.value, message)
        self._transition(mirror, MirrorEvent.FAIL, error, message)

    # -- main loop ------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._watch_source_ends)
                task_status.started()
                backoff = _Backoff(self.settings.retry_backoff_ms, self.settings.retry_backoff_max_ms)
                while True:
                    # Reset before the refresh, not after: a wake-up that lands while it is in flight (its
                    # mirror list is already taken) must ask for one more.
                    self._refresh = trio.Event()
                    self._next_refresh = trio.current_time() + self.settings.metadata_max_age_ms / 1000
                    try:
                        self._refreshing = True
                        try:
                            await self._refresh_metadata()
                        finally:
                            self._refreshing = False
                        backoff.reset()
                        if self.state == LinkState.UNAVAILABLE:
                            self.state, self.state_message = LinkState.ACTIVE, None
                        self.link_error = "NO_ERROR"
                    except SourceUnavailable as exc:
                        if self.state != LinkState.PAUSED:
                            self.state, self.state_message = LinkState.UNAVAILABLE, str(exc)
                        self.link_error = getattr(exc, "link_error", "SOURCE_UNAVAILABLE")
                        for mirror in self._mirrors():
                            if mirror.fetching:
                                self._transition(mirror, MirrorEvent.SOURCE_LOST)
                        log.warning("link %s: source unavailable: %s", self.name, exc)
                        await trio.sleep(backoff.next())
                        continue
                    except Exception:
                        # A malformed answer or a bug in the refresh must cost this link a retry, never the
                        # daemon and every client of it.
                        log.exception("link %s: metadata refresh failed; retrying", self.name)
                        await trio.sleep(backoff.next())
                        continue
                    self._start_loops(nursery)
                    with trio.CancelScope(deadline=self._next_refresh) as self._waiting:
                        await self._refresh.wait()
                    self._waiting = None
                    await trio.sleep(0.001)  # coalesce bursts of refresh requests
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self.source.close()

    async def _refresh_metadata(self) -> None:
        mirrors = [m for m in self._mirrors() if m.fetching]
        if not mirrors:
            # Still ask the source (no topics: a cheap Metadata), so an idle link shows whether it can reach
            # and authenticate to its source (link_error), as it would the moment a mirror is added.
            await self.source.metadata([])
            self._assignment = {}
            return
        log.debug("link %s: refreshing metadata for %s", self.name, ", ".join(m.topic for m in mirrors))
        topics = await self.source.metadata(sorted({m.source_topic for m in mirrors}))
        assignment: dict[int, list[tuple[Mirror, PartitionProgress]]] = {}
        for mirror in mirrors:
            self._assign(mirror, topics.get(mirror.source_topic), assignment)
        self._assignment = assignment
        log.debug("link %s: assignment %s", self.name, {b: [f"{m.topic}-{p.partition}" for m, p in parts] for b, parts in assignment.items()})
        self.wake_loops()

    def _assign(self, mirror: Mirror, st, assignment: dict[int, list[tuple[Mirror, PartitionProgress]]]) -> None:
        """Add ``mirror``'s partitions to ``assignment`` by their source leaders in ``st`` (its source topic's
        metadata), after checking that the source topic is still the log the mirror holds."""
        recreated = st is not None and st.error == ErrorCode.NONE and bool(mirror.source_topic_id) and st.topic_id is not None and str(st.topic_id) != mirror.source_topic_id
        if recreated and self._holds_data(mirror):
            # Same name, another log (re-created, or a source that came back empty): its offsets now name
            # other records than the ones the mirror holds. Never mix the two histories.
            self.fail(
                mirror,
                MirrorError.UNEXPECTED_TRUNCATION,
                f"source topic {mirror.source_topic} came back with a new topic id ({mirror.source_topic_id} -> {st.topic_id}): "
                "the source lost or re-created the log the mirror holds",
            )
            return
        if st is not None and st.error == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
            self._authorization_failed(mirror, "Describe")
            return
        if st is None or st.error != ErrorCode.NONE or recreated:
            self._source_topic_missing(mirror, st)
            return
        mirror.missing_since_ms = None
        local = self._topics.get(mirror.topic)
        if local is None:
            return
        if len(st.partitions) < len(local.logs):
            self.fail(mirror, MirrorError.SOURCE_PARTITIONS_DECREASED, f"source topic {mirror.source_topic} has {len(st.partitions)} partitions, mirror has {len(local.logs)}")
            return
        if len(st.partitions) > len(local.logs):
            log.info("mirror %s: source grew to %d partitions", mirror.topic, len(st.partitions))
            self._topics.add_partitions(mirror.topic, len(st.partitions))
        while len(mirror.partitions) < len(local.logs):
            mirror.partitions.append(PartitionProgress(len(mirror.partitions), max_bytes=self.settings.fetch_max_bytes))
        for progress in mirror.partitions:
            sp = st.partitions.get(progress.partition)
            if sp is None or sp.leader < 0:
                continue
            if (sp.leader, sp.leader_epoch) != (progress.leader, progress.leader_epoch):
                progress.validated = False  # a new leader may hold a different history
            progress.leader, progress.leader_epoch = sp.leader, sp.leader_epoch
            assignment.setdefault(sp.leader, []).append((mirror, progress))

    def add_mirror(self, mirror: Mirror, st) -> None:
        """A mirror was just created from ``st``, source metadata its creator fetched a moment ago: start
        fetching it on that, without another metadata round trip (the next refresh checks it as usual).
        When no fetch loop can take it right now (link starting, paused or unavailable), wake the link."""
        nursery = self._nursery
        if nursery is None or self.state != LinkState.ACTIVE or not mirror.fetching:
            self.wake()
            return
        assignment = {broker: list(parts) for broker, parts in self._assignment.items()}
        self._assign(mirror, st, assignment)
        if not any(m is mirror for parts in assignment.values() for m, _p in parts):
            self.wake()  # leaderless or missing: let the refresh logic (and its back-off) handle it
            return
        self._assignment = assignment
        self._start_loops(nursery)
        self.wake_loops()
        if self._refreshing:
            self._refresh.set()  # the refresh in flight took its mirror list before this one existed

    def _start_loops(self, nursery: trio.Nursery) -> None:
        for broker_id, parts in self._assignment.items():
            if parts and broker_id not in self._loops:
                self._loops.add(broker_id)
                nursery.start_soon(self._fetch_loop, broker_id)

    def _holds_data(self, mirror: Mirror) -> bool:
        local = self._topics.get(mirror.topic)
        return local is not None and any(plog.log_end_offset > 0 for plog in local.logs)

    def _refresh_soon(self) -> None:
        """Leadership moved or a source topic is missing: look again after ``retry.backoff.ms``, not at
        once, so a source in trouble is asked about once per back-off, never in a tight loop."""
        deadline = trio.current_time() + self.settings.retry_backoff_ms / 1000
        self._next_refresh = min(self._next_refresh, deadline)
        if self._waiting is not None:
            self._waiting.deadline = min(self._waiting.deadline, deadline)

    def _authorization_failed(self, mirror: Mirror, operation: str) -> None:
        """The source refuses this link's principal ``operation`` on the mirror's topic: not a deleted topic
        and not a failure, a permission to grant. The mirror waits in SOURCE_UNAVAILABLE with the typed
        error, and is asked about again after a back-off that grows, never in a tight loop."""
        _until, backoff = self._denied.get(mirror.topic, (0.0, _Backoff(self.settings.retry_backoff_ms, self.settings.retry_backoff_max_ms)))
        delay = backoff.next()
        until = trio.current_time() + delay
        self._denied[mirror.topic] = (until, backoff)
        message = f"the source denies {operation} on topic {mirror.source_topic} to this link's principal (TOPIC_AUTHORIZATION_FAILED); asking again in {delay:.1f}s"
        if mirror.error != MirrorError.TOPIC_AUTHORIZATION_FAILED:
            log.warning("mirror %s: %s", mirror.topic, message)
        self._transition(mirror, MirrorEvent.SOURCE_LOST, MirrorError.TOPIC_AUTHORIZATION_FAILED, message)
        self._next_refresh = min(self._next_refresh, until)
        if self._waiting is not None:
            self._waiting.deadline = min(self._waiting.deadline, until)

    def _held(self, mirror: Mirror) -> bool:
        denied = self._denied.get(mirror.topic)
        return denied is not None and trio.current_time() < denied[0]

    def wake_loops(self) -> None:
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def _source_topic_missing(self, mirror: Mirror, st) -> None:
        if mirror.missing_since_ms is None:
            mirror.missing_since_ms = now_ms()
            log.warning("mirror %s: source topic %s missing from source metadata (%s)", mirror.topic, mirror.source_topic, st.error.name if st else "absent")
        if now_ms() - mirror.missing_since_ms >= self.settings.retry_timeout_ms:
            self.fail(mirror, MirrorError.SOURCE_TOPIC_MAY_BE_DELETED, f"source topic {mirror.source_topic} has been missing (or re-created with a new id) for {self.settings.retry_timeout_ms} ms")
        else:
            self._refresh_soon()

    # -- fetching --------------------------------------------------------------------------------

    def _active_parts(self, broker_id: int) -> list[tuple[Mirror, PartitionProgress]]:
        if self.state == LinkState.PAUSED:
            return []
        return [(m, p) for m, p in self._assignment.get(broker_id, []) if m.fetching and p.leader == broker_id and not self._held(m)]

    async def _fetch_loop(self, broker_id: int) -> None:
        backoff = _Backoff(self.settings.retry_backoff_ms, self.settings.retry_backoff_max_ms)
        try:
            async with trio.open_nursery() as appends:
                await self._fetch_rounds(broker_id, backoff, appends)
        finally:
            self._loops.discard(broker_id)
            self._sessions.pop(broker_id, None)

    async def _fetch_rounds(self, broker_id: int, backoff: _Backoff, appends: trio.Nursery) -> None:
        while True:
            parts = self._active_parts(broker_id)
            if not parts:
                changed = self._changed
                with trio.move_on_after(5):
                    await changed.wait()
                if not self._active_parts(broker_id) and broker_id not in self._assignment:
                    return
                continue
            try:
                conn = await self.source.fetch_connection(broker_id)
                if any(not p.validated for _m, p in parts):
                    await self._appends_landed(broker_id)  # validation may truncate: nothing may be in flight
                    await self._start_new_partitions(conn, [(m, p) for m, p in parts if not p.validated])
                for mirror, progress in parts:
                    if not progress.validated:
                        await self._validate(conn, mirror, progress)
                parts = [(m, p) for m, p in self._active_parts(broker_id) if p.validated]
                if parts:
                    await self._fetch_round(conn, parts, broker_id, appends)
                backoff.reset()
            except SourceUnavailable as exc:
                log.warning("link %s: source broker %d unavailable: %s", self.name, broker_id, exc)
                address = self.source.brokers.get(broker_id)
                if address:
                    await self.source.drop_fetch(address)
                for mirror, progress in self._assignment.get(broker_id, []):
                    progress.validated = False
                    if mirror.fetching:
                        self._transition(mirror, MirrorEvent.SOURCE_LOST)
                self._refresh.set()
                await trio.sleep(backoff.next())
            except AppendsRefused as exc:
                # Nothing refused was written; the disk may come back (space freed): retry with back-off
                # rather than fail the mirrors, and keep the daemon serving everyone else meanwhile.
                log.error("link %s: could not append what source broker %d sent, fetching it again later: %s", self.name, broker_id, exc)
                await trio.sleep(backoff.next())
            except (SourceProtocolError, KeyError, IndexError, ValueError) as exc:
                # KeyError/IndexError/ValueError: an answer missing a field we rely on, or an error code we
                # do not know. A misbehaving source must cost a reconnect, never the daemon.
                log.error("link %s: protocol error from source broker %d: %r", self.name, broker_id, exc)
                address = self.source.brokers.get(broker_id)
                if address:
                    await self.source.drop_fetch(address)
                await trio.sleep(backoff.next())
            except Exception:
                # A bug in this loop must cost this link a retry, never the daemon and every other client.
                log.exception("link %s: fetch loop for source broker %d failed; retrying", self.name, broker_id)
                self._refresh.set()
                await trio.sleep(backoff.next())

    # -- appends overlap the next fetch ---------------------------------------------------------

    async def _appends_landed(self, broker_id: int) -> None:
        event = self._pending_appends.get(broker_id)
        if event is not None:
            await event.wait()
        refused = self._refused_appends.pop(broker_id, None)
        if refused is not None:
            raise AppendsRefused(refused)

    async def quiesce(self) -> None:
        """Wait until no append is running (promotion writes its markers after this)."""
        for event in list(self._pending_appends.values()):
            await event.wait()

    async def _run_appends(self, jobs: list, done: trio.Event, broker_id: int) -> None:
        """Append one round's batches in a worker thread (write syscalls release the GIL), so the next
        Fetch response streams in meanwhile. Each job is (mirror, progress, plog, blob, its batches)."""
        try:
            outcomes = await trio.to_thread.run_sync(_append_all, jobs)
            refused = []
            for (mirror, progress, plog, blob, batches), error in zip(jobs, outcomes, strict=True):
                if mirror.deleted:
                    continue  # its log was closed under the append; nothing to report to anyone
                if isinstance(error, CorruptBatch):
                    kind = MirrorError.UNSUPPORTED_MESSAGE_FORMAT if error.reason == "UNSUPPORTED_MESSAGE_FORMAT" else MirrorError.CORRUPT_BATCH
                    self.fail(mirror, kind, f"partition {progress.partition} at offset {error.base_offset}: {error}")
                elif isinstance(error, StorageError):
                    self.fail(mirror, MirrorError.CORRUPT_BATCH, f"partition {progress.partition}: {error}")
                elif error is not None:
                    # The disk said no (ENOSPC, EROFS, EIO, a file size limit) or appending hit a bug; the
                    # segment was cut back, so this partition is fetched again from its log end later.
                    if not isinstance(error, OSError):
                        log.error("mirror %s partition %d: append failed", mirror.topic, progress.partition, exc_info=error)
                    refused.append(f"{mirror.topic}-{progress.partition} at offset {batches[0].base_offset}: {error!r}")
                else:
                    self.fetched_bytes += len(blob)
                    self.appended_batches += len(batches)
                    progress.last_source_fetch_offset = plog.log_end_offset
                    if plog.log_end_offset >= progress.source_high_watermark:
                        progress.caught_up_ms = now_ms()
                    progress.skip_to = -1
            if refused:
                self._refused_appends[broker_id] = "; ".join(refused)
            self._notify()
        finally:
            for _mirror, progress, _plog, _blob, _batches in jobs:
                progress.inflight_end = -1
            done.set()

    def _fetch_body(self, topics: list[dict], max_wait_ms: int, min_bytes: int) -> dict:
        return {
            "replica_id": -1,
            "max_wait_ms": max_wait_ms,
            "min_bytes": min_bytes,
            "max_bytes": self.settings.fetch_response_max_bytes,
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": topics,
            "forgotten_topics_data": [],
            "rack_id": "",
        }

    def _partition_request(self, progress: PartitionProgress, position: int) -> dict:
        return {
            "partition": progress.partition,
            "current_leader_epoch": progress.leader_epoch,
            "fetch_offset": position,
            "last_fetched_epoch": -1,
            "log_start_offset": -1,
            "partition_max_bytes": progress.max_bytes or self.settings.fetch_max_bytes,
        }

    async def probe_caught_up(self, mirror: Mirror) -> None:
        """Ask the source, with Fetches that do not wait, whether anything lies past where each of
        ``mirror``'s partitions fetches next. For a promote: an idle source otherwise answers the fetch
        loop only when its long poll ends (up to ``replica.fetch.wait.max.ms``). Records the evidence of
        being caught up (as the loop would for an empty answer) and nothing else: records the probe sees
        are the fetch loop's to append. Sent on the short-request connections; errors just leave the
        evidence to the loop."""
        local = self._topics.get(mirror.topic)
        if local is None or not mirror.fetching:
            return
        by_leader: dict[int, list[tuple[PartitionProgress, int]]] = {}
        for progress in mirror.partitions:
            if progress.validated and progress.leader >= 0 and progress.partition < len(local.logs):
                by_leader.setdefault(progress.leader, []).append((progress, fetch_position(progress, local.logs[progress.partition])))
        for leader, items in by_leader.items():
            plist = [self._partition_request(p, position) for p, position in items]
            try:
                conn = await self.source.broker_connection(leader)
                response = await conn.request(ApiKey.FETCH, self._fetch_body([{"topic": mirror.source_topic, "partitions": plist}], 0, 0), timeout=self.settings.request_timeout_ms / 1000)
            except (SourceUnavailable, SourceProtocolError):
                continue
            if mirror.deleted or not mirror.fetching:
                return
            answered = {pdata["partition_index"]: pdata for t in response.get("responses", []) if t.get("topic") == mirror.source_topic for pdata in t.get("partitions", [])}
            if any(pdata.get("records") for pdata in answered.values()):
                # Not caught up. (And only an answer with no records at all proves every partition
                # empty: a size limit may leave a partition out once another one returned data.)
                continue
            for progress, position in items:
                pdata = answered.get(progress.partition)
                if pdata is None or pdata["error_code"] != ErrorCode.NONE:
                    continue
                if position != fetch_position(progress, local.logs[progress.partition]) or progress.leader != leader:
                    continue  # the loop moved on meanwhile: its own answer counts
                progress.source_high_watermark = pdata["high_watermark"]
                progress.last_fetch_ms = progress.source_end_seen_ms = now_ms()
                progress.last_source_fetch_offset = position
                if position >= progress.source_high_watermark:
                    progress.caught_up_ms = progress.last_fetch_ms

    async def _fetch_round(self, conn, parts: list[tuple[Mirror, PartitionProgress]], broker_id: int, appends: trio.Nursery) -> None:
        wanted: dict[tuple[str, int], dict] = {}
        for mirror, progress in parts:
            local = self._topics.get(mirror.topic)
            if local is None:  # deleted while the previous round was in flight
                continue
            wanted[(mirror.source_topic, progress.partition)] = self._partition_request(progress, fetch_position(progress, local.logs[progress.partition]))
        if not wanted:
            # Every partition's topic is gone: wait for the refresh that drops them rather than spin.
            await trio.sleep(self.settings.retry_backoff_ms / 1000)
            return
        session = self._sessions.setdefault(broker_id, FetchSession())
        body = {**self._fetch_body([], self.settings.fetch_wait_max_ms, self.settings.fetch_min_bytes), **session.build(wanted)}
        self.fetch_requests += 1
        self.incremental_fetch_requests += body["session_id"] != 0
        try:
            response = await conn.request(ApiKey.FETCH, body, timeout=self.settings.request_timeout_ms / 1000 + self.settings.fetch_wait_max_ms / 1000)
        except BaseException:
            session.reset()  # unanswered: the broker may or may not have applied it
            raise
        code = response.get("error_code", 0)
        session.answered(code, response.get("session_id", 0))
        if code in SESSION_ERRORS:
            log.info("link %s: fetch session with source broker %d ended (%s); starting a new one", self.name, broker_id, source_error(code).name)
            return
        if code != ErrorCode.NONE:
            raise SourceProtocolError(f"fetch failed with {source_error(code).name}")
        await self._appends_landed(broker_id)  # the previous round's data is in the log before we look at this one
        index = {(m.source_topic, p.partition): (m, p) for m, p in parts}
        jobs = []
        for t in response.get("responses", []):
            for pdata in t.get("partitions", []):
                item = index.get((t.get("topic"), pdata["partition_index"]))
                if item is None:
                    continue
                mirror, progress = item
                job = await self._handle_partition(conn, mirror, progress, pdata)
                if job is not None:
                    jobs.append(job)
        if jobs:
            done = trio.Event()
            self._pending_appends[broker_id] = done
            appends.start_soon(self._run_appends, jobs, done, broker_id)

    async def _handle_partition(self, conn, mirror: Mirror, progress: PartitionProgress, pdata: dict) -> tuple | None:
        """Digest one partition of a Fetch response; returns an append job when it brought new batches."""
        code = source_error(pdata["error_code"])
        topic = self._topics.get(mirror.topic)
        if topic is None or not mirror.fetching or self.state == LinkState.PAUSED:
            # A long poll sent before the link was paused may answer after it: nothing of it is appended.
            return None
        plog = topic.logs[progress.partition]
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            await self._out_of_range(conn, mirror, progress, plog)
            return None
        if code in LEADERSHIP_ERRORS:
            progress.validated = False
            self._refresh_soon()
            return None
        if code == ErrorCode.TOPIC_AUTHORIZATION_FAILED:
            self._authorization_failed(mirror, "Read")
            return None
        if code != ErrorCode.NONE:
            log.warning("mirror %s partition %d: source fetch error %s", mirror.topic, progress.partition, code.name)
            return None
        if mirror.state == MirrorState.SOURCE_UNAVAILABLE:
            self._transition(mirror, MirrorEvent.SOURCE_BACK)
        self._denied.pop(mirror.topic, None)
        progress.source_high_watermark = pdata["high_watermark"]
        progress.source_log_start = pdata.get("log_start_offset", -1)
        progress.last_fetch_ms = progress.source_end_seen_ms = now_ms()
        if fetch_position(progress, plog) >= progress.source_high_watermark:
            progress.caught_up_ms = progress.last_fetch_ms
        diverging = pdata.get("diverging_epoch")
        if diverging and diverging.get("epoch", -1) >= 0:
            await self._truncate_to_divergence(mirror, progress, plog, diverging["epoch"], diverging["end_offset"])
            return None
        fetch_offset = fetch_position(progress, plog)
        records = pdata.get("records")
        if not records:
            progress.last_source_fetch_offset = fetch_offset
            return None
        try:
            split = split_batches(records)
        except CorruptBatch as exc:
            self.fail(mirror, MirrorError.CORRUPT_BATCH, f"partition {progress.partition}: {exc}")
            return None
        batches = [b for b in split.batches if b.next_offset > fetch_offset]
        if not batches:
            if split.consumed < len(records) and not split.batches:
                # One batch larger than our per-partition limit: ask for more next time (bounded).
                progress.max_bytes = min(max(progress.max_bytes, self.settings.fetch_max_bytes) * 2, MAX_PARTITION_FETCH_BYTES)
            return None
        if batches[0].base_offset < plog.log_end_offset:
            # The source's batch boundaries disagree with ours: our log is not a prefix of the source's.
            # (After a skip the batch holding the new source start may begin before it, but never before
            # our log end, which is all an append needs.)
            progress.validated = False
            return None
        first = split.batches.index(batches[0])
        offset_in_blob = sum(b.size for b in split.batches[:first])
        blob = memoryview(records)[offset_in_blob : split.consumed]
        progress.inflight_end = batches[-1].next_offset
        progress.max_bytes = self.settings.fetch_max_bytes
        return (mirror, progress, plog, blob, batches)

    # -- the source's end offsets, read without fetching ---------------------------------------

    async def read_source_offsets(self, mirrors: list[Mirror], timestamp: int = -1) -> dict[tuple[str, int], int]:
        """ListOffsets(``timestamp``: -1 latest, -2 earliest) for every partition of ``mirrors``, asked of
        each partition's current leader on the short-request connections (never behind a long poll).
        Returns (mirror topic, partition) -> offset for the partitions that answered; a partition whose
        leader errs or cannot be reached is left out (unknown), never guessed. The caller bounds the time."""
        source_topics = sorted({m.source_topic for m in mirrors})
        if not source_topics:
            return {}
        meta = await self.source.metadata(source_topics)
        by_leader: dict[int, dict[str, list[tuple[Mirror, int]]]] = {}
        for mirror in mirrors:
            st = meta.get(mirror.source_topic)
            if st is None or st.error != ErrorCode.NONE:
                continue
            if mirror.source_topic_id and st.topic_id is not None and str(st.topic_id) != mirror.source_topic_id:
                continue  # another log under the same name: its offsets say nothing about ours
            for sp in st.partitions.values():
                if sp.leader >= 0:
                    by_leader.setdefault(sp.leader, {}).setdefault(mirror.source_topic, []).append((mirror, sp.partition))
        out: dict[tuple[str, int], int] = {}
        for leader, topics in by_leader.items():
            body = {
                "replica_id": -1,
                "isolation_level": 0,
                "topics": [
                    {"name": t, "partitions": [{"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp} for p in sorted({p for _m, p in items})]}
                    for t, items in topics.items()
                ],
                "timeout_ms": 0,
            }
            try:
                conn = await self.source.broker_connection(leader)
                response = await conn.request(ApiKey.LIST_OFFSETS, body, timeout=self.settings.request_timeout_ms / 1000)
            except (SourceUnavailable, SourceProtocolError) as exc:
                address = self.source.brokers.get(leader)
                if address:
                    await self.source.drop(address)
                log.debug("link %s: ListOffsets on source broker %d failed: %s", self.name, leader, exc)
                continue
            answered = {(t.get("name"), p.get("partition_index")): p for t in response.get("topics") or [] for p in t.get("partitions") or []}
            ends = {key: p["offset"] for key, p in answered.items() if p.get("error_code") == ErrorCode.NONE and p.get("offset", -1) >= 0}
            if timestamp == -1 and ends:
                try:
                    await self._served_past(conn, ends)
                except (SourceUnavailable, SourceProtocolError) as exc:
                    log.debug("link %s: probing what source broker %d serves past its high watermarks failed: %s", self.name, leader, exc)
                    continue  # a lower bound is not an end: leave these partitions unknown
            for source_topic, items in topics.items():
                for mirror, partition in items:
                    if (source_topic, partition) in ends:
                        out[(mirror.topic, partition)] = ends[(source_topic, partition)]
        return out

    async def _served_past(self, conn, ends: dict[tuple[str, int], int]) -> None:
        """Move each (source topic, partition) end in ``ends`` past whatever the source serves beyond the
        high watermark it reported: Tansu's can stay below the records it serves for good, so an end is
        judged by fetching (Fetches that wait at most PROBE_WAIT_MS; for Apache Kafka one empty answer).
        A partition the answer leaves out while others brought records (a size limit) is asked again."""
        pending = dict(ends)
        for _round in range(SERVED_PAST_MAX_ROUNDS):
            if not pending:
                return
            by_topic: dict[str, list[dict]] = {}
            for (topic, partition), offset in pending.items():
                by_topic.setdefault(topic, []).append({"partition": partition, "current_leader_epoch": -1, "fetch_offset": offset, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": self.settings.fetch_max_bytes})
            # Tansu answers a Fetch that may not wait (max_wait_ms 0) with no partitions at all.
            body = self._fetch_body([{"topic": t, "partitions": ps} for t, ps in by_topic.items()], PROBE_WAIT_MS, 1)
            response = await conn.request(ApiKey.FETCH, body, timeout=self.settings.request_timeout_ms / 1000 + PROBE_WAIT_MS / 1000)
            if response.get("error_code", 0) != ErrorCode.NONE:
                raise SourceProtocolError(f"probe fetch failed with {source_error(response['error_code']).name}")
            moved, answered = {}, set()
            for t in response.get("responses") or []:
                for pdata in t.get("partitions") or []:
                    key = (t.get("topic"), pdata.get("partition_index"))
                    if key not in pending:
                        continue
                    answered.add(key)
                    if pdata.get("error_code") != ErrorCode.NONE:
                        moved[key] = pending[key]  # not proven: asked again, unknown if it stays so
                        continue
                    batches = split_batches(pdata.get("records") or b"").batches
                    served = max(batches[-1].next_offset if batches else -1, pdata.get("high_watermark", -1))
                    if served > pending[key]:
                        moved[key] = served
            left_out = {key: offset for key, offset in pending.items() if key not in answered}
            if left_out and not answered:
                raise SourceProtocolError("the probe Fetch answered for none of the partitions asked")
            ends.update(moved)
            pending = {**moved, **left_out}
        for key in pending:
            ends.pop(key)  # still more after the last round: no end known (never a made-up one)

    @property
    def source_end_refresh_s(self) -> float:
        """How often the source's end is read for partitions no fetch has reported on lately."""
        return min(self.settings.metadata_max_age_ms, SOURCE_END_REFRESH_MAX_MS) / 1000

    async def _watch_source_ends(self) -> None:
        """Keep the source's end offsets fresh where fetching does not: paused mirrors, a paused link, a
        source whose fetches fail or time out. A partition a fetch answered within the interval costs
        nothing; the rest cost one ListOffsets per source broker per interval, however many they are."""
        while True:
            await trio.sleep(self.source_end_refresh_s)
            stale_before = now_ms() - int(self.source_end_refresh_s * 1000)
            stale = [
                m for m in self._mirrors()
                if not m.deleted and not m.finalizing and m.state in WATCHED_STATES
                and any(p.source_end_seen_ms < stale_before for p in m.partitions)
            ]
            if not stale:
                continue
            with trio.move_on_after(self.settings.request_timeout_ms / 1000):
                try:
                    await self.refresh_source_ends(stale)
                except (SourceUnavailable, SourceProtocolError) as exc:
                    log.debug("link %s: cannot read the source's end offsets: %s", self.name, exc)
                except Exception:
                    log.exception("link %s: reading the source's end offsets failed", self.name)

    def lag_known(self, progress: PartitionProgress) -> bool:
        """The source end last seen is recent enough to compute a lag from (else the lag is unknown)."""
        bound = max(3 * self.source_end_refresh_s, 2 * self.settings.request_timeout_ms / 1000 + self.settings.fetch_wait_max_ms / 1000)
        return bool(progress.source_end_seen_ms) and now_ms() - progress.source_end_seen_ms <= bound * 1000

    async def refresh_source_ends(self, mirrors: list[Mirror]) -> int:
        """Read the source's high watermarks for ``mirrors`` now and record them as the source end seen
        (the lag and the loss report use them); returns how many partitions answered."""
        asked = now_ms()
        found = await self.read_source_offsets(mirrors, -1)
        seen = now_ms()
        local_topics = {m.topic: self._topics.get(m.topic) for m in mirrors}
        for mirror in mirrors:
            local = local_topics[mirror.topic]
            for progress in mirror.partitions:
                offset = found.get((mirror.topic, progress.partition))
                if offset is None or progress.source_end_seen_ms > asked:
                    continue  # unanswered, or a fetch answered meanwhile: its reading is the newer one
                progress.source_high_watermark = offset
                progress.source_end_seen_ms = seen
                if local is not None and progress.partition < len(local.logs) and fetch_position(progress, local.logs[progress.partition]) >= offset:
                    progress.caught_up_ms = seen
        return len(found)

    # -- offsets out of range, truncation ----------------------------------------------------

    async def _list_offset(self, conn, mirror: Mirror, partition: int, timestamp: int) -> int:
        body = {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [{"name": mirror.source_topic, "partitions": [{"partition_index": partition, "current_leader_epoch": -1, "timestamp": timestamp}]}],
            "timeout_ms": 0,
        }
        response = await conn.request(ApiKey.LIST_OFFSETS, body)
        p = _only_partition(response, "topics", "name", "partition_index", mirror.source_topic, partition, "ListOffsets")
        if p["error_code"] != ErrorCode.NONE:
            raise SourceUnavailable(f"ListOffsets for {mirror.source_topic}-{partition} failed with {source_error(p['error_code']).name}")
        return p["offset"]

    async def _out_of_range(self, conn, mirror: Mirror, progress: PartitionProgress, plog) -> None:
        earliest = await self._list_offset(conn, mirror, progress.partition, -2)
        latest = await self._list_offset(conn, mirror, progress.partition, -1)
        ours = fetch_position(progress, plog)
        if ours < earliest:
            # Retention or DeleteRecords on the source moved past us: continue at its start, remember the hole.
            log.warning("mirror %s partition %d: source log start %d is past mirror end %d; skipping the gap", mirror.topic, progress.partition, earliest, ours)
            self._skip(mirror, progress, plog, earliest, "source log start moved past the mirror (retention or DeleteRecords)")
            return
        if ours > latest:
            progress.validated = False  # the source lost data: let validation decide
            return
        log.warning("mirror %s partition %d: OFFSET_OUT_OF_RANGE at %d within [%d, %d]; retrying", mirror.topic, progress.partition, ours, earliest, latest)

    def _skip(self, mirror: Mirror, progress: PartitionProgress, plog, offset: int, reason: str) -> None:
        """Continue mirroring at ``offset`` (past the log end), keeping what the mirror holds."""
        ours = fetch_position(progress, plog)
        if plog.log_end_offset == plog.log_start_offset:
            # Nothing to keep: the log itself can start over at the new offset.
            self._store.record_gap(mirror.topic, progress.partition, ours, offset, reason)
            plog.reset_to(offset)
            progress.skip_to = -1
        else:
            # The log keeps its data and ends where it ends; fetching goes on from ``offset`` and the first
            # batch appended from there leaves the hole in the offsets, as compaction does. The gap record
            # is the durable resume point until then (see MirrorStore.skip_resume_offset).
            self._store.record_skip(mirror.topic, progress.partition, plog.log_end_offset, offset, reason)
            progress.skip_to = offset
        progress.last_source_fetch_offset = offset

    def _start_timestamp(self) -> int:
        """mirror.start.offset.spec as a ListOffsets timestamp: -2 earliest, -1 latest, or epoch ms."""
        spec = self.settings.start_offset_spec
        if spec in ("earliest", "latest"):
            return -2 if spec == "earliest" else -1
        return int(datetime.fromisoformat(spec.replace("Z", "+00:00")).timestamp() * 1000)

    async def _initial_offset(self, conn, mirror: Mirror, progress: PartitionProgress) -> int:
        found = await self._list_offset(conn, mirror, progress.partition, self._start_timestamp())
        return found if found >= 0 else await self._list_offset(conn, mirror, progress.partition, -1)

    async def _start_new_partitions(self, conn, items: list[tuple[Mirror, PartitionProgress]]) -> None:
        """Empty mirror partitions start where mirror.start.offset.spec says: one ListOffsets for all of them
        instead of one round trip each (a new 8-partition mirror waited 8 round trips for its first fetch).
        Anything this cannot settle (an error, no offset for the timestamp) is left to ``_validate``."""
        fresh = []
        for mirror, progress in items:
            topic = self._topics.get(mirror.topic)
            if topic is not None:
                plog = topic.logs[progress.partition]
                if plog.log_end_offset == plog.log_start_offset == 0:
                    fresh.append((mirror, progress, plog))
        if len(fresh) < 2:
            return
        timestamp = self._start_timestamp()
        by_topic: dict[str, list[int]] = {}
        for mirror, progress, _plog in fresh:
            by_topic.setdefault(mirror.source_topic, []).append(progress.partition)
        body = {
            "replica_id": -1,
            "isolation_level": 0,
            "topics": [
                {"name": t, "partitions": [{"partition_index": p, "current_leader_epoch": -1, "timestamp": timestamp} for p in ps]}
                for t, ps in by_topic.items()
            ],
            "timeout_ms": 0,
        }
        response = await conn.request(ApiKey.LIST_OFFSETS, body)
        found = {(t["name"], p["partition_index"]): p for t in response.get("topics", []) for p in t.get("partitions", [])}
        for mirror, progress, plog in fresh:
            p = found.get((mirror.source_topic, progress.partition))
            if p is None or p["error_code"] != ErrorCode.NONE or p["offset"] < 0:
                continue
            if p["offset"] > 0:
                plog.reset_to(p["offset"])  # an empty mirror starts mid-way: nothing was skipped, no gap
            progress.validated = True

    async def _validate(self, conn, mirror: Mirror, progress: PartitionProgress) -> None:
        topic = self._topics.get(mirror.topic)
        if topic is None:
            return
        plog = topic.logs[progress.partition]
        if plog.log_end_offset == plog.log_start_offset and plog.log_end_offset == 0:
            start = await self._initial_offset(conn, mirror, progress)
            if start > 0:
                plog.reset_to(start)  # an empty mirror starts mid-way: nothing was skipped, no gap
            progress.validated = True
            return
        if progress.skip_to <= plog.log_end_offset:
            # A skip recorded before a restart: continue past it rather than fetch the deleted range again.
            progress.skip_to = self._store.skip_resume_offset(mirror.topic, progress.partition, plog.log_end_offset) or -1
        epoch = plog.latest_epoch
        if ApiKey.OFFSET_FOR_LEADER_EPOCH in conn.versions and epoch is not None and epoch >= 0:
            body = {
                "replica_id": -1,
                "topics": [{"topic": mirror.source_topic, "partitions": [{"partition": progress.partition, "current_leader_epoch": -1, "leader_epoch": epoch}]}],
            }
            response = await conn.request(ApiKey.OFFSET_FOR_LEADER_EPOCH, body)
            p = _only_partition(response, "topics", "topic", "partition", mirror.source_topic, progress.partition, "OffsetForLeaderEpoch")
            if p["error_code"] == ErrorCode.NONE and p["end_offset"] >= 0:
                if p["leader_epoch"] == epoch and p["end_offset"] >= plog.log_end_offset:
                    progress.validated = True
                    return
                await self._truncate_to_divergence(mirror, progress, plog, p["leader_epoch"], p["end_offset"])
                return
        await self._validate_by_crc(conn, mirror, progress, plog)

    async def _validate_by_crc(self, conn, mirror: Mirror, progress: PartitionProgress, plog) -> None:
        last = plog.batch_header(plog.log_end_offset - 1)
        if last is None:
            progress.validated = True
            return
        body = {
            "replica_id": -1,
            "max_wait_ms": 0,
            "min_bytes": 1,
            "max_bytes": max(last.size, 1024),
            "isolation_level": 0,
            "session_id": 0,
            "session_epoch": -1,
            "topics": [{"topic": mirror.source_topic, "partitions": [{"partition": progress.partition, "current_leader_epoch": -1, "fetch_offset": last.base_offset, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": max(last.size, 1024)}]}],
            "forgotten_topics_data": [],
            "rack_id": "",
        }
        response = await conn.request(ApiKey.FETCH, body)
        if response.get("error_code", 0) != ErrorCode.NONE:
            raise SourceProtocolError(f"validation fetch failed with {source_error(response['error_code']).name}")
        pdata = _only_partition(response, "responses", "topic", "partition_index", mirror.source_topic, progress.partition, "Fetch")
        code = source_error(pdata["error_code"])
        if code == ErrorCode.OFFSET_OUT_OF_RANGE:
            earliest = await self._list_offset(conn, mirror, progress.partition, -2)
            latest = await self._list_offset(conn, mirror, progress.partition, -1)
            if latest < plog.log_end_offset:
                self.fail(
                    mirror,
                    MirrorError.UNEXPECTED_TRUNCATION,
                    f"partition {progress.partition}: source log ends at {latest} (starts at {earliest}) but the mirror already holds offsets up to {plog.log_end_offset - 1}; the source lost data it had served",
                )
            else:
                progress.validated = True  # our last batch was removed by source retention: nothing to compare
            return
        if code != ErrorCode.NONE:
            raise SourceUnavailable(f"validation fetch for {mirror.source_topic}-{progress.partition} failed with {code.name}")
        theirs = [b for b in split_batches(pdata.get("records") or b"").batches if b.base_offset == last.base_offset]
        if theirs and theirs[0].crc == last.crc and theirs[0].last_offset_delta == last.last_offset_delta:
            progress.validated = True
            return
        self.fail(
            mirror,
            MirrorError.UNEXPECTED_TRUNCATION,
            f"partition {progress.partition}: the source no longer holds the mirror's last batch at offset {last.base_offset} with CRC {last.crc:#010x}; its log diverged",
        )

    async def _truncate_to_divergence(self, mirror: Mirror, progress: PartitionProgress, plog, epoch: int, end_offset: int) -> None:
        ours_epoch, ours_end = plog.end_offset_for_epoch(epoch)
        target = min(end_offset, ours_end) if ours_epoch == epoch else end_offset
        target = min(target, plog.log_end_offset)
        if target < plog.log_start_offset:
            self.fail(mirror, MirrorError.UNEXPECTED_TRUNCATION, f"partition {progress.partition}: source diverged at offset {target}, before the mirror's log start {plog.log_start_offset}")
            return
        if target < plog.log_end_offset:
            log.warning(
                "mirror %s partition %d: source diverged at epoch %d offset %d; truncating mirror from %d to %d",
                mirror.topic, progress.partition, epoch, end_offset, plog.log_end_offset, target,
            )
            self._store.record_gap(mirror.topic, progress.partition, target, plog.log_end_offset, f"truncated: source diverged at leader epoch {epoch}")
            plog.truncate_to(target)
            progress.skip_to = -1
        progress.validated = True


def _only_partition(response: dict, topics_key: str, name_key: str, partition_key: str, topic: str, partition: int, what: str) -> dict:
    """The entry for ``topic``/``partition`` in a one-partition response. A source that answers without it
    (Tansu does, for a topic it no longer has) gets the connection dropped and a retry, never a crash."""
    for t in response.get(topics_key) or []:
        if t.get(name_key) in (topic, None, ""):
            for p in t.get("partitions") or []:
                if p.get(partition_key) == partition:
                    return p
    raise SourceProtocolError(f"{what} response has no entry for {topic}-{partition}")


def fetch_position(progress: PartitionProgress, plog) -> int:
    """The next offset to fetch: the log end, past it after a skip, or where the append in flight ends."""
    return max(plog.log_end_offset, progress.skip_to, progress.inflight_end)


def _append_all(jobs: list) -> list:
    """Worker-thread body: append each job's batches; an exception is returned, not raised, per job."""
    outcomes: list = []
    for _mirror, _progress, plog, blob, batches in jobs:
        try:
            plog.append_mirrored(blob, batches)
            outcomes.append(None)
        except Exception as exc:  # reported per job by the caller; never lost with the worker thread
            outcomes.append(exc)
    return outcomes


class _Backoff:
    """Exponential backoff with full jitter."""

    def __init__(self, base_ms: int, max_ms: int) -> None:
        self.base = base_ms / 1000
        self.max = max_ms / 1000
        self.attempt = 0

    def reset(self) -> None:
        self.attempt = 0

    def next(self) -> float:
        delay = min(self.max, self.base * (2**self.attempt))
        self.attempt = min(self.attempt + 1, 30)
        return random.uniform(delay / 2, delay)
