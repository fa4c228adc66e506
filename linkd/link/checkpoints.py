"""The source end offsets seen, checkpointed at a bounded rate, and the reconciliation after a failover.

The fetch path only sets fields on ``PartitionProgress``; one small control-store transaction per
``SOURCE_END_CHECKPOINT_S`` writes the changed ones, so a failover after a restart can still say what the
source held when linkd last looked. After a failover, ``reconcile`` asks the source (whenever it answers)
where its partitions end, so describe can show the exact offsets the mirror never got. Runs on the event
loop, as tasks of the link manager.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from .client import SourceProtocolError, SourceUnavailable
from .loss import lost_offsets, reconciled
from .mirror import Mirror
from .runtime import now_ms
from .states import MirrorState

if TYPE_CHECKING:
    from .manager import LinkEntry, LinkManager

log = logging.getLogger(__name__)

SOURCE_END_CHECKPOINT_S = 1.0  # bounds the write rate of the source-end checkpoint (one transaction)
SEEN_ONLY_CHECKPOINT_MS = 30_000  # an unchanged source end's "seen at" is rewritten at most this often
RECONCILE_INTERVAL_S = 5.0


def checkpoint_source_ends(m: LinkManager) -> None:
    """Persist the source end offsets seen since the last checkpoint (changed partitions only)."""
    rows = []
    for mirror in m.mirrors.values():
        for progress in mirror.partitions:
            old = progress.checkpointed
            # Offsets unchanged, only seen again: refresh the time now and then, not every second (an idle
            # partition is seen at every fetch). Checked before building the row: 10,000 partitions a second.
            if old is not None and old[0] == progress.source_high_watermark and old[1] == progress.last_source_fetch_offset \
                    and progress.source_end_seen_ms - old[2] < SEEN_ONLY_CHECKPOINT_MS:
                continue
            row = progress.checkpoint_row()
            if row is None or row == old:
                continue
            rows.append((mirror.topic, progress.partition, *row))
            progress.checkpointed = row
    m.mirror_store.save_source_ends(rows)


async def checkpoint_loop(m: LinkManager) -> None:
    # One small transaction per interval whatever the fetch rate: the fetch path only sets fields.
    try:
        while True:
            await trio.sleep(SOURCE_END_CHECKPOINT_S)
            try:
                m.checkpoint_source_ends()
            except Exception:
                log.exception("could not checkpoint the source end offsets seen; retrying")
    finally:
        try:  # synchronous: a cancellation cannot cut it short
            m.checkpoint_source_ends()
        except Exception:
            log.exception("could not checkpoint the source end offsets seen at shutdown")


def due_for_reconcile(mirrors: list[Mirror], link: str, now: int) -> list[Mirror]:
    """The mirrors of ``link`` failed over at least ``RECONCILE_INTERVAL_S`` before ``now`` (epoch ms).
    Not sooner: right after a failover of 10,000 partitions its ListOffsets (latest and earliest, every
    partition) took the event loop just when clients begin to produce to the promoted topics."""
    settled = now - int(RECONCILE_INTERVAL_S * 1000)
    return [
        m for m in mirrors
        if m.link == link and m.state == MirrorState.STOPPED and (m.stop_info or {}).get("kind") == "failover"
        and (m.stop_info or {}).get("stopped_ms", 0) <= settled
    ]


async def reconcile_loop(m: LinkManager) -> None:
    """After a failover (one interval after it), ask the source (whenever it answers) where its partitions
    end, so describe can show the exact offsets the mirror never got (``lost_offsets``)."""
    while True:
        await trio.sleep(RECONCILE_INTERVAL_S)
        for name, entry in list(m.links.items()):
            stopped = due_for_reconcile(list(m.mirrors.values()), name, now_ms())
            if stopped:
                with trio.move_on_after(entry.settings.request_timeout_ms / 1000):
                    try:
                        await m.reconcile(entry, stopped)
                    except (SourceUnavailable, SourceProtocolError) as exc:
                        log.debug("link %s: reconciliation waits for the source: %s", name, exc)
                    except Exception:
                        log.exception("link %s: reconciliation failed; retrying", name)


async def reconcile(m: LinkManager, entry: LinkEntry, mirrors: list[Mirror]) -> None:
    latest = await entry.runtime.read_source_offsets(mirrors, -1)
    earliest = await entry.runtime.read_source_offsets(mirrors, -2)
    for mirror in mirrors:
        info = dict(mirror.stop_info or {})
        found = reconciled(info, {p: o for (t, p), o in latest.items() if t == mirror.topic}, {p: o for (t, p), o in earliest.items() if t == mirror.topic})
        if found is None or (info.get("reconciled") or {}).get("partitions") == found["partitions"]:
            continue
        info["reconciled"] = {"recorded_ms": now_ms(), **found}
        mirror.set_stop_info(m.mirror_store, info)
        lost = sum(x["offsets"] for x in lost_offsets(info) or [])
        log.info("mirror %s: the source is reachable again after the failover; %d offsets it holds past the stop offsets were never mirrored", mirror.topic, lost)
