"""Settings: validated, each value's origin recorded, never echoing secrets.

Two loaders. :func:`load_settings` is the default handle's: the environment over one ``.env``
file (``TASKCORE_ENV_FILE``, else ``./.env`` in the current directory only). :func:`settings_for`
is an explicit handle's: its URL and keyword arguments, nothing from the environment.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsFloat

from dotenv import dotenv_values
from sqlalchemy.engine import URL

from taskcore._url import normalize_url, sqlite_file_url
from taskcore.errors import ConfigurationError

__all__ = ["Settings", "default_sqlite_path", "load_settings", "settings_for"]

_log = logging.getLogger("taskcore")


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
        default_factory=lambda: _Sources({}), repr=False, compare=False
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


class _Sources(Mapping[str, str]):
    """A read-only field -> origin mapping that, unlike MappingProxyType, pickles (spawn)."""

    __slots__ = ("_origins",)

    def __init__(self, origins: Mapping[str, str]) -> None:
        self._origins = dict(origins)

    def __getitem__(self, key: str) -> str:
        return self._origins[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._origins)

    def __len__(self) -> int:
        return len(self._origins)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._origins!r})"


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
_VARS = {f"TASKCORE_{name.upper()}": name for name in _RULES}
_RENAMED = {"TASKCORE_RETRY_DEADLINE": "TASKCORE_DEADLINE"}
_REMOVED = {
    "TASKCORE_POOL_MAX_OVERFLOW": "the pool never grows past TASKCORE_POOL_SIZE",
    "TASKCORE_POOL_TIMEOUT": "waiting for a pooled connection is bounded by TASKCORE_DEADLINE",
}
_KEYWORDS_GONE = {
    "retry_deadline": "renamed to 'deadline'",
    "pool_max_overflow": "removed: the pool never grows past pool_size",
    "pool_timeout": "removed: waiting for a pooled connection is bounded by deadline",
}
_CURRENT = sorted([*_VARS, "TASKCORE_SQLITE_PATH", "TASKCORE_ENV_FILE"])
_KNOWN = {*_CURRENT, *_RENAMED, *_REMOVED}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class _Raw:
    """One value as given, with where it came from (repr-safe) and the folder paths use."""

    value: object
    source: str
    base: Path


def load_settings(**overrides: Any) -> Settings:
    """The default handle's settings: keyword overrides over the environment over ``.env``.

    ``database_url`` may be given as an override; unset means the embedded SQLite default
    (``TASKCORE_SQLITE_PATH``, else :func:`default_sqlite_path`). Other keywords are field
    names. Unknown or deprecated ``TASKCORE_*`` variables are named in one warning each.
    """
    env_file = _env_file()
    given = _read_variables(env_file)
    _warn_about_names(given)
    cwd = Path.cwd()
    raw_url = overrides.pop("database_url", None)
    url: _Raw | None = None
    if raw_url:
        url = _Raw(raw_url, "keyword argument database_url", cwd)
    elif _present(given.get("DATABASE_URL")):
        url = given["DATABASE_URL"]
    values = {name: given[var] for var, name in _VARS.items() if _present(given.get(var))}
    if "deadline" not in values and _present(given.get("TASKCORE_RETRY_DEADLINE")):
        values["deadline"] = given["TASKCORE_RETRY_DEADLINE"]
    values.update(_keywords(overrides, cwd))
    path = given.get("TASKCORE_SQLITE_PATH")
    if url is not None:
        parsed_url = normalize_url(_text(url), source=url.source, base=url.base)
        url_source = url.source
    elif path is not None and _present(path):
        parsed_url = sqlite_file_url(_text(path), source=path.source, base=path.base)
        url_source = path.source
    else:
        parsed_url = sqlite_file_url(str(default_sqlite_path()), source="default", base=cwd)
        url_source = "default"
    return _settings(parsed_url, url_source, values, env_file)


def settings_for(url: str | URL, **overrides: Any) -> Settings:
    """An explicit handle's settings: ``url`` and keyword overrides only (no environment, no .env).

    Keywords are field names (``deadline``, ``pool_size``, ...), validated like the variables.
    A relative SQLite path resolves against the current directory.
    """
    cwd = Path.cwd()
    values = _keywords(overrides, cwd)
    parsed = normalize_url(_text(_Raw(url, "url argument", cwd)), source="url argument", base=cwd)
    return _settings(parsed, "url argument", values, None)


def _settings(
    url: URL, url_source: str, values: dict[str, _Raw], env_file: Path | None
) -> Settings:
    parsed: dict[str, Any] = {name: _parse(_RULES[name], raw) for name, raw in values.items()}
    sources = {"url": url_source} | {
        name: values[name].source if name in values else "default" for name in _RULES
    }
    return Settings(url=url, **parsed, env_file=env_file, sources=_Sources(sources))


def _env_file() -> Path | None:
    """TASKCORE_ENV_FILE if set (empty or ``none``: no file), else ./.env if it exists."""
    named = os.environ.get("TASKCORE_ENV_FILE")
    if named is None:
        candidate = Path.cwd() / ".env"
        return candidate if candidate.is_file() else None
    if named.strip().lower() in ("", "none"):
        return None
    path = Path(named.strip()).expanduser().absolute()
    if not path.is_file():
        raise ConfigurationError(
            f"TASKCORE_ENV_FILE (environment variable) names {path}, which is not a file; "
            "set it to an existing file, or to 'none' to read no .env file"
        )
    return path


def _read_variables(env_file: Path | None) -> dict[str, _Raw]:
    """DATABASE_URL and TASKCORE_* from the .env file, then the environment (which wins)."""
    given: dict[str, _Raw] = {}
    if env_file is not None:
        for name, value in dotenv_values(env_file).items():
            if value is not None and _ours(name):
                given[name] = _Raw(value, f"{name} (from {env_file})", env_file.parent)
    cwd = Path.cwd()
    for name, value in os.environ.items():
        if _ours(name) and name != "TASKCORE_ENV_FILE":
            given[name] = _Raw(value, f"{name} (environment variable)", cwd)
    return given


def _ours(name: str) -> bool:
    return name == "DATABASE_URL" or name.startswith("TASKCORE_")


def _present(raw: _Raw | None) -> bool:
    # An empty variable means "unset": the default applies.
    return raw is not None and bool(_text(raw).strip())


def _text(raw: _Raw) -> str:
    if isinstance(raw.value, URL):  # str(URL) would mask the password
        return raw.value.render_as_string(hide_password=False)
    return raw.value if isinstance(raw.value, str) else str(raw.value)


def _keywords(overrides: Mapping[str, Any], cwd: Path) -> dict[str, _Raw]:
    for name in overrides:
        if name not in _RULES:
            raise ConfigurationError(f"unknown setting {name!r}{_keyword_hint(name)}")
    return {name: _Raw(value, f"keyword argument {name}", cwd) for name, value in overrides.items()}


def _keyword_hint(name: str) -> str:
    if name == "database_url":
        return " here: the URL is the first argument"
    if name in _KEYWORDS_GONE:
        return f": {_KEYWORDS_GONE[name]}"
    close = difflib.get_close_matches(name, list(_RULES), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _warn_about_names(given: Mapping[str, _Raw]) -> None:
    """One warning naming unknown TASKCORE_* variables, one naming deprecated ones; no values."""
    unknown = sorted(name for name in given if name not in _KNOWN and name != "DATABASE_URL")
    if unknown:
        hints = {name: difflib.get_close_matches(name, _CURRENT, n=1) for name in unknown}
        described = []
        for name in unknown:
            hint = f"; did you mean {hints[name][0]}?" if hints[name] else ""
            described.append(f"{given[name].source}{hint}")
        _log.warning(
            "unknown taskcore settings ignored: %s",
            ", ".join(described),
            extra={
                "taskcore_event": "unknown_setting",
                "setting_names": tuple(unknown),
                "suggestions": {name: hint[0] for name, hint in hints.items() if hint},
            },
        )
    notes = [
        f"{given[name].source} is deprecated: use {new} "
        + (f"({new} is set and wins)" if _present(given.get(new)) else f"(read as {new} for now)")
        for name, new in _RENAMED.items()
        if name in given
    ]
    notes += [
        f"{given[name].source} is no longer used: {why}"
        for name, why in _REMOVED.items()
        if name in given
    ]
    if "TASKCORE_ENV_FILE" in given:  # only a .env's: the environment's is not kept
        notes.append(f"{given['TASKCORE_ENV_FILE'].source} has no effect inside a .env file")
    if notes:
        names = [n for n in (*_RENAMED, *_REMOVED) if n in given]
        _log.warning(
            "deprecated taskcore settings: %s",
            "; ".join(notes),
            extra={"taskcore_event": "deprecated_setting", "setting_names": tuple(names)},
        )


def _parse(rule: _Rule, raw: _Raw) -> int | float | bool:
    if rule.kind is bool:
        return _parse_bool(raw)
    number = _parse_int(raw.value) if rule.kind is int else _parse_float(raw.value)
    if number is None or number < rule.minimum or (rule.above and number == rule.minimum):
        kind = "an integer" if rule.kind is int else "a finite number"
        bound = f"{'>' if rule.above else '>='} {rule.minimum:g}"
        # Raised here, outside any except block: no __context__ to carry the value along.
        raise ConfigurationError(f"{raw.source} must be {kind} {bound}{rule.note}")
    return number


def _parse_bool(raw: _Raw) -> bool:
    if isinstance(raw.value, bool):
        return raw.value
    text = _text(raw).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
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
