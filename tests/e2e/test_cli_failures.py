"""How `todo` fails: within its interactive deadline, one line, and local I/O apart from the database."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from _todo import (
    TodoApp,
    added_id,
    assert_one_error_among_logs,
    assert_one_error_line,
    time_bound,
)

pytestmark = pytest.mark.sqlite

_DEADLINE_S = 3


# -- the interactive deadline ------------------------------------------------------------------


@pytest.mark.parametrize("server", ["closed_port", "silent_port"], ids=["refused", "no-answer"])
@pytest.mark.parametrize("how", ["flag", "env"])
def test_unreachable_database_fails_within_the_deadline(
    todo: TodoApp, request: pytest.FixtureRequest, server: str, how: str
) -> None:
    """`todo list` against a refused port or a host that never answers exits 3 within deadline + 1 s (start-up included)."""
    port: int = request.getfixturevalue(server)
    env = {"DATABASE_URL": f"postgresql://me:Sup3rSecret@127.0.0.1:{port}/tasks"}
    args = ["list", "-vv"]
    if how == "flag":
        args += ["--deadline", str(_DEADLINE_S)]
    else:
        env["TODO_DEADLINE"] = str(_DEADLINE_S)
    started = time.monotonic()
    result = todo.run(*args, env=env)
    elapsed = time.monotonic() - started
    line = assert_one_error_among_logs(result, 3)
    assert f"todo waits {_DEADLINE_S} s for the database" in line
    assert elapsed <= time_bound(result, _DEADLINE_S), f"took {elapsed:.2f} s\n{result}"
    assert result.out == ""
    assert "Sup3rSecret" not in result.err


def test_unreachable_database_in_json_mode(todo: TodoApp, silent_port: int) -> None:
    """With --json, giving up on a silent host is one error document on stdout and nothing on stderr, exit 3."""
    env = {"DATABASE_URL": f"postgresql://me:Sup3rSecret@127.0.0.1:{silent_port}/tasks"}
    result, document = todo.json("add", "lost", "--deadline", str(_DEADLINE_S), env=env)
    assert result.code == 3, str(result)
    assert result.err == ""
    assert document["error"]["kind"] == "database_unavailable"
    assert "Sup3rSecret" not in result.out


@pytest.mark.parametrize("value", ["abc", "0", "-1", "nan", "inf"])
def test_invalid_deadline_is_refused(todo: TodoApp, value: str) -> None:
    """A --deadline or TODO_DEADLINE that is not a finite number above 0 is refused with exit 2."""
    flag = todo.run("list", "--deadline", value)
    assert flag.code == 2, str(flag)
    assert "invalid deadline" in flag.err
    assert "usage: todo" in flag.err
    env = todo.run("list", env={"TODO_DEADLINE": value})
    assert_one_error_line(env, 2, "TODO_DEADLINE", "above 0")
    assert not todo.sqlite_path.exists()


def test_deadline_source_is_shown_by_doctor(todo: TodoApp) -> None:
    """doctor shows the deadline in force and where it came from: default 10 s, TODO_DEADLINE, --deadline."""
    assert "deadline:        10 s (todo's default)\n" in todo.ok("doctor").out
    from_env = todo.ok("doctor", env={"TODO_DEADLINE": "4.5"}).out
    assert "deadline:        4.5 s (TODO_DEADLINE (environment variable))\n" in from_env
    from_flag = todo.ok("doctor", "--deadline", "7", env={"TODO_DEADLINE": "4.5"}).out
    assert "deadline:        7 s (--deadline)\n" in from_flag


# -- local I/O errors --------------------------------------------------------------------------


def test_full_disk_on_stdout_is_a_local_io_error(todo: TodoApp) -> None:
    """A write to a full device exits 4 with one line about the output, never "database", after the task was stored."""
    with Path("/dev/full").open("w") as full:
        result = todo.run("add", "stored anyway", stdout=full)
    line = assert_one_error_line(result, 4, "cannot write the output", "No space left on device")
    assert "database" not in line
    assert todo.rows("SELECT title FROM tasks") == [("stored anyway",)]
    with Path("/dev/full").open("w") as full:
        listed = todo.run("list", stdout=full)
    assert_one_error_line(listed, 4, "No space left on device")


def test_full_disk_in_json_mode_reports_on_stderr(todo: TodoApp) -> None:
    """With --json and a full stdout, the error document goes to stderr as one JSON line, exit 4."""
    todo.ok("add", "something")
    with Path("/dev/full").open("w") as full:
        result = todo.run("list", "--json", stdout=full)
    assert result.code == 4, str(result)
    assert len(result.err_lines) == 1, str(result)
    document = json.loads(result.err_lines[0])
    assert document["error"]["kind"] == "io"
    assert "No space left on device" in document["error"]["message"]


@pytest.mark.parametrize("mode", ["text", "json"])
def test_closed_pipe_ends_quietly_with_exit_4(todo: TodoApp, mode: str) -> None:
    """When the reader of stdout has gone (`todo list | head`), todo stops quietly with exit 4."""
    task_id = added_id(todo.ok("add", "nobody reads this"))
    reader, writer = os.pipe()
    os.close(reader)
    try:
        extra = ["--json"] if mode == "json" else []
        result = todo.run("list", *extra, stdout=writer)
    finally:
        os.close(writer)
    assert result.code == 4, str(result)
    assert result.err == "", str(result)
    assert todo.rows("SELECT id FROM tasks") == [(task_id,)]


def test_head_of_a_long_list_is_quiet(todo: TodoApp) -> None:
    """`todo list | head -n 1` on a long list prints the first line and no error or traceback."""
    for number in range(3):
        todo.ok("add", f"task {number} " + "x" * 150)
    producer = subprocess.Popen(
        [*todo.command(), "list"],
        cwd=todo.home,
        env=todo.child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert producer.stdout is not None
    head = subprocess.run(
        ["head", "-n", "1"], stdin=producer.stdout, capture_output=True, check=False, timeout=120
    )
    producer.stdout.close()
    _, err = producer.communicate(timeout=120)
    assert head.stdout.decode().split() == ["ID", "DONE", "CREATED", "TITLE"]
    assert producer.returncode in (0, 4)  # 0 if it finished writing before head left
    assert err == b""
