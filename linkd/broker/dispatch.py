"""Request dispatch: decode a frame, run its handler, encode the response.

Errors are sorted by whose fault they are: a request we cannot decode gets the answer Kafka gives
(UNSUPPORTED_VERSION for ApiVersions, otherwise the connection is closed); a bug in a handler is
logged with the request's API and correlation id and the connection is closed, so the client
reconnects and retries while every other connection keeps being served.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from protocol import messages
from protocol.errors import LocalProtocolError, RemoteProtocolError, UnsupportedVersion
from protocol.messages import ApiKey

from . import aclapis, admin, cluster, features, fetch, logdirs, offsets, produce, producers, replicas, txnmarkers, users
from .context import Body, Broker, RequestContext
from .groupauth import authorized_group_call
from .session import Session
from .txnauth import authorized_txn_call
from .versions import SUPPORTED_VERSIONS

log = logging.getLogger(__name__)

Handler = Callable[[RequestContext, Body], Awaitable[Body | None]]


class CloseConnection(Exception):
    """The connection must be closed without a response (undecodable or unanswerable request)."""


def _group(method: str, with_client: bool = False) -> Handler:
    async def handler(ctx: RequestContext, body: Body) -> Body:
        call = getattr(ctx.broker.groups, method)

        async def run(b: Body) -> Body:
            if with_client:
                return await call(b, ctx.api_version, client_id=ctx.client_id or "", client_host=ctx.client_host)
            return await call(b, ctx.api_version)

        return await authorized_group_call(ctx, method, body, run)

    handler.__name__ = method
    return handler


def _txn(method: str) -> Handler:
    async def handler(ctx: RequestContext, body: Body) -> Body:
        coordinator = ctx.broker.transactions
        if coordinator is None:
            raise RuntimeError("this broker has no transaction coordinator")
        handle = getattr(coordinator, method)

        async def run(b: Body) -> Body:
            result = handle(b, ctx.api_version)
            return await result if hasattr(result, "__await__") else result

        return await authorized_txn_call(ctx, method, body, run)

    handler.__name__ = method
    return handler


HANDLERS: dict[int, Handler] = {
    ApiKey.API_VERSIONS: cluster.api_versions,
    ApiKey.METADATA: cluster.metadata,
    ApiKey.DESCRIBE_CLUSTER: cluster.describe_cluster,
    ApiKey.FIND_COORDINATOR: cluster.find_coordinator,
    ApiKey.FETCH: fetch.fetch,
    ApiKey.PRODUCE: produce.produce,
    ApiKey.INIT_PRODUCER_ID: produce.init_producer_id,
    ApiKey.LIST_OFFSETS: offsets.list_offsets,
    ApiKey.OFFSET_FOR_LEADER_EPOCH: offsets.offset_for_leader_epoch,
    ApiKey.DELETE_RECORDS: offsets.delete_records,
    ApiKey.CREATE_TOPICS: admin.create_topics,
    ApiKey.DELETE_TOPICS: admin.delete_topics,
    ApiKey.CREATE_PARTITIONS: admin.create_partitions,
    ApiKey.DESCRIBE_CONFIGS: admin.describe_configs,
    ApiKey.ALTER_CONFIGS: admin.alter_configs,
    ApiKey.INCREMENTAL_ALTER_CONFIGS: admin.incremental_alter_configs,
    ApiKey.JOIN_GROUP: _group("join_group", with_client=True),
    ApiKey.SYNC_GROUP: _group("sync_group"),
    ApiKey.HEARTBEAT: _group("heartbeat"),
    ApiKey.LEAVE_GROUP: _group("leave_group"),
    ApiKey.OFFSET_COMMIT: _group("offset_commit"),
    ApiKey.OFFSET_FETCH: _group("offset_fetch"),
    ApiKey.LIST_GROUPS: _group("list_groups"),
    ApiKey.DESCRIBE_GROUPS: _group("describe_groups"),
    ApiKey.DELETE_GROUPS: _group("delete_groups"),
    ApiKey.CREATE_ACLS: aclapis.create_acls,
    ApiKey.DESCRIBE_ACLS: aclapis.describe_acls,
    ApiKey.DELETE_ACLS: aclapis.delete_acls,
    ApiKey.OFFSET_DELETE: _group("offset_delete"),
    ApiKey.DESCRIBE_LOG_DIRS: logdirs.describe_log_dirs,
    ApiKey.DESCRIBE_PRODUCERS: producers.describe_producers,
    ApiKey.DESCRIBE_TOPIC_PARTITIONS: replicas.describe_topic_partitions,
    ApiKey.ELECT_LEADERS: replicas.elect_leaders,
    ApiKey.LIST_PARTITION_REASSIGNMENTS: replicas.list_partition_reassignments,
    ApiKey.UPDATE_FEATURES: features.update_features,
    # On a SASL listener the connection's SaslConnection (saslgate.py) answers these two itself; here they
    # arrive only on a listener without SASL, where Kafka answers ILLEGAL_SASL_STATE.
    ApiKey.SASL_HANDSHAKE: cluster.sasl_handshake_without_sasl,
    ApiKey.SASL_AUTHENTICATE: cluster.sasl_authenticate_without_sasl,
    ApiKey.DESCRIBE_USER_SCRAM_CREDENTIALS: users.describe_user_scram_credentials,
    ApiKey.ALTER_USER_SCRAM_CREDENTIALS: users.alter_user_scram_credentials,
    ApiKey.DESCRIBE_CLIENT_QUOTAS: users.describe_client_quotas,
    ApiKey.ADD_PARTITIONS_TO_TXN: _txn("add_partitions"),
    ApiKey.ADD_OFFSETS_TO_TXN: _txn("add_offsets"),
    ApiKey.END_TXN: _txn("end_txn"),
    ApiKey.TXN_OFFSET_COMMIT: _txn("txn_offset_commit"),
    ApiKey.LIST_TRANSACTIONS: _txn("list_transactions"),
    ApiKey.DESCRIBE_TRANSACTIONS: _txn("describe_transactions"),
    ApiKey.WRITE_TXN_MARKERS: txnmarkers.write_txn_markers,
}

assert set(HANDLERS) == set(SUPPORTED_VERSIONS), "every advertised API needs a handler and vice versa"


def _supported_triples() -> list[tuple[int, int, int]]:
    return [(k, lo, hi) for k, (lo, hi) in sorted(SUPPORTED_VERSIONS.items())]


async def handle_frame(
    broker: Broker, frame: bytes | memoryview, client_host: str, session: Session | None = None
) -> bytes | list | None:
    """Answer one request frame. Returns the encoded response (bytes or chunk list), or None for acks=0."""
    try:
        request = messages.decode_request(frame)
    except UnsupportedVersion as exc:
        if exc.api_key == ApiKey.API_VERSIONS:
            # Clients probe with their newest ApiVersions; the v0-layout answer lets them retry lower.
            return messages.encode_api_versions_fallback(exc.correlation_id, _supported_triples())
        raise CloseConnection(f"unsupported request: {exc}") from exc
    except RemoteProtocolError as exc:
        raise CloseConnection(f"undecodable request: {exc}") from exc

    header = request.header
    supported = SUPPORTED_VERSIONS.get(header.api_key)
    if supported is None or not supported[0] <= header.api_version <= supported[1]:
        if header.api_key == ApiKey.API_VERSIONS:
            return messages.encode_api_versions_fallback(header.correlation_id, _supported_triples())
        name = ApiKey(header.api_key).name if header.api_key in ApiKey._value2member_map_ else str(header.api_key)
        raise CloseConnection(f"{name} v{header.api_version} is not supported (client {header.client_id!r})")

    if session is None:
        session = Session(host=client_host.lstrip("/"))
    ctx = RequestContext(broker, header.api_key, header.api_version, header.correlation_id, header.client_id, client_host, session)
    try:
        body = await HANDLERS[header.api_key](ctx, request.body)
    except produce.AcksZeroRefused as exc:
        raise CloseConnection(f"{exc} (client {header.client_id!r})") from exc  # the producer's only signal
    except Exception as exc:
        log.exception("handler for %s v%d failed (correlation id %d)", ApiKey(header.api_key).name, header.api_version, header.correlation_id)
        raise CloseConnection(f"internal error: {exc}") from exc
    if body is None:
        return None
    try:
        return messages.encode_response_chunks(header.api_key, header.api_version, header.correlation_id, body)
    except LocalProtocolError as exc:
        # A handler built a body its response version cannot carry: our bug, this connection's problem only.
        log.exception("cannot encode %s v%d response (correlation id %d)", ApiKey(header.api_key).name, header.api_version, header.correlation_id)
        raise CloseConnection(f"internal error: {exc}") from exc
