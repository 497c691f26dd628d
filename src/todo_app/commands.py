"""What each subcommand does, on taskcore's public API; output goes through ``render``."""

from __future__ import annotations

import shutil
from typing import TextIO

import taskcore
from taskcore import NotFoundError, TaskCreate, TaskUpdate
from todo_app import render

__all__ = ["add", "delete", "doctor", "list_tasks", "show", "toggle", "update"]

# What the table assumes when stdout is not a terminal (and COLUMNS is unset).
_FALLBACK_COLUMNS = 100


def _emit(out: TextIO, lines: list[str]) -> None:
    for line in lines:
        print(line, file=out)
    out.flush()


def add(out: TextIO, *, title: str, description: str | None, user: str) -> int:
    """Store a new task owned by ``user`` and print it."""
    data = TaskCreate(title=title, description=description)  # validated before any SQL
    taskcore.init_db()
    task = taskcore.create_task(data, user_id=user)
    _emit(out, [f"added task {render.task_line(task)}"])
    return 0


def list_tasks(out: TextIO, *, user: str | None, completed: bool | None) -> int:
    """Print ``user``'s tasks (everyone's when None) as a table, maybe only done/pending ones."""
    taskcore.init_db()
    tasks = taskcore.get_tasks(user_id=user)
    if completed is not None:
        tasks = [task for task in tasks if task.completed is completed]
    columns = shutil.get_terminal_size((_FALLBACK_COLUMNS, 24)).columns
    _emit(out, render.task_table(tasks, show_user=user is None, width=columns))
    return 0


def show(out: TextIO, *, task_id: int, user: str) -> int:
    """Print every field of one of ``user``'s tasks."""
    taskcore.init_db()
    task = taskcore.get_task(task_id, user_id=user)
    if task is None:
        raise NotFoundError(task_id)
    _emit(out, render.task_details(task))
    return 0


def update(
    out: TextIO,
    *,
    task_id: int,
    user: str,
    title: str | None,
    description: str | None,
    clear_description: bool,
) -> int:
    """Change the title and/or description of one of ``user``'s tasks and print it."""
    changes: dict[str, str | None] = {}
    if title is not None:
        changes["title"] = title
    if clear_description:
        changes["description"] = None
    elif description is not None:
        changes["description"] = description
    data = TaskUpdate.model_validate(changes)  # validated before any SQL
    taskcore.init_db()
    task = taskcore.update_task(task_id, data, user_id=user)
    _emit(out, [f"updated task {render.task_line(task)}"])
    return 0


def toggle(out: TextIO, *, task_id: int, user: str) -> int:
    """Flip one of ``user``'s tasks between done and pending and print it."""
    taskcore.init_db()
    task = taskcore.toggle_complete(task_id, user_id=user)
    _emit(out, [f"toggled task {render.task_line(task)}"])
    return 0


def delete(out: TextIO, *, task_id: int, user: str) -> int:
    """Delete one of ``user``'s tasks."""
    taskcore.init_db()
    if not taskcore.delete_task(task_id, user_id=user):
        raise NotFoundError(task_id)
    _emit(out, [f"deleted task {task_id}"])
    return 0


def doctor(out: TextIO) -> int:
    """Print the settings, then connect once and print what was measured.

    The settings are printed first, so a failed connection still shows where it went.
    """
    _emit(out, render.settings_lines(taskcore.load_settings()))
    _emit(out, render.doctor_lines(taskcore.check_connection()))
    return 0
