"""The loop every link task runs (``run_rounds``): rounds at the interval, none while paused, a failed
round recorded and survived. Run under trio's MockClock, so the intervals cost no wall time."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import trio
import trio.testing

from linkd.link.client import SourceProtocolError, SourceUnavailable
from linkd.link.tasks import RoundErrors, run_rounds

log = logging.getLogger("test_tasks")


@dataclass
class Status(RoundErrors):
    last_error: str | None = None
    last_error_code: int | None = None
    last_error_ms: int | None = None
    errors: int = 0


def _run(rounds, *, paused=lambda: False, sleep_first: bool, seconds: float) -> tuple[Status, list[float]]:
    """Run ``rounds`` (one callable per round, in turn) for ``seconds`` of mock time; the mock times at
    which rounds started."""
    status, started = Status(), []
    pending = list(rounds)

    async def round_once():
        started.append(trio.current_time())
        step = pending.pop(0) if pending else (lambda: None)
        step()
        await trio.lowlevel.checkpoint()

    async def main():
        with trio.move_on_after(seconds):
            await run_rounds("L", "the test task", round_once, status, interval_s=lambda: 10.0, paused=paused, sleep_first=sleep_first, logger=log)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return status, started


def _raise(exc: BaseException):
    def step():
        raise exc

    return step


def test_rounds_run_every_interval_first_at_once_or_after_one_interval():
    _status, now = _run([], sleep_first=False, seconds=35)
    assert now == [0, 10, 20, 30]
    _status, later = _run([], sleep_first=True, seconds=35)
    assert later == [10, 20, 30]


def test_a_source_failure_is_recorded_with_its_code_and_the_next_round_still_runs(caplog):
    with caplog.at_level(logging.WARNING, logger="test_tasks"):
        status, started = _run([_raise(SourceUnavailable("broker 1 gone"))], sleep_first=False, seconds=15)
    assert started == [0, 10]
    assert status.errors == 1
    assert status.last_error == "broker 1 gone"
    assert status.last_error_code == 13  # NETWORK_EXCEPTION
    assert any("the test task failed: broker 1 gone" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def test_a_bug_in_a_round_is_logged_with_its_traceback_and_costs_only_that_round(caplog):
    with caplog.at_level(logging.WARNING, logger="test_tasks"):
        status, started = _run([_raise(KeyError("oops")), _raise(SourceProtocolError("bad answer"))], sleep_first=True, seconds=35)
    assert started == [10, 20, 30]
    assert status.errors == 2
    assert status.last_error == "bad answer"
    bug = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(bug) == 1 and bug[0].exc_info is not None and isinstance(bug[0].exc_info[1], KeyError)


def test_a_paused_link_runs_no_round_until_it_resumes():
    resumed_at = 25.0
    status, started = _run([], paused=lambda: trio.current_time() < resumed_at, sleep_first=False, seconds=45)
    assert started == [30, 40]
    assert status.errors == 0
