"""The unit of work's states are declared (``_MOVES``) and every other move is refused."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

import taskcore
from taskcore import Database, Status, TaskCreate, UsageError
from taskcore.unit_of_work import _MOVES


@pytest.fixture
def database(tmp_path: Path) -> Database:
    """A SQLite handle with the tables created."""
    db = Database(f"sqlite:///{tmp_path / 'states.db'}")
    db.init_db()
    return db


def _titles(database: Database) -> list[str]:
    """Stored titles, read with sqlite3 directly (not through taskcore)."""
    path = database.settings.url.database
    assert path is not None
    with closing(sqlite3.connect(path)) as check:
        return [row[0] for row in check.execute("SELECT title FROM tasks ORDER BY id")]


def _duplicate(uow: taskcore.UnitOfWork) -> None:
    """Run a statement the database refuses (a duplicate idempotency key)."""
    uow.tasks.create(TaskCreate(title="a"), user_id="u", idempotency_key="k")
    uow.run_statement(
        taskcore.models.Task.__table__.insert().values(  # type: ignore[attr-defined]
            title="b", user_id="u", idempotency_key="k"
        ),
        writes=True,
    )


def test_the_declared_moves_only_go_forward() -> None:
    """Terminal states have no moves; only a savepoint takes DOOMED back to ACTIVE."""
    assert _MOVES[Status.COMMITTED] == _MOVES[Status.ROLLED_BACK] == _MOVES[Status.FAILED] == set()
    assert _MOVES[Status.NEW] == {Status.ACTIVE}
    assert _MOVES[Status.DOOMED] == {Status.ACTIVE, Status.ROLLED_BACK}
    assert Status.COMMITTED not in _MOVES[Status.DOOMED]


def test_a_clean_block_goes_new_active_committed(database: Database) -> None:
    """NEW before the block, ACTIVE inside, COMMITTED after; re-entering is refused."""
    unit = database.unit()
    assert unit.status is Status.NEW
    with unit as uow:
        assert uow.status is Status.ACTIVE
        uow.tasks.create(TaskCreate(title="x"), user_id="u")
    assert unit.status.value == "committed"  # (mypy narrowed status to NEW above)
    with pytest.raises(UsageError), unit:
        pass


def test_a_failed_statement_dooms_the_unit_and_it_rolls_back(database: Database) -> None:
    """After a refused statement the unit is DOOMED: further statements are refused, and a
    block that swallowed the error still ends ROLLED_BACK with that error raised."""
    unit = database.unit()
    with pytest.raises(taskcore.DatabaseError), unit as uow:
        try:
            _duplicate(uow)
        except taskcore.DatabaseError:
            assert uow.status is Status.DOOMED
            with pytest.raises(UsageError):
                uow.tasks.list()
    assert unit.status is Status.ROLLED_BACK
    assert _titles(database) == []


def test_a_savepoint_takes_a_doomed_unit_back_to_active(database: Database) -> None:
    """A failure inside a savepoint is undone with it: the unit is ACTIVE again and commits."""
    with database.unit() as uow:
        uow.tasks.create(TaskCreate(title="kept"), user_id="u")
        with pytest.raises(taskcore.DatabaseError), uow.savepoint():
            _duplicate(uow)
        assert uow.status is Status.ACTIVE
    assert uow.status.value == "committed"
    assert _titles(database) == ["kept"]


def test_the_repository_is_refused_outside_the_block(database: Database) -> None:
    """Before entering and after leaving, the unit's repository is refused."""
    unit = database.unit()
    with pytest.raises(UsageError):
        unit.tasks  # noqa: B018 - the access itself is what is refused
    with unit:
        pass
    with pytest.raises(UsageError):
        unit.tasks  # noqa: B018
