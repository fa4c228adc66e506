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
