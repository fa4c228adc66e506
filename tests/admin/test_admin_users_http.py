"""``linkd serve --admin-auth users``: the admin API's HTTP Basic checked against linkd's own SCRAM users
(``linkd user add``), and what each may do decided by the daemon's ACLs on CLUSTER (ALTER to change,
DESCRIBE to read; super users pass). Real HTTP against a real daemon; ACLs made with confluent-kafka's
AdminClient over the Kafka listener."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from tests.link.mirroring import wait_for

ROOT, OPS, READER, NOBODY = ("root", "root-secret"), ("ops", "ops secret"), ("reader", "reader-secret"), ("nobody", "nobody-secret")


def _user_add(data, name: str, password: str) -> None:
    added = subprocess.run([sys.executable, "-m", "linkd", "user", "add", name, "--data-dir", str(data)], input=password + "\n",
                           capture_output=True, text=True, timeout=30)
    assert added.returncode == 0, added.stderr


def _cluster_acl(principal: str, operation) -> AclBinding:
    return AclBinding(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, principal, "*", operation, AclPermissionType.ALLOW)


@pytest.fixture
def users_daemon(linkd_factory, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name, password in (ROOT, OPS, READER, NOBODY):
        _user_add(data, name, password)
    # User:ANONYMOUS (the PLAINTEXT Kafka listener) is a super user only to create the ACLs below.
    daemon = linkd_factory(data_dir=data, extra_args=["--authorizer", "standard", "--super-users", "User:root;User:ANONYMOUS", "--admin-auth", "users"])
    admin = AdminClient({"bootstrap.servers": daemon.bootstrap})
    for future in admin.create_acls([_cluster_acl("User:ops", AclOperation.ALTER), _cluster_acl("User:reader", AclOperation.DESCRIBE)], request_timeout=10).values():
        future.result(10)
    daemon.kafka_admin = admin
    return daemon


def _links_url(daemon, auth) -> str:
    answer = httpx.get(daemon.admin_url + "/kafka/v3/clusters", auth=auth, timeout=10)
    assert answer.status_code == 200, answer.text
    return f"{daemon.admin_url}/kafka/v3/clusters/{answer.json()['data'][0]['cluster_id']}/links"


def _names(links: str) -> list[str]:
    answer = httpx.get(links, auth=ROOT, timeout=10)
    assert answer.status_code == 200, answer.text
    return sorted(link["link_name"] for link in answer.json()["data"])


def _create(links: str, name: str, auth) -> httpx.Response:
    return httpx.post(links, params={"link_name": name, "validate_link": "false"}, auth=auth, timeout=10,
                      json={"configs": [{"name": "bootstrap.servers", "value": "127.0.0.1:1"}]})


def _assert_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error_code", "message"} and body["error_code"] == status * 100 + 1, body
    return body["message"]


@pytest.mark.timeout(120)
def test_acls_on_cluster_decide_what_linkd_users_may_do(users_daemon):
    links = _links_url(users_daemon, OPS)
    # ALTER on CLUSTER: creates and deletes (and reads: ALTER implies DESCRIBE).
    assert _create(links, "by-ops", OPS).status_code == 204
    assert _names(links) == ["by-ops"]
    assert httpx.get(links, auth=OPS, timeout=10).status_code == 200
    # DESCRIBE only: reads, but every mutation is refused and changes nothing.
    assert httpx.get(links, auth=READER, timeout=10).status_code == 200
    assert httpx.get(f"{links}/by-ops", auth=READER, timeout=10).status_code == 200
    message = _assert_error(_create(links, "by-reader", READER), 403)
    assert "User:reader" in message and "ALTER on CLUSTER" in message, message
    _assert_error(httpx.delete(f"{links}/by-ops", auth=READER, timeout=10), 403)
    assert _names(links) == ["by-ops"]
    # No ACL at all (allow.everyone.if.no.acl.found is off): not even a read.
    assert "DESCRIBE on CLUSTER" in _assert_error(httpx.get(links, auth=NOBODY, timeout=10), 403)
    _assert_error(_create(links, "by-nobody", NOBODY), 403)
    # Wrong password, unknown user, no credentials: 401 with a Basic challenge.
    for auth in ((OPS[0], "not it"), ("mallory", OPS[1]), None):
        response = _create(links, "by-stranger", auth)
        _assert_error(response, 401)
        assert response.headers["www-authenticate"].startswith("Basic")
    assert _names(links) == ["by-ops"]
    # A super user needs no ACL.
    assert httpx.delete(f"{links}/by-ops", auth=ROOT, timeout=10).status_code == 204
    assert _create(links, "by-root", ROOT).status_code == 204
    assert _names(links) == ["by-root"]
    # The audit lines name the principal.
    log = users_daemon.log_path.read_text()
    assert "admin API ops@127.0.0.1:" in log and "create link by-ops" in log, log[-2000:]
    assert "admin API root@127.0.0.1:" in log


@pytest.mark.timeout(120)
def test_a_revoked_acl_or_a_deleted_user_counts_from_the_next_request(users_daemon):
    links = _links_url(users_daemon, OPS)
    assert httpx.get(links, auth=READER, timeout=10).status_code == 200  # cached as authenticated now
    deleted = users_daemon.kafka_admin.delete_acls([AclBindingFilter(ResourceType.BROKER, "kafka-cluster", ResourcePatternType.LITERAL, "User:reader", None,
                                                                     AclOperation.ANY, AclPermissionType.ANY)], request_timeout=10)
    for future in deleted.values():
        assert len(future.result(10)) == 1
    _assert_error(httpx.get(links, auth=READER, timeout=10), 403)
    # ops authenticated a moment ago; deleting the user (offline CLI, daemon running) locks it out at once.
    assert httpx.get(links, auth=OPS, timeout=10).status_code == 200
    gone = subprocess.run([sys.executable, "-m", "linkd", "user", "delete", OPS[0], "--data-dir", str(users_daemon.data_dir)],
                          capture_output=True, text=True, timeout=30)
    assert gone.returncode == 0, gone.stderr
    wait_for(lambda: httpx.get(links, auth=OPS, timeout=10).status_code == 401, timeout=10, what="a deleted user refused")
    _assert_error(_create(links, "after-delete", OPS), 401)
    assert _names(links) == []


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("args", "needle"), [
    (["--admin-auth", "users"], "--authorizer standard"),
    (["--admin-auth", "file"], "--admin-basic-auth-file"),
    (["--admin-auth", "users", "--authorizer", "standard", "--admin-basic-auth-file", "AUTHFILE"], "only used with --admin-auth file"),
])
def test_admin_auth_combinations_that_cannot_work_are_refused_at_startup(tmp_path, args, needle):
    (tmp_path / "auth").write_text("")
    args = [str(tmp_path / "auth") if a == "AUTHFILE" else a for a in args]
    started = subprocess.run([sys.executable, "-m", "linkd", "serve", "--data-dir", str(tmp_path / "d"), "--listener", "127.0.0.1:0", "--admin", "127.0.0.1:0", *args],
                             capture_output=True, text=True, timeout=30)
    assert started.returncode != 0 and needle in started.stderr, started.stderr
