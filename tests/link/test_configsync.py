"""The pure part of mirror topic config sync: which source values a mirror takes."""

from __future__ import annotations

from linkd.link.configsync import mirrored_configs, synced_names
from linkd.topicconfig import ALWAYS_SYNCED, CONFIGURABLE, INDEPENDENT, TOPIC_CONFIG_DEFAULTS

ALL = synced_names(CONFIGURABLE)
SOURCE = {**TOPIC_CONFIG_DEFAULTS, "cleanup.policy": "compact", "retention.ms": "-1", "max.message.bytes": "2000000", "min.insync.replicas": "2", "preallocate": "true"}


def test_a_new_mirror_takes_always_synced_and_configurable_values_but_no_independent_ones():
    assert mirrored_configs({}, SOURCE, ALL, set(), creating=True) == {"cleanup.policy": "compact", "retention.ms": "-1", "max.message.bytes": "2000000"}


def test_a_source_that_does_not_report_retention_keeps_everything_on_a_new_mirror():
    # (retention.bytes=-1 is the default already, so it is simply not set)
    assert mirrored_configs({}, {"cleanup.policy": "compact"}, ALL, set(), creating=True) == {"cleanup.policy": "compact", "retention.ms": "-1"}
    # Later rounds keep what the mirror has for names the source does not report.
    assert mirrored_configs({"retention.ms": "-1"}, {}, ALL, set()) == {"retention.ms": "-1"}


def test_overrides_and_the_include_list_leave_configurable_names_alone_but_never_always_synced_ones():
    current = {"retention.ms": "1000", "segment.ms": "2000", "unclean.leader.election.enable": "true"}
    only_segment = synced_names(frozenset({"segment.ms"}))
    assert mirrored_configs(current, SOURCE, only_segment, set()) == {"retention.ms": "1000", "cleanup.policy": "compact", "max.message.bytes": "2000000", "unclean.leader.election.enable": "true"}
    assert mirrored_configs(current, SOURCE, ALL, {"retention.ms"})["retention.ms"] == "1000"
    assert mirrored_configs(current, SOURCE, ALL, {"cleanup.policy"})["cleanup.policy"] == "compact"  # overrides of always-synced names do not exist


def test_a_value_back_at_the_default_is_unset_and_an_unusable_one_is_skipped():
    assert "retention.ms" not in mirrored_configs({"retention.ms": "-1"}, {"retention.ms": "604800000"}, ALL, set())
    assert mirrored_configs({"segment.ms": "5"}, {"segment.ms": "zero"}, ALL, set()) == {"segment.ms": "5"}


def test_the_classes_cover_every_topic_config_once():
    assert not ALWAYS_SYNCED & CONFIGURABLE and not INDEPENDENT & (ALWAYS_SYNCED | CONFIGURABLE)
    assert ALWAYS_SYNCED | CONFIGURABLE | INDEPENDENT == set(TOPIC_CONFIG_DEFAULTS)
