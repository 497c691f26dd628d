"""Configuration sources: which .env is read, where each value came from, and warnings by name."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

import taskcore
from taskcore.config import default_sqlite_path, load_settings, settings_for

SECRET = "Dotenv-Secret-pw"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no DATABASE_URL/TASKCORE_* and an empty working directory."""
    for var in list(os.environ):
        if var == "DATABASE_URL" or var.startswith("TASKCORE_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


def _records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "taskcore_event", None) == event]


def test_dotenv_in_a_parent_directory_is_not_read(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A .env in a parent folder (another project's checkout) is ignored: only ./.env counts."""
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://u:p@parent.example.com/app\n")
    child = tmp_path / "child"
    child.mkdir()
    monkeypatch.chdir(child)
    settings = load_settings()
    assert settings.env_file is None
    assert settings.url.database == str(default_sqlite_path())
    assert settings.sources["url"] == "default"


def test_dotenv_in_the_current_directory_is_read_and_recorded(tmp_path: Path) -> None:
    """./.env is read, its path recorded in env_file and in each value's source."""
    (tmp_path / ".env").write_text("TASKCORE_POOL_SIZE=7\n")
    settings = load_settings()
    assert settings.env_file == tmp_path / ".env"
    assert settings.pool_size == 7
    assert settings.sources["pool_size"] == f"TASKCORE_POOL_SIZE (from {tmp_path / '.env'})"


def test_env_file_variable_names_the_file_and_wins_over_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TASKCORE_ENV_FILE picks the file (relative to the cwd); ./.env is then not read."""
    (tmp_path / ".env").write_text("TASKCORE_POOL_SIZE=7\n")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.env").write_text("TASKCORE_POOL_SIZE=3\n")
    monkeypatch.setenv("TASKCORE_ENV_FILE", "conf/app.env")
    settings = load_settings()
    assert settings.env_file == tmp_path / "conf" / "app.env"
    assert settings.pool_size == 3


def test_missing_env_file_is_an_error_naming_the_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A TASKCORE_ENV_FILE that does not exist is a ConfigurationError, not a silent default."""
    monkeypatch.setenv("TASKCORE_ENV_FILE", str(tmp_path / "nope.env"))
    with pytest.raises(taskcore.ConfigurationError, match="TASKCORE_ENV_FILE") as info:
        load_settings()
    assert str(tmp_path / "nope.env") in str(info.value)


@pytest.mark.parametrize("value", ["", "none", "None", " NONE "])
def test_empty_or_none_env_file_disables_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    """TASKCORE_ENV_FILE empty or 'none' reads no .env, not even ./.env."""
    (tmp_path / ".env").write_text("TASKCORE_POOL_SIZE=7\n")
    monkeypatch.setenv("TASKCORE_ENV_FILE", value)
    settings = load_settings()
    assert settings.env_file is None
    assert settings.pool_size == 10


def test_settings_never_show_the_dotenv_contents(tmp_path: Path) -> None:
    """repr and sources name the .env file but none of its values (the password least of all)."""
    (tmp_path / ".env").write_text(
        f"DATABASE_URL=postgresql://alex:{SECRET}@db.example.com/app\nTASKCORE_DEADLINE=12.5\n"
        "OTHER_APP_TOKEN=tok-123\n"
    )
    settings = load_settings()
    shown = repr(settings) + repr(dict(settings.sources))
    assert SECRET not in shown
    assert "tok-123" not in shown
    assert "12.5" not in repr(dict(settings.sources))
    assert str(tmp_path / ".env") in repr(settings)


@pytest.mark.parametrize("where", ["dotenv", "environment", "keyword"])
def test_bad_value_errors_name_their_origin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    """A bad value's error says whether it came from which .env, the environment or a keyword."""
    kwargs: dict[str, int] = {}
    if where == "dotenv":
        (tmp_path / ".env").write_text("TASKCORE_RETRY_ATTEMPTS=0\n")
        expected = f"TASKCORE_RETRY_ATTEMPTS (from {tmp_path / '.env'}) must be an integer >= 1"
    elif where == "environment":
        monkeypatch.setenv("TASKCORE_RETRY_ATTEMPTS", "0")
        expected = "TASKCORE_RETRY_ATTEMPTS (environment variable) must be an integer >= 1"
    else:
        expected = "keyword argument retry_attempts must be an integer >= 1"
        kwargs["retry_attempts"] = 0
    with pytest.raises(taskcore.ConfigurationError) as info:
        load_settings(**kwargs)
    assert str(info.value) == expected


def test_bad_url_in_dotenv_names_the_file_without_the_password(tmp_path: Path) -> None:
    """A malformed DATABASE_URL in .env is reported with the .env's path, never the password."""
    (tmp_path / ".env").write_text(f"DATABASE_URL=mysql://u:{SECRET}@host/db\n")
    with pytest.raises(taskcore.ConfigurationError) as info:
        load_settings()
    assert str(info.value).startswith(f"DATABASE_URL (from {tmp_path / '.env'}) scheme")
    assert SECRET not in str(info.value)


def test_sources_record_each_fields_origin(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """sources maps every field to its origin: .env, environment, keyword or default."""
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///a.db\nTASKCORE_POOL_SIZE=7\n")
    monkeypatch.setenv("TASKCORE_POOL_SIZE", "8")
    monkeypatch.setenv("TASKCORE_RETRY_BUDGET", "off")
    settings = load_settings(deadline=3)
    assert settings.sources["url"] == f"DATABASE_URL (from {tmp_path / '.env'})"
    assert settings.sources["pool_size"] == "TASKCORE_POOL_SIZE (environment variable)"
    assert settings.pool_size == 8
    assert settings.sources["retry_budget"] == "TASKCORE_RETRY_BUDGET (environment variable)"
    assert settings.retry_budget is False
    assert settings.sources["deadline"] == "keyword argument deadline"
    assert settings.sources["connect_timeout"] == "default"


def test_relative_sqlite_paths_in_a_dotenv_resolve_against_its_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """sqlite:///rel.db and TASKCORE_SQLITE_PATH in a .env are relative to that file's folder."""
    project = tmp_path / "project"
    project.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env_file = project / ".env"
    monkeypatch.setenv("TASKCORE_ENV_FILE", str(env_file))
    env_file.write_text("DATABASE_URL=sqlite:///data/app.db\n")
    assert load_settings().url.database == str(project / "data" / "app.db")
    env_file.write_text("TASKCORE_SQLITE_PATH=../shared/tasks.db\n")
    assert load_settings().url.database == str(tmp_path / "shared" / "tasks.db")
    env_file.write_text("TASKCORE_SQLITE_PATH=/abs/tasks.db\n")
    assert load_settings().url.database == "/abs/tasks.db"


def test_environment_sqlite_path_overrides_dotenv_and_resolves_against_the_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A relative path from the environment resolves against the cwd even when a .env exists."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "app.env").write_text("TASKCORE_SQLITE_PATH=from-dotenv.db\n")
    monkeypatch.setenv("TASKCORE_ENV_FILE", str(tmp_path / "project" / "app.env"))
    monkeypatch.setenv("TASKCORE_SQLITE_PATH", "from-env.db")
    assert load_settings().url.database == str(tmp_path / "from-env.db")


def test_unknown_variables_give_one_warning_with_names_and_suggestions(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Misspelled TASKCORE_* names (env and .env) are named in ONE warning, values never shown."""
    (tmp_path / ".env").write_text(f"TASKCORE_POOL_SIZ={SECRET}\n")
    monkeypatch.setenv("TASKCORE_RETRY_ATEMPTS", "s3cr3t-value")
    with caplog.at_level(logging.WARNING, logger="taskcore"):
        settings = load_settings()
    assert settings.retry_attempts == 10
    records = _records(caplog, "unknown_setting")
    assert len(records) == 1
    record = records[0]
    assert record.name == "taskcore"
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert (
        "TASKCORE_RETRY_ATEMPTS (environment variable); did you mean TASKCORE_RETRY_ATTEMPTS?"
        in message
    )
    assert (
        f"TASKCORE_POOL_SIZ (from {tmp_path / '.env'}); did you mean TASKCORE_POOL_SIZE?" in message
    )
    assert record.setting_names == ("TASKCORE_POOL_SIZ", "TASKCORE_RETRY_ATEMPTS")  # type: ignore[attr-defined]
    assert SECRET not in message and "s3cr3t-value" not in message
    assert len(caplog.records) == 1


def test_known_variables_give_no_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Only current variable names: nothing is logged."""
    monkeypatch.setenv("TASKCORE_DEADLINE", "5")
    monkeypatch.setenv("TASKCORE_SQLITE_PATH", "t.db")
    monkeypatch.setenv("TASKCORE_ENV_FILE", "none")
    with caplog.at_level(logging.DEBUG, logger="taskcore"):
        load_settings()
    assert caplog.records == []


def test_retry_deadline_is_read_as_deadline_with_one_deprecation_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """TASKCORE_RETRY_DEADLINE still sets deadline, with one warning; TASKCORE_DEADLINE wins."""
    monkeypatch.setenv("TASKCORE_RETRY_DEADLINE", "12")
    with caplog.at_level(logging.WARNING, logger="taskcore"):
        settings = load_settings()
    assert settings.deadline == 12.0
    assert settings.sources["deadline"] == "TASKCORE_RETRY_DEADLINE (environment variable)"
    [record] = caplog.records
    assert record.taskcore_event == "deprecated_setting"  # type: ignore[attr-defined]
    assert (
        "TASKCORE_RETRY_DEADLINE (environment variable) is deprecated: use TASKCORE_DEADLINE"
        in (record.getMessage())
    )
    monkeypatch.setenv("TASKCORE_DEADLINE", "4")
    assert load_settings().deadline == 4.0


def test_bad_retry_deadline_error_names_the_old_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad TASKCORE_RETRY_DEADLINE is reported under its own name, not the new one."""
    monkeypatch.setenv("TASKCORE_RETRY_DEADLINE", "inf")
    with pytest.raises(taskcore.ConfigurationError, match=r"^TASKCORE_RETRY_DEADLINE \(environ"):
        load_settings()


def test_removed_pool_variables_are_ignored_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TASKCORE_POOL_MAX_OVERFLOW / TASKCORE_POOL_TIMEOUT load fine and are named as unused."""
    (tmp_path / ".env").write_text("TASKCORE_POOL_MAX_OVERFLOW=5\nTASKCORE_POOL_TIMEOUT=nonsense\n")
    with caplog.at_level(logging.WARNING, logger="taskcore"):
        load_settings()
    [record] = caplog.records
    assert record.taskcore_event == "deprecated_setting"  # type: ignore[attr-defined]
    message = record.getMessage()
    assert "TASKCORE_POOL_MAX_OVERFLOW" in message and "TASKCORE_POOL_TIMEOUT" in message
    assert "no longer used" in message and "nonsense" not in message


def test_env_file_variable_inside_a_dotenv_is_reported_as_ineffective(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """TASKCORE_ENV_FILE written inside a .env cannot pick the file; a warning says so."""
    (tmp_path / ".env").write_text("TASKCORE_ENV_FILE=other.env\n")
    with caplog.at_level(logging.WARNING, logger="taskcore"):
        assert load_settings().env_file == tmp_path / ".env"
    [record] = caplog.records
    assert "has no effect inside a .env file" in record.getMessage()


def test_env_example_documents_every_setting_with_its_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Uncommenting every TASKCORE_ line of .env.example sets every field to its default, warning-free."""
    example = Path(__file__).resolve().parents[2] / ".env.example"
    lines = [
        line.removeprefix("# ")
        for line in example.read_text().splitlines()
        if line.startswith("# TASKCORE_") and "=" in line
    ]
    (tmp_path / "example.env").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("TASKCORE_ENV_FILE", str(tmp_path / "example.env"))
    with caplog.at_level(logging.WARNING, logger="taskcore"):
        settings = load_settings()
    assert caplog.records == []
    defaults = settings_for("sqlite:///x.db")
    for name, source in settings.sources.items():
        if name != "url":
            assert source.startswith(f"TASKCORE_{name.upper()} (from "), name
            assert getattr(settings, name) == getattr(defaults, name), name
