"""``mirror verify``: prove, batch by batch, that a mirror partition holds the source's bytes.

The source is walked with Fetch and the mirror's own log is read from disk over the same offsets. Two
batches are the same when their base offset, last offset delta, length and CRC agree, and each one's
CRC matches its bytes (so a mirror batch rotted on disk, or rewritten consistently, is caught either
way). Since CRC-32C covers everything from the attributes to the end, equal lengths and CRCs over
verified bytes prove the records identical short of a CRC collision; the base offset and partition
leader epoch lie outside the CRC and the offset is compared directly.

Work is done in *steps* bounded by a byte budget (one Fetch response and the same span of the log), so
memory stays bounded and a caller can show progress between steps: each step returns where the next
one starts. The comparison itself (``compare``) is pure and unit-tested alone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import trio

from protocol.errors import ErrorCode, ProtocolError
from protocol.messages import ApiKey
from protocol.records import RecordBatch, split_batches

from .. import storage_calls
from .client import SourceProtocolError, SourceUnavailable, source_error
from .sourceends import PROBE_WAIT_MS

DEFAULT_STEP_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Divergence:
    offset: int
    reason: str
    source_crc: int | None
    mirror_crc: int | None
    source_base_offset: int | None = None
    mirror_base_offset: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Compared:
    batches: int
    bytes: int
    position: int  # the next offset to compare
    divergence: Divergence | None


def _crc_ok(batch: RecordBatch) -> bool:
    try:
        return batch.compute_crc() == batch.crc
    except ProtocolError:
        return False


def compare(source: list[RecordBatch], mirror: list[RecordBatch], position: int, end: int) -> Compared:
    """Compare the batches of both sides that hold offsets from ``position`` up to ``end``, in order,
    until one side runs out (the caller fetches more) or they differ."""
    source = [b for b in source if b.next_offset > position and b.base_offset < end]
    mirror = [b for b in mirror if b.next_offset > position and b.base_offset < end]
    batches = size = 0
    for theirs, ours in zip(source, mirror, strict=False):
        if not _crc_ok(ours):
            return Compared(batches, size, position, Divergence(ours.base_offset, "the mirror's batch does not match its own CRC (corrupt on disk)", theirs.crc, ours.crc, theirs.base_offset, ours.base_offset))
        if not _crc_ok(theirs):
            return Compared(batches, size, position, Divergence(theirs.base_offset, "the source's batch does not match its own CRC", theirs.crc, ours.crc, theirs.base_offset, ours.base_offset))
        if (theirs.base_offset, theirs.last_offset_delta, theirs.batch_length, theirs.crc) != (ours.base_offset, ours.last_offset_delta, ours.batch_length, ours.crc):
            reason = "batches differ: " + ", ".join(
                f"{name} source {a} mirror {b}"
                for name, a, b in (
                    ("base offset", theirs.base_offset, ours.base_offset),
                    ("last offset delta", theirs.last_offset_delta, ours.last_offset_delta),
                    ("length", theirs.batch_length, ours.batch_length),
                    ("CRC", f"{theirs.crc:#010x}", f"{ours.crc:#010x}"),
                )
                if a != b
            )
            return Compared(batches, size, position, Divergence(min(theirs.base_offset, ours.base_offset), reason, theirs.crc, ours.crc, theirs.base_offset, ours.base_offset))
        batches += 1
        size += ours.size
        position = ours.next_offset
    return Compared(batches, size, position, None)


async def fetch_source_batches(runtime, source_topic: str, partition: int, offset: int, max_bytes: int, timeout_s: float) -> tuple[list[RecordBatch], int, int]:
    """One non-waiting Fetch of ``source_topic``/``partition`` at ``offset`` from its leader, on the link's
    short-request connection: (whole batches, log start offset, high watermark). Raises SourceUnavailable
    or SourceProtocolError (with the source's error code named) when that fails."""
    with trio.fail_after(timeout_s + PROBE_WAIT_MS / 1000):
        meta = await runtime.source.metadata([source_topic])
        st = meta.get(source_topic)
        sp = st.partitions.get(partition) if st else None
        if sp is None or sp.leader < 0:
            raise SourceUnavailable(f"source partition {source_topic}-{partition} has no leader")
        conn = await runtime.source.broker_connection(sp.leader)
        body = {
            # Waits a little for nothing: Tansu answers a Fetch with max_wait_ms 0 with no partitions.
            "replica_id": -1, "max_wait_ms": PROBE_WAIT_MS, "min_bytes": 1, "max_bytes": max_bytes, "isolation_level": 0,
            "session_id": 0, "session_epoch": -1, "forgotten_topics_data": [], "rack_id": "",
            "topics": [{"topic": source_topic, "partitions": [{"partition": partition, "current_leader_epoch": -1, "fetch_offset": offset, "last_fetched_epoch": -1, "log_start_offset": -1, "partition_max_bytes": max_bytes}]}],
        }
        response = await conn.request(ApiKey.FETCH, body)
    if response.get("error_code", 0) != ErrorCode.NONE:
        raise SourceProtocolError(f"Fetch failed with {source_error(response['error_code']).name}")
    pdata = next((p for t in response.get("responses") or [] for p in t.get("partitions") or [] if p.get("partition_index") == partition), None)
    if pdata is None:
        raise SourceProtocolError(f"the Fetch answer has no entry for {source_topic}-{partition}")
    if pdata["error_code"] != ErrorCode.NONE:
        raise SourceProtocolError(f"fetching {source_topic}-{partition} at offset {offset} failed: {source_error(pdata['error_code']).name}")
    return split_batches(pdata.get("records") or b"").batches, pdata.get("log_start_offset", -1), pdata["high_watermark"]


def read_mirror_batches(plog, offset: int, max_bytes: int, end: int) -> list[RecordBatch]:
    """Whole batches of the mirror's own log from the one holding ``offset``, ending at or before ``end``
    (worker-thread body: it reads the segment files)."""
    data = plog.read(offset, max_bytes, upper_bound=end).to_bytes()
    return split_batches(data).batches


async def verify_step(runtime, source_topic: str, plog, partition: int, position: int, end: int, max_bytes: int, timeout_s: float) -> dict:
    """Compare from ``position`` for about ``max_bytes``; returns the step's outcome (see the CLI)."""
    batches = size = 0
    divergence: Divergence | None = None
    source_start = None
    while position < end and size < max_bytes and divergence is None:
        theirs, source_start, source_hw = await fetch_source_batches(runtime, source_topic, partition, position, max_bytes, timeout_s)
        ours = await storage_calls.alongside(read_mirror_batches, plog, position, max_bytes, end)  # a reader, but MBs of it
        result = compare(theirs, ours, position, end)
        batches, size, position, divergence = batches + result.batches, size + result.bytes, result.position, result.divergence
        if divergence is not None or result.batches:
            continue
        # Nothing compared: one side has no batch here.
        if not [b for b in theirs if b.next_offset > position]:
            divergence = Divergence(position, f"the source has no records at offset {position} (its high watermark is {source_hw}) but the mirror holds offsets up to {end - 1}", None, None)
        else:
            first = next(b for b in theirs if b.next_offset > position)
            divergence = Divergence(position, f"the mirror has no batch at offset {position} but the source does (base offset {first.base_offset})", first.crc, None, first.base_offset, None)
    return {"partition": partition, "next_offset": position, "end_offset": end, "batches": batches, "bytes": size, "divergence": divergence.as_dict() if divergence else None, "source_log_start_offset": source_start}
