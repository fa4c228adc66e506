"""The one way a mirror changes state: ``MirrorTransitions.apply`` persists the transition and runs every
side effect of it, wherever it was asked for (the link's fetchers, an operator command, a promotion).

Side effects, in order, only when the state changed: the topic's role follows (``WRITABLE_STATES`` make it
promoted, any other a read-only mirror); the mirror's link is woken for the events an operator sends (it
re-reads the assignment at once instead of at its next refresh); waiters on the mirror's progress (a
promotion) are woken; consumers long-polling the topic are notified; the change is logged. Everything here
runs on the daemon's event loop; the persisting is one control-store transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from ..topics import TopicRole
from .mirror import Mirror
from .states import WRITABLE_STATES, MirrorError, MirrorEvent, MirrorState
from .store import MirrorStore

log = logging.getLogger(__name__)

# Events an operator sends: the link must look again at once (start or stop fetching the mirror).
WAKING_EVENTS = frozenset({MirrorEvent.PAUSE, MirrorEvent.RESUME, MirrorEvent.PROMOTE, MirrorEvent.PROMOTE_ABORT, MirrorEvent.COMMIT_STOP, MirrorEvent.FAILOVER})


def role_for(state: MirrorState) -> TopicRole:
    return TopicRole.PROMOTED if state in WRITABLE_STATES else TopicRole.MIRROR


class MirrorTransitions:
    def __init__(self, store: MirrorStore, topics, notify: Callable[[], None], wake_link: Callable[[str], None]) -> None:
        self.store = store
        self._topics = topics
        self._notify = notify
        self._wake_link = wake_link
        self._changed: dict[str, trio.Event] = {}

    def apply(self, mirror: Mirror, event: MirrorEvent, error: MirrorError | None = None, message: str | None = None, stop_info: dict | None = None) -> MirrorState:
        """Apply ``event`` to ``mirror`` (raises ``InvalidTransition``, changing nothing, when the table has
        no such transition), persist it and run its side effects. Returns the new state."""
        before = mirror.state
        self.store.transition(mirror, event, error, message, stop_info)
        if mirror.state != before:
            log.info("mirror %s: %s -> %s%s", mirror.topic, before.value, mirror.state.value, f" ({message})" if message else "")
            self.sync_role(mirror)
            if event in WAKING_EVENTS:
                self._wake_link(mirror.link)
            self.progressed(mirror)
            self._notify()
        return mirror.state

    def sync_role(self, mirror: Mirror) -> None:
        """The topic's role as the mirror's state says (at load, and after every change)."""
        if self._topics.get(mirror.topic) is not None:
            self._topics.set_role(mirror.topic, role_for(mirror.state))

    # -- progress events (a promotion waits on these instead of polling) --------------------------

    def progressed(self, mirror: Mirror) -> None:
        """Something a waiter on ``mirror`` may be waiting for happened (a state change, a fetch answer)."""
        event = self._changed.pop(mirror.topic, None)
        if event is not None:
            event.set()

    def change_event(self, mirror: Mirror) -> trio.Event:
        """An event set at the mirror's next progress."""
        event = self._changed.get(mirror.topic)
        if event is None:
            event = self._changed[mirror.topic] = trio.Event()
        return event
