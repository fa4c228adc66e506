"""Link task health, with Cluster Linking's task and state names (``include_tasks``).

Every background task of a link (``ConsumerOffsetSync``, ``TopicConfigsSync``, ``AutoCreateMirror``,
``AclSync``) reports the same shape: a state, why (for anything but ACTIVE), when its last round ran to
the end, and the last error's code, message and time while the task is in error. ``link describe``,
REST and the ``linkd_link_task_state`` metric all read these dicts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

import trio

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


class RoundErrors:
    """What a task status records of a failed round: its last error's message, code and time, and how many
    rounds failed since start. Mixed into each task's status dataclass, which declares the fields."""

    last_error: str | None
    last_error_code: int | None
    last_error_ms: int | None
    errors: int

    def failed(self, code: int, message: str) -> None:
        self.last_error, self.last_error_code, self.last_error_ms = message, code, now_ms()
        self.errors += 1

    def failed_with(self, exc: BaseException) -> None:
        self.failed(error_code_of(exc), error_message_of(exc))


async def run_rounds(link: str, what: str, round_once: Callable[[], Awaitable[object]], status: RoundErrors, *, interval_s: Callable[[], float],
                     paused: Callable[[], bool], sleep_first: bool, logger: logging.Logger) -> None:
    """A link task's loop: one round every ``interval_s()`` while the link is not paused (a paused link
    pauses its tasks, as Cluster Linking does). A round that fails is recorded in ``status`` and logged;
    the next round runs as usual. The source failing is a warning, anything else (a malformed answer, a
    bug) an error with its traceback: either way this round is lost, never the link or the daemon."""
    while True:
        if sleep_first:
            await trio.sleep(interval_s())
        if not paused():
            try:
                await round_once()
            except (SourceUnavailable, SourceProtocolError) as exc:
                status.failed_with(exc)
                logger.warning("link %s: %s failed: %s", link, what, exc)
            except Exception as exc:
                status.failed_with(exc)
                logger.exception("link %s: %s failed", link, what)
        if not sleep_first:
            await trio.sleep(interval_s())


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
