"""The periodic flush and retention task: a disk error is logged and retried, never fatal to the daemon."""

from __future__ import annotations

import errno
import logging
from dataclasses import dataclass, field

import trio

from linkd.maintenance import run_maintenance
from tests.storage.helpers import batch, open_log


@dataclass
class _Topic:
    name: str
    logs: list = field(default_factory=list)


class _Registry:
    """The one query run_maintenance makes of the daemon's TopicRegistry."""

    def __init__(self, *topics: _Topic) -> None:
        self.topics = list(topics)

    def all(self) -> list[_Topic]:
        return self.topics


def test_a_flush_the_disk_refuses_is_logged_and_tried_again_next_round(tmp_path, monkeypatch, caplog):
    log = open_log(tmp_path)
    log.append_mirrored(batch(0, 2))
    calls = []

    def fsync(fd):
        calls.append(fd)
        if len(calls) <= 2:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", fsync)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(lambda task_status: run_maintenance(_Registry(_Topic("t", [log])), flush_interval_s=0.01, retention_interval_s=3600, task_status=task_status))
            with trio.fail_after(10):
                while log.recovery_point < log.log_end_offset:  # noqa: ASYNC110 - a worker thread moves it; no event to wait on
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()

    with caplog.at_level(logging.ERROR, logger="linkd.maintenance"):
        trio.run(main)
    assert log.recovery_point == 2
    assert [r for r in caplog.records if "periodic flush failed" in r.getMessage() and "No space left" in r.getMessage()]
