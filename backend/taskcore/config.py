"""Settings: validated, each value's origin recorded, never echoing secrets.

Two loaders. :func:`load_settings` is the default handle's: the environment over one ``.env``
file (``TASKCORE_ENV_FILE``, else ``./.env`` in the current directory only; read in
:mod:`taskcore._env`). :func:`settings_for` is an explicit handle's: its URL and keyword
arguments, nothing from the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsFloat

from sqlalchemy.engine import URL

from taskcore._env import Raw, Sources, read_environment, text
from taskcore._url import normalize_url, sqlite_file_url
from taskcore.errors import ConfigurationError

__all__ = ["Settings", "default_sqlite_path", "load_settings", "settings_for"]


def default_sqlite_path() -> Path:
    """Where the embedded default database lives: ``$XDG_DATA_HOME/taskcore/tasks.db``."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "taskcore" / "tasks.db"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything taskcore can be configured with; see .env.example for each variable."""

    #: Normalised SQLAlchemy URL (SQLite paths absolute). ``repr`` masks the password.
    url: URL = field(repr=False)
    #: Seconds one public call may take, retries and waits for a pooled connection included.
    deadline: float = 30.0
    #: Most connections one handle opens; the pool never overflows.
    pool_size: int = 10
    #: Close a pooled connection left unused this long (s).
    pool_idle_timeout: float = 60.0
    #: Replace pooled connections older than this (s); below Neon's 300 s scale-to-zero window.
    pool_recycle: float = 240.0
    #: libpq connect_timeout (s, per address); Neon advises at least 10 s for cold starts.
    connect_timeout: int = 10
    retry_attempts: int = 10
    retry_wait_initial: float = 0.1
    retry_wait_max: float = 5.0
    retry_wait_jitter: float = 0.5
    #: Record the transaction id before COMMIT (+1 round trip per writing unit of work) so a
    #: lost COMMIT reply can be resolved instead of reported as unknown (PostgreSQL >= 13).
    commit_protection: bool = True
    #: Per-handle retry budget (see taskcore.budget.RetryBudget); off retries every call fully.
    retry_budget: bool = True
    retry_budget_ratio: float = 0.2
    retry_budget_floor: float = 1.0
    retry_budget_window: float = 10.0
    retry_probe_interval: float = 1.0
    #: The .env file that was read (None: none). Its contents are never kept.
    env_file: Path | None = None
    #: Field name -> where its value came from ("TASKCORE_POOL_SIZE (environment variable)",
    #: "DATABASE_URL (from /app/.env)", "keyword argument deadline", "default"). No values.
    sources: Mapping[str, str] = field(
        default_factory=lambda: Sources({}), repr=False, compare=False
    )

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


@dataclass(frozen=True, slots=True)
class _Rule:
    kind: type[int] | type[float] | type[bool]
    minimum: float = 0.0
    above: bool = False  # the minimum itself is refused
    note: str = ""


_RULES: dict[str, _Rule] = {
    "deadline": _Rule(float, 0, above=True),
    "pool_size": _Rule(int, 1),
    "pool_idle_timeout": _Rule(float, 0, above=True),
    "pool_recycle": _Rule(float, 0, above=True),
    # libpq treats anything below 2 s as 2 s; say so instead of silently changing it
    "connect_timeout": _Rule(int, 2, note=" (libpq treats less than 2 s as 2 s)"),
    "retry_attempts": _Rule(int, 1),
    "retry_wait_initial": _Rule(float),
    "retry_wait_max": _Rule(float),
    "retry_wait_jitter": _Rule(float),
    "commit_protection": _Rule(bool),
    "retry_budget": _Rule(bool),
    "retry_budget_ratio": _Rule(float),
    "retry_budget_floor": _Rule(float),
    "retry_budget_window": _Rule(float, 0, above=True),
    "retry_probe_interval": _Rule(float, 0, above=True),
}
_KEYWORDS_GONE = {
    "retry_deadline": "renamed to 'deadline'",
    "pool_max_overflow": "removed: the pool never grows past pool_size",
    "pool_timeout": "removed: waiting for a pooled connection is bounded by deadline",
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def load_settings(**overrides: Any) -> Settings:
    """The default handle's settings: keyword overrides over the environment over ``.env``.

    ``database_url`` may be given as an override; unset means the embedded SQLite default
    (``TASKCORE_SQLITE_PATH``, else :func:`default_sqlite_path`). Other keywords are field
    names. Unknown or deprecated ``TASKCORE_*`` variables are named in one warning each.
    """
    env = read_environment(_RULES)
    cwd = Path.cwd()
    raw_url = overrides.pop("database_url", None)
    url = Raw(raw_url, "keyword argument database_url", cwd) if raw_url else env.url
    values = env.values | _keywords(overrides, cwd)
    if url is not None:
        parsed_url = normalize_url(text(url), source=url.source, base=url.base)
        url_source = url.source
    elif env.sqlite_path is not None:
        path = env.sqlite_path
        parsed_url = sqlite_file_url(text(path), source=path.source, base=path.base)
        url_source = path.source
    else:
        parsed_url = sqlite_file_url(str(default_sqlite_path()), source="default", base=cwd)
        url_source = "default"
    return _settings(parsed_url, url_source, values, env.env_file)


def settings_for(url: str | URL, **overrides: Any) -> Settings:
    """An explicit handle's settings: ``url`` and keyword overrides only (no environment, no .env).

    Keywords are field names (``deadline``, ``pool_size``, ...), validated like the variables.
    A relative SQLite path resolves against the current directory.
    """
    cwd = Path.cwd()
    values = _keywords(overrides, cwd)
    parsed = normalize_url(text(Raw(url, "url argument", cwd)), source="url argument", base=cwd)
    return _settings(parsed, "url argument", values, None)


def _settings(url: URL, url_source: str, values: dict[str, Raw], env_file: Path | None) -> Settings:
    parsed: dict[str, Any] = {name: _parse(_RULES[name], raw) for name, raw in values.items()}
    sources = {"url": url_source} | {
        name: values[name].source if name in values else "default" for name in _RULES
    }
    return Settings(url=url, **parsed, env_file=env_file, sources=Sources(sources))


def _keywords(overrides: Mapping[str, Any], cwd: Path) -> dict[str, Raw]:
    for name in overrides:
        if name not in _RULES:
            raise ConfigurationError(f"unknown setting {name!r}{_keyword_hint(name)}")
    return {name: Raw(value, f"keyword argument {name}", cwd) for name, value in overrides.items()}


def _keyword_hint(name: str) -> str:
    if name == "database_url":
        return " here: the URL is the first argument"
    if name in _KEYWORDS_GONE:
        return f": {_KEYWORDS_GONE[name]}"
    close = difflib.get_close_matches(name, list(_RULES), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _parse(rule: _Rule, raw: Raw) -> int | float | bool:
    if rule.kind is bool:
        return _parse_bool(raw)
    number = _parse_int(raw.value) if rule.kind is int else _parse_float(raw.value)
    if number is None or number < rule.minimum or (rule.above and number == rule.minimum):
        kind = "an integer" if rule.kind is int else "a finite number"
        bound = f"{'>' if rule.above else '>='} {rule.minimum:g}"
        # Raised here, outside any except block: no __context__ to carry the value along.
        raise ConfigurationError(f"{raw.source} must be {kind} {bound}{rule.note}")
    return number


def _parse_bool(raw: Raw) -> bool:
    if isinstance(raw.value, bool):
        return raw.value
    word = text(raw).strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    raise ConfigurationError(f"{raw.source} must be on or off (or 1/0, true/false, yes/no)")


def _parse_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if not isinstance(value, str):
        return None  # 1.5, and 2.0 too: an integer setting takes whole numbers only
    try:
        return int(value.strip())
    except ValueError:
        return None


def _parse_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if not isinstance(value, str | SupportsFloat):
        return None
    try:
        number = float(value)  # float() strips surrounding whitespace itself
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None  # nan, inf, 1e999 ...
