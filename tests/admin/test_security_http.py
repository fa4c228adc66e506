"""The admin API's front door over real HTTP against a running linkd: refused requests change nothing,
authorized ones work, health checks need nothing, big bodies are refused while streaming."""

from __future__ import annotations

import socket

import httpx
import pytest

from linkd.admin.security import auth_file_line
from linkd.adminclient import AdminClient
from tests.link.mirroring import FAST_LINK, produce_confluent, wait_for, wait_mirrored

ALICE, BOB = ("alice", "wonder land"), ("bob", "viewer-pass")


@pytest.fixture
def secured(linkd_factory, tmp_path):
    auth = tmp_path / "admin-users"
    auth.write_text("# admin users\n" + auth_file_line(*ALICE[:1], "admin", ALICE[1]) + "\n" + auth_file_line(BOB[0], "viewer", BOB[1]) + "\n")
    daemon = linkd_factory(extra_args=["--admin-basic-auth-file", str(auth), "--admin-allowed-host", "DR-Linkd.example"])
    return daemon


def _cid(daemon) -> str:
    return httpx.get(daemon.admin_url + "/kafka/v3/clusters", auth=ALICE, timeout=10).json()["data"][0]["cluster_id"]


def _link_names(daemon) -> list[str]:
    answer = httpx.get(f"{daemon.admin_url}/kafka/v3/clusters/{_cid(daemon)}/links", auth=ALICE, timeout=10)
    assert answer.status_code == 200, answer.text
    return sorted(link["link_name"] for link in answer.json()["data"])


def _assert_error_shape(response: httpx.Response, status: int, codes: tuple[int, ...] = ()) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["message"], body
    assert body["error_code"] in (codes or (status * 100 + 1,)), body
    return body


@pytest.mark.timeout(90)
def test_refused_requests_change_nothing(secured):
    cid = _cid(secured)
    links = f"{secured.admin_url}/kafka/v3/clusters/{cid}/links"
    keep = httpx.post(links, params={"link_name": "keep", "validate_link": "false"}, auth=ALICE, timeout=10,
                      json={"configs": [{"name": "bootstrap.servers", "value": "127.0.0.1:1"}]})
    assert keep.status_code == 204, keep.text
    create_evil = {"params": {"link_name": "evil", "validate_link": "false"}, "json": {"configs": [{"name": "bootstrap.servers", "value": "evil.example:9092"}]}}
    cases = [
        ("unauthenticated", 401, {}),
        ("wrong password", 401, {"auth": (ALICE[0], "not it")}),
        ("unknown user", 401, {"auth": ("mallory", ALICE[1])}),
        ("garbage credentials", 401, {"headers": {"Authorization": "Basic !!!"}}),
        ("viewer", 403, {"auth": BOB}),
        ("foreign Origin", 403, {"auth": ALICE, "headers": {"Origin": "https://evil.example"}}),
        ("null Origin", 403, {"auth": ALICE, "headers": {"Origin": "null"}}),
        ("foreign Host (DNS rebinding)", 403, {"auth": ALICE, "headers": {"Host": f"evil.example:{secured.admin_port}"}}),
    ]
    for what, status, kwargs in cases:
        for method, url, extra in (("POST", links, create_evil), ("DELETE", f"{links}/keep", {})):
            response = httpx.request(method, url, timeout=10, **{**extra, **kwargs, "headers": {**kwargs.get("headers", {})}})
            _assert_error_shape(response, status)
            if status == 401:
                assert response.headers["www-authenticate"].startswith("Basic"), what
    # A browser's cross-site "simple" request: form/text body types, even with good credentials.
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
        headers = {"Content-Type": content_type} if content_type else {}
        response = httpx.post(links, params=create_evil["params"], content=b'{"configs": []}', headers=headers, auth=ALICE, timeout=10)
        _assert_error_shape(response, 415)
    assert _link_names(secured) == ["keep"]
    # Viewers read.
    assert httpx.get(links, auth=BOB, timeout=10).status_code == 200
    assert httpx.get(f"{secured.admin_url}/metrics", auth=BOB, timeout=10).status_code == 200
    assert httpx.get(f"{secured.admin_url}/metrics", timeout=10).status_code == 401
    # The admin deletes.
    assert httpx.delete(f"{links}/keep", auth=ALICE, timeout=10).status_code == 204
    assert _link_names(secured) == []


@pytest.mark.timeout(60)
def test_health_and_readiness_need_no_credentials_and_any_host(secured):
    for path in ("/health", "/v3/health", "/readyz", "/livez"):
        response = httpx.get(secured.admin_url + path, headers={"Host": "10.1.2.3:8090"}, timeout=10)
        assert response.status_code == 200, (path, response.text)
        assert response.json()["status"] == "UP"
    assert httpx.get(secured.admin_url + "/readyz", timeout=10).json()["ready"] is True


@pytest.mark.timeout(60)
def test_an_allowed_host_name_is_accepted_in_host_and_origin(secured):
    headers = {"Host": f"dr-linkd.example:{secured.admin_port}", "Origin": "https://dr-linkd.example"}
    answer = httpx.get(secured.admin_url + "/kafka/v3/clusters", headers=headers, auth=ALICE, timeout=10)
    assert answer.status_code == 200, answer.text
    same_origin = {"Origin": f"http://127.0.0.1:{secured.admin_port}"}
    assert httpx.get(secured.admin_url + "/kafka/v3/clusters", headers=same_origin, auth=ALICE, timeout=10).status_code == 200
    other = {"Host": "other.dr-linkd.example"}
    _assert_error_shape(httpx.get(secured.admin_url + "/kafka/v3/clusters", headers=other, auth=ALICE, timeout=10), 403)


@pytest.mark.timeout(60)
def test_404_and_405_answer_the_json_error_shape(secured):
    # The routes' own 404 still carries the HTTP status as its code until the REST v3 codes land there.
    _assert_error_shape(httpx.get(secured.admin_url + "/no/such/route", auth=ALICE, timeout=10), 404, (404, 40401))
    _assert_error_shape(httpx.delete(secured.admin_url + "/kafka/v3/clusters", auth=ALICE, timeout=10), 405)


@pytest.mark.timeout(90)
def test_large_bodies_are_refused_while_streaming_even_when_authorized(secured):
    cid = _cid(secured)
    path = f"/kafka/v3/clusters/{cid}/links/-/mirrors:promote"
    with socket.create_connection(("127.0.0.1", secured.admin_port), timeout=10) as sock:
        token = httpx.BasicAuth(*ALICE)._auth_header
        sock.sendall((f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {50 * 1024 * 1024}\r\n\r\n{{").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")

    pid = secured.process.pid
    base = _vm_hwm(pid)
    chunk = b"[" + b"0," * (512 * 1024) + b"0]"
    try:
        status = httpx.post(secured.admin_url + path, content=(chunk for _ in range(50)), auth=ALICE, timeout=30,
                            headers={"Content-Type": "application/json"}).status_code
    except httpx.HTTPError:
        status = 413  # answered and hung up before the client finished sending 50 MB
    assert status == 413
    growth = _vm_hwm(pid) - base
    assert growth < 20 * 1024 * 1024, f"the admin API buffered {growth / 2**20:.0f} MiB of a refused 50 MB body"
    assert httpx.get(secured.admin_url + "/health", timeout=10).status_code == 200


def _vm_hwm(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.timeout(180)
def test_an_authorized_promote_works_and_an_unauthorized_one_does_not(linkd_factory, secured, unique_topic):
    from confluent_kafka.admin import AdminClient as KafkaAdmin
    from confluent_kafka.admin import NewTopic

    upstream = linkd_factory()
    kafka_admin = KafkaAdmin({"bootstrap.servers": upstream.bootstrap})  # kept: a collected handle cancels its futures
    kafka_admin.create_topics([NewTopic(unique_topic, 1, 1)])[unique_topic].result(30)
    produce_confluent(upstream.bootstrap, unique_topic, [(0, None, b"v%d" % n) for n in range(50)])
    alice = AdminClient(secured.admin_address, username=ALICE[0], password=ALICE[1])
    bob = AdminClient(secured.admin_address, username=BOB[0], password=BOB[1])
    anonymous = AdminClient(secured.admin_address, username=None, password=None)
    try:
        alice.create_link("up", {"bootstrap.servers": upstream.bootstrap, **FAST_LINK})
        alice.create_mirror(unique_topic, "up")
        wait_mirrored(alice, unique_topic, {0: 50})
        for who in (bob, anonymous):
            with pytest.raises(Exception) as refused:
                who.mirror_action("promote", [unique_topic], timeout_s=20)
            assert "role admin" in str(refused.value) or "authentication" in str(refused.value)
        assert alice.describe_mirror(unique_topic)["mirror_status"] == "ACTIVE"
        result = alice.mirror_action("promote", [unique_topic], timeout_s=30)
        assert result[0]["error_code"] == 0, result
        wait_for(lambda: alice.describe_mirror(unique_topic)["mirror_status"] == "STOPPED", 30, "promoted mirror STOPPED")
        assert "alice@127.0.0.1" in secured.logs(400)  # the audit line names the principal
    finally:
        for c in (alice, bob, anonymous):
            c.close()


@pytest.mark.timeout(120)
def test_concurrent_guesses_and_good_credentials_each_get_their_own_answer(secured):
    """Credential checks run in worker threads behind a limiter with a cache of successes: under a burst
    of mixed requests every answer matches its own credentials, and the Kafka listener keeps answering."""
    from concurrent.futures import ThreadPoolExecutor

    from protocol.messages import ApiKey
    from tests.broker.wire import WireConnection

    url = secured.admin_url + "/kafka/v3/clusters"
    attempts = [ALICE, (ALICE[0], "guess-1"), BOB, (BOB[0], ALICE[1]), ("mallory", "x"), (ALICE[0], ALICE[1] + " ")] * 4

    def ask(credentials):
        return credentials, httpx.get(url, auth=credentials, timeout=60).status_code

    with ThreadPoolExecutor(12) as pool:
        pending = [pool.submit(ask, credentials) for credentials in attempts]
        with WireConnection(secured.bootstrap) as kafka:  # while the burst is being checked
            assert kafka.request(ApiKey.API_VERSIONS, 3, {"client_software_name": "t", "client_software_version": "1"})["error_code"] == 0
        assert not all(f.done() for f in pending), "the burst was over before the Kafka request: it proved nothing"
        answers = [f.result() for f in pending]
    for credentials, status in answers:
        assert status == (200 if credentials in (ALICE, BOB) else 401), (credentials, status)
