"""`todo doctor`: which .env file was read (never its contents) and where each setting came from."""

from __future__ import annotations

import pytest
from _todo import TodoApp

pytestmark = pytest.mark.sqlite

_SECRET = "hunter2-in-a-comment"


def _write_env(todo: TodoApp, folder_name: str = "") -> str:
    """A .env in the app's working directory (or a sub-folder) with settings and a secret-looking comment."""
    folder = todo.home / folder_name if folder_name else todo.home
    folder.mkdir(exist_ok=True)
    path = folder / ".env"
    path.write_text(
        f"# admin password: {_SECRET}\n"
        "DATABASE_URL=sqlite:///from-dotenv.db\n"
        "TASKCORE_POOL_SIZE=3\n",
        encoding="utf-8",
    )
    return str(path)


def test_doctor_names_the_env_file_and_the_sources(todo: TodoApp) -> None:
    """doctor shows the path of the .env it read and which settings came from it, never the file's contents."""
    path = _write_env(todo)
    result = todo.ok("doctor", env={"TASKCORE_RETRY_ATTEMPTS": "4"})
    assert f"env file:        {path}\n" in result.out
    assert f"url from DATABASE_URL (from {path})" in result.out
    assert f"pool_size=3 from TASKCORE_POOL_SIZE (from {path})" in result.out
    assert "retry_attempts=4 from TASKCORE_RETRY_ATTEMPTS (environment variable)" in result.out
    # a relative SQLite path in a .env is relative to the .env's folder
    assert f"url:             sqlite:///{todo.home / 'from-dotenv.db'}\n" in result.out
    assert _SECRET not in result.out + result.err


def test_doctor_json_names_the_env_file(todo: TodoApp) -> None:
    """doctor --json gives env_file and per-setting sources as fields, without the file's contents."""
    path = _write_env(todo)
    result, document = todo.json("doctor")
    assert result.code == 0, str(result)
    assert document["env_file"] == path
    assert document["sources"] == {
        "url": f"DATABASE_URL (from {path})",
        "pool_size": f"TASKCORE_POOL_SIZE (from {path})",
    }
    assert document["settings"]["pool_size"] == 3
    assert _SECRET not in result.out


def test_doctor_names_an_env_file_chosen_by_taskcore_env_file(todo: TodoApp) -> None:
    """A .env named by TASKCORE_ENV_FILE is the one doctor reports; one in the working directory is then ignored."""
    chosen = _write_env(todo, "config")
    (todo.home / ".env").write_text("TASKCORE_POOL_SIZE=7\n", encoding="utf-8")
    out = todo.ok("doctor", env={"TASKCORE_ENV_FILE": chosen}).out
    assert f"env file:        {chosen}\n" in out
    assert "pool_size=3 from" in out


def test_doctor_without_env_file_says_none(todo: TodoApp) -> None:
    """With no .env in the working directory doctor says "none" (a .env in a parent folder is not read)."""
    (todo.home.parent / ".env").write_text("TASKCORE_POOL_SIZE=3\n", encoding="utf-8")
    out = todo.ok("doctor").out
    assert "env file:        none\n" in out
    assert "pool_size=3" not in out


def test_doctor_failure_in_json_keeps_what_it_found(todo: TodoApp, closed_port: int) -> None:
    """doctor --json on an unreachable server prints its settings with status "failed" and the typed error, exit 3."""
    url = f"postgresql://me:Sup3rSecret@127.0.0.1:{closed_port}/tasks"
    result, document = todo.json("doctor", "--deadline", "3", env={"DATABASE_URL": url})
    assert result.code == 3, str(result)
    assert result.err == ""
    assert document["status"] == "failed"
    assert document["url"] == f"postgresql+psycopg2://me:***@127.0.0.1:{closed_port}/tasks"
    assert document["sources"]["url"] == "DATABASE_URL (environment variable)"
    assert document["error"]["kind"] in {"transient", "connection_rejected", "database_unavailable"}
    assert "Sup3rSecret" not in result.out
