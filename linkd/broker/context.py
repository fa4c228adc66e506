"""What a request handler sees: the broker's shared state and the request's own header."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import trio

from protocol.errors import ErrorCode

from .. import storage_calls
from ..producer_ids import ProducerIdAllocator
from ..storage import LogClosed
from ..topics import Topic, TopicRegistry
from .limits import Limits
from .notify import AppendNotifier
from .session import Authorizer, Session

if TYPE_CHECKING:
    from ..groups.coordinator import GroupCoordinator
    from ..storage import PartitionLog
    from ..txn.coordinator import TransactionCoordinator
    from .users import UserStore

# What Kafka puts in a uuid field that has no topic behind it (an error entry, a validate-only create).
ZERO_UUID = uuid.UUID(int=0)


class TopicLifecycleHooks(Protocol):
    """Lets the cluster link react when a client deletes a topic it mirrors."""

    def on_topic_deleted(self, name: str) -> None: ...

    def mirror_synced_configs(self, name: str) -> dict[str, str] | None:
        """For a mirror still following its source: the configs its link syncs (the source's values last
        seen). None when ``name`` is not such a mirror (a local topic, a promoted mirror)."""
        ...


@dataclass(frozen=True)
class BrokerIdentity:
    node_id: int
    host: str
    port: int
    cluster_id: str


class Flusher:
    """Group commit for acks=all: concurrent producers to one partition share an fsync.

    A producer's append is in the page cache when it calls ``flush_to``; it waits until a flush that
    started after its append has finished. A flush that is running when more appends arrive is followed by
    exactly one more, which covers all of them.
    """

    def __init__(self) -> None:
        self._locks: dict[int, trio.Lock] = {}

    async def flush_to(self, plog: PartitionLog, offset: int) -> None:
        lock = self._locks.setdefault(id(plog), trio.Lock())
        async with lock:
            if plog.recovery_point >= offset:
                return  # someone else's flush, started after our append, already covered it
            try:
                # In a worker thread: the log fsyncs outside its lock, so other connections keep being served.
                await storage_calls.call(plog, plog.flush)
            except LogClosed:
                pass  # its topic was deleted while we waited: there is nothing left to make durable

    async def flush_many(self, wanted: Sequence[tuple[PartitionLog, int]], jobs: int) -> list[OSError | None]:
        """``flush_to`` for many partitions of one Produce at once, in at most ``jobs`` worker-thread jobs
        (``storage_calls.call_batched``; parallel fsyncs share the file system's commits) instead of a
        hand-off per partition. Not grouped with concurrent ``flush_to`` calls: a log flushed twice does its
        fsyncs once (the second finds nothing dirty). Returns each partition's fsync error, or None."""
        todo = [i for i, (plog, offset) in enumerate(wanted) if plog.recovery_point < offset]
        outcomes = await storage_calls.call_batched([(wanted[i][0], wanted[i][0].flush, ()) for i in todo], jobs)
        errors: list[OSError | None] = [None] * len(wanted)
        for i, done in zip(todo, outcomes, strict=True):
            try:
                done.unwrap()
            except LogClosed:
                pass  # its topic was deleted meanwhile: there is nothing left to make durable
            except OSError as exc:
                errors[i] = exc
        return errors

    def forget(self, plog: PartitionLog) -> None:
        self._locks.pop(id(plog), None)


@dataclass
class Broker:
    identity: BrokerIdentity
    topics: TopicRegistry
    groups: GroupCoordinator
    producer_ids: ProducerIdAllocator
    notifier: AppendNotifier = field(default_factory=AppendNotifier)
    flusher: Flusher = field(default_factory=Flusher)
    hooks: list[TopicLifecycleHooks] = field(default_factory=list)
    max_request_bytes: int = 100 * 1024 * 1024
    limits: Limits = field(default_factory=Limits)
    authorizer: Authorizer | None = None  # None: every principal may do everything (today's behaviour)
    users: UserStore | None = None  # SCRAM/PLAIN users of the listeners (linkd.broker.users)
    # Listener name -> (host, port) that Metadata, FindCoordinator and DescribeCluster give a client
    # connected to it; a listener not in it (or an empty map) answers with ``identity``'s address.
    advertised: dict[str, tuple[str, int]] = field(default_factory=dict)

    def address_for(self, session: Session) -> tuple[str, int]:
        return self.advertised.get(session.listener) or (self.identity.host, self.identity.port)
    transactions: TransactionCoordinator | None = None  # None: transactional producers are refused


@dataclass
class RequestContext:
    broker: Broker
    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    client_host: str
    session: Session = field(default_factory=lambda: Session(host=""))

    def authorized(self, operation: str, resource_type: str, name: str) -> bool:
        """True when this request's principal may do ``operation`` on the resource (always, with no authorizer)."""
        authorizer = self.broker.authorizer
        return authorizer is None or authorizer.authorize(self.session, operation, resource_type, name)

    def resolve(
        self, topic: Topic | None, partition: int, current_leader_epoch: int = -1
    ) -> tuple[ErrorCode, PartitionLog | None]:
        """Common checks for partition-addressed requests: existence and leader-epoch fencing."""
        if topic is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None
        plog = topic.partition(partition)
        if plog is None:
            return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, None
        if current_leader_epoch >= 0:
            ours = topic.advertised_epoch(partition)
            if current_leader_epoch < ours:
                return ErrorCode.FENCED_LEADER_EPOCH, None
            if current_leader_epoch > ours:
                return ErrorCode.UNKNOWN_LEADER_EPOCH, None
        return ErrorCode.NONE, plog


Body = dict[str, Any]


def authorized_operations(ctx: RequestContext, resource_type: str, name: str, everything: int) -> int:
    """The ``authorized_operations`` bit field for a resource: ``everything`` without an authorizer,
    else what the principal may really do (bit = Kafka's AclOperation code)."""
    authorizer = ctx.broker.authorizer
    if authorizer is None:
        return everything
    described = getattr(authorizer, "authorized_operations", None)
    if described is not None:
        return described(ctx.session, resource_type, name)
    from .acl import OPERATIONS, SUPPORTED_OPERATIONS

    return sum(1 << OPERATIONS[op] for op in SUPPORTED_OPERATIONS[resource_type] if authorizer.authorize(ctx.session, op, resource_type, name))


def authorized_for_any(ctx: RequestContext, operation: str, resource_type: str) -> bool:
    """Kafka's authorizeByResourceType: may the principal do ``operation`` on at least one resource of the type?"""
    authorizer = ctx.broker.authorizer
    if authorizer is None:
        return True
    check = getattr(authorizer, "authorize_by_resource_type", None)
    return bool(check(ctx.session, operation, resource_type)) if check is not None else False
