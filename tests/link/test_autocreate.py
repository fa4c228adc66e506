"""Which source topics a link auto-mirrors (the pure part of linkd.link.autocreate)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from linkd.link.autocreate import AutoCreate
from linkd.link.config import LinkConfigError, LinkSettings, validate


def _auto(*filters: tuple[str, str, str]) -> AutoCreate:
    text = json.dumps({"topicFilters": [{"name": n, "patternType": p, "filterType": f} for n, p, f in filters]})
    settings = LinkSettings.from_config({"bootstrap.servers": "h:1", "auto.create.mirror.topics.enable": "true", "auto.create.mirror.topics.filters": text, "cluster.link.prefix": "dr."})
    return AutoCreate(SimpleNamespace(settings=settings, name="l"), lambda: [], None, None)


TOPICS = ["__consumer_offsets", "__transaction_state", "_schemas", "orders", "orders-test", "payments"]


def test_everything_but_internal_topics_with_a_star():
    assert _auto(("*", "LITERAL", "INCLUDE")).wanted(TOPICS) == ["_schemas", "orders", "orders-test", "payments"]


def test_prefixes_literals_and_exclude_wins():
    auto = _auto(("orders", "PREFIXED", "INCLUDE"), ("payments", "LITERAL", "INCLUDE"), ("orders-test", "LITERAL", "EXCLUDE"))
    assert auto.wanted(TOPICS) == ["orders", "payments"]
    assert _auto(("*", "LITERAL", "INCLUDE"), ("o", "PREFIXED", "EXCLUDE")).wanted(TOPICS) == ["_schemas", "payments"]


def test_an_internal_topic_only_when_named_exactly():
    assert _auto(("__", "PREFIXED", "INCLUDE")).wanted(TOPICS) == []
    assert _auto(("__consumer_offsets", "LITERAL", "INCLUDE")).wanted(TOPICS) == ["__consumer_offsets"]


def test_no_include_filter_mirrors_nothing_and_bad_filters_or_prefixes_are_refused():
    assert _auto().wanted(TOPICS) == []
    with pytest.raises(LinkConfigError, match="topicFilters"):
        validate({"bootstrap.servers": "h:1", "auto.create.mirror.topics.filters": '{"groupFilters": []}'})
    with pytest.raises(LinkConfigError, match="patternType"):
        validate({"bootstrap.servers": "h:1", "auto.create.mirror.topics.filters": '{"topicFilters": [{"name": "a", "patternType": "REGEX"}]}'})
    with pytest.raises(LinkConfigError, match="cluster.link.prefix"):
        validate({"bootstrap.servers": "h:1", "cluster.link.prefix": "bad/prefix"})
