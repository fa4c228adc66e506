"""The admin API's answers against Confluent's published REST v3 cluster-linking schemas, field by field.

The schemas below are written for this test from Confluent's OpenAPI for Kafka REST v3 (the models
``ClusterData``, ``ListLinksResponseData``, ``ListMirrorTopicsResponseData``, ``MirrorLag``,
``AlterMirrorStatusResponseData``, ``Error`` and their ``Resource``/``ResourceCollection`` envelopes): the
field names, JSON types, nullability and which fields are required. linkd may answer more fields than
Confluent (runbooks depend on them); it may not miss a required one or answer one with another type.
``DEVIATIONS`` lists, with the reason, where linkd knowingly answers differently.

Everything runs against a real daemon mirroring from a real Apache Kafka, through its HTTP API and CLI.
"""

from __future__ import annotations

import httpx
import pytest

from tests.link.mirroring import FAST_LINK, admin, cli_json, create_link, produce_confluent, wait_for, wait_mirrored

pytestmark = pytest.mark.timeout(180)


# -- a schema language as small as the contract needs ------------------------------------------------

class Nullable:
    def __init__(self, inner) -> None:
        self.inner = inner


class Array:
    def __init__(self, item) -> None:
        self.item = item


class Obj:
    def __init__(self, fields: dict, required: tuple[str, ...] = ()) -> None:
        self.fields, self.required = fields, required

    def extend(self, fields: dict, required: tuple[str, ...] = ()) -> Obj:  # OpenAPI's allOf
        return Obj({**self.fields, **fields}, self.required + required)


class Enum:
    def __init__(self, *values: str) -> None:
        self.values = values


STR, INT, BOOL = "string", "integer", "boolean"

# (model, field) -> (why linkd answers otherwise, the schema it answers instead). Nothing else may differ.
DEVIATIONS = {
    ("MirrorLag", "lag"): ("null while the source's end offset is unknown (the source unreachable): linkd will not guess a lag", Nullable(INT)),
    ("LinkTask", "errors"): ("a count of failed runs (linkd's contract since the tasks landed; /metrics and runbooks read it), "
                             "the last error itself in last_error_code/last_error_message", INT),
}


def check(value, schema, where: str = "$", model: str = "") -> None:
    if isinstance(schema, Nullable):
        if value is not None:
            check(value, schema.inner, where, model)
        return
    if isinstance(schema, tuple):  # (model name, schema)
        model, schema = schema
    if schema == STR or isinstance(schema, Enum):
        assert isinstance(value, str), f"{where}: {value!r} is not a string"
        if isinstance(schema, Enum):
            assert value in schema.values, f"{where}: {value!r} is not one of {schema.values}"
    elif schema == INT:
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an integer"
    elif schema == BOOL:
        assert isinstance(value, bool), f"{where}: {value!r} is not a boolean"
    elif isinstance(schema, Array):
        assert isinstance(value, list), f"{where}: {value!r} is not an array"
        for i, item in enumerate(value):
            check(item, schema.item, f"{where}[{i}]", model)
    elif isinstance(schema, Obj):
        assert isinstance(value, dict), f"{where}: {value!r} is not an object"
        for name in schema.required:
            assert name in value, f"{where}: required field {name!r} missing (has {sorted(value)})"
        for name, field in schema.fields.items():
            if name not in value:
                continue
            if (model, name) in DEVIATIONS:
                field = DEVIATIONS[model, name][1]
            check(value[name], field, f"{where}.{name}", model)
    else:  # pragma: no cover - a typo in the schemas above
        raise AssertionError(f"unknown schema {schema!r}")


RESOURCE_METADATA = Obj({"self": STR, "resource_name": Nullable(STR)}, ("self",))
COLLECTION_METADATA = Obj({"self": STR, "next": Nullable(STR)}, ("self",))
RESOURCE = Obj({"kind": STR, "metadata": RESOURCE_METADATA}, ("kind", "metadata"))
RELATIONSHIP = Obj({"related": STR}, ("related",))
ERROR = Obj({"error_code": INT, "message": Nullable(STR)}, ("error_code", "message"))


def collection_of(item) -> Obj:
    return Obj({"kind": STR, "metadata": COLLECTION_METADATA, "data": Array(item)}, ("kind", "metadata", "data"))


CLUSTER_DATA = RESOURCE.extend(
    {name: RELATIONSHIP for name in ("controller", "acls", "brokers", "broker_configs", "consumer_groups", "topics", "partition_reassignments")} | {"cluster_id": STR},
    ("acls", "broker_configs", "brokers", "cluster_id", "consumer_groups", "partition_reassignments", "topics"),
)
LINK_TASK = ("LinkTask", Obj({"task_name": STR, "state": STR, "errors": Array(Obj({"error_code": STR, "error_message": STR}, ("error_code", "error_message")))}, ("errors", "state", "task_name")))
LINK_DATA = RESOURCE.extend(
    {
        "source_cluster_id": Nullable(STR), "destination_cluster_id": Nullable(STR), "remote_cluster_id": Nullable(STR),
        "link_name": STR, "link_id": STR, "cluster_link_id": STR, "topic_names": Array(STR),
        "link_error": STR, "link_error_message": Nullable(STR), "link_state": STR, "tasks": Nullable(Array(LINK_TASK)),
    },
    ("cluster_link_id", "link_name", "topic_names"),
)
MIRROR_STATUS = Enum("ACTIVE", "FAILED", "LINK_FAILED", "LINK_PAUSED", "PAUSED", "PENDING_STOPPED", "SOURCE_UNAVAILABLE", "STOPPED",
                     "PENDING_MIRROR", "PENDING_SYNCHRONIZE", "PENDING_SETUP_FOR_RESTORE", "PENDING_RESTORE")
MIRROR_LAG = ("MirrorLag", Obj({"partition": INT, "lag": INT, "last_source_fetch_offset": INT}, ("lag", "last_source_fetch_offset", "partition")))
MIRROR_DATA = RESOURCE.extend(
    {
        "link_name": STR, "mirror_topic_name": STR, "source_topic_name": STR, "num_partitions": INT,
        "mirror_lags": Array(MIRROR_LAG), "mirror_status": MIRROR_STATUS, "mirror_topic_error": STR, "state_time_ms": INT,
    },
    ("link_name", "mirror_lags", "mirror_status", "mirror_topic_name", "num_partitions", "source_topic_name", "state_time_ms"),
)
TRUNCATION = Obj({"partition_id": INT, "offset_truncated_to": INT, "messages_truncated": INT}, ("messages_truncated", "offset_truncated_to", "partition_id"))
ALTER_MIRROR_DATA = RESOURCE.extend(
    {
        "mirror_topic_name": STR, "error_message": Nullable(STR), "error_code": Nullable(INT), "mirror_lags": Array(MIRROR_LAG),
        "messages_truncated": Nullable(INT), "partition_level_truncation_data": Array(TRUNCATION),
    },
    ("error_code", "error_message", "messages_truncated", "mirror_lags", "mirror_topic_name", "partition_level_truncation_data"),
)


# -- the daemon ---------------------------------------------------------------------------------------

def _error(response: httpx.Response, status: int, code: int, *words: str) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    check(body, ERROR)
    assert body["error_code"] == code, body
    for word in words:
        assert word in body["message"], body
    return body["message"]


def test_answers_have_confluents_shapes_and_codes(kafka_broker, linkd, unique_topic):
    for topic in (unique_topic, unique_topic + "-2"):
        kafka_broker.create_topic(topic, 2)
        produce_confluent(kafka_broker.bootstrap, topic, [(p, None, b"r%d" % i) for i in range(20) for p in (0, 1)])
    client = admin(linkd)
    http = httpx.Client(base_url=linkd.admin_url, timeout=30)

    clusters = http.get("/kafka/v3/clusters")
    check(clusters.json(), collection_of(CLUSTER_DATA))
    cid = clusters.json()["data"][0]["cluster_id"]
    base = f"/kafka/v3/clusters/{cid}"
    cluster = http.get(base)
    assert cluster.status_code == 200 and cluster.json() == clusters.json()["data"][0]
    check(cluster.json(), CLUSTER_DATA)
    _error(http.get("/kafka/v3/clusters/not-this-one"), 404, 40401, "not-this-one")
    _error(http.get("/kafka/v3/clusters/not-this-one/links"), 404, 40401, "not-this-one")

    created = http.post(f"{base}/links", params={"link_name": "dr"}, json={"configs": [{"name": "bootstrap.servers", "value": kafka_broker.bootstrap}] + [{"name": k, "value": v} for k, v in FAST_LINK.items()]})
    assert created.status_code == 204 and not created.content and created.headers["location"].endswith(f"{base}/links/dr"), (created.status_code, created.text)
    _error(http.post(f"{base}/links", params={"link_name": "dr"}, json={"configs": [{"name": "bootstrap.servers", "value": kafka_broker.bootstrap}]}), 409, 40901, "dr")
    mirror_made = http.post(f"{base}/links/dr/mirrors", json={"mirror_topic_name": unique_topic})
    assert mirror_made.status_code == 204 and mirror_made.headers["location"].endswith(f"/links/dr/mirrors/{unique_topic}"), mirror_made.text
    described = client.create_mirror(unique_topic + "-2", "dr")  # the CLI's client reads the 204's Location
    assert described["mirror_topic_name"] == unique_topic + "-2"
    wait_mirrored(client, unique_topic, {0: 20, 1: 20})
    wait_mirrored(client, unique_topic + "-2", {0: 20, 1: 20})

    check(http.get(f"{base}/links").json(), collection_of(LINK_DATA))
    check(http.get(f"{base}/links/dr", params={"include_tasks": "true"}).json(), LINK_DATA)
    listed = http.get(f"{base}/links/dr/mirrors").json()
    check(listed, collection_of(MIRROR_DATA))
    mirror = http.get(f"{base}/links/dr/mirrors/{unique_topic}").json()
    check(mirror, MIRROR_DATA)
    assert [(p["partition"], p["lag"], p["last_source_fetch_offset"]) for p in mirror["mirror_lags"]] == [(0, 0, 20), (1, 0, 20)]
    assert mirror["partitions"] == mirror["mirror_lags"], "the old name stays beside Confluent's"
    assert mirror["state_time_ms"] > 0

    # mirror_status filters (Confluent's values, any case); an unknown value is refused by name.
    active = http.get(f"{base}/links/-/mirrors", params={"mirror_status": "ACTIVE"}).json()["data"]
    assert sorted(m["mirror_topic_name"] for m in active) == [unique_topic, unique_topic + "-2"]
    assert http.get(f"{base}/links/dr/mirrors", params={"mirror_status": "paused"}).json()["data"] == []
    assert http.get(f"{base}/links/dr/mirrors", params={"mirror_status": "PENDING_RESTORE"}).json()["data"] == []
    _error(http.get(f"{base}/links/dr/mirrors", params={"mirror_status": "SLEEPING"}), 400, 40002, "SLEEPING")

    # validate_only answers what would happen and changes nothing: state, state time, and mirroring goes on.
    for action, would_be in (("pause", "PAUSED"), ("failover", "STOPPED"), ("promote", "STOPPED")):
        dry = http.post(f"{base}/links/dr/mirrors:{action}", params={"validate_only": "true"}, json={"mirror_topic_names": [unique_topic]})
        assert dry.status_code == 200, dry.text
        check(dry.json(), collection_of(ALTER_MIRROR_DATA))
        [entry] = dry.json()["data"]
        assert entry["error_code"] == 0 and entry["mirror_status"] == would_be and entry["validate_only"] is True, entry
    dry_body = http.post(f"{base}/links/dr/mirrors:resume", json={"mirror_topic_name_pattern": ".*", "validate_only": True}).json()["data"]
    assert [(e["mirror_topic_name"], e["mirror_status"]) for e in dry_body] == [(unique_topic, "ACTIVE"), (unique_topic + "-2", "ACTIVE")]
    dry_cli = cli_json(linkd, "mirror", "failover", "--dry-run", "--link", "dr", unique_topic)
    assert dry_cli[0]["validate_only"] is True and dry_cli[0]["mirror_status"] == "STOPPED", dry_cli
    human = linkd.cli("mirror", "pause", "--dry-run", "--pattern", ".*-2", "--link", "dr")
    assert human.returncode == 0 and "dry run: nothing was changed" in human.stdout and f"{unique_topic}-2: would be PAUSED" in human.stdout, human
    neither = linkd.cli("mirror", "pause", "--link", "dr")
    assert neither.returncode != 0 and neither.stderr.strip().count("\n") == 0 and "--pattern" in neither.stderr, neither
    after = http.get(f"{base}/links/dr/mirrors/{unique_topic}").json()
    assert (after["mirror_status"], after["state_time_ms"], after["stop_info"]) == ("ACTIVE", mirror["state_time_ms"], None), after
    assert http.get(f"{base}/links/dr/mirrors/{unique_topic}-2").json()["mirror_status"] == "ACTIVE"
    produce_confluent(kafka_broker.bootstrap, unique_topic, [(0, None, b"after the dry runs")])
    wait_mirrored(client, unique_topic, {0: 21, 1: 20})

    # mirror_topic_name_pattern: a regular expression over the whole mirror name, on the link.
    paused = http.post(f"{base}/links/dr/mirrors:pause", json={"mirror_topic_name_pattern": ".*-2"})
    check(paused.json(), collection_of(ALTER_MIRROR_DATA))
    assert [(e["mirror_topic_name"], e["mirror_status"]) for e in paused.json()["data"]] == [(unique_topic + "-2", "PAUSED")]
    assert [m["mirror_topic_name"] for m in http.get(f"{base}/links/-/mirrors", params={"mirror_status": "PAUSED"}).json()["data"]] == [unique_topic + "-2"]
    paused_since = http.get(f"{base}/links/dr/mirrors/{unique_topic}-2").json()["state_time_ms"]
    assert paused_since >= mirror["state_time_ms"]
    _error(http.post(f"{base}/links/dr/mirrors:pause", json={"mirror_topic_name_pattern": "nothing-.*"}), 404, 40401, "nothing-.*")
    _error(http.post(f"{base}/links/dr/mirrors:pause", json={"mirror_topic_name_pattern": "(unclosed"}), 400, 40001, "(unclosed")
    _error(http.post(f"{base}/links/dr/mirrors:pause", json={"mirror_topic_name_pattern": ".*", "mirror_topic_names": [unique_topic]}), 400, 40001, "not both")

    # promote: Confluent's mirror_lags beside linkd's stop report (last_source_offset and friends stay).
    promoted = http.post(f"{base}/links/dr/mirrors:promote", json={"mirror_topic_names": [unique_topic]})
    assert promoted.status_code == 200, promoted.text
    check(promoted.json(), collection_of(ALTER_MIRROR_DATA))
    [entry] = promoted.json()["data"]
    assert entry["error_code"] == 0 and entry["mirror_status"] == "STOPPED", entry
    assert [(p["partition"], p["lag"], p["last_source_fetch_offset"], p["last_source_offset"], p["mirror_log_end_offset"]) for p in entry["mirror_lags"]] == [(0, 0, 21, 21, 21), (1, 0, 20, 20, 20)]
    assert entry["records_possibly_lost"] == 0 and entry["stop_kind"] == "promote" and len(entry["stop_offsets"]) == 2, entry
    stopped = http.get(f"{base}/links/dr/mirrors/{unique_topic}").json()
    check(stopped, MIRROR_DATA)
    assert stopped["mirror_status"] == "STOPPED" and stopped["state_time_ms"] >= mirror["state_time_ms"]
    # A refusal inside an answer keeps the entry's shape (a Kafka error code per topic, 0 when done).
    resumed = http.post(f"{base}/links/dr/mirrors:resume", params={"validate_only": "true"}, json={"mirror_topic_names": [unique_topic, "no-such-mirror"]})
    check(resumed.json(), collection_of(ALTER_MIRROR_DATA))
    assert [(e["error_code"] != 0, e["mirror_topic_name"]) for e in resumed.json()["data"]] == [(True, unique_topic), (True, "no-such-mirror")]

    # Every other error answer in REST v3's shape and codes.
    _error(http.get(f"{base}/links/nope"), 404, 40401, "nope")
    _error(http.get(f"{base}/links/dr/mirrors/nope"), 404, 40401, "nope")
    _error(http.delete(f"{base}/links/dr"), 409, 40901, unique_topic + "-2")
    _error(http.post(f"{base}/links/dr/mirrors:promote", content=b"{not json", headers={"content-type": "application/json"}), 400, 40001, "JSON")
    _error(http.get("/kafka/v3/nowhere"), 404, 40401, "/kafka/v3/nowhere")
    _error(http.put(f"{base}/links", json={}), 405, 40501)
    refused = linkd.cli("mirror", "describe", "nope")
    assert refused.returncode != 0 and refused.stderr.strip().count("\n") == 0 and "mirror topic 'nope' does not exist" in refused.stderr, refused

    # The CLI reads the created link and mirror although the API answers 204, and filters by status.
    link = create_link(client, "second", kafka_broker.bootstrap)
    assert link["link_name"] == "second" and link["link_state"], link
    wait_for(lambda: cli_json(linkd, "mirror", "list", "--mirror-status", "paused") != [], 10, "the CLI's --mirror-status")
    assert [m["mirror_topic_name"] for m in cli_json(linkd, "mirror", "list", "--mirror-status", "paused")] == [unique_topic + "-2"]
    forced = http.delete(f"{base}/links/dr", params={"force": "true"})
    check(forced.json(), collection_of(ALTER_MIRROR_DATA))
    assert http.delete(f"{base}/links/second").status_code == 204
