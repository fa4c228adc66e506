"""The client side of an incremental fetch session (KIP-227) with one source broker.

A full Fetch names every partition; once the broker has given the session an id, each later Fetch names
only the partitions whose request fields changed (their fetch offset, mostly) and lists the ones to drop
as forgotten, and the broker answers only for partitions with something new. A link carrying many quiet
partitions then sends and receives a few bytes per round instead of all of them.

The broker's idea of the session must always equal what the link wants to fetch. So the session keeps
what the broker holds after each answered request, and starts over (a full Fetch asking for a new
session) whenever that is in doubt: a session error from the broker, a different session id, or a request
that got no answer. A broker that does not keep sessions (session id 0 in every answer, as Tansu) is
simply asked in full every time.
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
        self._held: dict[Key, dict] = {}  # what the broker's session holds, per partition
        self._pending: dict[Key, dict] | None = None  # what it will hold once the request in flight is answered

    def build(self, wanted: dict[Key, dict]) -> dict:
        """The session fields of the next Fetch for ``wanted`` (partition -> its request entry): a dict with
        ``session_id``, ``session_epoch``, ``topics`` and ``forgotten_topics_data``."""
        if self.session_id == 0:
            send, forgotten = wanted, []
        else:
            send = {key: entry for key, entry in wanted.items() if self._held.get(key) != entry}
            forgotten = [key for key in self._held if key not in wanted]
        self._pending = dict(wanted)
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
        if self.session_id == 0:
            if session_id != 0:
                self.session_id, self.epoch, self._held, self.answered_ms = session_id, 1, pending, now_ms
            return  # no session granted: the next request is a full one again
        if session_id != self.session_id:
            self.reset()
            return
        self._held = pending
        self.epoch = self.epoch + 1 if self.epoch < MAX_EPOCH else 1
        self.answered_ms = now_ms

    def reset(self) -> None:
        """Forget the session: the next request is a full one asking for a new session."""
        self.session_id, self.epoch, self._held, self._pending, self.answered_ms = 0, 0, {}, None, 0


def _by_topic(items) -> list[dict]:
    """((topic, partition), entry) pairs as a Fetch request's per-topic list."""
    topics: dict[str, list] = {}
    for (topic, _partition), entry in items:
        topics.setdefault(topic, []).append(entry)
    return [{"topic": t, "partitions": entries} for t, entries in topics.items()]
