"""Mirror and link state machines, as transition tables.

Theory of operation
-------------------
A mirror topic starts ``ACTIVE``: its link fetches from the source and appends verbatim. An operator can
``pause`` it (no fetching) and ``resume`` it. When the source cannot be reached the fetcher reports
``source_lost`` and the mirror waits in ``SOURCE_UNAVAILABLE`` until ``source_back``.

Two ways out make the topic writable, and neither can be undone:

* ``promote`` (planned migration) moves to ``PENDING_STOPPED`` while the link catches up to the source's
  end and runs a final consumer-offset sync; ``commit_stop`` then moves to ``FINALIZING``. If the source is
  unreachable or the lag does not reach zero in time, ``promote_abort`` returns the mirror to ``ACTIVE``.
* ``failover`` (disaster) goes straight to ``FINALIZING`` from any state, dropping the unreplicated tail.

``FINALIZING`` is the committed stop: it is persisted with the new leader epoch before anything else, no
fetch or sync touches the mirror any more, and the finishing steps (ABORT markers, producer-id floor,
flush, stop offsets) end with ``finalized`` in ``STOPPED``. A restart that finds a mirror ``FINALIZING``
runs the finishing steps again (they are idempotent); nothing leads back from it. Reported to clients it
reads as ``PENDING_STOPPED`` (Confluent's status names; the REST and CLI contract).

A partition that receives data it cannot append (corrupt batch, source truncation that cannot be
resolved, source topic gone) sends the mirror to ``FAILED`` with a typed ``mirror_topic_error``.
``FAILED`` still allows ``failover``, which is how an operator recovers what was mirrored.

Repeating a command that already took effect is harmless: ``pause`` on ``PAUSED``, ``promote`` and
``failover`` on ``STOPPED`` map a state to itself. Anything not in the table is rejected and leaves the
mirror unchanged.
"""

from __future__ import annotations

import enum


class MirrorState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    SOURCE_UNAVAILABLE = "SOURCE_UNAVAILABLE"
    PENDING_STOPPED = "PENDING_STOPPED"
    FINALIZING = "FINALIZING"
    STOPPED = "STOPPED"
    FAILED = "FAILED"

    @property
    def reported(self) -> str:
        """The status name clients see (REST, CLI, metrics): FINALIZING is a kind of PENDING_STOPPED."""
        return "PENDING_STOPPED" if self is MirrorState.FINALIZING else self.value


class MirrorEvent(enum.StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    SOURCE_LOST = "source_lost"
    SOURCE_BACK = "source_back"
    FAIL = "fail"
    PROMOTE = "promote"
    COMMIT_STOP = "commit_stop"
    PROMOTE_ABORT = "promote_abort"
    FAILOVER = "failover"
    FINALIZED = "finalized"


class MirrorError(enum.StrEnum):
    NONE = "NO_ERROR"
    SOURCE_TOPIC_MAY_BE_DELETED = "SOURCE_TOPIC_MAY_BE_DELETED"
    SOURCE_PARTITIONS_DECREASED = "SOURCE_PARTITIONS_DECREASED"
    UNEXPECTED_TRUNCATION = "UNEXPECTED_TRUNCATION"
    CORRUPT_BATCH = "CORRUPT_BATCH"
    UNSUPPORTED_MESSAGE_FORMAT = "UNSUPPORTED_MESSAGE_FORMAT"
    SOURCE_DATA_LOST = "SOURCE_DATA_LOST"
    # Not a failure: the mirror waits in SOURCE_UNAVAILABLE until the source grants Describe/Read again.
    TOPIC_AUTHORIZATION_FAILED = "TOPIC_AUTHORIZATION_FAILED"


S, E = MirrorState, MirrorEvent

MIRROR_TRANSITIONS: dict[tuple[MirrorState, MirrorEvent], MirrorState] = {
    (S.ACTIVE, E.PAUSE): S.PAUSED,
    (S.ACTIVE, E.RESUME): S.ACTIVE,
    (S.ACTIVE, E.SOURCE_LOST): S.SOURCE_UNAVAILABLE,
    (S.ACTIVE, E.SOURCE_BACK): S.ACTIVE,
    (S.ACTIVE, E.FAIL): S.FAILED,
    (S.ACTIVE, E.PROMOTE): S.PENDING_STOPPED,
    (S.ACTIVE, E.FAILOVER): S.FINALIZING,
    (S.PAUSED, E.PAUSE): S.PAUSED,
    (S.PAUSED, E.RESUME): S.ACTIVE,
    (S.PAUSED, E.FAIL): S.FAILED,
    (S.PAUSED, E.PROMOTE): S.PENDING_STOPPED,
    (S.PAUSED, E.FAILOVER): S.FINALIZING,
    (S.SOURCE_UNAVAILABLE, E.PAUSE): S.PAUSED,
    (S.SOURCE_UNAVAILABLE, E.SOURCE_LOST): S.SOURCE_UNAVAILABLE,
    (S.SOURCE_UNAVAILABLE, E.SOURCE_BACK): S.ACTIVE,
    (S.SOURCE_UNAVAILABLE, E.FAIL): S.FAILED,
    (S.SOURCE_UNAVAILABLE, E.FAILOVER): S.FINALIZING,
    (S.PENDING_STOPPED, E.PROMOTE): S.PENDING_STOPPED,
    (S.PENDING_STOPPED, E.COMMIT_STOP): S.FINALIZING,
    (S.PENDING_STOPPED, E.PROMOTE_ABORT): S.ACTIVE,
    (S.PENDING_STOPPED, E.SOURCE_LOST): S.PENDING_STOPPED,
    (S.PENDING_STOPPED, E.SOURCE_BACK): S.PENDING_STOPPED,
    (S.PENDING_STOPPED, E.FAIL): S.FAILED,
    (S.PENDING_STOPPED, E.FAILOVER): S.FINALIZING,
    (S.FINALIZING, E.PROMOTE): S.FINALIZING,
    (S.FINALIZING, E.FAILOVER): S.FINALIZING,
    (S.FINALIZING, E.FINALIZED): S.STOPPED,
    (S.STOPPED, E.PROMOTE): S.STOPPED,
    (S.STOPPED, E.FAILOVER): S.STOPPED,
    (S.FAILED, E.FAIL): S.FAILED,
    (S.FAILED, E.FAILOVER): S.FINALIZING,
}

# Derived sets: the only place that says which states do what.
FETCHING_STATES = frozenset({S.ACTIVE, S.SOURCE_UNAVAILABLE, S.PENDING_STOPPED})  # the link fetches for the mirror
SYNCED_STATES = frozenset({S.ACTIVE, S.PAUSED, S.SOURCE_UNAVAILABLE, S.PENDING_STOPPED})  # offset and config syncs follow the source
WATCHED_STATES = SYNCED_STATES  # the source's end offsets are kept fresh (lag, loss report)
WRITABLE_STATES = frozenset({S.STOPPED})  # the topic is promoted: clients write to it


class InvalidTransition(Exception):
    def __init__(self, state: MirrorState | LinkState, event: MirrorEvent | LinkEvent) -> None:
        super().__init__(f"cannot {event.value.replace('_', ' ')} a mirror in state {state.value}")
        self.state = state
        self.event = event


def next_state(state: MirrorState, event: MirrorEvent) -> MirrorState:
    try:
        return MIRROR_TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


class LinkState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    UNAVAILABLE = "UNAVAILABLE"
    FAILED = "FAILED"


class LinkEvent(enum.StrEnum):
    PAUSE = "pause"  # link.paused set
    RESUME = "resume"  # link.paused cleared
    SOURCE_LOST = "source_lost"  # a metadata refresh could not reach or authenticate to the source
    SOURCE_BACK = "source_back"  # a metadata refresh answered
    LOCK = "lock"  # the link's stored secrets do not open with this daemon's key: it cannot run


L, LE = LinkState, LinkEvent

# A paused link stays paused whatever its source does; FAILED (locked) is final for this process.
LINK_TRANSITIONS: dict[tuple[LinkState, LinkEvent], LinkState] = {
    **{(state, LE.PAUSE): L.PAUSED for state in (L.ACTIVE, L.PAUSED, L.UNAVAILABLE)},
    **{(state, LE.LOCK): L.FAILED for state in LinkState},
    (L.ACTIVE, LE.RESUME): L.ACTIVE,
    (L.PAUSED, LE.RESUME): L.ACTIVE,
    (L.UNAVAILABLE, LE.RESUME): L.UNAVAILABLE,
    (L.ACTIVE, LE.SOURCE_LOST): L.UNAVAILABLE,
    (L.UNAVAILABLE, LE.SOURCE_LOST): L.UNAVAILABLE,
    (L.PAUSED, LE.SOURCE_LOST): L.PAUSED,
    (L.ACTIVE, LE.SOURCE_BACK): L.ACTIVE,
    (L.UNAVAILABLE, LE.SOURCE_BACK): L.ACTIVE,
    (L.PAUSED, LE.SOURCE_BACK): L.PAUSED,
}


def next_link_state(state: LinkState, event: LinkEvent) -> LinkState:
    try:
        return LINK_TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None
