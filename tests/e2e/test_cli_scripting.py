"""The `todo` app as scripts use it: --json, --version, done/undone, options anywhere, exit codes."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from typing import Any

import pytest
from _todo import TodoApp, added_id, assert_one_error_line

import taskcore

pytestmark = pytest.mark.sqlite

_TASK_FIELDS = {"id", "title", "description", "completed", "user_id", "created_at", "updated_at"}
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_ID_MAX = 2**63 - 1


def _assert_task(document: Any, **expected: object) -> None:
    """``document`` is a task with exactly the stable fields, UTC timestamps and ``expected``."""
    assert isinstance(document, dict), document
    assert set(document) == _TASK_FIELDS, document
    assert _TIMESTAMP.fullmatch(document["created_at"]), document
    assert _TIMESTAMP.fullmatch(document["updated_at"]), document
    for name, value in expected.items():
        assert document[name] == value, (name, document)


def _stored_moment(text: str) -> datetime:
    """A timestamp as SQLite stores it (naive UTC text), as an aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# -- --json ------------------------------------------------------------------------------------


def test_json_task_commands_print_the_task(todo: TodoApp) -> None:
    """add, show, update, toggle, done and undone print the task as one JSON object with the stable fields."""
    result, added = todo.json("add", "Buy milk", "-d", "2 litres", "--user", "ann")
    assert result.err == ""
    _assert_task(added, title="Buy milk", description="2 litres", completed=False, user_id="ann")
    task_id = str(added["id"])
    cases: list[tuple[tuple[str, ...], dict[str, object]]] = [
        (("show", task_id), {"title": "Buy milk"}),
        (("update", task_id, "--title", "Buy oat milk"), {"title": "Buy oat milk"}),
        (("toggle", task_id), {"completed": True}),
        (("undone", task_id), {"completed": False}),
        (("done", task_id), {"completed": True}),
    ]
    for args, expected in cases:
        result, document = todo.json(*args, "--user", "ann")
        assert result.code == 0, str(result)
        assert result.err == "", str(result)
        _assert_task(document, id=added["id"], user_id="ann", **expected)
    assert todo.rows("SELECT title, completed FROM tasks") == [("Buy oat milk", 1)]


def test_json_timestamps_are_the_stored_utc_moments(todo: TodoApp) -> None:
    """created_at/updated_at are ISO 8601 UTC ('Z') and name the instants stored, whatever the local zone."""
    _, added = todo.json("add", "when", env={"TZ": "XST-14"})
    ((created, updated),) = todo.rows("SELECT created_at, updated_at FROM tasks")
    for field, stored in (("created_at", created), ("updated_at", updated)):
        moment = datetime.fromisoformat(added[field].replace("Z", "+00:00"))
        assert moment == _stored_moment(stored), (field, added[field], stored)


def test_json_list_is_an_array_and_pipes_into_json_tool(todo: TodoApp) -> None:
    """`todo list --json | python -m json.tool` works and the array holds every task in id order."""
    first = added_id(todo.ok("add", 'quotes " and \\ and ünïcode 🎉'))
    second = added_id(todo.ok("add", "x" * 200, "-d", "line one\nline two"))
    producer = subprocess.Popen(
        [*todo.command(), "list", "--json"],
        cwd=todo.home,
        env=todo.child_env(),
        stdout=subprocess.PIPE,
    )
    assert producer.stdout is not None
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"],
        stdin=producer.stdout,
        capture_output=True,
        encoding="utf-8",
        check=False,
        timeout=120,
    )
    producer.stdout.close()
    assert producer.wait(timeout=120) == 0
    assert tool.returncode == 0, tool.stderr
    result, tasks = todo.json("list")
    assert [task["id"] for task in tasks] == [first, second]
    _assert_task(tasks[0], title='quotes " and \\ and ünïcode 🎉', description=None)
    _assert_task(tasks[1], title="x" * 200, description="line one\nline two")
    assert result.out.isascii()  # non-ASCII is escaped: valid whatever the terminal's encoding


def test_json_list_filters_and_empty(todo: TodoApp) -> None:
    """`list --json` on an empty store is [], and --done/--pending/--all-users filter as in text mode."""
    assert todo.json("list")[1] == []
    done = added_id(todo.ok("add", "finished"))
    todo.ok("add", "open")
    todo.ok("add", "bob's", "--user", "bob")
    todo.ok("done", str(done))
    assert [task["title"] for task in todo.json("list", "--done")[1]] == ["finished"]
    assert [task["title"] for task in todo.json("list", "--pending")[1]] == ["open"]
    everyone = todo.json("list", "--all-users")[1]
    assert [(task["title"], task["user_id"]) for task in everyone] == [
        ("finished", ""),
        ("open", ""),
        ("bob's", "bob"),
    ]


def test_json_delete_and_doctor(todo: TodoApp) -> None:
    """`delete --json` prints {"id", "deleted"}; `doctor --json` prints its findings as one object."""
    task_id = added_id(todo.ok("add", "to go"))
    assert todo.json("delete", str(task_id))[1] == {"id": task_id, "deleted": True}
    assert todo.rows("SELECT count(*) FROM tasks") == [(0,)]
    result, doctor = todo.json("doctor")
    assert result.code == 0, str(result)
    assert doctor["status"] == "ok"
    assert doctor["backend"] == "sqlite"
    assert doctor["url"] == f"sqlite:///{todo.sqlite_path}"
    assert doctor["env_file"] is None
    assert doctor["deadline"] == 10
    assert doctor["sources"] == {"url": "TASKCORE_SQLITE_PATH (environment variable)"}
    assert doctor["settings"]["retry_attempts"] == 10
    assert isinstance(doctor["connect_ms"], float)


@pytest.mark.parametrize(
    ("args", "code", "kind", "fragment"),
    [
        (("show", "42"), 1, "not_found", "task 42 not found"),
        (("done", "42"), 1, "not_found", "task 42 not found"),
        (("add", " "), 2, "validation", "must not be blank"),
        (("show", "0"), 2, "usage", f"ids are 1 to {_ID_MAX}"),
        (("frobnicate",), 2, "usage", "invalid choice"),
        (("update", "1"), 2, "usage", "nothing to change"),
    ],
    ids=["not-found", "done-not-found", "validation", "id-range", "unknown-command", "no-change"],
)
def test_json_errors_are_one_document_with_the_same_exit_code(
    todo: TodoApp, args: tuple[str, ...], code: int, kind: str, fragment: str
) -> None:
    """In --json mode a failure prints {"error": {"kind", "message"}} on stdout, nothing on stderr, and keeps its exit code."""
    result, document = todo.json(*args)
    assert result.code == code, str(result)
    assert result.err == "", str(result)
    assert set(document) == {"error"}
    assert set(document["error"]) == {"kind", "message"}
    assert document["error"]["kind"] == kind
    assert fragment in document["error"]["message"]


def test_json_configuration_error_hides_the_password(todo: TodoApp) -> None:
    """A malformed DATABASE_URL in --json mode is a "configuration" error document, exit 2, password not echoed."""
    env = {"DATABASE_URL": "postgresql://user:Sup3rSecret@host:notaport/db"}
    result, document = todo.json("list", env=env)
    assert result.code == 2, str(result)
    assert document["error"]["kind"] == "configuration"
    assert "DATABASE_URL" in document["error"]["message"]
    assert "Sup3rSecret" not in result.out + result.err


# -- --version ---------------------------------------------------------------------------------


def test_version_names_todo_and_taskcore(todo: TodoApp) -> None:
    """`todo --version` prints "todo (taskcore X.Y.Z)" with the installed taskcore's version."""
    expected = getattr(taskcore, "__version__", None) or importlib.metadata.version("taskcore")
    assert todo.ok("--version").out == f"todo (taskcore {expected})\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", expected)
    assert todo.json("--version")[1] == {"program": "todo", "taskcore": expected}
    assert not todo.sqlite_path.exists()


# -- done and undone ---------------------------------------------------------------------------


def test_done_twice_leaves_the_task_done(todo: TodoApp) -> None:
    """`todo done 1` twice leaves task 1 done (unlike toggle), and `undone` twice leaves it pending."""
    task_id = added_id(todo.ok("add", "idempotent"))
    assert todo.rows("SELECT id FROM tasks") == [(1,)]
    for _ in range(2):
        assert todo.ok("done", "1").out == "completed task 1 [x] idempotent\n"
        assert todo.rows("SELECT completed FROM tasks WHERE id = ?", (task_id,)) == [(1,)]
    for _ in range(2):
        assert todo.ok("undone", "1").out == "reopened task 1 [ ] idempotent\n"
        assert todo.rows("SELECT completed FROM tasks WHERE id = ?", (task_id,)) == [(0,)]


def test_done_is_scoped_to_the_user(todo: TodoApp) -> None:
    """`done` on another user's task is "not found" (exit 1) and leaves it pending."""
    task_id = added_id(todo.ok("add", "ann's", "--user", "ann"))
    result = todo.run("done", str(task_id), "--user", "bob")
    assert assert_one_error_line(result, 1) == f"todo: error: task {task_id} not found"
    assert todo.rows("SELECT completed FROM tasks") == [(0,)]


# -- options on either side of the command -----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("--user", "ann", "--json", "--deadline", "5", "-v", "add", "anywhere"),
        ("add", "anywhere", "--user", "ann", "--json", "--deadline", "5", "-v"),
        ("--json", "-v", "add", "--user", "ann", "anywhere", "--deadline", "5"),
    ],
    ids=["before", "after", "mixed"],
)
def test_global_options_go_before_or_after_the_command(
    todo: TodoApp, args: tuple[str, ...]
) -> None:
    """--user, --json, --deadline and -v mean the same before or after the subcommand."""
    result = todo.run(*args)
    assert result.code == 0, str(result)
    _assert_task(json.loads(result.out), title="anywhere", user_id="ann")
    assert todo.rows("SELECT title, user_id FROM tasks") == [("anywhere", "ann")]


def test_user_after_the_command_wins(todo: TodoApp) -> None:
    """Given on both sides, the --user after the command is the one used."""
    todo.ok("--user", "first", "add", "whose", "--user", "second")
    assert todo.rows("SELECT user_id FROM tasks") == [("second",)]


def test_all_users_with_user_is_a_usage_error(todo: TodoApp) -> None:
    """`list --all-users --user X` (either order) is refused with exit 2 and a usage message."""
    for args in (("list", "--all-users", "--user", "x"), ("--user", "x", "list", "--all-users")):
        result = todo.run(*args)
        assert result.code == 2, str(result)
        assert "usage: todo list" in result.err
        assert "not allowed with argument --user" in result.err


# -- task ids ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("0", f"task id 0 is out of range (ids are 1 to {_ID_MAX})"),
        ("-3", f"task id -3 is out of range (ids are 1 to {_ID_MAX})"),
        (str(_ID_MAX + 1), f"is out of range (ids are 1 to {_ID_MAX})"),
        ("abc", f"invalid task id 'abc' (ids are whole numbers from 1 to {_ID_MAX})"),
    ],
    ids=["zero", "negative", "2**63", "not-a-number"],
)
def test_out_of_range_id_names_the_range(todo: TodoApp, text: str, fragment: str) -> None:
    """An id outside 1..2**63-1 is refused (exit 2) by a message that states the range."""
    result = todo.run("show", text)
    assert result.code == 2, str(result)
    assert fragment in result.err, str(result)
    assert "positive" not in result.err


def test_largest_id_is_accepted(todo: TodoApp) -> None:
    """2**63-1 is a valid id: looking it up is "not found" (exit 1), not a usage error."""
    result = todo.run("show", str(_ID_MAX))
    assert assert_one_error_line(result, 1) == f"todo: error: task {_ID_MAX} not found"
