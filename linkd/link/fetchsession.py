"""The client side of an incremental fetch session (KIP-227) with one source broker.

A full Fetch names every partition; once the broker has given the session an id, each later Fetch names
only the partitions whose request fields changed (their fetch offset, mostly) and lists the ones to drop
as forgotten, and the broker answers only for partitions with something new. A link carrying many quiet
partitions then sends and receives a few bytes per round instead of all of them.

The session keeps what the link wants (``want`` / ``drop``, one partition at a time, so a round that
changes a few of 10,000 partitions costs a few, not 10,000) and what the broker holds after each
answered request. Invariant: after every answered request the broker's idea of the session equals what
the link wanted when it was built, so the session starts over (a full Fetch asking for a new session)
whenever that is in doubt: a session error from the broker, a different session id, or a request that
got no answer. A broker that does not keep sessions (session id 0 in every answer, as Tansu) is simply
asked in full every time.
"""

from __future__ import annotations

import time

from protocol.errors import ErrorCode

MAX_EPOCH = 2**31 - 1
SESSION_ERRORS = (ErrorCode.FETCH_SESSION_ID_NOT_FOUND, ErrorCode.INVALID_FETCH_SESSION_EPOCH)

Key = tuple[str, int]  # (topic, partition)


class FetchSession:
    def __init__(self) -> None:
        self.session_id = 0
        self.answered_ms = 0  # when the broker last answered inside the session (0: no session)
        self.epoch = 0  # the epoch the next request carries; 0 with no session asks for a new one
        self._wanted: dict[Key, dict] = {}  # what the link wants fetched, per partition
        self._changed: set[Key] = set()  # keys whose wanted entry may differ from the held one
        self._held: dict[Key, dict] = {}  # what the broker's session holds, per partition
        # What the broker will hold once the request in flight is answered: the whole session (a full
        # request), or the entries sent and the keys forgotten (an incremental one).
        self._pending: tuple[dict[Key, dict] | None, dict[Key, dict], list[Key]] | None = None

    def want(self, key: Key, entry: dict) -> None:
        """Fetch ``key`` with request ``entry`` from the next request on."""
        if self._wanted.get(key) != entry:
            self._wanted[key] = entry
            self._changed.add(key)

    def drop(self, key: Key) -> None:
        """Stop fetching ``key``."""
        if self._wanted.pop(key, None) is not None:
            self._changed.add(key)

    def wanted(self) -> dict[Key, dict]:
        return self._wanted

    def build(self, wanted: dict[Key, dict] | None = None) -> dict:
        """The session fields of the next Fetch: a dict with ``session_id``, ``session_epoch``, ``topics``
        and ``forgotten_topics_data``. With ``wanted`` (partition -> its request entry), that becomes what
        the link wants first (every partition not in it is dropped)."""
        if wanted is not None:
            for key in [k for k in self._wanted if k not in wanted]:
                self.drop(key)
            for key, entry in wanted.items():
                self.want(key, entry)
        changed, self._changed = self._changed, set()
        forgotten: list[Key]
        if self.session_id == 0:
            send, forgotten = dict(self._wanted), []
            self._pending = (send, send, forgotten)
        else:
            held, wanted_now = self._held, self._wanted
            send = {key: wanted_now[key] for key in changed if key in wanted_now and held.get(key) != wanted_now[key]}
            forgotten = [key for key in changed if key not in wanted_now and key in held]
            self._pending = (None, send, forgotten)
        return {
            "session_id": self.session_id,
            "session_epoch": self.epoch,
            "topics": _by_topic(send.items()),
            "forgotten_topics_data": _by_topic((key, key[1]) for key in forgotten),
        }

    def holds(self, key: Key) -> bool:
        """The broker's session holds ``key``: an answer in the session that leaves it out says it has not
        changed (high watermark, log start, records) since it was last answered for."""
        return self.session_id != 0 and key in self._held

    def answered(self, error_code: int, session_id: int, now_ms: int | None = None) -> None:
        """Record the broker's answer (at ``now_ms``, epoch ms; the wall clock when not given) to the request
        ``build`` made."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        pending, self._pending = self._pending, None
        if pending is None or error_code != ErrorCode.NONE:
            # A session error, or a request that failed as a whole: whether the broker applied it is not known.
            self.reset()
            return
        full, sent, forgotten = pending
        if self.session_id == 0:
            if session_id != 0:
                assert full is not None
                self.session_id, self.epoch, self._held, self.answered_ms = session_id, 1, full, now_ms
                self._changed.update(key for key, entry in self._wanted.items() if full.get(key) is not entry)
                self._changed.update(key for key in full if key not in self._wanted)
            return  # no session granted: the next request is a full one again
        if session_id != self.session_id:
            self.reset()
            return
        for key in forgotten:
            self._held.pop(key, None)
        self._held.update(sent)
        self.epoch = self.epoch + 1 if self.epoch < MAX_EPOCH else 1
        self.answered_ms = now_ms

    def reset(self) -> None:
        """Forget the session: the next request is a full one asking for a new session (of what the link
        still wants)."""
        self.session_id, self.epoch, self._held, self._pending, self.answered_ms = 0, 0, {}, None, 0
        self._changed = set()


def _by_topic(items) -> list[dict]:
    """((topic, partition), entry) pairs as a Fetch request's per-topic list."""
    topics: dict[str, list] = {}
    for (topic, _partition), entry in items:
        topics.setdefault(topic, []).append(entry)
    return [{"topic": t, "partitions": entries} for t, entries in topics.items()]
