"""linkd/broker/acl.py: Kafka's StandardAuthorizer decisions, checked case by case and against a
brute-force reference model with Hypothesis; ACLs survive a reopen of the control store."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linkd.broker.acl import (
    IMPLIES_DESCRIBE,
    IMPLIES_DESCRIBE_CONFIGS,
    AclBinding,
    AclError,
    AclFilter,
    StandardAuthorizer,
    binding_from_wire,
    parse_super_users,
    validate,
)
from linkd.broker.session import Session
from linkd.controlstore import ControlStore

ALICE = Session(host="127.0.0.1", principal="User:alice")
BOB = Session(host="10.0.0.2", principal="User:bob")


def acl(name="orders", op="READ", perm="ALLOW", principal="User:alice", host="*", pattern="LITERAL", rtype="TOPIC") -> AclBinding:
    return AclBinding(rtype, name, pattern, principal, host, op, perm)


def authorizer(*bindings: AclBinding, **kw) -> StandardAuthorizer:
    a = StandardAuthorizer(**kw)
    a.create(bindings)
    return a


def test_no_acl_denies_by_default_and_allow_everyone_allows():
    assert not authorizer().authorize(ALICE, "READ", "TOPIC", "orders")
    assert authorizer(allow_everyone_if_no_acl_found=True).authorize(ALICE, "READ", "TOPIC", "orders")


def test_allow_everyone_only_applies_to_resources_without_any_acl():
    # An ACL for bob on the topic means the topic has ACLs: alice is denied, not defaulted to allow.
    a = authorizer(acl(principal="User:bob"), allow_everyone_if_no_acl_found=True)
    assert not a.authorize(ALICE, "READ", "TOPIC", "orders")
    assert a.authorize(ALICE, "READ", "TOPIC", "other")


def test_read_implies_describe_but_deny_read_does_not_deny_describe():
    a = authorizer(acl(op="READ"))
    assert a.authorize(ALICE, "DESCRIBE", "TOPIC", "orders")
    assert not a.authorize(ALICE, "WRITE", "TOPIC", "orders")
    b = authorizer(acl(op="DESCRIBE"), acl(op="READ", perm="DENY"))
    assert b.authorize(ALICE, "DESCRIBE", "TOPIC", "orders")
    assert not b.authorize(ALICE, "READ", "TOPIC", "orders")


def test_alter_configs_implies_describe_configs():
    a = authorizer(acl(op="ALTER_CONFIGS"))
    assert a.authorize(ALICE, "DESCRIBE_CONFIGS", "TOPIC", "orders")
    assert not a.authorize(ALICE, "DESCRIBE", "TOPIC", "orders")


def test_deny_wins_over_allow_and_all_covers_everything():
    a = authorizer(acl(op="ALL"), acl(op="WRITE", perm="DENY", principal="User:*"))
    assert a.authorize(ALICE, "READ", "TOPIC", "orders")
    assert not a.authorize(ALICE, "WRITE", "TOPIC", "orders")
    assert not authorizer(acl(op="READ"), acl(op="ALL", perm="DENY")).authorize(ALICE, "DESCRIBE", "TOPIC", "orders")


def test_prefixed_and_wildcard_patterns():
    a = authorizer(acl(name="ord", pattern="PREFIXED"), acl(name="*", op="WRITE", principal="User:bob"))
    assert a.authorize(ALICE, "READ", "TOPIC", "orders")
    assert a.authorize(ALICE, "READ", "TOPIC", "ord")
    assert not a.authorize(ALICE, "READ", "TOPIC", "or")
    assert a.authorize(BOB, "WRITE", "TOPIC", "anything")
    assert not a.authorize(BOB, "WRITE", "GROUP", "anything")


def test_host_must_match():
    a = authorizer(acl(host="127.0.0.1", principal="User:*"))
    assert a.authorize(ALICE, "READ", "TOPIC", "orders")
    assert not a.authorize(BOB, "READ", "TOPIC", "orders")


def test_super_users_bypass_deny():
    a = authorizer(acl(op="ALL", perm="DENY", principal="User:*"), super_users=["User:alice"])
    assert a.authorize(ALICE, "DELETE", "TOPIC", "orders")
    assert not a.authorize(BOB, "DELETE", "TOPIC", "orders")


def test_authorize_by_resource_type():
    assert authorizer(acl(op="WRITE", name="x")).authorize_by_resource_type(ALICE, "WRITE", "TOPIC")
    assert not authorizer(acl(op="READ", name="x")).authorize_by_resource_type(ALICE, "WRITE", "TOPIC")
    # A prefix DENY that covers the only ALLOW dominates it; a wildcard DENY denies all.
    assert not authorizer(acl(op="WRITE", name="abc"), acl(op="WRITE", name="ab", pattern="PREFIXED", perm="DENY")).authorize_by_resource_type(ALICE, "WRITE", "TOPIC")
    assert not authorizer(acl(op="WRITE", name="abc"), acl(op="WRITE", name="*", perm="DENY")).authorize_by_resource_type(ALICE, "WRITE", "TOPIC")
    assert authorizer(acl(op="WRITE", name="abc"), acl(op="WRITE", name="zz", pattern="PREFIXED", perm="DENY")).authorize_by_resource_type(ALICE, "WRITE", "TOPIC")


def test_authorized_operations_bits():
    a = authorizer(acl(op="READ"), acl(op="ALTER_CONFIGS"))
    bits = a.authorized_operations(ALICE, "TOPIC", "orders")
    assert bits == (1 << 3) | (1 << 8) | (1 << 10) | (1 << 11)  # READ, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS


@pytest.mark.parametrize(
    "binding, message",
    [
        (acl(rtype="USER", name="x", op="ALL"), "not supported yet"),
        (acl(principal="alice"), "principal"),
        (acl(name=""), "empty"),
        (acl(op="ANY"), "Invalid operation"),
        (acl(pattern="MATCH"), "Invalid patternType"),
        (acl(perm="ANY"), "Invalid permissionType"),
    ],
)
def test_invalid_bindings_are_refused(binding, message):
    with pytest.raises(AclError, match=message):
        validate(binding)


def test_wire_codes_round_trip():
    b = acl(pattern="PREFIXED", op="DESCRIBE_CONFIGS", perm="DENY")
    wire = b.to_wire()
    assert binding_from_wire({**wire, "resource_pattern_type": wire["pattern_type"]}) == b


def test_filters_match_as_kafka_does():
    lit, pre, star = acl(name="orders"), acl(name="ord", pattern="PREFIXED"), acl(name="*")
    a = authorizer(lit, pre, star, acl(name="other"))
    assert a.acls(AclFilter(resource_type="TOPIC", resource_name="orders", pattern_type="MATCH")) == sorted([lit, pre, star])
    assert a.acls(AclFilter(resource_name="ord", pattern_type="ANY")) == [pre]
    assert a.acls(AclFilter(pattern_type="PREFIXED")) == [pre]
    assert len(a.acls(AclFilter())) == 4


def test_acls_persist_in_the_control_store(tmp_path):
    store = ControlStore(tmp_path / "control.db")
    a = StandardAuthorizer(store)
    a.create([acl(), acl(name="p", pattern="PREFIXED")])
    assert a.delete([AclFilter(pattern_type="PREFIXED")]) == [[acl(name="p", pattern="PREFIXED")]]
    store.close()
    reopened = StandardAuthorizer(ControlStore(tmp_path / "control.db"))
    assert reopened.acls() == [acl()]
    assert reopened.authorize(ALICE, "READ", "TOPIC", "orders")


def test_super_users_parse_kafkas_list():
    assert parse_super_users("User:a; User:b") == ["User:a", "User:b"]
    with pytest.raises(ValueError, match="Type:name"):
        parse_super_users("alice")


# -- the matcher against a brute-force reference model ---------------------------------------------

NAMES = st.sampled_from(["a", "ab", "abc", "b", "ba", "*"])
OPS = st.sampled_from(["READ", "WRITE", "DESCRIBE", "DELETE", "ALTER", "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "CREATE", "ALL"])
BINDINGS = st.builds(
    AclBinding,
    st.sampled_from(["TOPIC", "GROUP"]),
    NAMES,
    st.sampled_from(["LITERAL", "PREFIXED"]),
    st.sampled_from(["User:alice", "User:bob", "User:*"]),
    st.sampled_from(["*", "127.0.0.1", "10.0.0.2"]),
    OPS,
    st.sampled_from(["ALLOW", "DENY"]),
)


def reference(acls: list[AclBinding], principal: str, host: str, op: str, rtype: str, name: str, supers: set[str], allow_everyone: bool) -> bool:
    """Kafka's rules written the slow, obvious way."""
    if principal in supers:
        return True

    def covers(b: AclBinding) -> bool:
        if b.resource_type != rtype:
            return False
        if b.pattern_type == "LITERAL":
            return b.resource_name in (name, "*")
        return name[: len(b.resource_name)] == b.resource_name

    def op_matches(b: AclBinding) -> bool:
        if b.operation == "ALL" or b.operation == op:
            return True
        if b.permission == "DENY":
            return False
        return (op == "DESCRIBE" and b.operation in IMPLIES_DESCRIBE) or (op == "DESCRIBE_CONFIGS" and b.operation in IMPLIES_DESCRIBE_CONFIGS)

    on_resource = [b for b in acls if covers(b)]
    applicable = [b for b in on_resource if b.principal in (principal, "User:*") and b.host in (host, "*") and op_matches(b)]
    if any(b.permission == "DENY" for b in applicable):
        return False
    if any(b.permission == "ALLOW" for b in applicable):
        return True
    return not on_resource and allow_everyone


@settings(max_examples=400, deadline=None)
@given(
    acls=st.lists(BINDINGS, max_size=8),
    principal=st.sampled_from(["User:alice", "User:bob", "User:carol"]),
    host=st.sampled_from(["127.0.0.1", "10.0.0.2"]),
    op=OPS.filter(lambda o: o != "ALL"),
    rtype=st.sampled_from(["TOPIC", "GROUP"]),
    name=st.sampled_from(["a", "ab", "abc", "abd", "b", "c", "*"]),
    supers=st.sets(st.sampled_from(["User:alice", "User:carol"]), max_size=1),
    allow_everyone=st.booleans(),
)
def test_authorize_matches_the_reference_model(acls, principal, host, op, rtype, name, supers, allow_everyone):
    a = authorizer(*acls, super_users=supers, allow_everyone_if_no_acl_found=allow_everyone)
    session = Session(host=host, principal=principal)
    assert a.authorize(session, op, rtype, name) == reference(acls, principal, host, op, rtype, name, supers, allow_everyone)


@settings(max_examples=200, deadline=None)
@given(acls=st.lists(BINDINGS, max_size=8), filters=st.lists(st.builds(AclFilter, st.sampled_from(["ANY", "TOPIC", "GROUP"]), st.one_of(st.none(), NAMES), st.sampled_from(["ANY", "LITERAL", "PREFIXED", "MATCH"])), max_size=3))
def test_delete_removes_exactly_what_filters_match_and_decisions_follow(acls, filters):
    a = authorizer(*acls)
    matched = a.delete(filters)
    left = set(acls) - {b for group in matched for b in group}
    assert set(a.acls()) == left
    assert not any(f.matches(b) for f in filters for b in left)
    fresh = authorizer(*left)
    for name in ("a", "ab", "b", "zz"):
        assert a.authorize(ALICE, "READ", "TOPIC", name) == fresh.authorize(ALICE, "READ", "TOPIC", name)


@settings(max_examples=300, deadline=None)
@given(acls=st.lists(BINDINGS, max_size=6), principal=st.sampled_from(["User:alice", "User:bob"]), host=st.sampled_from(["127.0.0.1", "10.0.0.2"]))
def test_authorize_by_resource_type_means_some_resource_is_allowed(acls, principal, host):
    """For WRITE (which nothing implies), Kafka's authorizeByResourceType answers "is there a name of that
    type this principal may write?": checked against authorize() over every name that could matter."""
    a = authorizer(*acls)
    session = Session(host=host, principal=principal)
    mentioned = {b.resource_name for b in acls} - {"*"}
    mentioned |= {b.resource_name for b in acls if b.pattern_type == "PREFIXED"}
    universe = mentioned | {n + "z" for n in mentioned} | {"fresh"}
    exists = any(a.authorize(session, "WRITE", "TOPIC", n) for n in universe)
    assert a.authorize_by_resource_type(session, "WRITE", "TOPIC") == exists
