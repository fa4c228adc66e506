"""The ACL sync's state belongs to its link entry (``LinkEntry.acl_sync``): it goes with the link when the
link is deleted, and a link re-created under the same name starts with a fresh status."""

from __future__ import annotations

import gc
import json
import logging
import weakref

import trio

from linkd.controlstore import ControlStore
from linkd.link import aclsync
from linkd.link.manager import LinkManager
from linkd.topics import TopicRegistry

# A port nothing listens on: the link's runtime backs off, the ACL sync still runs its rounds (and, with
# no authorizer given to the manager, each round fails with SECURITY_DISABLED and counts an error).
UNREACHABLE = "127.0.0.1:9"


def _config(enabled: bool) -> dict[str, str]:
    config = {"bootstrap.servers": UNREACHABLE, "acl.sync.enable": "true" if enabled else "false"}
    if enabled:
        config.update({"acl.filters": json.dumps({"aclFilters": [{}]}), "acl.sync.ms": "60000"})
    return config


def test_a_deleted_link_takes_its_acl_sync_along_and_a_recreated_one_starts_afresh(tmp_path, caplog):
    # No log records: pytest keeps them, and a failed round's record holds its exception's frames (and so the entry).
    caplog.set_level(logging.CRITICAL + 1, logger="linkd.link")
    store = ControlStore(tmp_path / "control.db")
    manager = LinkManager(store, topics=TopicRegistry(store, tmp_path / "data"), producer_ids=None, notify=lambda: None, groups=None)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            manager.nursery = nursery
            await manager.create_link("l", _config(enabled=True), validate_link=False)
            first = manager.links["l"]
            with trio.fail_after(10):
                while aclsync.status(first)["errors"] == 0:  # noqa: ASYNC110 - the sync's first round, no event for it
                    await trio.sleep(0.01)
            seen = aclsync.status(first)
            assert seen["enabled"] and "authorizer" in (seen["last_error"] or "")
            gone = weakref.ref(first)
            await manager.delete_link("l")
            del first
            with trio.move_on_after(5):  # the cancelled link's tasks end (its source connection closes shielded)
                while gone() is not None:
                    await trio.sleep(0.05)
                    gc.collect()
            held = gone() is not None
            assert not held, "the deleted link's entry (and its ACL sync) is still held"

            await manager.create_link("l", _config(enabled=False), validate_link=False)
            again = manager.links["l"]
            await trio.sleep(0.05)
            fresh = aclsync.status(again)
            assert (fresh["enabled"], fresh["errors"], fresh["syncs"], fresh["last_error"]) == (False, 0, 0, None)
            assert aclsync.task(again)["state"] == "NOT_CONFIGURED"
            nursery.cancel_scope.cancel()

    trio.run(main)
