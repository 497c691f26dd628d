"""Configuration: URL normalisation, value checks, explicit settings, errors that never echo secrets."""

from __future__ import annotations

import logging
import math
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

import taskcore
from taskcore.config import Settings, default_sqlite_path, load_settings, settings_for

SECRET = "Sup3r-Secret-pw"
NEON = (
    f"postgresql://alex:{SECRET}@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
    "?sslmode=require&channel_binding=require"
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test starts with no DATABASE_URL/TASKCORE_* and an empty working directory."""
    for var in list(__import__("os").environ):
        if var == "DATABASE_URL" or var.startswith("TASKCORE_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


def test_neon_url_keeps_tls_and_channel_binding_and_uses_psycopg2() -> None:
    """A Neon console string is accepted as is, driven by psycopg2, with its TLS options kept."""
    url = load_settings(database_url=NEON).url
    assert url.drivername == "postgresql+psycopg2"
    assert url.query["sslmode"] == "require"
    assert url.query["channel_binding"] == "require"
    assert url.password == SECRET


@pytest.mark.parametrize(
    "raw", ["postgres://u:p@db.example.com/app", "postgresql+psycopg2://u:p@db.example.com/app"]
)
def test_postgres_aliases_normalise_to_psycopg2(raw: str) -> None:
    """postgres:// and postgresql+psycopg2:// both end up on psycopg2."""
    assert load_settings(database_url=raw).url.drivername == "postgresql+psycopg2"


def test_remote_host_gets_tls_required_unless_the_url_says_otherwise() -> None:
    """A remote host without sslmode gets sslmode=require; an explicit sslmode is respected."""
    assert load_settings(database_url="postgresql://u:p@db.example.com/app").url.query == {
        "sslmode": "require"
    }
    explicit = load_settings(database_url="postgresql://u:p@db.example.com/app?sslmode=disable")
    assert explicit.url.query["sslmode"] == "disable"


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
def test_loopback_host_is_not_forced_to_tls(host: str) -> None:
    """Local servers are left to libpq's default (a local test server usually has no TLS)."""
    assert "sslmode" not in load_settings(database_url=f"postgresql://u:p@{host}/app").url.query


def test_sqlite_url_is_accepted() -> None:
    """sqlite:/// URLs select the embedded SQLite backend."""
    settings = load_settings(database_url="sqlite:////tmp/x.db")
    assert settings.backend == "sqlite"


def test_unset_url_means_the_embedded_sqlite_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """No DATABASE_URL: a SQLite file at the documented place, overridable by TASKCORE_SQLITE_PATH."""
    assert load_settings().url.database == str(default_sqlite_path())
    monkeypatch.setenv("TASKCORE_SQLITE_PATH", "/tmp/elsewhere/tasks.db")
    assert load_settings().url.database == "/tmp/elsewhere/tasks.db"


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (f"postgresql://u:{SECRET}@host:notaport/db", "port"),
        (f"mysql://u:{SECRET}@host/db", "scheme"),
        (f"postgresql+asyncpg://u:{SECRET}@host/db", "scheme"),
        ("this is not a url", "not a valid URL"),
        (f"postgresql://u:{SECRET}@host", "no database"),
        (f"postgresql://u:{SECRET}@host/db?sslmode=sometimes", "sslmode"),
        (
            f"postgresql://u:{SECRET}@ep-x-1-pooler.eu.aws.neon.tech/db?options=-c%20a%3Db",
            "options",
        ),
    ],
)
def test_malformed_url_names_the_problem_without_the_password(raw: str, problem: str) -> None:
    """A bad URL raises ConfigurationError that names the problem and never shows the password."""
    with pytest.raises(taskcore.ConfigurationError) as info:
        load_settings(database_url=raw)
    error = info.value
    assert problem in str(error)
    for text in (str(error), repr(error), repr(error.args)):
        assert SECRET not in text
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None


def test_real_environment_wins_over_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """.env fills in what the environment lacks; a variable set in the environment wins."""
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgresql://u:p@from-dotenv.example.com/app\nTASKCORE_POOL_SIZE=7\n"
    )
    settings = load_settings()
    assert settings.url.host == "from-dotenv.example.com"
    assert settings.pool_size == 7
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@from-env.example.com/app")
    assert load_settings().url.host == "from-env.example.com"


def test_numeric_settings_are_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-numeric or out-of-range setting is a ConfigurationError naming the variable."""
    monkeypatch.setenv("TASKCORE_RETRY_ATTEMPTS", "many")
    with pytest.raises(taskcore.ConfigurationError, match="TASKCORE_RETRY_ATTEMPTS"):
        load_settings()
    monkeypatch.setenv("TASKCORE_RETRY_ATTEMPTS", "3")
    monkeypatch.setenv("TASKCORE_CONNECT_TIMEOUT", "1")
    with pytest.raises(taskcore.ConfigurationError, match="TASKCORE_CONNECT_TIMEOUT"):
        load_settings()


def test_settings_repr_masks_the_password() -> None:
    """repr(Settings) and masked_url show *** instead of the password."""
    settings = load_settings(database_url=NEON)
    assert SECRET not in repr(settings)
    assert SECRET not in settings.masked_url
    assert "***" in settings.masked_url


def test_import_reads_nothing_and_connects_nowhere(tmp_path: Path) -> None:
    """Importing taskcore with a broken DATABASE_URL succeeds; the error comes at first use."""
    code = (
        "import taskcore\n"
        "try:\n"
        "    taskcore.get_tasks()\n"
        "except taskcore.ConfigurationError as e:\n"
        "    print('config error at first use')\n"
    )
    env = {"DATABASE_URL": "mysql://nope", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "config error at first use"


def test_unescaped_at_in_password_is_refused_without_showing_it() -> None:
    """A password with a raw '@' is refused with advice; no part of it appears."""
    with pytest.raises(taskcore.ConfigurationError, match="%40") as info:
        load_settings(database_url="postgresql://u:se@cret@db.example.com/app")
    assert "cret" not in str(info.value)


@pytest.mark.parametrize(
    "raw",
    [
        "sqlite://",
        "sqlite:///",
        "sqlite:///:memory:",
        "sqlite:///file::memory:?cache=shared&uri=true",
        "sqlite:///file:shared?mode=memory&cache=shared&uri=true",
        "sqlite:///tasks.db?mode=memory",
        "sqlite:///file:x.db?vfs=memdb&uri=true",
    ],
)
def test_in_memory_sqlite_is_refused_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    """Every in-memory SQLite spelling is refused, saying each pooled connection would be empty."""
    monkeypatch.setenv("DATABASE_URL", raw)
    loaders: list[Callable[[], Settings]] = [load_settings, partial(settings_for, raw)]
    for load in loaders:
        with pytest.raises(taskcore.ConfigurationError, match="in-memory SQLite") as info:
            load()
        assert "own empty database" in str(info.value)
        assert "file path" in str(info.value)


def test_in_memory_sqlite_path_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKCORE_SQLITE_PATH=:memory: is refused too, naming the variable."""
    monkeypatch.setenv("TASKCORE_SQLITE_PATH", ":memory:")
    with pytest.raises(taskcore.ConfigurationError, match=r"TASKCORE_SQLITE_PATH \(environment"):
        load_settings()


def test_sqlite_url_with_a_host_is_refused() -> None:
    """sqlite://name/x.db (two slashes) is refused instead of failing later with the URL shown."""
    with pytest.raises(taskcore.ConfigurationError, match="three or four slashes"):
        settings_for("sqlite://data/x.db")


def test_sqlite_paths_from_the_environment_and_keywords_resolve_against_the_cwd(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A relative SQLite path given outside a .env is made absolute against the current directory."""
    monkeypatch.setenv("DATABASE_URL", "sqlite:///env.db")
    assert load_settings().url.database == str(tmp_path / "env.db")
    assert load_settings(database_url="sqlite:///sub/../kw.db").url.database == str(
        tmp_path / "kw.db"
    )
    assert settings_for("sqlite:///explicit.db").url.database == str(tmp_path / "explicit.db")
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("TASKCORE_SQLITE_PATH", "data/t.db")
    assert load_settings().url.database == str(tmp_path / "data" / "t.db")


def test_sqlite_uri_form_relative_path_is_made_absolute(tmp_path: Path) -> None:
    """A relative file: URI (uri=true) becomes an absolute file: URI; its options are kept."""
    url = settings_for("sqlite:///file:rel.db?mode=ro&uri=true").url
    assert url.database == f"file:{tmp_path}/rel.db"
    assert url.query == {"mode": "ro", "uri": "true"}
    assert settings_for("sqlite:///file:/abs/x.db?uri=true").url.database == "file:/abs/x.db"


_FLOATS = [
    "deadline",
    "pool_idle_timeout",
    "pool_recycle",
    "retry_wait_initial",
    "retry_wait_max",
    "retry_wait_jitter",
    "retry_budget_ratio",
    "retry_budget_floor",
    "retry_budget_window",
    "retry_probe_interval",
]
_INTS = ["pool_size", "connect_timeout", "retry_attempts"]


@pytest.mark.parametrize("name", _FLOATS + _INTS)
@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity", "+INF", "1e999"])
def test_non_finite_numbers_are_refused_for_every_numeric_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, text: str
) -> None:
    """nan/inf in any spelling (and overflowing 1e999) is refused for every numeric variable."""
    var = f"TASKCORE_{name.upper()}"
    monkeypatch.setenv(var, text)
    with pytest.raises(taskcore.ConfigurationError) as info:
        load_settings()
    assert str(info.value).startswith(f"{var} (environment variable) must be ")
    assert text not in str(info.value)


@pytest.mark.parametrize("name", _FLOATS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_keyword_values_are_refused(name: str, value: float) -> None:
    """Float nan/inf passed as keywords are refused, naming the keyword."""
    with pytest.raises(
        taskcore.ConfigurationError, match=f"^keyword argument {name} must be a finite"
    ):
        settings_for("sqlite:///x.db", **{name: value})


@pytest.mark.parametrize("name", _INTS)
@pytest.mark.parametrize("value", ["1.5", "3.0", "1e3", 3.0, 2.5, True, "ten"])
def test_integer_settings_take_whole_numbers_only(name: str, value: object) -> None:
    """An integer setting refuses fractions, float spellings and booleans with a clear message."""
    with pytest.raises(
        taskcore.ConfigurationError, match=f"^keyword argument {name} must be an integer >= "
    ):
        settings_for("sqlite:///x.db", **{name: value})


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("deadline", "0", "must be a finite number > 0"),
        ("pool_idle_timeout", "0", "must be a finite number > 0"),
        ("pool_recycle", "-1", "must be a finite number > 0"),
        ("pool_size", "0", "must be an integer >= 1"),
        ("connect_timeout", "1", "must be an integer >= 2 (libpq"),
        ("retry_attempts", "0", "must be an integer >= 1"),
        ("retry_wait_max", "-0.5", "must be a finite number >= 0"),
        ("retry_budget_window", "0", "must be a finite number > 0"),
        ("commit_protection", "maybe", "must be on or off"),
    ],
)
def test_out_of_range_values_are_refused_with_the_bound(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, problem: str
) -> None:
    """Each setting's lower bound is enforced and stated in the error."""
    monkeypatch.setenv(f"TASKCORE_{name.upper()}", value)
    with pytest.raises(taskcore.ConfigurationError, match=re.escape(problem)):
        load_settings()


def test_new_defaults_and_removed_fields() -> None:
    """deadline 30 s, pool of 10 with a 60 s idle timeout; retry_deadline and overflow are gone."""
    settings = settings_for("sqlite:///x.db")
    assert (settings.deadline, settings.pool_size, settings.pool_idle_timeout) == (30.0, 10, 60.0)
    assert (settings.pool_recycle, settings.connect_timeout) == (240.0, 10)
    for gone in ("retry_deadline", "pool_max_overflow", "pool_timeout"):
        assert not hasattr(settings, gone)


def test_new_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """TASKCORE_DEADLINE and TASKCORE_POOL_IDLE_TIMEOUT reach their fields; zero waits are allowed."""
    monkeypatch.setenv("TASKCORE_DEADLINE", " 2.5 ")
    monkeypatch.setenv("TASKCORE_POOL_IDLE_TIMEOUT", "15")
    monkeypatch.setenv("TASKCORE_RETRY_WAIT_INITIAL", "0")
    settings = load_settings()
    assert (settings.deadline, settings.pool_idle_timeout) == (2.5, 15.0)
    assert settings.retry_wait_initial == 0.0


def test_settings_for_reads_nothing_from_the_environment_or_dotenv(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An explicit handle's settings ignore DATABASE_URL, TASKCORE_* and ./.env entirely."""
    (tmp_path / ".env").write_text("TASKCORE_DEADLINE=5\nTASKCORE_POOL_SIZE=nonsense\n")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@from-env.example.com/app")
    monkeypatch.setenv("TASKCORE_RETRY_ATTEMPTS", "not a number")
    monkeypatch.setenv("TASKCORE_RETRY_ATEMPTS", "3")
    monkeypatch.setenv("TASKCORE_ENV_FILE", str(tmp_path / "missing.env"))
    with caplog.at_level(logging.DEBUG, logger="taskcore"):
        settings = settings_for("postgresql://u:p@127.0.0.1/app", pool_size=4)
    assert settings.url.host == "127.0.0.1"
    assert (settings.pool_size, settings.deadline, settings.retry_attempts) == (4, 30.0, 10)
    assert settings.env_file is None
    assert settings.sources["pool_size"] == "keyword argument pool_size"
    assert settings.sources["url"] == "url argument"
    assert settings.sources["deadline"] == "default"
    assert caplog.records == []


def test_settings_for_refuses_unknown_and_removed_keywords() -> None:
    """Unknown keywords are errors with a hint; the removed names say what replaced them."""
    url = "sqlite:///x.db"
    with pytest.raises(taskcore.ConfigurationError, match="renamed to 'deadline'"):
        settings_for(url, retry_deadline=5)
    with pytest.raises(taskcore.ConfigurationError, match="never grows past pool_size"):
        settings_for(url, pool_max_overflow=5)
    with pytest.raises(taskcore.ConfigurationError, match="bounded by deadline"):
        load_settings(pool_timeout=5)
    with pytest.raises(taskcore.ConfigurationError, match="did you mean 'retry_attempts'"):
        settings_for(url, retry_atempts=3)
    with pytest.raises(taskcore.ConfigurationError, match="first argument"):
        settings_for(url, database_url="sqlite:///y.db")


def test_explicit_url_errors_name_the_argument_without_the_password() -> None:
    """A bad URL given to settings_for is reported as the url argument, password hidden."""
    with pytest.raises(taskcore.ConfigurationError, match=r"^url argument scheme") as info:
        settings_for(f"mysql://u:{SECRET}@host/db")
    assert SECRET not in str(info.value)


def test_settings_survive_pickling_for_spawned_processes() -> None:
    """Settings (sources included) pickle, so a spawned child can receive a handle's settings."""
    settings = settings_for(NEON, deadline=3)
    copy = pickle.loads(pickle.dumps(settings))  # noqa: S301 -- our own bytes, just made
    assert copy == settings
    assert dict(copy.sources) == dict(settings.sources)
    assert copy.url.password == SECRET
