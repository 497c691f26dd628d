"""Configuration: URL normalisation, precedence, laziness, and errors that never echo secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import taskcore
from taskcore.config import default_sqlite_path, load_settings

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
