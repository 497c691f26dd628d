"""What each task subcommand does, on taskcore's public API; output goes through ``Output``."""

from __future__ import annotations

import shutil

import taskcore
from taskcore import NotFoundError, Task, TaskCreate, TaskUpdate
from todo_app import render
from todo_app.output import Output, task_document

__all__ = ["add", "delete", "list_tasks", "set_completed", "show", "toggle", "update"]


def _task(out: Output, verb: str, task: Task) -> int:
    out.emit([f"{verb} task {render.task_line(task)}"], task_document(task))
    return 0


def add(out: Output, *, title: str, description: str | None, user: str) -> int:
    """Store a new task owned by ``user`` and print it."""
    data = TaskCreate(title=title, description=description)  # validated before any SQL
    taskcore.init_db()
    return _task(out, "added", taskcore.create_task(data, user_id=user))


def list_tasks(out: Output, *, user: str | None, completed: bool | None) -> int:
    """Print ``user``'s tasks (everyone's when None), maybe only the done or pending ones.

    The table is cut to the terminal's width only when stdout is a terminal: piped or
    redirected, every title and description is printed in full.
    """
    taskcore.init_db()
    tasks = taskcore.get_tasks(user_id=user, completed=completed)
    width = shutil.get_terminal_size().columns if out.is_terminal() else None
    out.emit(
        render.task_table(tasks, show_user=user is None, width=width),
        [task_document(task) for task in tasks],
    )
    return 0


def show(out: Output, *, task_id: int, user: str) -> int:
    """Print every field of one of ``user``'s tasks."""
    taskcore.init_db()
    task = taskcore.get_task(task_id, user_id=user)
    if task is None:
        raise NotFoundError(task_id)
    out.emit(render.task_details(task), task_document(task))
    return 0


def update(
    out: Output,
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
    return _task(out, "updated", taskcore.update_task(task_id, data, user_id=user))


def set_completed(out: Output, *, task_id: int, user: str, completed: bool) -> int:
    """Mark one of ``user``'s tasks done or pending, whatever it was: running it twice is safe."""
    taskcore.init_db()
    task = taskcore.update_task(task_id, TaskUpdate(completed=completed), user_id=user)
    return _task(out, "completed" if completed else "reopened", task)


def toggle(out: Output, *, task_id: int, user: str) -> int:
    """Flip one of ``user``'s tasks between done and pending and print it."""
    taskcore.init_db()
    return _task(out, "toggled", taskcore.toggle_complete(task_id, user_id=user))


def delete(out: Output, *, task_id: int, user: str) -> int:
    """Delete one of ``user``'s tasks."""
    taskcore.init_db()
    if not taskcore.delete_task(task_id, user_id=user):
        raise NotFoundError(task_id)
    out.emit([f"deleted task {task_id}"], {"id": task_id, "deleted": True})
    return 0
