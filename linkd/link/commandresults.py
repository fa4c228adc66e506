"""What a mirror command (promote, failover, pause, resume) answers per topic, and its ``validate_only``
dry run: the answers the command would give, from the transition table and the command's own first checks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol.errors import ErrorCode

from .errors import DomainError
from .mirror import Mirror
from .states import InvalidTransition, LinkState, MirrorEvent, MirrorState, next_state
from .status import CommandResult, StopSummary

if TYPE_CHECKING:
    from .manager import LinkManager


def result(topic: str, code: int = ErrorCode.NONE, message: str | None = None, **fields) -> CommandResult:
    return CommandResult(topic, int(code), message, **fields)


def deleted_while_promoting(topic: str) -> CommandResult:
    return result(topic, ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"mirror topic '{topic}' was deleted while it was being promoted")


def stop_summary(mirror: Mirror) -> StopSummary:
    info = mirror.stop_info or {}
    return StopSummary(
        kind=info.get("kind"),
        offsets=info.get("partitions", []),
        records_possibly_lost=info.get("records_possibly_lost", info.get("possible_data_loss_records")),
        aborted_transactions=info.get("aborted_transactions", []),
    )


COMMAND_EVENTS = {"promote": MirrorEvent.PROMOTE, "failover": MirrorEvent.FAILOVER, "pause": MirrorEvent.PAUSE, "resume": MirrorEvent.RESUME}


def validate_command(m: LinkManager, action: str, topics: list[str]) -> list[CommandResult]:
    """``validate_only``: what ``action`` would answer for each topic, from the transition table and the
    checks the command itself makes first; nothing is applied, persisted or fetched. A promote that would
    pass here can still time out waiting for lag 0 when it runs."""
    event = COMMAND_EVENTS[action]
    stops = action in ("promote", "failover")
    out = []
    for topic in dict.fromkeys(topics):
        try:
            mirror = m.mirror(topic)
        except DomainError as exc:
            out.append(result(topic, exc.error_code, exc.message, validate_only=True))
            continue
        partitions = tuple(m.partition_status(mirror)) if stops else None
        now = mirror.state.reported
        if stops and mirror.state in (MirrorState.STOPPED, MirrorState.FINALIZING):
            out.append(result(topic, mirror_status=MirrorState.STOPPED.value, partitions=partitions, validate_only=True))
            continue
        entry = m.links.get(mirror.link)
        if action == "promote" and entry is None:
            out.append(result(topic, ErrorCode.INVALID_REQUEST, f"link '{mirror.link}' no longer exists; use failover", mirror_status=now, validate_only=True))
            continue
        if action == "promote" and (mirror.state == MirrorState.SOURCE_UNAVAILABLE or (entry is not None and entry.runtime.state == LinkState.UNAVAILABLE)):
            out.append(result(topic, ErrorCode.BROKER_NOT_AVAILABLE, "promote needs the source cluster reachable; it is not (use failover to stop without it)", mirror_status=now, partitions=partitions, validate_only=True))
            continue
        try:
            after = next_state(mirror.state, event)
        except InvalidTransition as exc:
            out.append(result(topic, ErrorCode.INVALID_REQUEST, str(exc), mirror_status=now, partitions=partitions, validate_only=True))
            continue
        would_be = MirrorState.STOPPED.value if stops else after.reported
        out.append(result(topic, mirror_status=would_be, partitions=partitions, validate_only=True))
    return out
