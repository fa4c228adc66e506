"""A source topic is mirrored at most once per link: a second mirror of it would never advance."""

import json

import pytest

from tests.promotion.helpers import cli_json, create_topic, produce

pytestmark = pytest.mark.timeout(120)


def test_second_mirror_of_the_same_source_topic_on_one_link_is_refused(linkd_factory):
    source = linkd_factory()
    dest = linkd_factory()
    create_topic(source.bootstrap, "orders", 1)
    produce(source.bootstrap, "orders", 10, 1)
    cli_json(dest, "link", "create", "l", "--bootstrap-server", source.bootstrap)
    cli_json(dest, "mirror", "create", "orders", "--link", "l", "--wait")
    result = dest.cli("mirror", "create", "orders-copy", "--link", "l", "--source-topic", "orders", "--json")
    assert result.returncode != 0
    assert "already mirrored as 'orders'" in result.stderr and result.stderr.count("\n") == 1
    listed = json.loads(dest.cli("mirror", "list", "--json").stdout)
    assert [m["mirror_topic_name"] for m in listed] == ["orders"]
    # Over a second link it is allowed, and both mirrors follow the source.
    cli_json(dest, "link", "create", "l2", "--bootstrap-server", source.bootstrap)
    copy, _ = cli_json(dest, "mirror", "create", "orders-copy", "--link", "l2", "--source-topic", "orders", "--wait")
    assert copy["partitions"][0]["mirror_log_end_offset"] == 10
