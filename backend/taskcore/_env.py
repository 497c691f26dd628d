"""Reading the environment for the default handle: ``.env``, variables, their origins, warnings.

Only :func:`taskcore.config.load_settings` comes here; an explicit handle (``settings_for``)
reads nothing from the environment. Values are kept with where they came from (``Raw``), so an
error can name its origin without ever echoing the value.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values
from sqlalchemy.engine import URL

from taskcore.errors import ConfigurationError

_log = logging.getLogger("taskcore")

#: Old variable -> the one that replaced it (still read, with a warning, when the new is unset).
RENAMED = {"TASKCORE_RETRY_DEADLINE": "TASKCORE_DEADLINE"}
#: Variables no longer read -> why.
REMOVED = {
    "TASKCORE_POOL_MAX_OVERFLOW": "the pool never grows past TASKCORE_POOL_SIZE",
    "TASKCORE_POOL_TIMEOUT": "waiting for a pooled connection is bounded by TASKCORE_DEADLINE",
}
_OWN = ("TASKCORE_SQLITE_PATH", "TASKCORE_ENV_FILE")


@dataclass(frozen=True, slots=True)
class Raw:
    """One value as given, with where it came from (repr-safe) and the folder paths use."""

    value: object
    source: str
    base: Path


def present(raw: Raw | None) -> bool:
    """Given and not blank (an empty variable means "unset": the default applies)."""
    return raw is not None and bool(text(raw).strip())


def text(raw: Raw) -> str:
    """The value as text (a URL with its password: only for parsing, never for showing)."""
    if isinstance(raw.value, URL):  # str(URL) would mask the password
        return raw.value.render_as_string(hide_password=False)
    return raw.value if isinstance(raw.value, str) else str(raw.value)


class Sources(Mapping[str, str]):
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
class Environment:
    """What the environment (over one ``.env`` file) says, by setting; values with origins."""

    env_file: Path | None
    url: Raw | None
    sqlite_path: Raw | None
    #: Field name -> value, from TASKCORE_<FIELD> (or a renamed variable while the new is unset).
    values: dict[str, Raw]


def read_environment(fields: Iterable[str]) -> Environment:
    """DATABASE_URL and TASKCORE_* for ``fields``, from the environment over the ``.env`` file.

    Unknown and deprecated TASKCORE_* variables are named in one warning each (never values).
    """
    variables = {f"TASKCORE_{name.upper()}": name for name in fields}
    env_file = _env_file()
    given = _read_variables(env_file)
    _warn_about_names(given, sorted([*variables, *_OWN]))
    values = {name: given[var] for var, name in variables.items() if present(given.get(var))}
    for old, new in RENAMED.items():
        if variables[new] not in values and present(given.get(old)):
            values[variables[new]] = given[old]
    url = given.get("DATABASE_URL")
    path = given.get("TASKCORE_SQLITE_PATH")
    return Environment(
        env_file,
        url if present(url) else None,
        path if present(path) else None,
        values,
    )


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


def _read_variables(env_file: Path | None) -> dict[str, Raw]:
    """DATABASE_URL and TASKCORE_* from the .env file, then the environment (which wins)."""
    given: dict[str, Raw] = {}
    if env_file is not None:
        for name, value in dotenv_values(env_file).items():
            if value is not None and _ours(name):
                given[name] = Raw(value, f"{name} (from {env_file})", env_file.parent)
    cwd = Path.cwd()
    for name, value in os.environ.items():
        if _ours(name) and name != "TASKCORE_ENV_FILE":
            given[name] = Raw(value, f"{name} (environment variable)", cwd)
    return given


def _ours(name: str) -> bool:
    return name == "DATABASE_URL" or name.startswith("TASKCORE_")


def _warn_about_names(given: Mapping[str, Raw], current: list[str]) -> None:
    """One warning naming unknown TASKCORE_* variables, one naming deprecated ones; no values."""
    known = {*current, *RENAMED, *REMOVED, "DATABASE_URL"}
    unknown = sorted(name for name in given if name not in known)
    if unknown:
        hints = {name: difflib.get_close_matches(name, current, n=1) for name in unknown}
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
        + (f"({new} is set and wins)" if present(given.get(new)) else f"(read as {new} for now)")
        for name, new in RENAMED.items()
        if name in given
    ]
    notes += [
        f"{given[name].source} is no longer used: {why}"
        for name, why in REMOVED.items()
        if name in given
    ]
    if "TASKCORE_ENV_FILE" in given:  # only a .env's: the environment's is not kept
        notes.append(f"{given['TASKCORE_ENV_FILE'].source} has no effect inside a .env file")
    if notes:
        names = [n for n in (*RENAMED, *REMOVED) if n in given]
        _log.warning(
            "deprecated taskcore settings: %s",
            "; ".join(notes),
            extra={"taskcore_event": "deprecated_setting", "setting_names": tuple(names)},
        )
