"""The `todo` console app end to end on its embedded SQLite default, one process per command."""

from __future__ import annotations

import os
import re
import selectors
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from pathlib import Path

import pytest
from _todo import TodoApp, added_id, assert_one_error_line

pytestmark = pytest.mark.sqlite

_COLUMNS = "SELECT id, title, description, completed, user_id FROM tasks ORDER BY id"
_MALFORMED_URL = "postgresql://user:Sup3rSecret@host:notaport/db"


# -- the basics --------------------------------------------------------------------------------


def test_added_task_is_listed(todo: TodoApp) -> None:
    """A task added with `todo add` appears in `todo list` as a pending row with its title."""
    added = todo.ok("add", "Buy groceries", "--description", "milk, eggs")
    assert re.fullmatch(r"added task 1 \[ \] Buy groceries\n", added.out)
    listed = todo.ok("list")
    lines = listed.out.splitlines()
    assert lines[0].split() == ["ID", "DONE", "CREATED", "TITLE", "DESCRIPTION"]
    assert re.match(
        r"\s*1\s+\[ \]\s+\d{4}-\d\d-\d\d \d\d:\d\d\s+Buy groceries\s+milk, eggs$", lines[1]
    )
    assert lines[-1] == "1 task (0 done, 1 pending)"


def test_tasks_persist_across_processes(todo: TodoApp) -> None:
    """Tasks added by earlier processes are listed by a later one and are in the SQLite file."""
    first = added_id(todo.ok("add", "first"))
    second = added_id(todo.ok("add", "second"))
    listed = todo.ok("list")
    assert "first" in listed.out
    assert "second" in listed.out
    assert "2 tasks (0 done, 2 pending)" in listed.out
    assert todo.rows(_COLUMNS) == [(first, "first", None, 0, ""), (second, "second", None, 0, "")]


def test_default_database_is_a_file_under_xdg_data_home(todo: TodoApp) -> None:
    """With neither DATABASE_URL nor TASKCORE_SQLITE_PATH, tasks go to $XDG_DATA_HOME/taskcore."""
    env: dict[str, str | None] = {"TASKCORE_SQLITE_PATH": None}
    todo.ok("add", "kept at home", env=env)
    default = Path(todo.env["XDG_DATA_HOME"]) / "taskcore" / "tasks.db"
    assert default.is_file()
    assert "kept at home" in todo.ok("list", env=env).out
    assert not todo.sqlite_path.exists()


def test_show_prints_every_field(todo: TodoApp) -> None:
    """`todo show` prints id, title, status, description, user and both timestamps."""
    task_id = added_id(todo.ok("add", "Call mum", "-d", "about Sunday\nand the cake"))
    shown = todo.ok("show", str(task_id)).out
    assert f"id:          {task_id}\n" in shown
    assert "title:       Call mum\n" in shown
    assert "status:      pending\n" in shown
    assert "description: about Sunday\n             and the cake\n" in shown
    assert "user:        (default)\n" in shown
    assert re.search(r"^created: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", shown, re.MULTILINE)
    assert re.search(r"^updated: +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$", shown, re.MULTILINE)


def test_dates_are_shown_in_local_time(todo: TodoApp) -> None:
    """Timestamps are stored in UTC but printed in the user's time zone (here UTC+14)."""
    task_id = added_id(todo.ok("add", "late night"))
    ((stored,),) = todo.rows("SELECT created_at FROM tasks")
    shown = todo.ok("show", str(task_id), env={"TZ": "XST-14"}).out
    created = re.search(r"^created: +(\S+ \S+) XST$", shown, re.MULTILINE)
    assert created is not None, shown
    utc = time.strptime(stored[:19], "%Y-%m-%d %H:%M:%S")
    local = time.strptime(created.group(1), "%Y-%m-%d %H:%M:%S")
    assert time.mktime(local) - time.mktime(utc) == 14 * 3600


# -- changing tasks ----------------------------------------------------------------------------


def test_update_changes_only_the_given_fields(todo: TodoApp) -> None:
    """`todo update` changes the title and/or description it is given and prints the task line."""
    task_id = added_id(todo.ok("add", "old title", "-d", "old text"))
    assert todo.ok("update", str(task_id), "--title", "new title").out == (
        f"updated task {task_id} [ ] new title\n"
    )
    assert todo.rows("SELECT title, description FROM tasks") == [("new title", "old text")]
    todo.ok("update", str(task_id), "--description", "new text")
    assert todo.rows("SELECT title, description FROM tasks") == [("new title", "new text")]
    todo.ok("update", str(task_id), "--clear-description")
    assert todo.rows("SELECT title, description FROM tasks") == [("new title", None)]


def test_update_without_changes_is_a_usage_error(todo: TodoApp) -> None:
    """`todo update ID` with nothing to change exits 2 and leaves the task alone."""
    task_id = added_id(todo.ok("add", "unchanged"))
    result = todo.run("update", str(task_id))
    assert result.code == 2, str(result)
    assert "nothing to change" in result.err
    assert "Traceback" not in result.err
    assert todo.rows("SELECT title, updated_at = created_at FROM tasks") == [("unchanged", 1)]


def test_toggle_flips_status_both_ways(todo: TodoApp) -> None:
    """`todo toggle` marks a pending task done and a done task pending, printing each result."""
    task_id = added_id(todo.ok("add", "flip me"))
    assert todo.ok("toggle", str(task_id)).out == f"toggled task {task_id} [x] flip me\n"
    assert todo.rows("SELECT completed FROM tasks") == [(1,)]
    assert "1 task (1 done, 0 pending)" in todo.ok("list").out
    assert todo.ok("toggle", str(task_id)).out == f"toggled task {task_id} [ ] flip me\n"
    assert todo.rows("SELECT completed FROM tasks") == [(0,)]


def test_list_filters_done_and_pending(todo: TodoApp) -> None:
    """`list --done` shows only completed tasks and `list --pending` only the others."""
    done = added_id(todo.ok("add", "finished thing"))
    todo.ok("add", "open thing")
    todo.ok("toggle", str(done))
    done_out = todo.ok("list", "--done").out
    assert "finished thing" in done_out
    assert "open thing" not in done_out
    pending_out = todo.ok("list", "--pending").out
    assert "open thing" in pending_out
    assert "finished thing" not in pending_out


def test_delete_removes_the_task(todo: TodoApp) -> None:
    """`todo delete` removes the row, says so, and a second delete of it is not found (exit 1)."""
    keep = added_id(todo.ok("add", "keep"))
    gone = added_id(todo.ok("add", "drop"))
    assert todo.ok("delete", str(gone)).out == f"deleted task {gone}\n"
    assert todo.rows("SELECT id FROM tasks") == [(keep,)]
    again = todo.run("delete", str(gone))
    assert_one_error_line(again, 1, f"task {gone} not found")
    assert again.out == ""


def test_empty_list_says_so(todo: TodoApp) -> None:
    """`todo list` on a fresh store prints "no tasks" and succeeds."""
    assert todo.ok("list").out == "no tasks\n"


_SCHEMA_BEFORE_IDEMPOTENCY_KEYS = """
CREATE TABLE tasks (
    id INTEGER NOT NULL,
    title VARCHAR(200) NOT NULL,
    description VARCHAR(1000),
    completed BOOLEAN DEFAULT 0 NOT NULL,
    user_id VARCHAR(255) NOT NULL,
    created_at DATETIME DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL,
    updated_at DATETIME DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')) NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX ix_tasks_user_id ON tasks (user_id);
INSERT INTO tasks (title, user_id) VALUES ('written by an older todo', '');
"""


def test_store_with_an_older_schema_gives_a_clear_error(todo: TodoApp) -> None:
    """A tasks table lacking a column (taskcore has no migrations) gets one clear error line."""
    todo.sqlite_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(todo.sqlite_path)) as conn:
        conn.executescript(_SCHEMA_BEFORE_IDEMPOTENCY_KEYS)
    result = todo.run("list")
    line = assert_one_error_line(result, 3)
    assert "created by an older taskcore" in line
    assert "written by an older todo" not in result.out + result.err


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("show", "42"),
        ("toggle", "42"),
        ("delete", "42"),
        ("update", "42", "--title", "x"),
    ],
    ids=["show", "toggle", "delete", "update"],
)
def test_missing_task_is_one_line_and_exit_1(todo: TodoApp, args: tuple[str, ...]) -> None:
    """Any command on a task that does not exist prints one error line and exits 1."""
    todo.ok("add", "the only task")
    result = todo.run(*args)
    assert assert_one_error_line(result, 1) == "todo: error: task 42 not found"
    assert result.out == ""
    assert todo.rows("SELECT title, completed FROM tasks") == [("the only task", 0)]


@pytest.mark.parametrize(
    ("title", "reason"),
    [
        ("x" * 201, "1-200 characters, got 201"),
        ("   ", "must not be blank"),
        ("", "1-200 characters, got 0"),
    ],
    ids=["201-chars", "blank", "empty"],
)
def test_invalid_title_is_refused_and_nothing_stored(
    todo: TodoApp, title: str, reason: str
) -> None:
    """An invalid title gives one validation line, exit 2, and no row (checked with sqlite3)."""
    todo.ok("add", "existing")
    result = todo.run("add", title)
    assert_one_error_line(result, 2, "invalid task", reason)
    assert result.out == ""
    assert todo.rows("SELECT title FROM tasks") == [("existing",)]


def test_invalid_title_on_update_changes_nothing(todo: TodoApp) -> None:
    """`update --title` with a 201-character title exits 2 and the stored title is unchanged."""
    task_id = added_id(todo.ok("add", "original"))
    result = todo.run("update", str(task_id), "--title", "y" * 201)
    assert_one_error_line(result, 2, "invalid task")
    assert todo.rows("SELECT title FROM tasks") == [("original",)]


def test_invalid_title_leaves_no_database_behind(todo: TodoApp) -> None:
    """Input is validated before the database is touched: a refused first add creates no file."""
    assert_one_error_line(todo.run("add", " "), 2, "must not be blank")
    assert not todo.sqlite_path.exists()


def test_title_of_200_characters_is_accepted(todo: TodoApp) -> None:
    """A title of exactly 200 characters is stored in full."""
    todo.ok("add", "z" * 200)
    assert todo.rows("SELECT length(title) FROM tasks") == [(200,)]


def test_description_over_1000_characters_is_refused(todo: TodoApp) -> None:
    """A 1001-character description is a validation error (exit 2) and nothing is stored."""
    result = todo.run("add", "ok title", "--description", "d" * 1001)
    assert_one_error_line(result, 2, "description must be 0-1000 characters, got 1001")
    assert todo.rows("SELECT count(*) FROM tasks") in ([], [(0,)])


@pytest.mark.parametrize(
    "args",
    [
        ("show", "abc"),
        ("show", "0"),
        ("show", "-3"),
        ("frobnicate",),
        ("list", "--done", "--pending"),
    ],
    ids=["non-numeric-id", "zero-id", "negative-id", "unknown-command", "conflicting-flags"],
)
def test_bad_command_line_exits_2(todo: TodoApp, args: tuple[str, ...]) -> None:
    """A command line argparse refuses exits 2 with a usage message and no traceback."""
    result = todo.run(*args)
    assert result.code == 2, str(result)
    assert "usage: todo" in result.err
    assert "Traceback" not in result.err


@pytest.mark.parametrize("command", [("list",), ("add", "a task"), ("doctor",)], ids=str)
def test_malformed_database_url_is_a_config_error_without_the_password(
    todo: TodoApp, command: tuple[str, ...]
) -> None:
    """A malformed DATABASE_URL gives one config error line, exit 2, never echoing its password."""
    result = todo.run(*command, env={"DATABASE_URL": _MALFORMED_URL})
    assert_one_error_line(result, 2, "DATABASE_URL", "port")
    assert "Sup3rSecret" not in result.out + result.err


@pytest.mark.parametrize("server", ["closed_port", "silent_port"], ids=["refused", "no-answer"])
def test_unreachable_database_exits_3_without_the_password(
    todo: TodoApp, request: pytest.FixtureRequest, server: str
) -> None:
    """When PostgreSQL refuses or never answers, the app prints exactly one error line, exit 3."""
    port: int = request.getfixturevalue(server)
    env = {"DATABASE_URL": f"postgresql://me:Sup3rSecret@127.0.0.1:{port}/tasks"}
    result = todo.run("list", "--deadline", "2", env=env)
    assert_one_error_line(result, 3, "database unavailable")
    assert result.out == ""
    assert "Sup3rSecret" not in result.out + result.err


def test_verbose_shows_the_retries(todo: TodoApp, closed_port: int) -> None:
    """With -v the retry warnings taskcore logs are shown too, before the one error line."""
    env = {"DATABASE_URL": f"postgresql://me:Sup3rSecret@127.0.0.1:{closed_port}/tasks"}
    result = todo.run("list", "-v", "--deadline", "2", env=env)
    assert result.code == 3, str(result)
    errors = [line for line in result.err_lines if line.startswith("todo: error: ")]
    assert len(errors) == 1, str(result)
    assert any("retrying in" in line for line in result.err_lines), str(result)
    assert all(
        line.startswith(("todo: warning: ", "todo: info: ", "todo: error: "))
        for line in result.err_lines
    )
    assert "Sup3rSecret" not in result.err


def test_doctor_failure_is_typed_and_exits_3(todo: TodoApp, closed_port: int) -> None:
    """`doctor` on an unreachable server prints its settings, then one typed error line, exit 3."""
    url = f"postgresql://me:Sup3rSecret@127.0.0.1:{closed_port}/tasks"
    result = todo.run("doctor", env={"DATABASE_URL": url})
    line = assert_one_error_line(result, 3)
    assert re.search(r"\((TransientError|ConnectionRejectedError)\)$", line), line
    assert (
        f"url:             postgresql+psycopg2://me:***@127.0.0.1:{closed_port}/tasks" in result.out
    )
    assert "Sup3rSecret" not in result.out + result.err


def test_interrupt_exits_130_quietly(todo: TodoApp, closed_port: int) -> None:
    """Ctrl-C (SIGINT) while the app waits to retry ends it with exit 130 and no traceback."""
    env = todo.child_env(
        {
            "DATABASE_URL": f"postgresql://me:pw@127.0.0.1:{closed_port}/tasks",
            "TASKCORE_RETRY_WAIT_INITIAL": "30",
            "TASKCORE_RETRY_WAIT_MAX": "60",
        }
    )
    proc = subprocess.Popen(
        [*todo.command(), "list", "-v", "--deadline", "120"],
        cwd=todo.home,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
    )
    try:
        assert proc.stderr is not None
        # wait until it is sleeping before its first retry: Python code is running by then
        with selectors.DefaultSelector() as selector:
            selector.register(proc.stderr, selectors.EVENT_READ)
            assert selector.select(timeout=60), "the app never logged a retry"
        first = proc.stderr.readline()
        assert "retrying in" in first, first
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, first + err
    assert "Traceback" not in err
    assert "KeyboardInterrupt" not in err
    assert out == ""


# -- stored exactly, shown safely --------------------------------------------------------------


def test_unicode_and_quotes_are_stored_exactly(todo: TodoApp) -> None:
    """Non-ASCII text, quotes, SQL-ish text and surrounding spaces are stored byte for byte."""
    title = '  Grüße, 日本語 & emoji 🎉 — it\'s "quoted"; DROP TABLE tasks; --  '
    description = "naïve café\n'single' \"double\" `back` \\ backslash %s ?"
    task_id = added_id(todo.ok("add", title, "--description", description))
    assert todo.rows("SELECT title, description FROM tasks WHERE id = ?", (task_id,)) == [
        (title, description)
    ]
    assert f"title:       {title}\n" in todo.ok("show", str(task_id)).out
    assert "日本語 & emoji 🎉" in todo.ok("list").out


def test_control_characters_are_escaped_in_output(todo: TodoApp) -> None:
    """Terminal escapes and bidi overrides in a title are stored as given but printed escaped."""
    title = "red\x1b[31malert\tand\x07bell\u202etxt.exe"
    task_id = added_id(todo.ok("add", title))
    assert todo.rows("SELECT title FROM tasks") == [(title,)]
    for output in (todo.ok("list").out, todo.ok("show", str(task_id)).out):
        assert "\x1b" not in output
        assert "\x07" not in output
        assert "\t" not in output
        assert "\u202e" not in output
        assert "red\\x1b[31malert\\tand\\x07bell\\u202etxt.exe" in output


def test_list_truncates_to_the_terminal_width(todo: TodoApp) -> None:
    """On a terminal, long titles and descriptions are cut with an ellipsis so rows fit it."""
    todo.ok("add", "t" * 150, "--description", "d" * 500)
    result = todo.run_on_terminal("list", columns=80)
    assert result.code == 0, str(result)
    lines = result.out.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" in lines[1]


@pytest.mark.parametrize("columns", [None, "80"], ids=["no-COLUMNS", "COLUMNS=80"])
def test_piped_list_shows_full_titles(todo: TodoApp, columns: str | None) -> None:
    """When stdout is not a terminal every title and description is printed whole, whatever COLUMNS says."""
    title, description = "t" * 150 + " end of title", "d" * 500 + " end of description"
    todo.ok("add", title, "--description", description)
    todo.ok("add", "short one")
    out = todo.ok("list", env={"COLUMNS": columns}).out
    assert "…" not in out
    row = out.splitlines()[1]
    assert row.endswith(f"{title}  {description}"), row
    assert todo.ok("list", "--all-users", env={"COLUMNS": columns}).out.count(title) == 1


# -- users -------------------------------------------------------------------------------------


def test_other_user_cannot_see_or_change_a_task(todo: TodoApp) -> None:
    """Tasks of one user are invisible to another: list, show, update, toggle, delete all fail."""
    task_id = added_id(todo.ok("add", "alice's secret", "--user", "alice"))
    assert "alice's secret" not in todo.ok("list", "--user", "bob").out
    assert "alice's secret" not in todo.ok("list").out  # the default user "" is another user
    for args in (("show",), ("toggle",), ("delete",), ("update", "--title", "pwned")):
        result = todo.run(args[0], str(task_id), *args[1:], "--user", "bob")
        assert assert_one_error_line(result, 1) == f"todo: error: task {task_id} not found"
    assert todo.rows(_COLUMNS) == [(task_id, "alice's secret", None, 0, "alice")]
    assert "alice's secret" in todo.ok("list", "--user", "alice").out


def test_todo_user_env_is_the_default_user(todo: TodoApp) -> None:
    """TODO_USER sets the current user when --user is not given; --user wins over it."""
    todo.ok("add", "from env", env={"TODO_USER": "carol"})
    todo.ok("add", "from flag", "--user", "dave", env={"TODO_USER": "carol"})
    assert todo.rows("SELECT title, user_id FROM tasks ORDER BY id") == [
        ("from env", "carol"),
        ("from flag", "dave"),
    ]
    carol = todo.ok("list", env={"TODO_USER": "carol"}).out
    assert "from env" in carol
    assert "from flag" not in carol


def test_list_all_users_shows_every_owner(todo: TodoApp) -> None:
    """`list --all-users` shows every user's tasks with a USER column; "" shows as (default)."""
    todo.ok("add", "mine")
    todo.ok("add", "erin's", "--user", "erin")
    lines = todo.ok("list", "--all-users").out.splitlines()
    assert lines[0].split()[:5] == ["ID", "DONE", "CREATED", "USER", "TITLE"]
    assert re.search(r"\(default\)\s+mine$", lines[1])
    assert re.search(r"erin\s+erin's$", lines[2])


def test_overlong_user_is_a_validation_error(todo: TodoApp) -> None:
    """A --user over 255 characters is refused with exit 2 and nothing is stored."""
    result = todo.run("add", "task", "--user", "u" * 256)
    assert_one_error_line(result, 2, "user_id")
    assert todo.rows("SELECT count(*) FROM tasks") in ([], [(0,)])


# -- doctor and help ---------------------------------------------------------------------------


def test_doctor_reports_the_sqlite_store(todo: TodoApp) -> None:
    """`doctor` on the SQLite default shows backend, URL, .env, deadline, version, latencies and settings."""
    result = todo.ok("doctor")
    fields = dict(line.split(":", 1) for line in result.out.splitlines())
    assert fields["backend"].strip() == "sqlite"
    assert fields["url"].strip() == f"sqlite:///{todo.sqlite_path}"
    assert fields["env file"].strip() == "none"
    assert fields["deadline"].strip() == "10 s (todo's default)"
    assert re.fullmatch(r"\s*3\.\d+\.\d+", fields["server version"])
    assert re.fullmatch(r"\s*\d+\.\d ms", fields["connect"])
    assert re.fullmatch(r"\s*\d+\.\d ms", fields["round trip"])
    assert re.match(r"\s*size \d+,", fields["pool"])
    assert "up to 10 attempts within the deadline" in fields["retries"]
    assert fields["settings"].strip() == "url from TASKCORE_SQLITE_PATH (environment variable)"
    assert fields["status"].strip() == "ok"


def test_doctor_shows_configured_settings(todo: TodoApp) -> None:
    """`doctor` reports the pool and retry settings taken from TASKCORE_* variables and says where each came from."""
    env = {"TASKCORE_POOL_SIZE": "3", "TASKCORE_RETRY_ATTEMPTS": "4"}
    out = todo.ok("doctor", env=env).out
    assert "size 3," in out
    assert "up to 4 attempts" in out
    assert "pool_size=3 from TASKCORE_POOL_SIZE (environment variable)" in out
    assert "retry_attempts=4 from TASKCORE_RETRY_ATTEMPTS (environment variable)" in out


def test_help_explains_commands_and_user_scoping(todo: TodoApp) -> None:
    """`todo --help` lists every command, says that commands are scoped to the current user, and documents every exit status."""
    result = todo.ok("--help")
    for command in (
        "add",
        "list",
        "show",
        "update",
        "done",
        "undone",
        "toggle",
        "delete",
        "doctor",
    ):
        assert re.search(rf"^\s+{command}\s", result.out, re.MULTILINE), command
    assert "TODO_USER" in result.out
    assert "TODO_DEADLINE" in result.out
    assert "--all-users" in result.out
    assert "DATABASE_URL" in result.out
    exit_status = result.out.split("exit status:", 1)[1]
    codes = re.findall(r"^  (\d+) ", exit_status, re.MULTILINE)
    assert codes == ["0", "1", "2", "3", "4", "70", "130"]
    assert not todo.sqlite_path.exists()  # help touches no database


def test_console_script_is_installed(todo: TodoApp) -> None:
    """The `todo` script installed next to the interpreter runs the same app."""
    script = Path(todo.command()[0]).with_name("todo")
    if not script.exists():
        pytest.skip("no todo console script next to this interpreter")
    done = subprocess.run(
        [str(script), "add", "via script"],
        cwd=todo.home,
        env=todo.child_env(),
        capture_output=True,
        encoding="utf-8",
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert todo.rows("SELECT title FROM tasks") == [("via script",)]
