"""Checklists: a tiny app built on taskcore (the example of docs/testing-your-app.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import taskcore
from taskcore import Task, TaskCreate, UnitOfWork, ValidationError

#: Called with a new checklist once it is committed (an email, a queue message, ...).
notify: Callable[[Task], object] = print


def add(user_id: str, title: str) -> Task:
    """Add one task (a one-shot write)."""
    return taskcore.create_task(TaskCreate(title=title), user_id)


def add_checklist(user_id: str, title: str, steps: Iterable[str]) -> Task:
    """Add a checklist and its steps in one transaction; notify once it is committed."""
    with UnitOfWork() as uow:
        head = uow.tasks.create(TaskCreate(title=title), user_id=user_id)
        for step in steps:
            uow.tasks.create(
                TaskCreate(title=step, description=f"step of #{head.id}"), user_id=user_id
            )
        uow.on_commit(lambda: notify(head))
    return head


def import_lines(user_id: str, lines: Iterable[str]) -> int:
    """Add a task per line in one transaction, skipping lines that are not valid titles."""
    added = 0
    with UnitOfWork() as uow:
        for line in lines:
            try:
                with uow.savepoint():
                    uow.tasks.create(TaskCreate(title=line), user_id=user_id)
            except ValidationError:
                continue
            added += 1
    return added


def finish_all(user_id: str) -> int:
    """Mark every pending task of the user done (re-run whole on a transient failure)."""

    def finish(uow: UnitOfWork) -> int:
        pending = uow.tasks.list(user_id=user_id, completed=False)
        for task in pending:
            uow.tasks.toggle_complete(task.id, user_id=user_id)
        return len(pending)

    return UnitOfWork.run(finish)


def pending(user_id: str) -> list[str]:
    """Titles of the user's open tasks, oldest first."""
    return [task.title for task in taskcore.get_tasks(user_id, completed=False)]
