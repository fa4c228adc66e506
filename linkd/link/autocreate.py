"""Auto-created mirrors: a link mirrors every source topic its filters include, including ones created on
the source later (``auto.create.mirror.topics.enable`` + ``auto.create.mirror.topics.filters``).

At start and then every ``metadata.max.age.ms`` the link lists the source's topics and creates a mirror
(named ``cluster.link.prefix`` + the source name) for each one that

* some INCLUDE filter matches and no EXCLUDE filter does (exclude wins; LITERAL ``*`` matches all),
* is not internal (a name starting with ``__``: ``__consumer_offsets``, ``__transaction_state`` ...),
  unless a LITERAL INCLUDE filter names it exactly,
* this link does not mirror already, and whose mirror name is free here.

Mirrors are created exactly as by ``mirror create`` (configs read from the source first), a round's all
at once so they share source lookups and commits (creations.py); one that fails to create is reported in
the link's ``auto_create`` status and tried again next round.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .errors import DomainError
from .groupfilter import GroupFilter
from .states import LinkState
from .tasks import RoundErrors, judge, now_ms, report, run_rounds

log = logging.getLogger(__name__)


def is_internal(topic: str) -> bool:
    return topic.startswith("__")


@dataclass
class AutoCreateStatus(RoundErrors):
    enabled: bool
    interval_ms: int
    last_run_ms: int | None = None  # the last round that ran to the end
    last_error: str | None = None  # set while the last round failed or could not create some mirror
    last_error_code: int | None = None
    last_error_ms: int | None = None
    runs: int = 0
    errors: int = 0  # rounds that failed or could not create some mirror, since start
    created: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**self.__dict__, "created": list(self.created)}


TASK_NAME = "AutoCreateMirror"


class AutoCreate:
    def __init__(self, runtime, mirrors, topics, create_mirror: Callable[[str, str, str], Awaitable[str]]) -> None:
        self._runtime = runtime
        self._mirrors = mirrors  # () -> list[Mirror] of this link
        self._topics = topics
        self._create_mirror = create_mirror  # (mirror topic, link, source topic) -> its name
        settings = runtime.settings
        self.filter = GroupFilter.parse(settings.auto_create_filters, key="topicFilters")
        self.prefix = settings.prefix
        self.status = AutoCreateStatus(settings.auto_create_enable, settings.metadata_max_age_ms)

    def wanted(self, source_topics: list[str]) -> list[str]:
        """The source topics the filters include, internal ones only when named exactly."""
        return [t for t in source_topics if self.filter.includes(t) and (not is_internal(t) or self.filter.names_literally(t))]

    def task(self) -> dict:
        """The task's health as ``link describe`` and /metrics show it."""
        st = self.status
        if not st.enabled:
            not_configured = "auto.create.mirror.topics.enable is false"
        elif not any(f.include for f in self.filter.filters):
            not_configured = "no auto.create.mirror.topics.filters"
        else:
            not_configured = None
        state, reason = judge(self._runtime.state == LinkState.PAUSED, st.last_error, not_configured)
        return report(TASK_NAME, state, reason, last_success_ms=st.last_run_ms, last_error_code=st.last_error_code, last_error_message=st.last_error,
                      last_error_ms=st.last_error_ms, runs=st.runs, errors=st.errors)

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.status.enabled:
            return
        await run_rounds(self._runtime.name, "auto-create of mirror topics", self.run_once, self.status, interval_s=lambda: self.status.interval_ms / 1000,
                         paused=lambda: self._runtime.state == LinkState.PAUSED, sleep_first=False, logger=log)

    async def run_once(self) -> list[str]:
        listed = await self._runtime.source.metadata(None)
        mirrored = {m.source_topic for m in self._mirrors()}
        wanted = [t for t in self.wanted(sorted(listed)) if t not in mirrored and self._topics.get(self.prefix + t) is None]
        created: list[str] = []
        errors: dict[str, DomainError] = {}

        async def create(source_topic: str) -> None:
            name = self.prefix + source_topic
            try:
                await self._create_mirror(name, self._runtime.name, source_topic)
            except DomainError as exc:
                errors[source_topic] = exc
                log.warning("link %s: cannot auto-create mirror %s of %s: %s", self._runtime.name, name, source_topic, exc.message)
                return
            created.append(name)
            log.info("link %s: auto-created mirror %s of source topic %s", self._runtime.name, name, source_topic)

        # All at once: creations asked for together share their source lookups and commits (creations.py),
        # so a source with a thousand new topics is a few batches, not a thousand creations in a row.
        async with trio.open_nursery() as nursery:
            for source_topic in wanted:
                nursery.start_soon(create, source_topic)
        created.sort()
        self.status.created.extend(created)
        self.status.last_run_ms = now_ms()
        self.status.runs += 1
        if errors:
            failed = [errors[t] for t in sorted(errors)]
            self.status.failed(failed[0].error_code, "; ".join(f"{t}: {errors[t].message}" for t in sorted(errors)))
        else:
            self.status.last_error = self.status.last_error_code = None
        return created
