"""ACL sync end to end with real users: what alice and bob may do on an Apache Kafka 4.1 source (SCRAM
users, the StandardAuthorizer) they may do on linkd, with the same credentials, once a link syncs the ACLs.

On the source alice has ALLOW READ on topic T, bob has DENY READ on it (and no ALLOW), both READ on the
consumer groups. SCRAM users are not synced (no Kafka API reads their secrets), so the test creates the
same users with the same passwords on linkd with `linkd user add`, as docs/operator-guide.md tells an
operator to. linkd runs `--authorizer standard` with a SASL_PLAINTEXT SCRAM-SHA-512 listener; the link has
`acl.sync.enable=true` and `acl.filters` selecting T's ACLs and the group ACLs. After a sync, alice reads
T's mirror on linkd with her credentials (confluent-kafka) and bob gets TOPIC_AUTHORIZATION_FAILED — the
same outcome as on the source, which the test checks first.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)
from confluent_kafka.admin import AdminClient as KafkaAdmin

from tests.link.mirroring import FAST_LINK, admin, produce_confluent, wait_for, wait_mirrored
from tests.peers import LOOPBACK, PeerUnavailable
from tests.peers.securekafka import LINK_USER, SecuredKafkaBroker

pytestmark = pytest.mark.kafka

SYNC_MS = 500
SCRAM = "org.apache.kafka.common.security.scram.ScramLoginModule"
ANY_ACL = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY, AclPermissionType.ANY)
RECORDS = [b"u%d" % i for i in range(5)]


@pytest.fixture(scope="module")
def source():
    from tests.conftest import peer_unavailable
    from tests.peers.kafka import ensure_kafka_libs

    try:
        ensure_kafka_libs()
        broker = SecuredKafkaBroker()
    except PeerUnavailable as exc:
        peer_unavailable(str(exc))
    try:
        broker.start()
        broker.grant_link_read(f"User:{LINK_USER}", "users-", "users-")
    except Exception:
        broker.close()
        raise
    yield broker
    broker.close()


def _consume(bootstrap: str, user: str, password: str, topic: str, group: str, timeout: float = 30.0) -> tuple[list[bytes], set[int]]:
    """Read ``topic`` (one partition) from offset 0 as ``user`` over SASL_PLAINTEXT SCRAM-SHA-512: the values
    read and the error codes seen, until all of RECORDS arrived or an authorization error came."""
    errors: list[KafkaError] = []
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user, "sasl.password": password, "group.id": group, "enable.auto.commit": False,
        "auto.offset.reset": "earliest", "error_cb": errors.append,
    })
    values: list[bytes] = []
    codes: set[int] = set()
    try:
        consumer.subscribe([topic])  # a fresh group: from offset 0; an unauthorized topic is reported to the consumer
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(values) < len(RECORDS):
            message = consumer.poll(0.5)
            codes |= {e.code() for e in errors}
            errors.clear()
            if message is None:
                continue
            if message.error():
                codes.add(message.error().code())
            else:
                values.append(message.value())
            if KafkaError.TOPIC_AUTHORIZATION_FAILED in codes:
                break
    finally:
        consumer.close()
    return values, codes


def _key(b: AclBinding) -> tuple:
    return (b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type)


@pytest.mark.timeout(300)
def test_a_user_allowed_on_the_source_reads_the_mirror_and_a_denied_one_is_refused(source, linkd_factory, tmp_path):
    tag = uuid.uuid4().hex[:6]
    topic, group_prefix = f"users-t-{tag}", f"users-g-{tag}-"
    alice, bob = f"alice-{tag}", f"bob-{tag}"
    password = {alice: "alice-pw-" + uuid.uuid4().hex[:8], bob: "bob-pw-" + uuid.uuid4().hex[:8]}

    # The source: two SCRAM users, T with records, alice may read T, bob may not.
    source_admin = source.admin()
    upserts = [UserScramCredentialUpsertion(u, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), p.encode()) for u, p in password.items()]
    for future in source_admin.alter_user_scram_credentials(upserts, request_timeout=20).values():
        future.result(30)
    source.create_topic(topic)
    produce_confluent(source.bootstrap, topic, [(0, None, v) for v in RECORDS])
    T, G, LIT, PRE = ResourceType.TOPIC, ResourceType.GROUP, ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    ALLOW, DENY = AclPermissionType.ALLOW, AclPermissionType.DENY
    acls = [
        AclBinding(T, topic, LIT, f"User:{alice}", "*", AclOperation.READ, ALLOW),
        AclBinding(T, topic, LIT, f"User:{bob}", "*", AclOperation.READ, DENY),
        AclBinding(G, group_prefix, PRE, f"User:{alice}", "*", AclOperation.READ, ALLOW),
        AclBinding(G, group_prefix, PRE, f"User:{bob}", "*", AclOperation.READ, ALLOW),
    ]
    for future in source_admin.create_acls(acls, request_timeout=20).values():
        future.result(30)
    on_source = source.address("SASL_PLAINTEXT")
    got, codes = wait_for(lambda: (r := _consume(on_source, alice, password[alice], topic, group_prefix + "a"))[0] == RECORDS and r, 60, "alice reads T on the source")
    assert not codes & {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}, codes
    got, codes = _consume(on_source, bob, password[bob], topic, group_prefix + "b")
    assert got == [] and KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, (got, codes)

    # linkd: the same users created there (SCRAM users are not synced), a SCRAM listener, the StandardAuthorizer.
    # The test's own unnamed PLAINTEXT door is User:ANONYMOUS, a super user, to read linkd's ACLs.
    data = tmp_path / "linkd-data"
    data.mkdir()
    for user, secret in password.items():
        added = subprocess.run([sys.executable, "-m", "linkd", "user", "add", user, "--data-dir", str(data), "--mechanism", "SCRAM-SHA-512"],
                               input=secret + "\n", capture_output=True, text=True, timeout=30)
        assert added.returncode == 0, added.stderr
        assert secret not in added.stdout + added.stderr
    key = tmp_path / "secrets.key"
    subprocess.run([sys.executable, "-m", "linkd", "secrets", "generate-key", str(key)], check=True, capture_output=True, timeout=30)
    daemon = linkd_factory(data_dir=data, extra_args=[
        "--listener", f"SASL_PLAINTEXT://{LOOPBACK}:0", "--sasl-enabled-mechanisms", "SCRAM-SHA-512",
        "--authorizer", "standard", "--super-users", "User:ANONYMOUS", "--secrets-key-file", str(key),
    ])
    on_linkd = daemon.address("SASL_PLAINTEXT")
    filters = {"aclFilters": [
        {"resourceFilter": {"resourceType": "topic", "patternType": "literal", "name": topic}},
        {"resourceFilter": {"resourceType": "group", "patternType": "prefixed", "name": group_prefix}},
    ]}
    client = admin(daemon)
    client.create_link("src", {
        "bootstrap.servers": on_source, **FAST_LINK, "security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": f'{SCRAM} required username="{LINK_USER}" password="{source.password}";',
        "acl.sync.enable": "true", "acl.filters": json.dumps(filters), "acl.sync.ms": str(SYNC_MS),
    })
    client.create_mirror(topic, "src")
    wait_mirrored(client, topic, {0: len(RECORDS)})
    linkd_admin = KafkaAdmin({"bootstrap.servers": daemon.bootstrap})
    wait_for(lambda: {_key(b) for b in linkd_admin.describe_acls(ANY_ACL, request_timeout=15).result(20)} == {_key(b) for b in acls},
             20 * SYNC_MS / 1000, "the source's ACLs for T and the groups on linkd")

    # The same outcome as on the source, with the same credentials.
    got, codes = _consume(on_linkd, alice, password[alice], topic, group_prefix + "a")
    assert got == RECORDS, (got, codes)
    assert not codes & {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}, codes
    got, codes = _consume(on_linkd, bob, password[bob], topic, group_prefix + "b")
    assert got == [] and KafkaError.TOPIC_AUTHORIZATION_FAILED in codes, (got, codes)
    # And a wrong password is refused on linkd as on the source: SCRAM users are linkd's own.
    got, codes = _consume(on_linkd, alice, "not-" + password[alice], topic, group_prefix + "a", timeout=8)
    assert got == [] and KafkaError._AUTHENTICATION in codes, codes
