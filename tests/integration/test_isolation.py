"""User scoping: with user_id given, another owner's task is indistinguishable from a missing one."""

from __future__ import annotations

import pytest

import taskcore
from _db import Db
from taskcore import TaskCreate, TaskUpdate


@pytest.fixture
def alices(db: Db) -> taskcore.Task:
    """A task owned by alice, plus one owned by bob, stored before the test."""
    taskcore.create_task(TaskCreate(title="bob's"), user_id="bob")
    return taskcore.create_task(TaskCreate(title="alice's"), user_id="alice")


def test_other_users_task_is_invisible_to_every_operation(db: Db, alices: taskcore.Task) -> None:
    """Bob cannot read, list, update, toggle or delete Alice's task, and it stays unchanged."""
    assert taskcore.get_task(alices.id, user_id="bob") is None
    assert alices.id not in [t.id for t in taskcore.get_tasks(user_id="bob")]
    with pytest.raises(taskcore.NotFoundError):
        taskcore.update_task(alices.id, TaskUpdate(title="hijacked"), user_id="bob")
    with pytest.raises(taskcore.NotFoundError):
        taskcore.toggle_complete(alices.id, user_id="bob")
    assert taskcore.delete_task(alices.id, user_id="bob") is False
    assert db.query(f"SELECT title, user_id, completed FROM tasks WHERE id = {alices.id}") == [
        ("alice's", "alice", 0 if db.kind == "sqlite" else False)
    ]


def test_owner_can_do_everything(db: Db, alices: taskcore.Task) -> None:
    """Alice, scoped to herself, can read, update, toggle and delete her task."""
    assert taskcore.get_task(alices.id, user_id="alice") == alices
    assert (
        taskcore.update_task(alices.id, TaskUpdate(title="mine"), user_id="alice").title == "mine"
    )
    assert taskcore.toggle_complete(alices.id, user_id="alice").completed is True
    assert taskcore.delete_task(alices.id, user_id="alice") is True
    assert db.scalar(f"SELECT count(*) FROM tasks WHERE id = {alices.id}") == 0


def test_empty_user_id_is_a_real_owner_not_a_wildcard(db: Db, alices: taskcore.Task) -> None:
    """user_id="" scopes to the empty-string owner; only None means every user."""
    assert taskcore.get_task(alices.id, user_id="") is None
    assert taskcore.get_tasks(user_id="") == []
    assert len(taskcore.get_tasks()) == 2


def test_scoping_holds_inside_a_unit_of_work(db: Db, alices: taskcore.Task) -> None:
    """The repository applies the same scoping as the one-shot functions."""
    with taskcore.UnitOfWork() as uow:
        assert uow.tasks.get(alices.id, user_id="bob") is None
        assert [t.user_id for t in uow.tasks.list(user_id="alice")] == ["alice"]
        with pytest.raises(taskcore.NotFoundError):
            uow.tasks.toggle_complete(alices.id, user_id="bob")
