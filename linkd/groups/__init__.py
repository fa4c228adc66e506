"""Consumer groups: the classic group coordinator and durable committed offsets."""

from .coordinator import (
    GroupConfig,
    GroupCoordinator,
    GroupCoordinatorStatistics,
    GroupEvent,
    GroupSnapshot,
    GroupState,
    MemberSnapshot,
)
from .offsets import CommittedOffset, OffsetStore

__all__ = [
    "CommittedOffset",
    "GroupConfig",
    "GroupCoordinator",
    "GroupCoordinatorStatistics",
    "GroupEvent",
    "GroupSnapshot",
    "GroupState",
    "MemberSnapshot",
    "OffsetStore",
]
