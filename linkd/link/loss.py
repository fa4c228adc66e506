"""What a failover lost: the per-partition loss report recorded at the stop, and the exact lost ranges
once the source has answered again (reconciliation). Pure functions over a mirror's stop record.

A loss count is only ever the source's end *as seen since this process started* minus the stop offset.
An end checkpointed before a restart is shown, with its age, as a lower bound: the source may have grown
while linkd was down, so the count is ``None`` (unknown) until the source is read again, never 0.
"""

from __future__ import annotations

from .mirror import PartitionProgress


def partition_report(partition: int, stop_offset: int, log_end: int, progress: PartitionProgress, stopped_ms: int) -> dict:
    """One partition's entry in a stop record (``stop_info.partitions``): ``stop_offset`` is where
    mirroring of the source stopped, ``log_end`` where new writes continue (after ABORT markers)."""
    seen = progress.source_end()
    if seen >= 0:
        end, seen_ms, since_restart = seen, progress.source_end_seen_ms, True
    elif progress.persisted_end is not None:
        hw, fetched, seen_ms = progress.persisted_end
        end, since_restart = max(hw, fetched), False
    else:
        end, seen_ms, since_restart = None, None, False
    lost = max(end - stop_offset, 0) if since_restart and end is not None else None
    return {
        "partition": partition,
        "stop_offset": stop_offset,
        "mirror_end_offset": log_end,
        "source_end_offset": end,
        "source_end_offset_seen_ms": seen_ms,
        "source_end_offset_age_ms": max(stopped_ms - seen_ms, 0) if seen_ms else None,
        "source_end_offset_seen_since_restart": since_restart,
        "records_possibly_lost": lost,
        "records_possibly_lost_at_least": lost if since_restart else (max(end - stop_offset, 0) if end is not None else None),
        # the old names, kept for one release
        "last_source_offset_seen": end,
        "possible_data_loss_records": lost,
    }


def reconciled(stop_info: dict, latest: dict[int, int], earliest: dict[int, int]) -> dict | None:
    """The ``reconciled`` record for a stop record from the source's end (``latest``) and start
    (``earliest``) offsets per partition, or None when some partition is missing from ``latest``: all
    partitions or none, since a half-known range would read as exact."""
    parts = sorted(p["partition"] for p in stop_info.get("partitions", []))
    if any(part not in latest for part in parts):
        return None
    return {"partitions": [{"partition": part, "source_end_offset": latest[part], "source_log_start_offset": earliest.get(part)} for part in parts]}


def lost_offsets(stop_info: dict | None) -> list[dict] | None:
    """After a failover and once the source answered again: per partition the offsets [from, to) the
    source holds past the stop offset. None until then (unknown)."""
    info = stop_info or {}
    record = info.get("reconciled")
    if not record:
        return None
    stops = {p["partition"]: p["stop_offset"] for p in info.get("partitions", [])}
    out = []
    for e in record["partitions"]:
        start, end = stops[e["partition"]], e["source_end_offset"]
        entry = {"partition": e["partition"], "from": start, "to": max(end, start), "offsets": max(end - start, 0), "source_end_offset": end, "source_log_start_offset": e["source_log_start_offset"], "recorded_ms": record["recorded_ms"]}
        if end < start:
            entry["note"] = f"the source now ends at {end}, before the stop offset {start}: it lost data the mirror holds"
        elif e["source_log_start_offset"] is not None and e["source_log_start_offset"] > start:
            entry["note"] = f"the source no longer holds offsets {start}..{e['source_log_start_offset'] - 1} (retention): they cannot be fetched"
        out.append(entry)
    return out
