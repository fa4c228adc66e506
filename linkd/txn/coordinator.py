"""The transaction coordinator: transactional ids, their epochs, and the markers that end transactions.

linkd is a one-node cluster, so it coordinates every transactional id and leads every partition: where
Kafka's coordinator sends WriteTxnMarkers to partition leaders, linkd appends the COMMIT/ABORT control
batches to its own logs. The log's producer state then closes the transaction there (the LSO moves, an
ABORT enters the aborted-transaction index), which is all a ``read_committed`` Fetch needs.

Every transition is written to the transaction log (``linkd.txn.store``) before its effects: the
``PrepareCommit``/``PrepareAbort`` decision is durable before the first marker, and completion (state
``Complete*`` plus the transaction's group offsets applied or dropped) is one SQLite transaction after the
last marker is flushed. ``recover`` finishes any decision a crash interrupted. A marker is appended only
to a partition whose producer state still shows this producer's transaction open, so repeating the marker
phase after a crash writes each marker exactly once.

One ``trio.Lock`` per transactional id serialises its requests (and transactional Produce), so a marker
phase never interleaves with an append of the same transaction.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from protocol.errors import ErrorCode
from protocol.records import CONTROL_ABORT, CONTROL_COMMIT, build_control_batch

from .. import storage_calls
from ..controlstore import ControlStore
from ..producer_ids import ProducerIdAllocator
from .states import IDLE_STATES, PREPARE_STATES, TxnEvent, TxnState, next_state
from .store import TxnMetadata, TxnStore

if TYPE_CHECKING:
    from ..groups.coordinator import GroupCoordinator
    from ..storage import PartitionLog
    from ..topics import TopicRegistry

log = logging.getLogger(__name__)

Body = dict[str, Any]
MAX_PRODUCER_EPOCH = 32767


@dataclass(frozen=True)
class TxnConfig:
    """Kafka's broker settings of the same names, with Kafka's defaults."""

    max_timeout_ms: int = 900_000  # transaction.max.timeout.ms
    id_expiration_ms: int = 7 * 24 * 3600 * 1000  # transactional.id.expiration.ms
    abort_check_interval_ms: int = 10_000  # transaction.abort.timed.out.transaction.cleanup.interval.ms


@dataclass(frozen=True)
class TxnCoordinatorStatistics:
    transactional_ids: int
    ongoing: int
    committed: int
    aborted: int
    timed_out: int
    markers_written: int


class TxnError(Exception):
    def __init__(self, code: ErrorCode, message: str = "") -> None:
        super().__init__(message or code.name)
        self.code = code


def _now_ms() -> int:
    return int(time.time() * 1000)


class TransactionCoordinator:
    def __init__(self, store: ControlStore, topics: TopicRegistry, producer_ids: ProducerIdAllocator,
                 groups: GroupCoordinator, notify: Callable[[], None] = lambda: None,
                 config: TxnConfig | None = None, clock_ms: Callable[[], int] = _now_ms) -> None:
        self._log = TxnStore(store)
        self._store = store
        self._topics = topics
        self._producer_ids = producer_ids
        self._groups = groups
        self._notify = notify
        self.config = config or TxnConfig()
        self._clock_ms = clock_ms
        self._txns: dict[str, TxnMetadata] = self._log.load()
        self._locks: dict[str, trio.Lock] = {}
        self._committed = self._aborted = self._timed_out = self._markers = 0

    # ------------------------------------------------------------------ lifecycle

    def recover(self) -> None:
        """At start, before serving: finish every decision a crash interrupted (blocking, on the loop)."""
        for meta in list(self._txns.values()):
            if meta.state is TxnState.PREPARE_EPOCH_FENCE:
                self._transition(meta, TxnEvent.FENCE_ABORT)
            if meta.state in PREPARE_STATES:
                log.info("transactional id %s: completing %s after restart (%d partitions)",
                         meta.transactional_id, meta.state.value, len(meta.partitions))
                commit = meta.state is TxnState.PREPARE_COMMIT
                for plog, leader_epoch in self._partitions_needing_marker(meta):
                    plog.append_assigned(self._marker(meta, commit), leader_epoch, self._clock_ms())
                    plog.flush()
                    self._markers += 1
                self._complete(meta, commit)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Abort transactions past their timeout and forget expired transactional ids, for the daemon's life."""
        task_status.started()
        while True:
            await trio.sleep(self.config.abort_check_interval_ms / 1000)
            await self.expire_due()

    async def expire_due(self) -> None:
        now = self._clock_ms()
        for meta in list(self._txns.values()):
            if meta.state is TxnState.ONGOING and meta.txn_start_ms >= 0 and now - meta.txn_start_ms > meta.timeout_ms:
                async with self.lock(meta.transactional_id):
                    if meta.state is TxnState.ONGOING and now - meta.txn_start_ms > meta.timeout_ms:
                        log.warning("transactional id %s: transaction of producer %d epoch %d timed out after %d ms; aborting",
                                    meta.transactional_id, meta.producer_id, meta.producer_epoch, meta.timeout_ms)
                        self._timed_out += 1
                        await self._fence_and_abort(meta)
            elif meta.state in IDLE_STATES and now - meta.last_update_ms > self.config.id_expiration_ms:
                async with self.lock(meta.transactional_id):
                    if meta.state in IDLE_STATES and now - meta.last_update_ms > self.config.id_expiration_ms:
                        self._transition(meta, TxnEvent.EXPIRE)
                        log.info("transactional id %s expired (unused for %d ms)", meta.transactional_id, now - meta.last_update_ms)

    def lock(self, transactional_id: str, registering: bool = False) -> trio.Lock:
        """The lock serialising one id's requests. Only ids that exist (or are being registered by
        InitProducerId) keep one: a request naming an unknown id gets a throwaway lock and then an error,
        so clients cannot grow this map with made-up ids."""
        lock = self._locks.get(transactional_id)
        if lock is None:
            lock = trio.Lock()
            if registering or transactional_id in self._txns:
                self._locks[transactional_id] = lock
        return lock

    # ------------------------------------------------------------------ the one place states change

    def _transition(self, meta: TxnMetadata, event: TxnEvent) -> None:
        """Apply ``event`` and persist the result (joins an outer control-store transaction)."""
        meta.state = next_state(meta.state, event)
        meta.last_update_ms = self._clock_ms()
        if meta.state is TxnState.DEAD:
            self._log.delete(meta.transactional_id)
            self._txns.pop(meta.transactional_id, None)
            self._locks.pop(meta.transactional_id, None)
            return
        if meta.state in IDLE_STATES:
            meta.partitions.clear()
            meta.groups.clear()
            meta.txn_start_ms = -1
        self._log.put(meta)

    def _bump_epoch(self, meta: TxnMetadata) -> None:
        if meta.producer_epoch + 1 >= MAX_PRODUCER_EPOCH:
            meta.producer_id, meta.producer_epoch = self._producer_ids.allocate(), 0
        else:
            meta.producer_epoch += 1

    # ------------------------------------------------------------------ markers

    def _marker(self, meta: TxnMetadata, commit: bool) -> bytes:
        return build_control_batch(CONTROL_COMMIT if commit else CONTROL_ABORT, meta.producer_id, meta.producer_epoch,
                                   timestamp=self._clock_ms())

    def _partitions_needing_marker(self, meta: TxnMetadata) -> list[tuple[PartitionLog, int]]:
        """Partitions of the transaction whose log still has this producer's transaction open. A partition
        that holds no data of it (or has its marker already, before a crash) needs none."""
        out = []
        for topic_name, index in sorted(meta.partitions):
            topic = self._topics.get(topic_name)
            plog = topic.partition(index) if topic is not None else None
            if topic is None or plog is None:
                continue  # deleted since: nothing left to mark
            open_first = plog.open_transactions()
            if meta.producer_id in open_first:
                out.append((plog, topic.advertised_epoch(index)))
        return out

    async def _write_markers(self, meta: TxnMetadata, commit: bool) -> None:
        for plog, leader_epoch in self._partitions_needing_marker(meta):
            await storage_calls.call(plog, plog.append_assigned, self._marker(meta, commit), leader_epoch, self._clock_ms())
            # Durable before the transaction is complete: a power loss must not lose a marker the log says it wrote.
            await storage_calls.call(plog, plog.flush)
            self._markers += 1

    def _complete(self, meta: TxnMetadata, commit: bool) -> None:
        groups = sorted(meta.groups)
        with self._store.transaction():
            if groups:
                self._groups.complete_txn_offsets(meta.transactional_id, commit)
            self._transition(meta, TxnEvent.MARKERS_WRITTEN)
        if commit:
            self._committed += 1
        else:
            self._aborted += 1
        self._notify()

    async def _end(self, meta: TxnMetadata, commit: bool) -> None:
        self._transition(meta, TxnEvent.COMMIT if commit else TxnEvent.ABORT)
        await self._write_markers(meta, commit)
        self._complete(meta, commit)

    async def _fence_and_abort(self, meta: TxnMetadata) -> None:
        """Bump the epoch (fencing the producer that owns the open transaction) and abort it with the new one."""
        self._bump_epoch(meta)
        self._transition(meta, TxnEvent.FENCE)
        self._transition(meta, TxnEvent.FENCE_ABORT)
        await self._write_markers(meta, False)
        self._complete(meta, False)

    async def _settle(self, transactional_id: str | None) -> None:
        """Under the id's lock: finish a decision an earlier request could not (a marker append failed, e.g.
        on a full disk), so the id does not answer CONCURRENT_TRANSACTIONS until the next restart."""
        meta = self._txns.get(transactional_id or "")
        if meta is None:
            return
        if meta.state is TxnState.PREPARE_EPOCH_FENCE:
            self._transition(meta, TxnEvent.FENCE_ABORT)
        if meta.state in PREPARE_STATES:
            commit = meta.state is TxnState.PREPARE_COMMIT
            log.info("transactional id %s: completing %s left unfinished", meta.transactional_id, meta.state.value)
            await self._write_markers(meta, commit)
            self._complete(meta, commit)

    # ------------------------------------------------------------------ checks shared by the APIs

    def _owned(self, transactional_id: str | None, producer_id: int, producer_epoch: int, fenced: ErrorCode) -> TxnMetadata:
        meta = self._txns.get(transactional_id or "")
        if meta is None or meta.producer_id != producer_id:
            raise TxnError(ErrorCode.INVALID_PRODUCER_ID_MAPPING,
                           f"transactional id {transactional_id!r} is not owned by producer id {producer_id}")
        if producer_epoch != meta.producer_epoch:
            raise TxnError(fenced, f"producer {producer_id} epoch {producer_epoch} is not the current epoch {meta.producer_epoch} of {transactional_id!r}")
        if meta.state in PREPARE_STATES or meta.state is TxnState.PREPARE_EPOCH_FENCE:
            raise TxnError(ErrorCode.CONCURRENT_TRANSACTIONS, f"transaction of {transactional_id!r} is completing")
        return meta

    def _open(self, meta: TxnMetadata) -> None:
        if meta.state in IDLE_STATES:
            meta.txn_start_ms = self._clock_ms()
        self._transition(meta, TxnEvent.ADD)

    # ------------------------------------------------------------------ InitProducerId

    async def init_producer_id(self, body: Body, version: int) -> Body:
        def answer(code: ErrorCode, pid: int = -1, epoch: int = -1) -> Body:
            return {"throttle_time_ms": 0, "error_code": code, "producer_id": pid, "producer_epoch": epoch}

        tid: str = body["transactional_id"]
        timeout = body.get("transaction_timeout_ms", 60_000)
        if not tid:
            return answer(ErrorCode.INVALID_REQUEST)
        if timeout <= 0 or timeout > self.config.max_timeout_ms:
            return answer(ErrorCode.INVALID_TRANSACTION_TIMEOUT)
        expected_pid, expected_epoch = body.get("producer_id", -1), body.get("producer_epoch", -1)
        async with self.lock(tid, registering=True):
            await self._settle(tid)
            meta = self._txns.get(tid)
            if meta is None:
                # New here (or in use on a source before failover): a fresh id, above every mirrored producer id.
                meta = TxnMetadata(tid, self._producer_ids.allocate(), 0, timeout, last_update_ms=self._clock_ms())
                self._txns[tid] = meta
                self._log.put(meta)
                return answer(ErrorCode.NONE, meta.producer_id, 0)
            if expected_pid >= 0 and (expected_pid, expected_epoch) != (meta.producer_id, meta.producer_epoch):
                # KIP-360: only the current owner may bump its own epoch to recover.
                fenced = ErrorCode.PRODUCER_FENCED if version >= 4 else ErrorCode.INVALID_PRODUCER_EPOCH
                return answer(fenced)
            if meta.state is TxnState.ONGOING:
                log.info("transactional id %s: new producer instance; aborting the open transaction of epoch %d",
                         tid, meta.producer_epoch)
                await self._fence_and_abort(meta)
            elif meta.state not in IDLE_STATES:
                return answer(ErrorCode.CONCURRENT_TRANSACTIONS)
            self._bump_epoch(meta)
            meta.timeout_ms = timeout
            self._transition(meta, TxnEvent.INIT)
            return answer(ErrorCode.NONE, meta.producer_id, meta.producer_epoch)

    # ------------------------------------------------------------------ AddPartitionsToTxn

    async def add_partitions(self, body: Body, version: int) -> Body:
        if version <= 3:
            results = await self._add_partitions_one(
                body.get("v3_and_below_transactional_id"), body.get("v3_and_below_producer_id", -1),
                body.get("v3_and_below_producer_epoch", -1), body.get("v3_and_below_topics") or [], False, version)
            return {"throttle_time_ms": 0, "results_by_topic_v3_and_below": results}
        out = []
        for txn in body.get("transactions") or []:
            results = await self._add_partitions_one(txn.get("transactional_id"), txn.get("producer_id", -1), txn.get("producer_epoch", -1),
                                                     txn.get("topics") or [], bool(txn.get("verify_only")), version)
            out.append({"transactional_id": txn.get("transactional_id"), "topic_results": results})
        return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE, "results_by_transaction": out}

    async def _add_partitions_one(self, tid: str | None, pid: int, epoch: int, topics: list[Body], verify_only: bool, version: int) -> list[Body]:
        wanted = [(t["name"], p) for t in topics for p in t.get("partitions") or []]
        errors: dict[tuple[str, int], ErrorCode] = {}
        for name, index in wanted:
            topic = self._topics.get(name)
            if topic is None or topic.partition(index) is None:
                errors[(name, index)] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
        if errors:
            code_for = {tp: errors.get(tp, ErrorCode.OPERATION_NOT_ATTEMPTED) for tp in wanted}
        else:
            fenced = ErrorCode.PRODUCER_FENCED if version >= 2 else ErrorCode.INVALID_PRODUCER_EPOCH
            try:
                async with self.lock(tid or ""):
                    await self._settle(tid)
                    meta = self._owned(tid, pid, epoch, fenced)
                    if verify_only:
                        inside = meta.state is TxnState.ONGOING
                        code_for = {tp: ErrorCode.NONE if inside and tp in meta.partitions else ErrorCode.INVALID_TXN_STATE for tp in wanted}
                    else:
                        new = set(wanted) - meta.partitions
                        if new or meta.state is not TxnState.ONGOING:
                            meta.partitions |= new
                            self._open(meta)
                        code_for = dict.fromkeys(wanted, ErrorCode.NONE)
            except TxnError as exc:
                code_for = dict.fromkeys(wanted, exc.code)
        by_topic: dict[str, list[Body]] = {}
        for (name, index), code in code_for.items():
            by_topic.setdefault(name, []).append({"partition_index": index, "partition_error_code": code})
        return [{"name": name, "results_by_partition": parts} for name, parts in by_topic.items()]

    # ------------------------------------------------------------------ AddOffsetsToTxn / TxnOffsetCommit

    async def add_offsets(self, body: Body, version: int) -> Body:
        tid, group = body.get("transactional_id"), body.get("group_id")
        fenced = ErrorCode.PRODUCER_FENCED if version >= 2 else ErrorCode.INVALID_PRODUCER_EPOCH
        code = ErrorCode.NONE
        if not group:
            code = ErrorCode.INVALID_GROUP_ID
        else:
            try:
                async with self.lock(tid or ""):
                    await self._settle(tid)
                    meta = self._owned(tid, body.get("producer_id", -1), body.get("producer_epoch", -1), fenced)
                    if group not in meta.groups or meta.state is not TxnState.ONGOING:
                        meta.groups.add(group)
                        self._open(meta)
            except TxnError as exc:
                code = exc.code
        return {"throttle_time_ms": 0, "error_code": code}

    async def txn_offset_commit(self, body: Body, version: int) -> Body:
        tid = body.get("transactional_id")
        fenced = ErrorCode.PRODUCER_FENCED if version >= 2 else ErrorCode.INVALID_PRODUCER_EPOCH
        async with self.lock(tid or ""):
            await self._settle(tid)
            try:
                meta = self._owned(tid, body.get("producer_id", -1), body.get("producer_epoch", -1), fenced)
                if meta.state is not TxnState.ONGOING or body.get("group_id") not in meta.groups:
                    raise TxnError(ErrorCode.INVALID_TXN_STATE, f"group {body.get('group_id')!r} was not added to the transaction")
            except TxnError as exc:
                return {"throttle_time_ms": 0, "topics": [
                    {"name": t.get("name"), "partitions": [{"partition_index": p["partition_index"], "error_code": exc.code} for p in t.get("partitions") or []]}
                    for t in body.get("topics") or []]}
            assert tid is not None
            return self._groups.txn_offset_commit(tid, body, version)

    # ------------------------------------------------------------------ EndTxn

    async def end_txn(self, body: Body, version: int) -> Body:
        tid = body.get("transactional_id")
        commit = bool(body.get("committed"))
        fenced = ErrorCode.PRODUCER_FENCED if version >= 2 else ErrorCode.INVALID_PRODUCER_EPOCH
        code = ErrorCode.NONE
        meta: TxnMetadata | None  # re-read for the answer below: None if the transactional id is unknown
        async with self.lock(tid or ""):
            await self._settle(tid)
            try:
                meta = self._owned(tid, body.get("producer_id", -1), body.get("producer_epoch", -1), fenced)
                if meta.state is TxnState.ONGOING:
                    await self._end(meta, commit)
                elif meta.state is not (TxnState.COMPLETE_COMMIT if commit else TxnState.COMPLETE_ABORT):
                    # A retry of the EndTxn that completed is answered NONE; anything else is out of order.
                    raise TxnError(ErrorCode.INVALID_TXN_STATE)
            except TxnError as exc:
                code = exc.code
            meta = self._txns.get(tid or "")
        answer = {"throttle_time_ms": 0, "error_code": code}
        if version >= 5:
            # Transaction version 1 (linkd advertises no transaction.version feature): the producer keeps its epoch.
            answer.update(producer_id=meta.producer_id if meta else -1, producer_epoch=meta.producer_epoch if meta else -1)
        return answer

    # ------------------------------------------------------------------ Produce

    def check_produce(self, transactional_id: str, producer_id: int, producer_epoch: int, topic: str, partition: int) -> tuple[ErrorCode, str | None]:
        """May this transactional batch be appended? Call with ``lock(transactional_id)`` held across the append."""
        meta = self._txns.get(transactional_id)
        if meta is None or meta.producer_id != producer_id:
            return ErrorCode.INVALID_PRODUCER_ID_MAPPING, f"producer id {producer_id} does not own transactional id {transactional_id!r}"
        if producer_epoch != meta.producer_epoch:
            return ErrorCode.INVALID_PRODUCER_EPOCH, f"producer {producer_id} epoch {producer_epoch} is not the current epoch {meta.producer_epoch}"
        if meta.state is not TxnState.ONGOING or (topic, partition) not in meta.partitions:
            return ErrorCode.INVALID_TXN_STATE, f"{topic}-{partition} is not part of an ongoing transaction of {transactional_id!r}"
        return ErrorCode.NONE, None

    # ------------------------------------------------------------------ an operator's abort (WriteTxnMarkers)

    async def abort_for_operator(self, producer_id: int, topic: str, partition: int) -> bool:
        """``kafka-transactions abort`` names one partition's open transaction. If it is one of ours, abort
        the whole transaction (every partition, its offsets dropped) and fence its producer, as a timeout
        would: a marker in that partition alone would let the producer commit the rest. False when no
        ongoing transaction of ours holds that partition for that producer id."""
        for meta in list(self._txns.values()):
            if meta.producer_id != producer_id:
                continue
            async with self.lock(meta.transactional_id):
                await self._settle(meta.transactional_id)
                if meta.state is TxnState.ONGOING and meta.producer_id == producer_id and (topic, partition) in meta.partitions:
                    log.warning("transactional id %s: transaction of producer %d epoch %d aborted by an operator (WriteTxnMarkers on %s-%d)",
                                meta.transactional_id, producer_id, meta.producer_epoch, topic, partition)
                    await self._fence_and_abort(meta)
                    return True
        return False

    # ------------------------------------------------------------------ ListTransactions / DescribeTransactions

    def list_transactions(self, body: Body, version: int) -> Body:
        known = {s.value for s in TxnState}
        states = body.get("state_filters") or []
        pids = set(body.get("producer_id_filters") or [])
        duration = body.get("duration_filter", -1) if version >= 1 else -1
        pattern = body.get("transactional_id_pattern") if version >= 2 else None
        try:
            regex = re.compile(pattern) if pattern else None
        except re.error:
            return {"throttle_time_ms": 0, "error_code": ErrorCode.INVALID_REQUEST, "unknown_state_filters": [], "transaction_states": []}
        now = self._clock_ms()
        out = []
        for meta in sorted(self._txns.values(), key=lambda m: m.transactional_id):
            if states and meta.state.value not in states:
                continue
            if pids and meta.producer_id not in pids:
                continue
            if duration >= 0 and (meta.txn_start_ms < 0 or now - meta.txn_start_ms <= duration):
                continue
            if regex is not None and not regex.fullmatch(meta.transactional_id):
                continue
            out.append({"transactional_id": meta.transactional_id, "producer_id": meta.producer_id, "transaction_state": meta.state.value})
        return {"throttle_time_ms": 0, "error_code": ErrorCode.NONE,
                "unknown_state_filters": [s for s in states if s not in known], "transaction_states": out}

    def describe_transactions(self, body: Body, version: int) -> Body:
        out = []
        for tid in body.get("transactional_ids") or []:
            meta = self._txns.get(tid)
            if meta is None:
                out.append({"error_code": ErrorCode.TRANSACTIONAL_ID_NOT_FOUND, "transactional_id": tid, "transaction_state": "",
                            "transaction_timeout_ms": 0, "transaction_start_time_ms": -1, "producer_id": -1, "producer_epoch": -1, "topics": []})
                continue
            by_topic: dict[str, list[int]] = {}
            for name, index in sorted(meta.partitions):
                by_topic.setdefault(name, []).append(index)
            out.append({"error_code": ErrorCode.NONE, "transactional_id": tid, "transaction_state": meta.state.value,
                        "transaction_timeout_ms": meta.timeout_ms, "transaction_start_time_ms": meta.txn_start_ms,
                        "producer_id": meta.producer_id, "producer_epoch": meta.producer_epoch,
                        "topics": [{"topic": t, "partitions": ps} for t, ps in by_topic.items()]})
        return {"throttle_time_ms": 0, "transaction_states": out}

    # ------------------------------------------------------------------ introspection

    def state_of(self, transactional_id: str) -> TxnMetadata | None:
        return self._txns.get(transactional_id)

    def statistics(self) -> TxnCoordinatorStatistics:
        ongoing = sum(1 for m in self._txns.values() if m.state is TxnState.ONGOING)
        return TxnCoordinatorStatistics(len(self._txns), ongoing, self._committed, self._aborted, self._timed_out, self._markers)
