"""Settings: read lazily from the environment and a .env file, validated, never echoing secrets."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dotenv import dotenv_values, find_dotenv
from sqlalchemy.engine import URL

from taskcore._url import normalize_url
from taskcore.errors import ConfigurationError

__all__ = ["Settings", "default_sqlite_path", "load_settings"]


def default_sqlite_path() -> Path:
    """Where the embedded default database lives: ``$XDG_DATA_HOME/taskcore/tasks.db``."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "taskcore" / "tasks.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything taskcore can be configured with; see .env.example for each variable."""

    #: Normalised SQLAlchemy URL. ``repr`` masks the password.
    url: URL = field(repr=False)
    pool_size: int = 5
    pool_max_overflow: int = 5
    pool_timeout: float = 30.0
    #: Replace pooled connections older than this (s); below Neon's 300 s scale-to-zero window.
    pool_recycle: float = 240.0
    #: libpq connect_timeout (s, per address); Neon advises at least 10 s for cold starts.
    connect_timeout: int = 10
    retry_attempts: int = 10
    retry_deadline: float = 30.0
    retry_wait_initial: float = 0.1
    retry_wait_max: float = 5.0
    retry_wait_jitter: float = 0.5
    #: Record the transaction id before COMMIT (+1 round trip per writing unit of work) so a
    #: lost COMMIT reply can be resolved instead of reported as unknown (PostgreSQL >= 13).
    commit_protection: bool = True
    #: Per-process retry budget (see taskcore.budget.RetryBudget); off retries every call fully.
    retry_budget: bool = True
    retry_budget_ratio: float = 0.2
    retry_budget_floor: float = 1.0
    retry_budget_window: float = 10.0
    retry_probe_interval: float = 1.0

    @property
    def backend(self) -> str:
        """``"postgresql"`` or ``"sqlite"``."""
        return self.url.get_backend_name()

    @property
    def masked_url(self) -> str:
        """The URL with its password replaced by ``***``, safe to show."""
        return self.url.render_as_string(hide_password=True)

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr
        )
        return f"Settings(url={self.masked_url!r}, {fields})"


# Environment variable -> (field, parser). DATABASE_URL is handled separately.
_NUMERIC_VARS: dict[str, tuple[str, type[int] | type[float]]] = {
    "TASKCORE_POOL_SIZE": ("pool_size", int),
    "TASKCORE_POOL_MAX_OVERFLOW": ("pool_max_overflow", int),
    "TASKCORE_POOL_TIMEOUT": ("pool_timeout", float),
    "TASKCORE_POOL_RECYCLE": ("pool_recycle", float),
    "TASKCORE_CONNECT_TIMEOUT": ("connect_timeout", int),
    "TASKCORE_RETRY_ATTEMPTS": ("retry_attempts", int),
    "TASKCORE_RETRY_DEADLINE": ("retry_deadline", float),
    "TASKCORE_RETRY_WAIT_INITIAL": ("retry_wait_initial", float),
    "TASKCORE_RETRY_WAIT_MAX": ("retry_wait_max", float),
    "TASKCORE_RETRY_WAIT_JITTER": ("retry_wait_jitter", float),
    "TASKCORE_RETRY_BUDGET_RATIO": ("retry_budget_ratio", float),
    "TASKCORE_RETRY_BUDGET_FLOOR": ("retry_budget_floor", float),
    "TASKCORE_RETRY_BUDGET_WINDOW": ("retry_budget_window", float),
    "TASKCORE_RETRY_PROBE_INTERVAL": ("retry_probe_interval", float),
}
_BOOLEAN_VARS = {
    "TASKCORE_COMMIT_PROTECTION": "commit_protection",
    "TASKCORE_RETRY_BUDGET": "retry_budget",
}
_FIELD_TYPES: dict[str, type[int] | type[float] | type[bool]] = {
    **dict(_NUMERIC_VARS.values()),
    **dict.fromkeys(_BOOLEAN_VARS.values(), bool),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _environment() -> dict[str, str]:
    """The process environment over the nearest .env file (the real environment wins)."""
    path = find_dotenv(usecwd=True)
    values = {k: v for k, v in dotenv_values(path).items() if v is not None} if path else {}
    values.update(os.environ)
    return values


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and .env); keyword overrides win over both.

    ``database_url`` may be given as an override; unset means the embedded SQLite default
    (``TASKCORE_SQLITE_PATH``, else :func:`default_sqlite_path`).
    """
    env = _environment()
    raw_url = overrides.pop("database_url", None) or env.get("DATABASE_URL", "").strip()
    if not raw_url:
        sqlite_path = Path(env.get("TASKCORE_SQLITE_PATH") or default_sqlite_path())
        raw_url = f"sqlite:///{sqlite_path}"
    values: dict[str, Any] = {}
    for var, (name, parse) in _NUMERIC_VARS.items():
        if var in env and env[var].strip():
            values[name] = _parse_number(var, env[var], parse)
    for var, name in _BOOLEAN_VARS.items():
        if var in env and env[var].strip():
            values[name] = _parse_bool(var, env[var])
    for name, value in overrides.items():
        kind = _FIELD_TYPES.get(name)
        if kind is None:
            raise ConfigurationError(f"unknown setting {name!r}")
        if kind is bool:
            values[name] = _parse_bool(name, value)
        else:
            values[name] = _parse_number(name, value, kind)
    settings = Settings(url=normalize_url(raw_url), **values)
    _check(settings)
    return settings


def _parse_bool(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ConfigurationError(f"{name} must be on or off")


def _parse_number(
    name: str, value: object, parse: type[int] | type[float] | type[bool]
) -> int | float:
    try:
        return parse(str(value).strip())
    except (TypeError, ValueError):
        pass
    raise ConfigurationError(f"{name} must be a number")  # outside except: no __context__


def _check(s: Settings) -> None:
    if s.pool_size < 1 or s.pool_max_overflow < 0:
        raise ConfigurationError("TASKCORE_POOL_SIZE must be >= 1 and the overflow >= 0")
    if s.connect_timeout < 2:
        # libpq treats anything below 2 s as 2 s; say so instead of silently changing it
        raise ConfigurationError("TASKCORE_CONNECT_TIMEOUT must be at least 2 seconds")
    if s.retry_attempts < 1:
        raise ConfigurationError("TASKCORE_RETRY_ATTEMPTS must be at least 1")
    if min(s.retry_deadline, s.retry_wait_initial, s.retry_wait_max, s.retry_wait_jitter) < 0:
        raise ConfigurationError("retry deadline and waits must not be negative")
    if (
        min(s.retry_budget_ratio, s.retry_budget_floor) < 0
        or min(s.retry_budget_window, s.retry_probe_interval) <= 0
    ):
        raise ConfigurationError("retry budget ratio/floor must be >= 0, window/probe > 0")
    if s.pool_timeout <= 0:
        raise ConfigurationError("TASKCORE_POOL_TIMEOUT must be positive")
