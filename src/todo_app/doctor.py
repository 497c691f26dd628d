"""``todo doctor``: the configuration in force, where it came from, and one timed connection."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import taskcore
from taskcore import ConnectionReport, Settings, TaskcoreError
from todo_app.output import Output, error_document, error_kind
from todo_app.render import printable

__all__ = ["Deadline", "Reported", "run", "settings_document", "settings_lines"]

_INDENT = " " * 17
# Shown on lines of their own (url, deadline) or not settings at all (env_file, sources).
_NOT_LISTED = {"url", "deadline", "env_file", "sources"}


@dataclass(frozen=True)
class Deadline:
    """The interactive deadline todo runs with, and where it came from."""

    seconds: float
    source: str


def _sources(settings: Settings) -> dict[str, str]:
    """Field -> where its value came from, for the values that are not defaults."""
    return {name: source for name, source in settings.sources.items() if source != "default"}


def _settings_values(settings: Settings) -> dict[str, Any]:
    values = {
        field.name: getattr(settings, field.name)
        for field in dataclasses.fields(settings)
        if field.name not in _NOT_LISTED
    }
    return {
        name: value if value is None or isinstance(value, bool | int | float | str) else str(value)
        for name, value in values.items()
    }


def _env_file(settings: Settings) -> str | None:
    return None if settings.env_file is None else str(settings.env_file)


def _number(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_lines(settings: Settings, deadline: Deadline) -> list[str]:
    """What ``doctor`` knows before connecting, as text."""
    s = settings
    pg_only = "" if s.backend == "postgresql" else " (PostgreSQL only)"
    changed = [
        f"{name} from {source}"
        if name == "url"
        else f"{name}={_number(getattr(s, name))} from {source}"
        for name, source in _sources(s).items()
        if name != "deadline"  # todo sets it: the deadline line says from where
    ]
    first, *rest = changed or ["all defaults"]
    return [
        f"backend:         {s.backend}",
        f"url:             {printable(s.masked_url)}",
        f"env file:        {printable(_env_file(s) or 'none')}",
        f"deadline:        {deadline.seconds:g} s ({deadline.source})",
        f"pool:            size {s.pool_size}, idle timeout {s.pool_idle_timeout:g} s,"
        f" recycle after {s.pool_recycle:g} s{pg_only}",
        f"connect timeout: {s.connect_timeout} s{pg_only}",
        f"retries:         up to {s.retry_attempts} attempts within the deadline,"
        f" waits {s.retry_wait_initial:g}-{s.retry_wait_max:g} s"
        f" + jitter up to {s.retry_wait_jitter:g} s",
        f"settings:        {printable(first)}",
        *(_INDENT + printable(line) for line in rest),
    ]


def settings_document(settings: Settings, deadline: Deadline) -> dict[str, Any]:
    """What ``doctor`` knows before connecting, as JSON fields."""
    sources = _sources(settings)
    sources.pop("deadline", None)  # todo sets it; the deadline fields say from where
    return {
        "backend": settings.backend,
        "url": settings.masked_url,
        "env_file": _env_file(settings),
        "deadline": deadline.seconds,
        "deadline_source": deadline.source,
        "settings": _settings_values(settings),
        "sources": sources,
    }


def _report_lines(report: ConnectionReport) -> list[str]:
    return [
        f"server version:  {printable(report.server_version)}",
        f"connect:         {report.connect_seconds * 1000:.1f} ms",
        f"round trip:      {report.round_trip_seconds * 1000:.1f} ms",
        "status:          ok",
    ]


def _report_document(report: ConnectionReport) -> dict[str, Any]:
    return {
        "server_version": report.server_version,
        "connect_ms": round(report.connect_seconds * 1000, 3),
        "round_trip_ms": round(report.round_trip_seconds * 1000, 3),
        "status": "ok",
    }


def run(out: Output, settings: Settings, deadline: Deadline) -> int:
    """Print the settings, then connect once and print what was measured.

    Text: the settings first, so a failed connection still shows where it went (the error
    line follows on stderr). JSON: one document, with ``"status": "failed"`` and ``"error"``
    when the check fails.
    """
    out.lines(settings_lines(settings, deadline))
    document = settings_document(settings, deadline)
    try:
        report = taskcore.check_connection()
    except TaskcoreError as error:
        if not out.json_mode:
            raise
        message = f"{' '.join(str(error).split())} ({type(error).__name__})"
        document.update(status="failed", **error_document(error_kind(error), message))
        out.document(document)
        raise Reported(error) from None
    out.lines(_report_lines(report))
    out.document(document | _report_document(report))
    return 0


class Reported(Exception):  # noqa: N818 - a signal to the caller, not a failure of its own
    """The error was already written as part of the JSON document; only its exit code is left."""

    def __init__(self, error: TaskcoreError) -> None:
        super().__init__(str(error))
        self.error = error
