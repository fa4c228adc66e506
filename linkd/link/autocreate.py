"""Auto-created mirrors: a link mirrors every source topic its filters include, including ones created on
the source later (``auto.create.mirror.topics.enable`` + ``auto.create.mirror.topics.filters``).

At start and then every ``metadata.max.age.ms`` the link lists the source's topics and creates a mirror
(named ``cluster.link.prefix`` + the source name) for each one that

* some INCLUDE filter matches and no EXCLUDE filter does (exclude wins; LITERAL ``*`` matches all),
* is not internal (a name starting with ``__``: ``__consumer_offsets``, ``__transaction_state`` ...),
  unless a LITERAL INCLUDE filter names it exactly,
* this link does not mirror already, and whose mirror name is free here.

Mirrors are created exactly as by ``mirror create`` (configs read from the source first), so one that
fails to create is reported in the link's ``auto_create`` status and tried again next round.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from .client import SourceProtocolError, SourceUnavailable
from .groupfilter import GroupFilter

log = logging.getLogger(__name__)


def is_internal(topic: str) -> bool:
    return topic.startswith("__")


@dataclass
class AutoCreateStatus:
    enabled: bool
    interval_ms: int
    last_run_ms: int | None = None
    last_error: str | None = None
    created: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {**self.__dict__, "created": list(self.created)}


class AutoCreate:
    def __init__(self, runtime, mirrors, topics, create_mirror: Callable[[str, str, str], Awaitable[dict]]) -> None:
        self._runtime = runtime
        self._mirrors = mirrors  # () -> list[Mirror] of this link
        self._topics = topics
        self._create_mirror = create_mirror  # (mirror topic, link, source topic) -> described mirror
        settings = runtime.settings
        self.filter = GroupFilter.parse(settings.auto_create_filters, key="topicFilters")
        self.prefix = settings.prefix
        self.status = AutoCreateStatus(settings.auto_create_enable, settings.metadata_max_age_ms)

    def wanted(self, source_topics: list[str]) -> list[str]:
        """The source topics the filters include, internal ones only when named exactly."""
        return [t for t in source_topics if self.filter.includes(t) and (not is_internal(t) or self.filter.names_literally(t))]

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if not self.status.enabled:
            return
        while True:
            try:
                await self.run_once()
            except (SourceUnavailable, SourceProtocolError) as exc:
                self.status.last_error = str(exc)
                log.warning("link %s: auto-create could not list the source topics: %s", self._runtime.name, exc)
            except Exception as exc:  # a malformed answer or a bug: this round is lost, not the daemon
                self.status.last_error = repr(exc)
                log.exception("link %s: auto-create round failed", self._runtime.name)
            await trio.sleep(self.status.interval_ms / 1000)

    async def run_once(self) -> list[str]:
        from .manager import AdminError  # the manager imports this module

        listed = await self._runtime.source.metadata(None)
        mirrored = {m.source_topic for m in self._mirrors()}
        created, errors = [], []
        for source_topic in self.wanted(sorted(listed)):
            name = self.prefix + source_topic
            if source_topic in mirrored or self._topics.get(name) is not None:
                continue
            try:
                await self._create_mirror(name, self._runtime.name, source_topic)
            except AdminError as exc:
                errors.append(f"{source_topic}: {exc.message}")
                log.warning("link %s: cannot auto-create mirror %s of %s: %s", self._runtime.name, name, source_topic, exc.message)
                continue
            created.append(name)
            log.info("link %s: auto-created mirror %s of source topic %s", self._runtime.name, name, source_topic)
        self.status.created.extend(created)
        self.status.last_run_ms = int(time.time() * 1000)
        self.status.last_error = "; ".join(errors) or None
        return created
