"""What a fetcher's next Fetch asks, kept between rounds, so an idle round costs O(changed partitions).

The fetch session (``FetchSession``) holds each partition's request entry (fetch offset, size, leader
epoch). An entry changes only when something happens to its partition, and the fetcher knows every such
thing: an answer for it (data, an error, a truncation), its append ending (landed or refused), its
validation. Those partitions are *touched*, and only their entries are computed again; a change of the
partition set (assignment, a mirror paused or deleted) or of what every entry depends on (the settings,
the size a partition far behind may grow to) recomputes them all. An idle round with 10,000 quiet
partitions then costs one pass to see that the set is unchanged, and nothing per partition.

Runs on the link's event loop; reads the logs' ends (no I/O).
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from .fetchsession import FetchSession, Key
from .mirror import Mirror, PartitionProgress
from .partition import fetch_position
from .wire import fetch_partition

Item = tuple[Mirror, PartitionProgress]


class FetchPlan:
    def __init__(self, session: FetchSession) -> None:
        self.session = session
        self.by_key: dict[Key, Item] = {}  # the partitions the next request fetches, by (source topic, partition)
        self._parts: list[Item] = []  # the partitions of the last update, fetched or not
        self._everyone: dict[int, Item] = {}  # the same, by id() of their progress records
        self._keys: dict[int, Key] = {}  # id(progress) -> its key
        self._touched: set[int] = set()
        self._everything = True  # recompute every entry at the next update

    def touch(self, progress: PartitionProgress) -> None:
        """Something happened to this partition: its entry is computed again at the next update."""
        self._touched.add(id(progress))

    def touch_all(self) -> None:
        self._everything = True

    def update(self, parts: list[Item], topics, max_bytes: Callable[[PartitionProgress], int]) -> None:
        """Make the session want exactly the validated partitions of ``parts`` (``topics``: the registry
        their logs are in; ``max_bytes``: a partition's ``partition_max_bytes``)."""
        # The same (mirror, progress) tuples as last round, compared by identity (in C): ``==`` would
        # compare the dataclasses' fields, and a mirror deleted and created again looks equal.
        if len(parts) != len(self._parts) or any(map(operator.is_not, parts, self._parts)):
            self._parts = parts
            everyone = {id(item[1]): item for item in parts}
            for gone in self._everyone.keys() - everyone.keys():
                self._forget(gone)
            self._touched |= everyone.keys() - self._everyone.keys()
            self._everyone = everyone
        everyone = self._everyone
        if self._everything:
            todo = list(everyone.values())
        else:
            todo = [everyone[i] for i in self._touched if i in everyone]
        self._touched, self._everything = set(), False
        for mirror, progress in todo:
            key = (mirror.source_topic, progress.partition)
            if self._keys.get(id(progress), key) != key:
                self._forget(id(progress))
            local = topics.get(mirror.topic)
            if not progress.validated or local is None or progress.partition >= len(local.logs):
                # Not fetched until validated (which touches it), or deleted while a round was in
                # flight (looked at again next round).
                self._forget(id(progress))
                if progress.validated:
                    self._touched.add(id(progress))
                continue
            self._keys[id(progress)] = key
            plog = local.logs[progress.partition]
            self.session.want(key, fetch_partition(progress.partition, fetch_position(progress, plog), max_bytes(progress), progress.leader_epoch))
            self.by_key[key] = (mirror, progress)

    def _forget(self, ident: int) -> None:
        key = self._keys.pop(ident, None)
        if key is not None:
            self.session.drop(key)
            self.by_key.pop(key, None)
