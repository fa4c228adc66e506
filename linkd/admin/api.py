"""Admin HTTP API, shaped like Confluent's Kafka REST v3 cluster-linking API so runbooks translate.

Routes (``{cid}`` is this cluster's id; ``-`` as a link name means "any link"):

    GET    /kafka/v3/clusters                   (Confluent's KafkaClusterList: this one cluster)
    GET    /kafka/v3/clusters/{cid}             (Confluent's KafkaCluster; another id is a 404)
    GET    /kafka/v3/clusters/{cid}/links
    POST   /kafka/v3/clusters/{cid}/links?link_name=NAME[&validate_link=false]   {"configs": [{"name","value"}]}
           204 as Confluent, with Location: the new link's URL (so is creating a mirror)
    GET    /kafka/v3/clusters/{cid}/links/{link}[?include_tasks=true]   (tasks: listed only when asked for)
    DELETE /kafka/v3/clusters/{cid}/links/{link}[?force=true]    (force: fail over its mirrors first)
    GET    /kafka/v3/clusters/{cid}/links/{link}/configs[/{name}]
    PUT    /kafka/v3/clusters/{cid}/links/{link}/configs/{name}    {"value": "..."}
    DELETE /kafka/v3/clusters/{cid}/links/{link}/configs/{name}    (back to the default)
    PUT    /kafka/v3/clusters/{cid}/links/{link}/configs:alter     {"data": [{"name", "value"} | {"name", "operation": "DELETE"}], "validate_only"}
    GET    /kafka/v3/clusters/{cid}/links/{link}/mirrors[?mirror_status=ACTIVE|PAUSED|STOPPED|...]
    POST   /kafka/v3/clusters/{cid}/links/{link}/mirrors   {"mirror_topic_name", "source_topic_name"}
    GET    /kafka/v3/clusters/{cid}/links/{link}/mirrors/{topic}
    GET    /kafka/v3/clusters/{cid}/links/{link}/mirrors/{topic}/lost-records?partition=P
           the source's batches of the lost offsets [from, to) after a failover (raw, CRC-verified)
    POST   /kafka/v3/clusters/{cid}/links/{link}/mirrors:promote|:failover|:pause|:resume[?validate_only=true]
           {"mirror_topic_names": [...] | "mirror_topic_name_pattern": REGEX, "timeout_ms": N, "validate_only": B}
           validate_only: the answer the command would get, and nothing changes
    POST   /kafka/v3/clusters/{cid}/links/{link}/mirrors:verify
           {"mirror_topic_name", "partition", "from_offset"?, "end_offset"?, "max_bytes"?}: one bounded step
    GET    /metrics

Errors answer ``{"error_code": <REST v3 code>, "message": "..."}`` with the HTTP status, as Kafka REST does:
the code is the status times 100 plus a sub-code (40401, 40002, 40901, 50301; see errors.py).
Malformed JSON or a wrong field type is a 400 naming the problem; the daemon keeps serving.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..link.errors import DomainError
from ..link.manager import LinkManager
from ..link.verify import DEFAULT_STEP_BYTES
from . import views
from .errors import AdminError, rest_code, rest_code_for, status_for

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024
MAX_JSON_DEPTH = 400


def _error(status: int, message: str, code: int = 0) -> JSONResponse:
    """Every error answer: REST v3's shape, ``error_code`` the status times 100 plus a sub-code (errors.py)."""
    return JSONResponse({"error_code": code or rest_code(status), "message": message}, status_code=status)


async def _read_body(request: Request) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed MAX_BODY: from Content-Length before
    reading anything, else while streaming, so a huge body is never buffered whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise AdminError(400, 0, f"Content-Length {declared!r} is not a number")
        if int(declared) > MAX_BODY:
            raise AdminError(413, 0, f"request body of {declared} bytes is larger than {MAX_BODY} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY:
            raise AdminError(413, 0, f"request body larger than {MAX_BODY} bytes")
    return bytes(raw)


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = re.compile(rb"[^\[\]{}]+")


def _nesting_depth(raw: bytes) -> int:
    """How deep arrays/objects nest in ``raw`` (strings skipped); json.loads would recurse that deep."""
    depth = deepest = 0
    for byte in _NOT_BRACKETS.sub(b"", _STRINGS.sub(b"", raw)):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


async def _json(request: Request) -> dict[str, Any]:
    raw = await _read_body(request)
    if not raw.strip():
        return {}
    if _nesting_depth(raw) > MAX_JSON_DEPTH:
        raise AdminError(400, 0, f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdminError(400, 0, f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:  # the depth scan is a bound, this is the backstop
        raise AdminError(400, 0, f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels") from exc
    if not isinstance(body, dict):
        raise AdminError(400, 0, "request body must be a JSON object")
    return body


def _str_list(body: dict, key: str) -> list[str]:
    value = body.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise AdminError(400, 0, f"'{key}' must be a non-empty list of topic names")
    return value


def _bool_param(request: Request, name: str, default: bool) -> bool:
    value = request.query_params.get(name)
    if value is None:
        return default
    if value.lower() not in ("true", "false"):
        raise AdminError(400, 0, f"query parameter {name} must be true or false")
    return value.lower() == "true"


def _peer(request: Request) -> str:
    """Who asked, for the audit log: the admin API client's address and the principal the front door
    (linkd.admin.security) admitted."""
    client = request.client
    where = f"{client.host}:{client.port}" if client else "unknown peer"
    principal = request.scope.get("linkd.principal")
    return f"{principal.name}@{where}" if principal is not None and principal.mechanism != "none" else where


def build_app(manager: LinkManager, cluster_id: str, metrics) -> Starlette:
    def url(request: Request, *parts: str) -> str:
        """The absolute URL of a REST v3 resource of this cluster (Confluent's ``metadata.self``)."""
        return f"{str(request.base_url).rstrip('/')}/kafka/v3/clusters/{cluster_id}" + "".join("/" + quote(p, safe=":") for p in parts)

    def link_resource(request: Request, body: dict) -> dict:
        return views.resource("KafkaLinkData", url(request, "links", body["link_name"]), body)

    def mirror_resource(request: Request, body: dict) -> dict:
        return views.resource("KafkaMirrorData", url(request, "links", body["link_name"], "mirrors", body["mirror_topic_name"]), body)

    def alter_mirrors(request: Request, link_name: str, results) -> dict:
        entries = [views.resource("AlterMirrorsData", url(request, "links", link_name, "mirrors", e["mirror_topic_name"]), e) for e in views.command_results_view(results)]
        return views.collection("AlterMirrorsDataList", url(request, "links", link_name, "mirrors"), entries)

    def check_cluster(request: Request) -> None:
        if request.path_params["cid"] != cluster_id:
            raise AdminError(404, 0, f"cluster '{request.path_params['cid']}' not found (this is {cluster_id})")

    def handler(fn):
        async def wrapped(request: Request) -> Response:
            try:
                if "cid" in request.path_params:
                    check_cluster(request)
                return await fn(request)
            except AdminError as exc:
                return _error(exc.status, exc.message, exc.error_code)
            except DomainError as exc:
                return _error(status_for(exc), exc.message, rest_code_for(exc))
            except Exception as exc:
                log.exception("admin API %s %s failed", request.method, request.url.path)
                return _error(500, f"internal error in linkd ({type(exc).__name__}: {exc}); see the daemon log")

        return wrapped

    @handler
    async def clusters(request: Request) -> Response:
        base = str(request.base_url)
        return JSONResponse({"kind": "KafkaClusterList", "metadata": {"self": f"{base.rstrip('/')}/kafka/v3/clusters", "next": None}, "data": [views.cluster_view(cluster_id, base)]})

    @handler
    async def cluster(request: Request) -> Response:
        return JSONResponse(views.cluster_view(cluster_id, str(request.base_url)))

    @handler
    async def links(request: Request) -> Response:
        if request.method == "GET":
            return JSONResponse(views.collection("KafkaLinkDataList", url(request, "links"), [link_resource(request, v) for v in views.links_view(manager)]))
        body = await _json(request)
        name = request.query_params.get("link_name") or body.get("link_name")
        if not isinstance(name, str) or not name:
            raise AdminError(400, 0, "link_name is required")
        configs = body.get("configs", [])
        if not isinstance(configs, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("value"), str) for c in configs):
            raise AdminError(400, 0, "'configs' must be a list of {\"name\": str, \"value\": str}")
        config = {c["name"]: c["value"] for c in configs}
        log.info("admin API %s: create link %s with configs %s", _peer(request), name, ", ".join(sorted(config)) or "-")
        await manager.create_link(name, config, validate_link=_bool_param(request, "validate_link", True))
        # Confluent answers a create with 204 and no body; Location names what was made (linkd's CLI reads it).
        return Response(status_code=204, headers={"Location": url(request, "links", name)})

    @handler
    async def link(request: Request) -> Response:
        name = request.path_params["link"]
        if request.method == "DELETE":
            log.info("admin API %s: delete link %s%s", _peer(request), name, " (force)" if _bool_param(request, "force", False) else "")
            failed_over = await manager.delete_link(name, force=_bool_param(request, "force", False))
            return JSONResponse(alter_mirrors(request, name, failed_over)) if failed_over else Response(status_code=204)
        return JSONResponse(link_resource(request, views.link_view(manager, name, include_tasks=_bool_param(request, "include_tasks", False))))

    @handler
    async def link_configs(request: Request) -> Response:
        name = request.path_params["link"]
        return JSONResponse({"kind": "KafkaLinkConfigList", "data": manager.link_configs(name)})

    @handler
    async def link_config(request: Request) -> Response:
        name, key = request.path_params["link"], request.path_params["name"]
        if request.method == "GET":
            found = [c for c in manager.link_configs(name) if c["name"] == key]
            if not found:
                raise AdminError(404, 0, f"link '{name}' has no config '{key}'")
            return JSONResponse(found[0])
        if request.method == "DELETE":
            await manager.update_link(name, {}, [key])
            return Response(status_code=204)
        body = await _json(request)
        value = body.get("value")
        if not isinstance(value, str):
            raise AdminError(400, 0, "'value' must be a string")
        await manager.update_link(name, {key: value}, [])
        return Response(status_code=204)

    @handler
    async def link_configs_alter(request: Request) -> Response:
        name = request.path_params["link"]
        body = await _json(request)
        data = body.get("data")
        if not isinstance(data, list) or not all(isinstance(c, dict) and isinstance(c.get("name"), str) and c["name"] for c in data):
            raise AdminError(400, 0, "'data' must be a list of {\"name\": str, \"value\": str} or {\"name\": str, \"operation\": \"DELETE\"}")
        set_configs: dict[str, str] = {}
        delete_configs: list[str] = []
        for c in data:
            operation = str(c.get("operation", "SET")).upper()
            if operation == "DELETE":
                delete_configs.append(c["name"])
            elif operation == "SET" and isinstance(c.get("value"), str):
                set_configs[c["name"]] = c["value"]
            else:
                raise AdminError(400, 0, f"config {c['name']}: operation must be SET (with a string value) or DELETE")
        validate_only = body.get("validate_only", False)
        if not isinstance(validate_only, bool):
            raise AdminError(400, 0, "validate_only must be true or false")
        await manager.update_link(name, set_configs, delete_configs, validate_only=validate_only)
        return Response(status_code=204)

    @handler
    async def mirrors(request: Request) -> Response:
        link_name = request.path_params["link"]
        if request.method == "GET":
            listed = views.mirrors_view(manager, None if link_name == "-" else link_name, request.query_params.get("mirror_status"))
            return JSONResponse(views.collection("KafkaMirrorDataList", url(request, "links", link_name, "mirrors"), [mirror_resource(request, m) for m in listed]))
        body = await _json(request)
        topic, source = body.get("mirror_topic_name"), body.get("source_topic_name")
        if not topic and not source:
            raise AdminError(400, 0, "mirror_topic_name (or source_topic_name) is required")
        if (topic is not None and not isinstance(topic, str)) or (source is not None and not isinstance(source, str)):
            raise AdminError(400, 0, "mirror_topic_name and source_topic_name must be strings")
        created = await manager.create_mirror(topic or None, link_name, source or None)
        return Response(status_code=204, headers={"Location": url(request, "links", link_name, "mirrors", created)})

    @handler
    async def mirror(request: Request) -> Response:
        link_name, topic = request.path_params["link"], request.path_params["topic"]
        described = views.mirror_view(manager, topic)
        if link_name != "-" and described["link_name"] != link_name:
            raise AdminError(404, 0, f"mirror topic '{topic}' is not on link '{link_name}'")
        return JSONResponse(mirror_resource(request, described))

    @handler
    async def mirror_action(request: Request) -> Response:
        link_name, action = request.path_params["link"], request.path_params["action"]
        body = await _json(request)
        if action == "verify":
            return JSONResponse({"data": await _verify(body, link_name)})
        topics = _mirror_topics(body, link_name)
        validate_only = _validate_only(request, body)
        if link_name != "-":
            manager.link(link_name)
            wrong = [t for t in topics if t in manager.mirrors and manager.mirrors[t].link != link_name]
            if wrong:
                raise AdminError(400, 0, f"mirror topic(s) {', '.join(wrong)} are not on link '{link_name}'")
        if action in ("promote", "failover", "pause", "resume"):
            log.info("admin API %s: %s mirror topic(s) %s on link %s%s", _peer(request), action, ", ".join(topics), link_name, " (validate_only: nothing changes)" if validate_only else "")
        if action in ("promote", "failover", "pause", "resume") and validate_only:
            if action == "promote":
                _timeout_ms(body)
            return JSONResponse(alter_mirrors(request, link_name, manager.validate(action, topics)))
        if action == "promote":
            results = await manager.promote(topics, _timeout_ms(body) / 1000)
        elif action == "failover":
            results = await manager.failover(topics)
        elif action == "pause":
            results = manager.pause(topics)
        elif action == "resume":
            results = manager.resume(topics)
        else:
            raise AdminError(404, 0, f"unknown mirror action '{action}' (promote, failover, pause, resume, verify)")
        for r in results:
            log.info("admin API %s: %s %s: %s", _peer(request), action, r.topic, r.mirror_status if not r.error_code else f"refused ({r.error_message})")
        return JSONResponse(alter_mirrors(request, link_name, results))

    def _mirror_topics(body: dict, link_name: str) -> list[str]:
        """``mirror_topic_names``, or ``mirror_topic_name_pattern`` (a regular expression matched against the
        whole name of each mirror on the link, or on every link for ``-``), as Confluent's AlterMirrorsRequestData."""
        pattern = body.get("mirror_topic_name_pattern")
        if pattern is None:
            return _str_list(body, "mirror_topic_names")
        if body.get("mirror_topic_names") is not None:
            raise AdminError(400, 0, "give mirror_topic_names or mirror_topic_name_pattern, not both")
        if not isinstance(pattern, str) or not pattern:
            raise AdminError(400, 0, "mirror_topic_name_pattern must be a non-empty string (a regular expression)")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise AdminError(400, 0, f"mirror_topic_name_pattern {pattern!r} is not a regular expression: {exc}") from exc
        matched = [m.topic for m in manager.mirrors_of(None if link_name == "-" else link_name) if compiled.fullmatch(m.topic)]
        if not matched:
            raise AdminError(404, 0, f"mirror_topic_name_pattern {pattern!r} matches no mirror topic" + (f" on link '{link_name}'" if link_name != "-" else ""))
        return matched

    def _validate_only(request: Request, body: dict) -> bool:
        """Confluent takes ``validate_only`` as a query parameter; linkd takes it in the body too."""
        in_body = body.get("validate_only")
        if in_body is not None and not isinstance(in_body, bool):
            raise AdminError(400, 0, "validate_only must be true or false")
        return _bool_param(request, "validate_only", False) or bool(in_body)

    def _timeout_ms(body: dict) -> int:
        timeout = body.get("timeout_ms", 60_000)
        if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
            raise AdminError(400, 0, "timeout_ms must be a positive integer")
        return timeout

    async def _verify(body: dict, link_name: str) -> dict:
        topic = body.get("mirror_topic_name")
        if not isinstance(topic, str) or not topic:
            raise AdminError(400, 0, "mirror_topic_name is required")
        ints = {}
        for key in ("partition", "from_offset", "end_offset", "max_bytes"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise AdminError(400, 0, f"{key} must be a non-negative integer")
            ints[key] = value
        if ints["partition"] is None:
            raise AdminError(400, 0, "partition is required (the CLI walks every partition)")
        if link_name != "-" and manager.mirror(topic).link != link_name:
            raise AdminError(404, 0, f"mirror topic '{topic}' is not on link '{link_name}'")
        return await manager.verify(topic, ints["partition"], ints["from_offset"], ints["end_offset"], ints["max_bytes"] or DEFAULT_STEP_BYTES)

    @handler
    async def lost_records(request: Request) -> Response:
        link_name, topic = request.path_params["link"], request.path_params["topic"]
        raw = request.query_params.get("partition", "")
        if not raw.isdigit():
            raise AdminError(400, 0, "query parameter partition must be a partition number")
        partition = int(raw)
        if link_name != "-" and manager.mirror(topic).link != link_name:
            raise AdminError(404, 0, f"mirror topic '{topic}' is not on link '{link_name}'")
        start, end = manager.lost_range(topic, partition)  # refuse before the stream starts, with a status
        log.info("admin API %s: lost-records %s partition %d [%d, %d)", _peer(request), topic, partition, start, end)

        async def body():
            try:
                async for batch in manager.lost_records(topic, partition):
                    yield batch
            except Exception as exc:
                # The status is sent already: the client sees the stream end short of the range.
                log.error("lost-records %s-%d: %s", topic, partition, exc)
                raise

        return StreamingResponse(body(), media_type="application/octet-stream", headers={"X-Lost-From": str(start), "X-Lost-To": str(end)})

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc) -> Response:
        return _error(404, f"no route for {request.method} {request.url.path}")

    from .security import json_http_exception, json_server_error  # 405 and 500 in the JSON error shape too

    base = "/kafka/v3/clusters/{cid}"
    app = Starlette(
        routes=[
            Route("/kafka/v3/clusters", clusters, methods=["GET"]),
            Route(base, cluster, methods=["GET"]),
            Route(base + "/links", links, methods=["GET", "POST"]),
            Route(base + "/links/{link}", link, methods=["GET", "DELETE"]),
            Route(base + "/links/{link}/configs", link_configs, methods=["GET"]),
            Route(base + "/links/{link}/configs:alter", link_configs_alter, methods=["PUT"]),
            Route(base + "/links/{link}/configs/{name}", link_config, methods=["GET", "PUT", "DELETE"]),
            Route(base + "/links/{link}/mirrors", mirrors, methods=["GET", "POST"]),
            Route(base + "/links/{link}/mirrors:{action}", mirror_action, methods=["POST"]),
            Route(base + "/links/{link}/mirrors/{topic}", mirror, methods=["GET"]),
            Route(base + "/links/{link}/mirrors/{topic}/lost-records", lost_records, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: json_http_exception, 500: json_server_error},
    )
    return app
