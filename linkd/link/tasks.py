"""Link task health, with Cluster Linking's task and state names (``include_tasks``).

Every background task of a link (``ConsumerOffsetSync``, ``TopicConfigsSync``, ``AutoCreateMirror``,
``AclSync``) reports the same shape: a state, why (for anything but ACTIVE), when its last round ran to
the end, and the last error's code, message and time while the task is in error. ``link describe``,
REST and the ``linkd_link_task_state`` metric all read these dicts.
"""

from __future__ import annotations

import time
from enum import StrEnum

from protocol.errors import ErrorCode

from .client import SourceProtocolError, SourceUnavailable


class TaskState(StrEnum):
    ACTIVE = "ACTIVE"
    IN_ERROR = "IN_ERROR"
    NOT_CONFIGURED = "NOT_CONFIGURED"
    LINK_PAUSED = "LINK_PAUSED"


def now_ms() -> int:
    return int(time.time() * 1000)


def error_code_of(exc: BaseException) -> int:
    """The Kafka error code a failed round is reported with."""
    code = getattr(exc, "error_code", None)
    if code is not None:
        return int(code)
    if isinstance(exc, SourceUnavailable):
        return int(ErrorCode.NETWORK_EXCEPTION)
    return int(ErrorCode.UNKNOWN_SERVER_ERROR)


def error_message_of(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, SourceUnavailable | SourceProtocolError) else repr(exc)


def judge(paused: bool, last_error: str | None, not_configured: str | None = None) -> tuple[TaskState, str | None]:
    """A task's state and reason, in Cluster Linking's order: not configured, then a paused link, then the
    last round's error."""
    if not_configured is not None:
        return TaskState.NOT_CONFIGURED, not_configured
    if paused:
        return TaskState.LINK_PAUSED, "the link is paused"
    if last_error is not None:
        return TaskState.IN_ERROR, last_error
    return TaskState.ACTIVE, None


def report(name: str, state: TaskState, reason: str | None, *, last_success_ms: int | None = None, last_error_code: int | None = None,
           last_error_message: str | None = None, last_error_ms: int | None = None, runs: int = 0, errors: int = 0) -> dict:
    in_error = last_error_message is not None
    return {
        "task_name": name,
        "state": state.value,
        "state_reason": reason,
        "last_success_ms": last_success_ms,
        "last_error_code": last_error_code if in_error else None,
        "last_error_message": last_error_message,
        "last_error_ms": last_error_ms if in_error else None,
        "runs": runs,
        "errors": errors,
    }


def link_tasks(entry) -> list[dict]:
    """Every task of one link (a ``LinkEntry``), in Cluster Linking's order."""
    from . import aclsync

    return [entry.offset_sync.task(), entry.auto_create.task(), entry.config_sync.task(), aclsync.task(entry)]
