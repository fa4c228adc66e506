"""Control-plane state in one SQLite database (WAL mode): links, mirrors and their states, topics,
group offsets, the producer-id floor.

Every state transition is one SQLite transaction, so it is all or nothing across a crash. Components own
their tables: each registers its schema with ``ensure_schema`` and writes inside ``transaction()``.
The store is used from the trio thread only; SQLite calls here are short (no long scans), so they run
inline rather than in a worker thread.

A commit is a WAL fsync (``synchronous=FULL``), milliseconds on a busy disk, on the event loop: work that
comes in many small pieces at once (a thousand mirror creations) joins one transaction and keeps each
piece's all-or-nothing with ``savepoint()``, so one bad piece does not undo the others' writes; and
``transaction_in_thread`` runs such a transaction's COMMIT in a worker thread, so the loop serves others
(and more pieces gather for the next one) during the fsync. While that commit is in flight every other
use of the store waits for it (``_committing``): the connection is used by one thread at a time, always.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import trio

T = TypeVar("T")

log = logging.getLogger(__name__)

# Less free space than this when the WAL will not open counts as a full disk (its -shm file alone is 32 KiB).
_SPACE_NEEDED = 1 << 20


@dataclass(frozen=True)
class ControlStoreStatistics:
    commits: int  # write transactions committed since start: each is one fsync of the WAL


class ControlStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _owner_only(self.path)
        self._depth = 0
        self._commits = 0
        self._committing = threading.Lock()  # held while a COMMIT runs in a worker thread
        # Set while the WAL cannot be opened for want of space: the database is read, writes raise OSError.
        self.read_only: str | None = None
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transition survives power loss, not only a process crash.
            db.execute("PRAGMA synchronous=FULL")
        except sqlite3.OperationalError as exc:
            db.close()
            wal = self.path.with_name(self.path.name + "-wal")
            free = _free_bytes(self.path.parent)
            # Only without WAL content: an immutable open reads the main file alone (complete after a clean
            # close, which checkpoints and removes the WAL); with a WAL left, reading around it would be stale.
            if (wal.exists() and wal.stat().st_size) or free is None or free >= _SPACE_NEEDED:
                raise
            self.read_only = f"{exc} opening {wal} ({free} bytes free)"
            log.error("%s: cannot open its write-ahead log (%s, %d bytes free on that file system); control "
                      "state is read-only until space returns", self.path, exc, free)
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro&immutable=1", uri=True,
                                 isolation_level=None, check_same_thread=False)
            db.row_factory = sqlite3.Row
            return db
        if self.read_only is not None:
            log.info("%s: write-ahead log open again; control state accepts writes", self.path)
            self.read_only = None
        return db

    def _wait_commit(self) -> None:
        """Before any use of the connection on the loop: let a commit running in a worker thread finish."""
        if self._committing.locked():
            with self._committing:
                pass

    def _writable(self) -> None:
        """Before a write: reopen for writing if space has returned, else refuse with an OSError."""
        if self.read_only is None:
            return
        self._db.close()
        self._db = self._open()
        if self.read_only is not None:
            raise OSError(errno.ENOSPC, f"control store is read-only: {self.read_only}", str(self.path))

    def ensure_schema(self, ddl: str) -> None:
        """Run idempotent DDL (``CREATE TABLE IF NOT EXISTS ...``). Read-only (full disk): the tables are
        there already, as the database was written before."""
        if self.read_only is not None:
            return
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
        self._begin()
        try:
            yield self._db
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._db.execute("COMMIT")
        self._commits += 1

    def _begin(self) -> None:
        self._wait_commit()
        self._writable()
        self._db.execute("BEGIN IMMEDIATE")
        self._depth = 1

    async def transaction_in_thread(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """``write(db)`` in a write transaction, as in ``transaction()``, whose COMMIT (its fsync) runs in a
        worker thread; returns what ``write`` returned once committed. ``write`` itself runs here, at once,
        and must not await (nothing else joins the transaction)."""
        if self._depth:
            raise RuntimeError("transaction_in_thread() inside a transaction")
        self._begin()
        try:
            result = write(self._db)
        except BaseException:
            self._depth = 0
            self._db.execute("ROLLBACK")
            raise
        self._depth = 0
        self._committing.acquire()  # free: a commit in flight was waited for by _begin, and none began since
        # A thread of its own, started here and now: trio.to_thread would first yield to other tasks, and
        # one of them waiting on _committing would then block the loop before the thread ever started.
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        outcome: list = []

        def landed(result) -> None:  # on the loop
            outcome.append(result)
            done.set()

        def deliver(result) -> None:  # in the worker thread, once the commit is done (or failed)
            token.run_sync_soon(landed, result)

        trio.lowlevel.start_thread_soon(self._commit_and_release, deliver, name="linkd control.db commit")
        with trio.CancelScope(shield=True):  # the commit runs to its end: its caller learns whether it held
            await done.wait()
        outcome[0].unwrap()
        self._commits += 1
        return result

    def _commit_and_release(self) -> None:
        try:
            try:
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        finally:
            self._committing.release()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[sqlite3.Connection]:
        """Inside a ``transaction()``: what fails in this block is undone alone (and re-raised); the rest of
        the transaction stands and commits with it."""
        if not self._depth:
            raise RuntimeError("savepoint() outside a transaction")
        self._db.execute("SAVEPOINT piece")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK TO piece")
            self._db.execute("RELEASE piece")
            raise
        self._db.execute("RELEASE piece")

    def statistics(self) -> ControlStoreStatistics:
        return ControlStoreStatistics(self._commits)

    def query(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        self._wait_commit()
        return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        self._wait_commit()
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


def _free_bytes(directory: Path) -> int | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return 0 if st.f_flag & os.ST_RDONLY else st.f_bavail * st.f_frsize
