"""``CleanState``: one partition's line of the log directory's clean-shutdown checkpoints (see ``logdir``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CleanState:
    """What a clean close left this partition at: its log end (the marker's check), recovery point and log
    start, as its own checkpoint files hold them. A log opened with one skips reading those files."""

    log_end: int
    recovery_point: int
    log_start: int
