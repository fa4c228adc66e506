"""Link configuration parsing and validation (Cluster Linking property names)."""

import pytest

from linkd.link.config import LinkConfigError, LinkSettings, parse_overrides, parse_properties, validate
from linkd.link.groupfilter import GroupFilter


def test_properties_file_with_comments_separators_and_continuations():
    text = "# comment\n! also a comment\nbootstrap.servers = 127.0.0.1:9092\nsasl.jaas.config=a \\\n    b;\ncluster.link.paused: true\n"
    assert parse_properties(text) == {
        "bootstrap.servers": "127.0.0.1:9092",
        "sasl.jaas.config": "a b;",
        "cluster.link.paused": "true",
    }


def test_unknown_keys_are_rejected_by_name():
    with pytest.raises(LinkConfigError, match="unknown link config key\\(s\\): bogus.key, other"):
        validate({"bootstrap.servers": "h:1", "bogus.key": "1", "other": "2"})


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("consumer.offset.sync.ms", "soon", "must be an integer"),
        ("cluster.link.paused", "maybe", "true or false"),
        ("consumer.offset.group.filters", "{not json", "not valid JSON"),
        ("mirror.start.offset.spec", "yesterday", "ISO-8601"),
        ("security.protocol", "KERBEROS", "must be one of"),
        ("ssl.engine.factory.class", "x.Y", "not supported yet"),
    ],
)
def test_bad_values_name_the_key(key, value, message):
    with pytest.raises(LinkConfigError, match=message) as info:
        validate({"bootstrap.servers": "h:1", key: value})
    assert key in str(info.value)


def test_bootstrap_is_required_and_checked():
    with pytest.raises(LinkConfigError, match="bootstrap.servers is required"):
        validate({})
    with pytest.raises(LinkConfigError, match="HOST:PORT"):
        validate({"bootstrap.servers": "nohostport"})


def test_overrides_need_key_equals_value():
    assert parse_overrides(["a.b=1", "c= x "]) == {"a.b": "1", "c": "x"}
    with pytest.raises(LinkConfigError):
        parse_overrides(["novalue"])


def test_settings_defaults():
    s = LinkSettings.from_config({"bootstrap.servers": "127.0.0.1:9092,[::1]:9093"})
    assert s.bootstrap_servers == [("127.0.0.1", 9092), ("::1", 9093)]
    assert s.paused is False and s.start_offset_spec == "earliest"


def test_group_filters_exclude_wins_and_nothing_without_include():
    f = GroupFilter.parse(
        '{"groupFilters": [{"name": "orders-", "patternType": "PREFIXED", "filterType": "INCLUDE"},'
        '{"name": "orders-test", "patternType": "LITERAL", "filterType": "EXCLUDE"}]}'
    )
    assert f.includes("orders-east")
    assert not f.includes("orders-test")
    assert not f.includes("billing")
    assert not GroupFilter.parse('{"groupFilters": [{"name": "x", "filterType": "EXCLUDE"}]}').includes("y")
    assert GroupFilter.parse('{"groupFilters": [{"name": "*"}]}').includes("anything")
    with pytest.raises(ValueError, match="patternType"):
        GroupFilter.parse('{"groupFilters": [{"name": "x", "patternType": "REGEX"}]}')


def test_fetchers_and_receive_buffer_have_defaults_and_are_typed():
    settings = LinkSettings.from_config({"bootstrap.servers": "h:1"})
    assert (settings.fetchers, settings.receive_buffer_bytes) == (0, -1)  # 0: adaptive
    settings = LinkSettings.from_config({"bootstrap.servers": "h:1", "num.cluster.link.fetchers": "1", "receive.buffer.bytes": "8388608"})
    assert (settings.fetchers, settings.receive_buffer_bytes) == (1, 8 * 1024 * 1024)


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("num.cluster.link.fetchers", "-1", "between 0 and 32"),
        ("num.cluster.link.fetchers", "33", "between 0 and 32"),
        ("num.cluster.link.fetchers", "two", "must be an integer"),
        ("receive.buffer.bytes", "512", "-1 .* or at least 1024"),
        ("receive.buffer.bytes", "-2", "between -1 and"),
    ],
)
def test_fetchers_and_receive_buffer_refuse_bad_values(key, value, message):
    with pytest.raises(LinkConfigError, match=message) as info:
        validate({"bootstrap.servers": "h:1", key: value})
    assert key in str(info.value)


def test_acl_sync_off_is_the_default_and_accepted():
    merged = validate({"bootstrap.servers": "h:1", "acl.sync.enable": "false"})
    assert merged["acl.sync.enable"] == "false"


def test_acl_sync_without_filters_fails_as_cluster_linking_does():
    with pytest.raises(LinkConfigError, match="ACL migration is enabled but acl.filters is not set"):
        validate({"bootstrap.servers": "h:1", "acl.sync.enable": "true"})


@pytest.mark.parametrize(
    "filters,message",
    [
        ('{"aclFilters": []}', "no filter"),
        ("[1]", "aclFilters"),
        ('{"aclFilters": [{"resourceFilter": {"resourceType": "user"}}]}', "resourceType"),
        ('{"aclFilters": [{"resourceFilter": {"patternType": "regex"}}]}', "patternType"),
        ('{"aclFilters": [{"accessFilter": {"operation": "fly"}}]}', "operation"),
        ('{"aclFilters": [{"accessFilter": {"who": "x"}}]}', "unknown field"),
    ],
)
def test_bad_acl_filters_are_refused_naming_the_problem(filters, message):
    with pytest.raises(LinkConfigError, match=message):
        validate({"bootstrap.servers": "h:1", "acl.sync.enable": "true", "acl.filters": filters})


def test_acl_filters_in_cluster_linkings_shape():
    from linkd.broker.acl import AclFilter
    from linkd.link.aclsync import parse_filters

    text = '{"aclFilters": [{"resourceFilter": {"resourceType": "topic", "patternType": "prefixed", "name": "orders"}, "accessFilter": {"principal": "User:alice", "operation": "read", "permissionType": "allow"}}, {}]}'
    assert parse_filters(text) == [AclFilter("TOPIC", "orders", "PREFIXED", "User:alice", None, "READ", "ALLOW"), AclFilter()]
    validate({"bootstrap.servers": "h:1", "acl.sync.enable": "true", "acl.filters": text, "acl.sync.ms": "1000"})
    with pytest.raises(LinkConfigError, match="acl.sync.ms"):
        validate({"bootstrap.servers": "h:1", "acl.sync.ms": "0"})
    with pytest.raises(LinkConfigError, match="cluster.link.prefix is not supported yet"):
        validate({"bootstrap.servers": "h:1", "acl.sync.enable": "true", "acl.filters": text, "cluster.link.prefix": "dr."})


def test_topic_config_sync_settings():
    default = LinkSettings.from_config({"bootstrap.servers": "h:1"})
    assert default.topic_config_sync_ms == 5000 and "retention.ms" in default.topic_config_sync_include
    only = LinkSettings.from_config({"bootstrap.servers": "h:1", "topic.config.sync.include": "segment.ms, cleanup.policy", "topic.config.sync.ms": "250"})
    assert only.topic_config_sync_include == frozenset({"segment.ms"}) and only.topic_config_sync_ms == 250
    none = LinkSettings.from_config({"bootstrap.servers": "h:1", "topic.config.sync.include": ""})
    assert none.topic_config_sync_include == frozenset()
    with pytest.raises(LinkConfigError, match="unknown topic config"):
        validate({"bootstrap.servers": "h:1", "topic.config.sync.include": "retention.mss"})
    with pytest.raises(LinkConfigError, match="min.insync.replicas cannot be synced"):
        validate({"bootstrap.servers": "h:1", "topic.config.sync.include": "min.insync.replicas"})
    with pytest.raises(LinkConfigError, match="topic.config.sync.ms"):
        validate({"bootstrap.servers": "h:1", "topic.config.sync.ms": "0"})


def test_consumer_group_prefix_needs_the_link_prefix():
    with pytest.raises(LinkConfigError, match="consumer.group.prefix.enable=true needs cluster.link.prefix"):
        validate({"bootstrap.servers": "h:1", "consumer.group.prefix.enable": "true"})
    with pytest.raises(LinkConfigError, match="consumer.group.prefix.enable must be true or false"):
        validate({"bootstrap.servers": "h:1", "cluster.link.prefix": "east.", "consumer.group.prefix.enable": "yes"})
    on = LinkSettings.from_config({"bootstrap.servers": "h:1", "cluster.link.prefix": "east.", "consumer.group.prefix.enable": "TRUE"})
    assert on.consumer_group_prefix == "east."
    off = LinkSettings.from_config({"bootstrap.servers": "h:1", "cluster.link.prefix": "east."})
    assert off.consumer_group_prefix == "" and off.prefix == "east."
    assert LinkSettings.from_config({"bootstrap.servers": "h:1", "consumer.group.prefix.enable": "false"}).consumer_group_prefix == ""
