"""The checklist app's tests: each runs in a transaction that is rolled back at its end."""

from __future__ import annotations

import checklist
import pytest

import taskcore
from taskcore import TaskCreate, ValidationError
from taskcore.testing import FlakyDatabase


def test_added_task_is_pending(taskcore_db: taskcore.Database) -> None:
    """A task added with a one-shot write is listed as pending."""
    checklist.add("ann", "Water the plants")
    assert checklist.pending("ann") == ["Water the plants"]


def test_each_test_starts_empty(taskcore_db: taskcore.Database) -> None:
    """Nothing written by another test is visible."""
    assert taskcore.get_tasks() == []


def test_checklist_is_committed_with_its_steps(
    taskcore_db: taskcore.Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checklist and its steps are stored together, and notified after the commit."""
    sent: list[taskcore.Task] = []
    monkeypatch.setattr(checklist, "notify", sent.append)
    head = checklist.add_checklist("ann", "Trip", ["Book train", "Pack"])
    assert checklist.pending("ann") == ["Trip", "Book train", "Pack"]
    assert [task.id for task in sent] == [head.id]


def test_checklist_with_an_invalid_step_stores_nothing(taskcore_db: taskcore.Database) -> None:
    """A checklist whose step is refused is rolled back whole: not even its head is stored."""
    with pytest.raises(ValidationError):
        checklist.add_checklist("ann", "Trip", ["Book train", ""])
    assert checklist.pending("ann") == []


def test_invalid_lines_are_skipped(taskcore_db: taskcore.Database) -> None:
    """Lines that are not valid titles are skipped, the others are imported."""
    assert checklist.import_lines("bob", ["Milk", "   ", "Bread"]) == 2
    assert checklist.pending("bob") == ["Milk", "Bread"]


def test_finish_all_closes_only_that_users_tasks(taskcore_db: taskcore.Database) -> None:
    """finish_all completes the user's pending tasks and leaves other users' alone."""
    checklist.add("ann", "One")
    checklist.add("ann", "Two")
    checklist.add("bob", "Other")
    assert checklist.finish_all("ann") == 2
    assert checklist.pending("ann") == []
    assert checklist.pending("bob") == ["Other"]


def test_the_handle_can_be_used_directly(taskcore_db: taskcore.Database) -> None:
    """The fixture's handle sees what the app wrote through the module-level API."""
    task = checklist.add("cy", "Call")
    assert taskcore_db.get_task(task.id, "cy") == task
    taskcore_db.create_task(TaskCreate(title="Seeded"), "cy")
    assert checklist.pending("cy") == ["Call", "Seeded"]


def test_pending_survives_a_dropped_connection(flaky_taskcore_db: FlakyDatabase) -> None:
    """The app's read is retried when the link drops while it runs."""
    db, proxy = flaky_taskcore_db
    checklist.add("dee", "Survive")
    proxy.cut_after_statements(1)  # the next statement reaches the server, then the link drops
    assert checklist.pending("dee") == ["Survive"]
    assert proxy.stats.faults == 1
    assert db.counters()["retries"] == 1
