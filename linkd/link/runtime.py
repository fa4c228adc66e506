"""A running link's lifetime: metadata refresh, assignment, one fetcher per source broker.

Theory of operation
-------------------
The link keeps an *assignment*: for each source broker, the mirror partitions it leads (``assignment.plan``
decides it from source metadata, purely), split among ``num.cluster.link.fetchers`` fetchers per broker
(``assignment.spread``). A metadata loop refreshes it every ``metadata.max.age.ms`` and whenever a fetch
reports a leadership error. One ``Fetcher`` runs per (source broker, fetcher index) that has partitions,
each on its own connection; each round it reads the assignment afresh, so changes (the fetcher count
too) need no restart. The fetcher validates partitions
(``validation.Validation``), fetches, and carries out what each partition's ``PartitionCore`` decides.

Threading: everything here runs on the daemon's trio event loop, in the link's nursery; only the
fetchers' appends run in worker threads (see ``fetcher``). ``LinkManager`` calls the public methods from
the same loop.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime

import trio

from . import sourceends
from .assignment import Assigned, NoLocalTopic, SourceDenied, SourceMissing, fetcher_count, plan, spread, wide_area
from .backoff import Backoff
from .client import SourceUnavailable
from .config import LinkSettings
from .fetcher import Fetcher, now_ms
from .mirror import Mirror, PartitionProgress
from .partition import Fail, fetch_position
from .source import SourceCluster
from .states import InvalidTransition, LinkEvent, LinkState, MirrorError, MirrorEvent, next_link_state
from .transitions import MirrorTransitions

__all__ = ["LinkRuntime", "fetch_position", "now_ms"]

log = logging.getLogger(__name__)


class LinkRuntime:
    def __init__(
        self,
        name: str,
        settings: LinkSettings,
        mirrors: Callable[[], list[Mirror]],
        transitions: MirrorTransitions,
        topics,
        notify: Callable[[], None],
    ) -> None:
        self.name = name
        self.settings = settings
        self.mirrors = mirrors
        self.transitions = transitions
        self.store = transitions.store
        self.topics = topics
        self.notify = notify
        self.source = SourceCluster(settings.bootstrap_servers, client_id=f"linkd-link-{name}", request_timeout_s=settings.request_timeout_ms / 1000, security=settings.security)
        self.source.receive_buffer_bytes = settings.receive_buffer_bytes
        self.state = LinkState.PAUSED if settings.paused else LinkState.ACTIVE
        self.state_message: str | None = None
        self.link_error = "NO_ERROR"  # typed reason while UNAVAILABLE: SOURCE_UNAVAILABLE or AUTHENTICATION_ERROR
        self._assignment: dict[int, list[tuple[Mirror, PartitionProgress]]] = {}
        self._by_fetcher: dict[tuple[int, int], list[tuple[Mirror, PartitionProgress]]] = {}  # (broker, index) -> its share
        self._fetcher_count = 1  # fetchers per source broker now (assignment.fetcher_count)
        self._fetchers: dict[tuple[int, int], Fetcher] = {}  # (source broker id, fetcher index) -> its running fetcher
        self._nursery: trio.Nursery | None = None
        self._refreshing = False
        self._added_meanwhile: list[tuple[Mirror, object]] = []  # (mirror, its source metadata) added during a refresh
        self._refresh = trio.Event()  # set: refresh metadata now (after a short coalescing pause)
        self._next_refresh = math.inf  # when the loop refreshes unasked (metadata.max.age.ms, or sooner)
        self._waiting: trio.CancelScope | None = None  # the loop's wait for either, while it waits
        self.changed = trio.Event()  # set (and replaced) whenever the assignment or a mirror changed
        self.changes = 0  # how many times it was set (fetchers recompute their requests when it moves)
        self.fetch_requests = 0
        self.incremental_fetch_requests = 0  # of them, those inside a fetch session (naming changed partitions only)
        self.fetched_bytes = 0
        self.appended_batches = 0
        self._denied: dict[str, tuple[float, Backoff]] = {}  # mirror -> (trio time to ask again, its back-off)

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """Something changed (mirror added, resumed): refresh metadata and reassign now."""
        self._refresh.set()
        self.wake_loops()

    def wake_loops(self) -> None:
        self.changes += 1
        changed, self.changed = self.changed, trio.Event()
        changed.set()

    def refresh_now(self) -> None:
        self._refresh.set()

    def set_paused(self, paused: bool) -> None:
        self.state = next_link_state(self.state, LinkEvent.PAUSE if paused else LinkEvent.RESUME)

    def lock(self, reason: str, link_error: str) -> None:
        """The link's secrets cannot be read here: it never runs (FAILED, with the reason)."""
        self.state, self.state_message, self.link_error = next_link_state(self.state, LinkEvent.LOCK), reason, link_error

    def backoff(self) -> Backoff:
        return Backoff(self.settings.retry_backoff_ms, self.settings.retry_backoff_max_ms)

    def transition(self, mirror: Mirror, event: MirrorEvent, error: MirrorError | None = None, message: str | None = None) -> None:
        """What the link observed, as a mirror event; one the mirror's state does not take (a source lost
        while it is paused or finalizing) changes nothing."""
        try:
            self.transitions.apply(mirror, event, error, message)
        except InvalidTransition:
            return

    def fail(self, mirror: Mirror, error: MirrorError, message: str) -> None:
        log.error("mirror %s failed: %s: %s", mirror.topic, error.value, message)
        self.transition(mirror, MirrorEvent.FAIL, error, message)

    # -- main loop ------------------------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(sourceends.watch_source_ends, self)
                task_status.started()
                backoff = self.backoff()
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
                            self.state_message = None
                        self.state = next_link_state(self.state, LinkEvent.SOURCE_BACK)
                        self.link_error = "NO_ERROR"
                    except SourceUnavailable as exc:
                        self.state = next_link_state(self.state, LinkEvent.SOURCE_LOST)
                        if self.state == LinkState.UNAVAILABLE:
                            self.state_message = str(exc)
                        self.link_error = getattr(exc, "link_error", "SOURCE_UNAVAILABLE")
                        for mirror in self.mirrors():
                            if mirror.fetching:
                                self.transition(mirror, MirrorEvent.SOURCE_LOST)
                        log.warning("link %s: source unavailable: %s", self.name, exc)
                        await trio.sleep(backoff.next())
                        continue
                    except Exception:
                        # A malformed answer or a bug in the refresh must cost this link a retry, never the
                        # daemon and every client of it.
                        log.exception("link %s: metadata refresh failed; retrying", self.name)
                        await trio.sleep(backoff.next())
                        continue
                    self._start_fetchers(nursery)
                    with trio.CancelScope(deadline=self._next_refresh) as self._waiting:
                        await self._refresh.wait()
                    self._waiting = None
                    await trio.sleep(0.001)  # coalesce bursts of refresh requests
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self.source.close()

    async def _refresh_metadata(self) -> None:
        mirrors = [m for m in self.mirrors() if m.fetching]
        self._added_meanwhile = []
        assignment: dict[int, list[tuple[Mirror, PartitionProgress]]] = {}
        if not mirrors:
            # Still ask the source (no topics: a cheap Metadata), so an idle link shows whether it can reach
            # and authenticate to its source (link_error), as it would the moment a mirror is added.
            await self.source.metadata([])
        else:
            log.debug("link %s: refreshing metadata for %d mirror(s)", self.name, len(mirrors))
            topics = await self.source.metadata(sorted({m.source_topic for m in mirrors}))
            for mirror in mirrors:
                await self._assign(mirror, topics.get(mirror.source_topic), assignment)
        asked = {id(m) for m in mirrors}
        for mirror, st in self._added_meanwhile:
            if id(mirror) not in asked and mirror.fetching:
                await self._assign(mirror, st, assignment)
        self._added_meanwhile = []
        self._set_assignment(assignment)
        if log.isEnabledFor(logging.DEBUG):  # the listing itself costs: thousands of partitions
            log.debug("link %s: assignment %s", self.name, {b: [f"{m.topic}-{p.partition}" for m, p in parts] for b, parts in assignment.items()})
        self.wake_loops()

    def _decide(self, mirror: Mirror, st) -> Assigned | None:
        """``assignment.plan`` for ``mirror`` given ``st``, its source topic's metadata; a refusal, a missing
        source or a failure is handled here (None)."""
        local = self.topics.get(mirror.topic)
        holds_data = local is not None and any(plog.log_end_offset > 0 for plog in local.logs)
        decided = plan(mirror, st, len(local.logs) if local is not None else None, holds_data, self.settings.fetch_max_bytes)
        if isinstance(decided, SourceDenied):
            self.authorization_failed(mirror, "Describe")
            return None
        if isinstance(decided, SourceMissing):
            self._source_topic_missing(mirror, decided.reason)
            return None
        mirror.missing_since_ms = None
        if isinstance(decided, Fail):
            self.fail(mirror, decided.error, decided.message)
            return None
        if isinstance(decided, NoLocalTopic):
            return None
        assert isinstance(decided, Assigned)
        return decided

    async def _assign(self, mirror: Mirror, st, assignment: dict[int, list[tuple[Mirror, PartitionProgress]]]) -> None:
        """Carry out ``assignment.plan`` for ``mirror``: grow the mirror topic first if the source grew (its
        new logs are made in a worker thread), then place its partitions."""
        decided = self._decide(mirror, st)
        if decided is None:
            return
        if decided.grow_to is not None:
            log.info("mirror %s: source grew to %d partitions", mirror.topic, decided.grow_to)
            await self.topics.add_partitions_async(mirror.topic, decided.grow_to)
        self._place(mirror, decided, assignment)

    @staticmethod
    def _place(mirror: Mirror, decided: Assigned, assignment: dict[int, list[tuple[Mirror, PartitionProgress]]]) -> bool:
        """Put the partitions ``decided`` gives leaders into ``assignment``; False when it gave none."""
        for broker, progress in decided.leaders:
            assignment.setdefault(broker, []).append((mirror, progress))
        return bool(decided.leaders)

    def add_mirror(self, mirror: Mirror, st) -> None:
        """A mirror was just created from ``st``, source metadata its creator fetched a moment ago: start
        fetching it on that, without another metadata round trip (the next refresh checks it as usual).
        When no fetcher can take it right now (link starting, paused or unavailable), wake the link."""
        nursery = self._nursery
        if nursery is None or self.state != LinkState.ACTIVE or not mirror.fetching:
            # Nothing fetches it now, and whatever lets it fetch later refreshes the metadata first: the
            # link's start, its resume (``update_link`` wakes it), the retry of an unavailable source, the
            # mirror's resume. A refresh per created mirror would make creating thousands quadratic.
            self.wake_loops()
            return
        decided = self._decide(mirror, st)
        added: dict[int, list[tuple[Mirror, PartitionProgress]]] = {}
        # Growing is the refresh's (it awaits the new logs); leaderless or missing: the refresh logic (and
        # its back-off) handles it.
        if decided is None or decided.grow_to is not None or not self._place(mirror, decided, added):
            self.wake()
            return
        # Added to the assignment and the fetchers' shares in place (fetchers read them afresh each round,
        # between awaits): a copy per created mirror would make creating thousands of them quadratic. A new
        # mirror is a topic of its own, so spreading it alone places it where spreading everything would.
        for broker, parts in added.items():
            self._assignment.setdefault(broker, []).extend(parts)
            for index, share in spread(parts, self._fetcher_count).items():
                self._by_fetcher.setdefault((broker, index), []).extend(share)
        self._start_fetchers(nursery)
        self.wake_loops()
        if self._refreshing:
            # The refresh in flight took its mirror list before this one existed: it assigns this one too
            # from the metadata at hand when it lands, rather than a whole refresh more.
            self._added_meanwhile.append((mirror, st))

    def _set_assignment(self, assignment: dict[int, list[tuple[Mirror, PartitionProgress]]]) -> None:
        self._assignment = assignment
        count = self._fetcher_count = fetcher_count(self.settings.fetchers, self.source.least_round_trip())
        self._by_fetcher = {(broker, index): share for broker, parts in assignment.items() for index, share in spread(parts, count).items()}

    def recount(self) -> None:
        """A fetcher's round begins: with num.cluster.link.fetchers=0 a better measure of the source's round
        trip may change how many fetchers each broker gets; the partitions are then spread again."""
        if self._nursery is not None and fetcher_count(self.settings.fetchers, self.source.least_round_trip()) != self._fetcher_count:
            self._set_assignment(self._assignment)
            log.info("link %s: %d fetch connection(s) per source broker", self.name, self._fetcher_count)
            self._start_fetchers(self._nursery)
            self.wake_loops()

    def wide_area(self) -> bool:
        """The source is across a WAN (see ``assignment.wide_area``): fetch sizes grow while behind."""
        return wide_area(self.source.least_round_trip())

    def _start_fetchers(self, nursery: trio.Nursery) -> None:
        for key, parts in self._by_fetcher.items():
            if parts and key not in self._fetchers:
                fetcher = self._fetchers[key] = Fetcher(self, *key)
                nursery.start_soon(self._run_fetcher, fetcher)

    async def _run_fetcher(self, fetcher: Fetcher) -> None:
        try:
            await fetcher.run()
        finally:
            fetcher.release_all()
            del self._fetchers[fetcher.key]

    async def quiesce(self) -> None:
        """Wait until no append is running (promotion writes its markers after this)."""
        for fetcher in list(self._fetchers.values()):
            await fetcher.quiesce()

    # -- what fetchers ask of the link ----------------------------------------------------------

    def assigned(self, broker_id: int, index: int = 0) -> bool:
        return (broker_id, index) in self._by_fetcher

    def active_parts(self, broker_id: int, index: int = 0) -> list[tuple[Mirror, PartitionProgress]]:
        if self.state == LinkState.PAUSED:
            return []
        # Called every fetch round for every assigned partition (10,000 of them, twice a second when idle):
        # a mirror's partitions sit together in a share, so whether it fetches is asked once per mirror.
        now = trio.current_time() if self._denied else 0.0
        held = {topic for topic, (until, _backoff) in self._denied.items() if now < until}
        out = []
        last, fetching = None, False
        for item in self._by_fetcher.get((broker_id, index), ()):
            mirror = item[0]
            if mirror is not last:
                last, fetching = mirror, mirror.fetching and mirror.topic not in held
            if fetching and item[1].leader == broker_id:
                out.append(item)
        return out

    def broker_lost(self, broker_id: int) -> None:
        """The fetch connection to ``broker_id`` failed: its partitions validate again once it is back."""
        for mirror, progress in self._assignment.get(broker_id, []):
            progress.validated = False
            if mirror.fetching:
                self.transition(mirror, MirrorEvent.SOURCE_LOST)
        self._refresh.set()

    def source_readable(self, mirror: Mirror) -> None:
        """A fetch for ``mirror`` was answered without error: any Read denial is over."""
        self._denied.pop(mirror.topic, None)

    def start_timestamp(self) -> int:
        """mirror.start.offset.spec as a ListOffsets timestamp: -2 earliest, -1 latest, or epoch ms."""
        spec = self.settings.start_offset_spec
        if spec in ("earliest", "latest"):
            return -2 if spec == "earliest" else -1
        return int(datetime.fromisoformat(spec.replace("Z", "+00:00")).timestamp() * 1000)

    def refresh_soon(self) -> None:
        """Leadership moved or a source topic is missing: look again after ``retry.backoff.ms``, not at
        once, so a source in trouble is asked about once per back-off, never in a tight loop."""
        self._refresh_by(trio.current_time() + self.settings.retry_backoff_ms / 1000)

    def _refresh_by(self, deadline: float) -> None:
        self._next_refresh = min(self._next_refresh, deadline)
        if self._waiting is not None:
            self._waiting.deadline = min(self._waiting.deadline, deadline)

    def authorization_failed(self, mirror: Mirror, operation: str) -> None:
        """The source refuses this link's principal ``operation`` on the mirror's topic: not a deleted topic
        and not a failure, a permission to grant. The mirror waits in SOURCE_UNAVAILABLE with the typed
        error, and is asked about again after a back-off that grows, never in a tight loop."""
        _until, backoff = self._denied.get(mirror.topic, (0.0, self.backoff()))
        delay = backoff.next()
        until = trio.current_time() + delay
        self._denied[mirror.topic] = (until, backoff)
        message = f"the source denies {operation} on topic {mirror.source_topic} to this link's principal (TOPIC_AUTHORIZATION_FAILED); asking again in {delay:.1f}s"
        if mirror.error != MirrorError.TOPIC_AUTHORIZATION_FAILED:
            log.warning("mirror %s: %s", mirror.topic, message)
        self.transition(mirror, MirrorEvent.SOURCE_LOST, MirrorError.TOPIC_AUTHORIZATION_FAILED, message)
        self._refresh_by(until)

    def _source_topic_missing(self, mirror: Mirror, reason: str) -> None:
        if mirror.missing_since_ms is None:
            mirror.missing_since_ms = now_ms()
            log.warning("mirror %s: source topic %s missing from source metadata (%s)", mirror.topic, mirror.source_topic, reason)
        if now_ms() - mirror.missing_since_ms >= self.settings.retry_timeout_ms:
            self.fail(mirror, MirrorError.SOURCE_TOPIC_MAY_BE_DELETED, f"source topic {mirror.source_topic} has been missing (or re-created with a new id) for {self.settings.retry_timeout_ms} ms")
        else:
            self.refresh_soon()

    # -- the source's end offsets (see sourceends) ------------------------------------------------

    def fetchers(self) -> dict[tuple[int, int], Fetcher]:
        """The running fetchers, by (source broker id, fetcher index)."""
        return self._fetchers

    def share(self, key: tuple[int, int]) -> list[tuple[Mirror, PartitionProgress]]:
        """The partitions assigned to the fetcher ``key`` (read only)."""
        return self._by_fetcher.get(key, [])

    async def read_source_offsets(self, mirrors: list[Mirror], timestamp: int = -1) -> dict[tuple[str, int], int]:
        return await sourceends.read_source_offsets(self, mirrors, timestamp)

    async def refresh_source_ends(self, mirrors: list[Mirror]) -> int:
        return await sourceends.refresh_source_ends(self, mirrors)

    def seen_ends_fresh(self, mirrors: list[Mirror], within_ms: int) -> set[str]:
        return sourceends.seen_ends_fresh(self, mirrors, within_ms)

    async def probe_caught_up(self, mirror: Mirror) -> None:
        await sourceends.probe_caught_up(self, mirror)

    @property
    def source_end_refresh_s(self) -> float:
        return sourceends.refresh_interval_s(self)

    def lag_known(self, progress: PartitionProgress) -> bool:
        """The source end last seen is recent enough to compute a lag from (else the lag is unknown)."""
        bound = max(3 * self.source_end_refresh_s, 2 * self.settings.request_timeout_ms / 1000 + self.settings.fetch_wait_max_ms / 1000)
        return bool(progress.source_end_seen_ms) and now_ms() - progress.source_end_seen_ms <= bound * 1000
