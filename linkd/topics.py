"""The topics linkd hosts: their ids, partition counts, configs and partition logs.

Topic definitions live in the control store; partition data lives in the log directories. Each topic has
one ``TopicRole``: *local* (created with CreateTopics, writable), *mirror* (created by a cluster link,
read-only, following its source's partition count) or *promoted* (a mirror after promotion or failover:
writable, its own partition count). When a mirror becomes promoted is decided by the mirror state machine;
this module only records (and persists) the role it is told.
"""

from __future__ import annotations

import enum
import json
import logging
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import trio

from protocol.errors import ErrorCode

from . import gcpolicy, storage_calls
from .controlstore import ControlStore
from .storage import InvalidConfig, LogConfig, PartitionLog, logdir
from .storage.checkpoint import write_partition_metadata
from .topicconfig import TOPIC_CONFIG_DEFAULTS as TOPIC_CONFIG_DEFAULTS  # re-exported
from .topicconfig import InvalidTopicConfig, check_configs

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS topics (
    name TEXT PRIMARY KEY,
    topic_id TEXT NOT NULL UNIQUE,
    partitions INTEGER NOT NULL,
    configs TEXT NOT NULL,
    kind TEXT NOT NULL,
    leader_epoch INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL
)
"""

# Names a mirror's owner set locally: the link no longer syncs them (Cluster Linking's local override).
_OVERRIDES_SCHEMA = """
CREATE TABLE IF NOT EXISTS topic_config_overrides (
    topic TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (topic, name)
)
"""

_LEGAL_NAME = re.compile(r"[a-zA-Z0-9._-]+")
# Kafka keeps names starting with "__" for its internal topics; linkd serves its own (groups, offsets) from
# the control store and keeps the prefix reserved so no client topic can pose as one.
RESERVED_PREFIX = "__"
MAX_TOPIC_NAME = 249

# Checkpoint files (recovery point, producer snapshot, epochs) cost several fsyncs; writing them on every
# acks=all flush would multiply its latency. Kafka checkpoints the recovery point once a minute too; a
# staler checkpoint only means a longer scan after a crash. close() always writes them.
DAEMON_LOG_DEFAULTS = LogConfig(checkpoint_interval_ms=60_000)

# Logs opened (recovered) and closed at once at start and shutdown, as Kafka's recovery threads do. Each
# open or close is a dozen small fsyncs (checkpoints, clean-shutdown marker, directory entries): one after
# another, 10,000 partitions take minutes; in parallel the file system commits many of them together.
LOG_OPEN_CLOSE_THREADS = 16

# Topics whose partition logs ``create_many_async`` makes at once (one worker thread each): the file
# creations queue in the file system's journal anyway, and the Produce path needs worker threads too.
CREATE_MANY_THREADS = 4


class TopicError(Exception):
    def __init__(self, error_code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code
        self.message = message


def validate_topic_name(name: str) -> None:
    """Kafka's rules (``Topic.validate``): 1..249 characters from [a-zA-Z0-9._-], not '.' or '..'."""
    if not name or name in (".", ".."):
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"Topic name '{name}' is illegal")
    if len(name) > MAX_TOPIC_NAME:
        raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"Topic name is longer than {MAX_TOPIC_NAME} characters")
    # fullmatch: '$' would also match before a trailing newline and let "name\n" through.
    if not _LEGAL_NAME.fullmatch(name):
        raise TopicError(
            ErrorCode.INVALID_TOPIC_EXCEPTION,
            f"Topic name '{name}' is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'",
        )


def validate_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Check names and values as Kafka does (see ``topicconfig``); INVALID_CONFIG names the problem."""
    try:
        out = check_configs(configs)
    except InvalidTopicConfig as exc:
        raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from exc
    try:
        LogConfig.from_topic_configs(out)
    except (InvalidConfig, ValueError, TypeError) as exc:
        raise TopicError(ErrorCode.INVALID_CONFIG, f"Invalid topic config: {exc}") from exc
    return out


@dataclass(frozen=True)
class TopicSpec:
    """One topic of ``TopicRegistry.create_many_async``."""

    name: str
    partitions: int
    configs: Mapping[str, str | None] = field(default_factory=dict)
    kind: str = "local"
    leader_epoch: int = 0


class TopicRole(enum.Enum):
    """What a topic is to linkd; the value is what the control store keeps (column ``kind``)."""

    LOCAL = "local"  # created with CreateTopics
    MIRROR = "mirror"  # follows a source topic over a cluster link
    PROMOTED = "promoted"  # was a mirror; promoted or failed over, never follows its source again

    @property
    def writable(self) -> bool:
        """Produce and DeleteRecords accepted: everything but a mirror still following its source."""
        return self is not TopicRole.MIRROR


@dataclass
class Topic:
    name: str
    topic_id: uuid.UUID
    configs: dict[str, str]
    role: TopicRole  # a str (the stored value) is turned into the role
    leader_epoch: int
    logs: list[PartitionLog] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.role = TopicRole(self.role)

    @property
    def writable(self) -> bool:
        return self.role.writable

    @property
    def kind(self) -> str:
        """The role's stored name ("local", "mirror" or "promoted")."""
        return self.role.value

    def partition(self, index: int) -> PartitionLog | None:
        if 0 <= index < len(self.logs):
            return self.logs[index]
        return None

    def advertised_epoch(self, index: int) -> int:
        """Never lower than any epoch in the log (design Invariant 4)."""
        log_epoch = self.logs[index].latest_epoch
        return max(self.leader_epoch, log_epoch if log_epoch is not None else -1)


class TopicRegistry:
    def __init__(self, store: ControlStore, data_dir: Path) -> None:
        self._store = store
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        store.ensure_schema(_SCHEMA)
        store.ensure_schema(_OVERRIDES_SCHEMA)
        self._topics: dict[str, Topic] = {}
        self._by_id: dict[uuid.UUID, Topic] = {}
        self._folded: dict[str, str] = {}  # name with '.' as '_' -> the topic's name (Kafka's collision rule)
        # Partition budget (linkd.broker.limits); None = unbounded. The daemon sets them at start.
        self.max_partitions: int | None = None
        self.max_partitions_per_topic: int | None = None
        # Names (and "adding partitions to" keys) of creations under way -> partitions they reserve.
        self._reserved: dict[str, int] = {}
        # Worker threads making the logs of ``create_many_async`` calls, all of them together: several
        # batches of creations in flight must not take every worker thread the Produce path needs.
        self._create_threads = trio.Semaphore(CREATE_MANY_THREADS)
        # Names whose partition directories are being removed (``delete``).
        self._deleting: set[str] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    def load(self) -> None:
        """Open every topic's partition logs (recovering those a crash left), ``LOG_OPEN_CLOSE_THREADS`` at
        once. A log that cannot be opened fails the start, after the others opened here are let go. After
        a clean close (``storage.logdir``) no log reads its own checkpoints; after a crash, what recovery
        writes is made durable by one file-system sync for all of them."""
        began = time.monotonic()
        clean = logdir.take_clean_shutdown(self.data_dir)
        topics = []
        for row in self._store.query("SELECT * FROM topics ORDER BY name"):
            configs = json.loads(row["configs"])
            topics.append((Topic(row["name"], uuid.UUID(row["topic_id"]), configs, row["kind"], row["leader_epoch"]), row["partitions"]))

        def open_one(job: tuple[Topic, int, LogConfig]) -> PartitionLog:
            topic, partition, config = job
            plog = self._open_log(topic.name, partition, config, clean=clean.get((topic.name, partition)), sync=False)
            self._record_topic_id(topic, [plog])  # directories from before partition.metadata get one
            return plog

        # One LogConfig per topic, shared by its partitions (it is immutable; update_config replaces it).
        jobs = [(topic, p, config) for topic, count in topics
                for config in [_log_config(topic.configs)] for p in range(count)]
        opened = _run_all(open_one, jobs, on_failure=lambda plog: plog.abandon())
        try:
            logdir.sync_opened(self.data_dir, opened, _run_all)
        except BaseException:
            for plog in opened:
                plog.abandon()
            raise
        logs = iter(opened)
        for topic, count in topics:
            topic.logs = [next(logs) for _ in range(count)]
            self._index(topic)
        recovered = sum(1 for plog in opened if plog.recovered)
        # One line for all: after a crash each partition's own "recovering" line is at debug level (10,000
        # lines through one handler lock cost a fifth of the start); cuts are still logged one by one.
        log.log(logging.WARNING if recovered and not clean else logging.INFO,
                "opened %d partition logs in %.1fs, %d of them recovered (segments re-verified)%s", len(opened),
                time.monotonic() - began, recovered,
                ": no clean-shutdown marker, the last stop was a crash or a kill" if recovered and not clean else "")

    def close(self) -> None:
        """Flush and close every log (``LOG_OPEN_CLOSE_THREADS`` at once) with a few file-system syncs, then
        write the log directory's clean-shutdown checkpoints (Kafka's) if every one closed cleanly."""
        logdir.close_logs(self.data_dir, [plog for topic in self._topics.values() for plog in topic.logs], _run_all)

    def _open_log(self, name: str, partition: int, config: LogConfig, **how) -> PartitionLog:
        return PartitionLog.open(self.data_dir / f"{name}-{partition}", config, name, partition, **how)

    @staticmethod
    def _record_topic_id(topic: Topic, logs: list[PartitionLog]) -> None:
        """Kafka's ``partition.metadata`` in each partition directory, so Kafka's tools see the topic id.
        Best effort: linkd itself keeps topic ids in the control store and never reads these files."""
        for plog in logs:
            try:
                write_partition_metadata(plog.path, topic.topic_id)
            except OSError as exc:
                log.warning("could not write %s/partition.metadata: %s", plog.path, exc)

    def _index(self, topic: Topic) -> None:
        self._topics[topic.name] = topic
        self._by_id[topic.topic_id] = topic
        self._folded[topic.name.replace(".", "_")] = topic.name

    # -- queries ---------------------------------------------------------------------------------

    def get(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def by_id(self, topic_id: uuid.UUID) -> Topic | None:
        return self._by_id.get(topic_id)

    def all(self) -> list[Topic]:
        return list(self._topics.values())

    # -- changes ---------------------------------------------------------------------------------

    def partition_count(self) -> int:
        """Partitions hosted now plus those reserved by creations under way."""
        return sum(len(t.logs) for t in self._topics.values()) + sum(self._reserved.values())

    def check_partition_budget(self, name: str, new_partitions: int, topic_total: int) -> None:
        """Refuse, before anything touches the disk, partitions over the per-topic cap or the daemon's budget."""
        if self.max_partitions_per_topic is not None and topic_total > self.max_partitions_per_topic:
            raise TopicError(
                ErrorCode.INVALID_PARTITIONS,
                f"Topic '{name}' would have {topic_total} partitions; this linkd allows at most {self.max_partitions_per_topic} per topic (max.partitions.per.topic).",
            )
        if self.max_partitions is not None:
            after = self.partition_count() + new_partitions
            if after > self.max_partitions:
                raise TopicError(
                    ErrorCode.POLICY_VIOLATION,
                    f"Creating {new_partitions} partition(s) for topic '{name}' would bring this linkd to {after} partitions, above its budget of {self.max_partitions} (max.partitions).",
                )

    def create(
        self,
        name: str,
        partitions: int,
        configs: dict[str, str | None] | None = None,
        kind: str = "local",
        leader_epoch: int = 0,
        validate_only: bool = False,
        topic_id: uuid.UUID | None = None,
    ) -> Topic:
        """Create a topic; all or nothing: its row is written only once every partition log exists, and a
        failure removes what was made. Blocks while the logs are created: see ``create_async``."""
        topic = self._prepare_create(name, partitions, configs, kind, leader_epoch, topic_id)
        if validate_only:
            return topic
        self._reserved[name] = partitions
        try:
            logs = self._build_logs(name, 0, partitions, topic.configs, topic.topic_id)
            return self._commit_create(topic, logs)
        finally:
            self._reserved.pop(name, None)

    async def create_async(
        self,
        name: str,
        partitions: int,
        configs: dict[str, str | None] | None = None,
        kind: str = "local",
        leader_epoch: int = 0,
        validate_only: bool = False,
        topic_id: uuid.UUID | None = None,
        also: Callable[[], None] | None = None,
    ) -> Topic:
        """``create`` with the partition logs made in a worker thread, so other clients keep being served.

        The name and the partitions are reserved while the thread works: a concurrent create of the same
        (or a colliding) name is refused, and the budget counts them. ``also`` runs inside the transaction
        that records the topic (e.g. the mirror's own row), so both are committed together or neither."""
        topic = self._prepare_create(name, partitions, configs, kind, leader_epoch, topic_id)
        if validate_only:
            return topic
        self._reserved[name] = partitions
        try:
            # Not abandoned on cancel (trio's default): the thread's logs always come back to be committed.
            logs = await storage_calls.alongside(self._build_logs, name, 0, partitions, topic.configs, topic.topic_id)
            return self._commit_create(topic, logs, also)
        finally:
            self._reserved.pop(name, None)

    async def create_many_async(self, specs: list[TopicSpec], also: Callable[[Topic], None] | None = None) -> list[Topic | TopicError]:
        """Create many topics at once, each as ``create_async`` would, and record them in one transaction:
        one commit (one fsync of the control store's log) for all, where one each would cost as many.

        Each topic's row (and ``also(topic)``, e.g. its mirror's row) is written in a savepoint of its own,
        so a topic refused at any step gets its TopicError in its place in the answer and the others are
        created. Once started it is not cancelled (the logs it made are committed or removed); nothing is
        visible before the commit. Logs are made ``CREATE_MANY_THREADS`` topics at a time, without Kafka's
        ``partition.metadata`` (two more file operations per partition, for Kafka's tools only): the caller
        writes those after answering, with ``record_topic_ids_async``."""
        results: list[Topic | TopicError | None] = [None] * len(specs)
        prepared: list[tuple[int, Topic, int]] = []
        built: dict[int, list[PartitionLog]] = {}
        with trio.CancelScope(shield=True):
            try:
                for i, spec in enumerate(specs):
                    try:
                        topic = self._prepare_create(spec.name, spec.partitions, dict(spec.configs), spec.kind, spec.leader_epoch, None)
                    except TopicError as exc:
                        results[i] = exc
                        continue
                    self._reserved[spec.name] = spec.partitions  # the next spec's checks (name, budget) see it
                    prepared.append((i, topic, spec.partitions))
                async def build(i: int, topic: Topic, partitions: int) -> None:
                    async with self._create_threads:
                        try:
                            built[i] = await storage_calls.alongside(self._build_logs, topic.name, 0, partitions, topic.configs)
                        except TopicError as exc:
                            results[i] = exc

                async with trio.open_nursery() as nursery:
                    for job in prepared:
                        nursery.start_soon(build, *job)
                await self._commit_many([(i, topic) for i, topic, _ in prepared if i in built], built, results, also)
            finally:
                for _, topic, _ in prepared:
                    self._reserved.pop(topic.name, None)
        return [r if r is not None else TopicError(ErrorCode.UNKNOWN_SERVER_ERROR, "not created") for r in results]

    async def record_topic_ids_async(self, topics: list[Topic]) -> None:
        """Kafka's ``partition.metadata`` in each partition directory of ``topics`` (see ``_record_topic_id``),
        in a worker thread; best effort, as at every start, which writes any that is missing."""
        live = [t for t in topics if self._topics.get(t.name) is t]
        await storage_calls.alongside(lambda: [self._record_topic_id(t, list(t.logs)) for t in live])

    async def _commit_many(self, made: list[tuple[int, Topic]], built: dict[int, list[PartitionLog]], results: list, also: Callable[[Topic], None] | None) -> None:
        recorded: list[tuple[int, Topic]] = []

        def write(db) -> None:
            for i, topic in made:
                try:
                    with self._store.savepoint():
                        _insert_row(db, topic, len(built[i]))
                        if also is not None:
                            also(topic)
                except Exception as exc:
                    results[i] = TopicError(ErrorCode.KAFKA_STORAGE_ERROR, f"Could not record topic '{topic.name}': {exc}")
                    self._discard(built[i])
                    continue
                recorded.append((i, topic))

        try:
            # The commit's fsync in a worker thread: the loop goes on serving (and gathering the next batch).
            await self._store.transaction_in_thread(write)
        except BaseException as exc:  # the commit itself failed: nothing of it holds
            for i, topic in recorded:
                self._discard(built[i])
                results[i] = TopicError(ErrorCode.KAFKA_STORAGE_ERROR, f"Could not record topic '{topic.name}': {exc}")
            if not isinstance(exc, Exception):
                raise
            return
        for i, topic in recorded:
            topic.logs = built[i]
            self._index(topic)
            results[i] = topic

    def _prepare_create(
        self,
        name: str,
        partitions: int,
        configs: dict[str, str | None] | None,
        kind: str,
        leader_epoch: int,
        topic_id: uuid.UUID | None,
    ) -> Topic:
        validate_topic_name(name)
        if name.startswith(RESERVED_PREFIX):
            raise TopicError(ErrorCode.INVALID_REQUEST, f"Creation of internal topic {name} is prohibited: names starting with '{RESERVED_PREFIX}' are reserved for internal topics.")
        if name in self._topics or name in self._reserved:
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' already exists.")
        if name in self._deleting:
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS, f"Topic '{name}' is marked for deletion.")
        # Kafka's metric names turn '.' into '_', so it refuses names that differ only there.
        folded = name.replace(".", "_")
        existing = self._folded.get(folded) or next((r for r in self._reserved if r.replace(".", "_") == folded), None)
        if existing is not None:
            raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"Topic '{name}' collides with existing topic: {existing}")
        if partitions <= 0:
            raise TopicError(ErrorCode.INVALID_PARTITIONS, "Number of partitions was set to an invalid non-positive value.")
        self.check_partition_budget(name, partitions, partitions)
        clean = validate_configs(configs or {})
        topic = Topic(name, topic_id or uuid.uuid4(), clean, TopicRole(kind), leader_epoch)
        return topic

    def _build_logs(self, name: str, first: int, end: int, configs: dict[str, str], topic_id: uuid.UUID | None = None) -> list[PartitionLog]:
        """Open partition logs ``first..end-1`` (thread-safe: touches only their directories). On failure
        every log opened here is removed again and a TopicError names the partition and the cause."""
        logs: list[PartitionLog] = []
        try:
            config = _log_config(configs)
            for p in range(first, end):
                # A directory left by a crash between "delete row" and "rmtree" of an earlier topic with the
                # same name (or by a creation cut short) would otherwise resurface as data of this one.
                path = self.data_dir / f"{name}-{p}"
                if path.exists():
                    log.warning("removing stale partition directory %s before creating topic %s", path, name)
                    shutil.rmtree(path)
                logs.append(self._open_log(name, p, config))
                if topic_id is not None:
                    write_partition_metadata(logs[-1].path, topic_id)
        except Exception as exc:
            self._discard(logs)
            shutil.rmtree(self.data_dir / f"{name}-{first + len(logs)}", ignore_errors=True)
            raise TopicError(ErrorCode.KAFKA_STORAGE_ERROR, f"Could not create partition {name}-{first + len(logs)}: {exc}") from exc
        return logs

    @staticmethod
    def _discard(logs: list[PartitionLog]) -> None:
        # Every descriptor first: a creation that failed for want of descriptors needs some to remove dirs.
        for plog in logs:
            plog.abandon()
        for plog in logs:
            try:
                shutil.rmtree(plog.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.error("could not remove %s after a failed creation: %s", plog.path, exc)

    def _commit_create(self, topic: Topic, logs: list[PartitionLog], also: Callable[[], None] | None = None) -> Topic:
        try:
            with self._store.transaction() as db:
                _insert_row(db, topic, len(logs))
                if also is not None:
                    also()
        except BaseException as exc:
            self._discard(logs)
            if isinstance(exc, Exception):
                raise TopicError(ErrorCode.KAFKA_STORAGE_ERROR, f"Could not record topic '{topic.name}': {exc}") from exc
            raise
        topic.logs = logs
        self._index(topic)
        return topic

    def add_partitions(self, name: str, total: int) -> None:
        topic, added = self._prepare_add(name, total)
        try:
            logs = self._build_logs(name, len(topic.logs), total, topic.configs, topic.topic_id)
        except BaseException:
            self._reserved.pop(added, None)
            raise
        self._commit_add(topic, total, logs, added)

    async def add_partitions_async(self, name: str, total: int) -> None:
        """``add_partitions`` with the new logs made in a worker thread (see ``create_async``)."""
        topic, added = self._prepare_add(name, total)
        try:
            logs = await storage_calls.alongside(self._build_logs, name, len(topic.logs), total, topic.configs, topic.topic_id)
        except BaseException:
            self._reserved.pop(added, None)
            raise
        self._commit_add(topic, total, logs, added)

    def _prepare_add(self, name: str, total: int) -> tuple[Topic, str]:
        topic = self._topics[name]
        if total <= len(topic.logs):
            raise TopicError(ErrorCode.INVALID_PARTITIONS, f"Topic currently has {len(topic.logs)} partitions, {total} would not be an increase.")
        key = f"{RESERVED_PREFIX}partitions of {name}"  # never a topic name: '__' and spaces are refused
        if key in self._reserved:
            raise TopicError(ErrorCode.REASSIGNMENT_IN_PROGRESS, f"Partitions are already being added to topic '{name}'.")
        self.check_partition_budget(name, total - len(topic.logs), total)
        self._reserved[key] = total - len(topic.logs)
        return topic, key

    def _commit_add(self, topic: Topic, total: int, logs: list[PartitionLog], key: str) -> None:
        try:
            if self._topics.get(topic.name) is not topic:  # deleted while the logs were being made
                self._discard(logs)
                raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{topic.name}' was deleted while partitions were being added.")
            try:
                with self._store.transaction() as db:
                    db.execute("UPDATE topics SET partitions = ? WHERE name = ?", (total, topic.name))
            except Exception as exc:
                self._discard(logs)
                raise TopicError(ErrorCode.KAFKA_STORAGE_ERROR, f"Could not record {total} partitions for topic '{topic.name}': {exc}") from exc
            topic.logs.extend(logs)
        finally:
            self._reserved.pop(key, None)

    def set_leader_epoch(self, name: str, epoch: int) -> None:
        with self._store.transaction() as db:
            db.execute("UPDATE topics SET leader_epoch = ? WHERE name = ?", (epoch, name))
        self._topics[name].leader_epoch = epoch

    def set_role(self, name: str, role: TopicRole) -> None:
        """Persist and apply ``role`` (a no-op when the topic has it already)."""
        topic = self._topics[name]
        if topic.role is role:
            return
        with self._store.transaction() as db:
            db.execute("UPDATE topics SET kind = ? WHERE name = ?", (role.value, name))
        topic.role = role

    async def delete(self, name: str) -> None:
        """Forget topic ``name`` and remove its partition directories.

        The row goes first, in one transaction: a crash after it leaves only orphaned directories, which a
        create cleans up. Each log is then closed and its directory removed in a worker thread, in the log's
        call order (after the appends queued before the deletion). Until that is done the name stays
        reserved, so a create of the same name cannot open a directory the removal is still deleting."""
        topic = self._topics.get(name)
        if topic is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"Topic '{name}' does not exist.")
        with self._store.transaction() as db:
            db.execute("DELETE FROM topics WHERE name = ?", (name,))
            db.execute("DELETE FROM topic_config_overrides WHERE topic = ?", (name,))
        del self._topics[name]
        self._by_id.pop(topic.topic_id, None)
        self._folded.pop(name.replace(".", "_"), None)
        self._deleting.add(name)
        try:
            with trio.CancelScope(shield=True):  # the row is gone: the directories must follow
                for plog in topic.logs:
                    await storage_calls.call(plog, plog.delete)
        finally:
            self._deleting.discard(name)
            gcpolicy.thaw(f"topic {name} deleted")  # its logs' reference cycles may be frozen

    # -- configs ---------------------------------------------------------------------------------

    async def set_configs(self, name: str, configs: Mapping[str, str | None], *, overridden: Collection[str] = frozenset(), not_overridden: Collection[str] = frozenset(), validate_only: bool = False) -> dict[str, str]:
        """Replace the topic's dynamic configs with ``configs`` and apply them to its live logs, no restart.

        ``overridden`` / ``not_overridden`` mark names as set locally on a mirror (no longer synced) or
        synced again; stored in the same transaction as the configs, so a crash keeps both or neither.
        Returns the validated configs. Each log takes the new config in a worker thread, in the log's call
        order: ``update_config`` waits for the writer lock, which a mirror append may hold across a
        multi-MB write."""
        topic = self._topics.get(name)
        if topic is None:
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"The topic '{name}' does not exist.")
        clean = validate_configs(configs)
        log_config = LogConfig.from_topic_configs(clean, DAEMON_LOG_DEFAULTS)
        if validate_only:
            return clean
        with self._store.transaction() as db:
            db.execute("UPDATE topics SET configs = ? WHERE name = ?", (json.dumps(clean), name))
            for key in overridden:
                db.execute("INSERT OR IGNORE INTO topic_config_overrides (topic, name) VALUES (?, ?)", (name, key))
            for key in not_overridden:
                db.execute("DELETE FROM topic_config_overrides WHERE topic = ? AND name = ?", (name, key))
        topic.configs = clean
        with trio.CancelScope(shield=True):  # stored already: every live log takes it, none is left behind
            for plog in topic.logs:
                await storage_calls.call(plog, plog.update_config, log_config)
        return clean

    def local_overrides(self, name: str) -> set[str]:
        """Config names set locally on mirror ``name`` (the link does not sync them)."""
        return {row["name"] for row in self._store.query("SELECT name FROM topic_config_overrides WHERE topic = ?", (name,))}


def _log_config(configs: Mapping[str, str]) -> LogConfig:
    return LogConfig.from_topic_configs(configs, DAEMON_LOG_DEFAULTS)


def _insert_row(db, topic: Topic, partitions: int) -> None:
    db.execute(
        "INSERT INTO topics (name, topic_id, partitions, configs, kind, leader_epoch, created_ms) VALUES (?,?,?,?,?,?,?)",
        (topic.name, str(topic.topic_id), partitions, json.dumps(topic.configs), topic.kind, topic.leader_epoch, int(time.time() * 1000)),
    )


def _run_all(fn: Callable, items: Iterable, on_failure: Callable | None = None) -> list:
    """``fn`` over ``items`` in ``LOG_OPEN_CLOSE_THREADS`` threads; results in order. Every item is tried;
    if any raised, ``on_failure`` gets each result that succeeded and the first error is raised.

    Each thread takes the next index from one shared iterator until none is left: no future, queue entry
    or semaphore per item. A pool's per-item hand-off (a ``Condition`` round trip for each of 10,000 logs,
    16 threads contending for its lock and the GIL) was a quarter of a start's and a stop's samples."""
    items = list(items)
    if not items:
        return []
    results: list = [None] * len(items)
    errors: list[BaseException] = []
    # One index to each caller of next(): the range iterator's next() is a single C call under the GIL.
    indices = iter(range(len(items)))

    def work() -> None:
        for index in indices:
            try:
                results[index] = fn(items[index])
            except BaseException as exc:  # collected: the other items still run, the first error is raised
                errors.append(exc)

    threads = [threading.Thread(target=work, name=f"linkd-logs-{n}", daemon=True)
               for n in range(min(LOG_OPEN_CLOSE_THREADS, len(items)) - 1)]
    for thread in threads:
        thread.start()
    try:
        work()  # this thread takes its share too
    finally:
        for thread in threads:
            thread.join()
    if errors:
        if on_failure is not None:
            for done in results:
                if done is not None:
                    on_failure(done)
        raise errors[0]
    return results
