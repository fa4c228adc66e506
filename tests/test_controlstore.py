"""The control store's group writes: pieces of one transaction undone alone (savepoint), and a transaction
whose commit runs in a worker thread while the event loop goes on, every other use waiting for it."""

from __future__ import annotations

import sqlite3

import pytest
import trio

from linkd.controlstore import ControlStore


@pytest.fixture
def store(tmp_path):
    s = ControlStore(tmp_path / "control.db")
    s.ensure_schema("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY)")
    yield s
    s.close()


def test_a_failed_savepoint_undoes_only_its_piece(store):
    with store.transaction() as db:
        db.execute("INSERT INTO t VALUES ('a')")
        with pytest.raises(sqlite3.IntegrityError), store.savepoint():
            db.execute("INSERT INTO t VALUES ('b')")
            db.execute("INSERT INTO t VALUES ('a')")  # duplicate: this piece fails, 'b' goes with it
        with store.savepoint():
            db.execute("INSERT INTO t VALUES ('c')")
    assert [r["k"] for r in store.query("SELECT k FROM t ORDER BY k")] == ["a", "c"]
    with pytest.raises(RuntimeError):
        with store.savepoint():
            pass


def test_a_commit_in_a_thread_is_one_commit_and_other_uses_wait_for_it(tmp_path, store):
    before = store.statistics().commits

    async def main() -> list[str]:
        seen: list[str] = []

        def write(db) -> str:
            for k in ("x", "y", "z"):
                with store.savepoint():
                    db.execute("INSERT INTO t VALUES (?)", (k,))
            return "written"

        async def meanwhile() -> None:
            # Runs while the commit may be in flight: it waits for it, and then sees everything committed.
            with store.transaction() as db:
                db.execute("INSERT INTO t VALUES ('w')")
            seen.extend(r["k"] for r in store.query("SELECT k FROM t ORDER BY k"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(meanwhile)  # runs once this task awaits the commit's thread
            result = await store.transaction_in_thread(write)
        assert result == "written"
        return seen

    assert trio.run(main) == ["w", "x", "y", "z"]
    assert store.statistics().commits == before + 2
    other = sqlite3.connect(tmp_path / "control.db")  # committed: another connection reads it
    assert sorted(r[0] for r in other.execute("SELECT k FROM t")) == ["w", "x", "y", "z"]
    other.close()


def test_a_write_that_fails_in_a_thread_transaction_commits_nothing(store):
    def write(db) -> None:
        db.execute("INSERT INTO t VALUES ('q')")
        raise ValueError("refused")

    with pytest.raises(ValueError):
        trio.run(store.transaction_in_thread, write)
    assert store.query("SELECT k FROM t") == []
    with store.transaction() as db:  # and the store is usable again
        db.execute("INSERT INTO t VALUES ('r')")
    assert [r["k"] for r in store.query("SELECT k FROM t")] == ["r"]
