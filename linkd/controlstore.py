"""Control-plane state in one SQLite database (WAL mode): links, mirrors and their states, topics,
group offsets, the producer-id floor.

Every state transition is one SQLite transaction, so it is all or nothing across a crash. Components own
their tables: each registers its schema with ``ensure_schema`` and writes inside ``transaction()``.
The store is used from the trio thread only; SQLite calls here are short (no long scans), so they run
inline rather than in a worker thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path


class ControlStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(self.path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed transition survives power loss, not only a process crash.
        self._db.execute("PRAGMA synchronous=FULL")
        self._depth = 0

    def ensure_schema(self, ddl: str) -> None:
        """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``)."""
        with self.transaction():
            for statement in _statements(ddl):
                self._db.execute(statement)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested calls join the outer one."""
        if self._depth:
            self._depth += 1
            try:
                yield self._db
            finally:
                self._depth -= 1
            return
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1
        try:
            yield self._db
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._db.close()


def _owner_only(path: Path) -> None:
    """control.db holds link configs (secrets sealed, but names, hosts and users in clear): create it 0600
    and tighten one made before; SQLite gives its -wal and -shm files the database file's mode."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if p.exists():
            os.chmod(p, 0o600)


def _statements(ddl: str) -> list[str]:
    return [s.strip() for s in ddl.split(";") if s.strip()]
