"""Where results go: text lines or one JSON document on stdout; write failures set apart."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from taskcore import Task

__all__ = [
    "Output",
    "OutputError",
    "error_document",
    "error_kind",
    "json_line",
    "task_document",
    "timestamp",
]


class OutputError(Exception):
    """Writing to stdout failed (disk full, closed pipe...): a local I/O error, exit 4."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or type(error).__name__)
        self.error = error


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a ``Z``: ``2026-01-31T09:15:00.123456Z``."""
    if moment.tzinfo is None:  # taskcore returns aware datetimes; naive would be UTC anyway
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
    return text + "Z"


def task_document(task: Task) -> dict[str, Any]:
    """A task's stable JSON fields."""
    return {
        "id": task.id,
        "title": task.title,
        "description": task.description,
        "completed": task.completed,
        "user_id": task.user_id,
        "created_at": timestamp(task.created_at),
        "updated_at": timestamp(task.updated_at),
    }


def error_kind(error: BaseException) -> str:
    """``NotFoundError`` -> ``"not_found"``: the error's class in snake case, minus "Error"."""
    name = type(error).__name__.removesuffix("Error") or type(error).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_document(kind: str, message: str) -> dict[str, Any]:
    """``{"error": {"kind": ..., "message": ...}}``."""
    return {"error": {"kind": kind, "message": message}}


def json_line(document: object) -> str:
    """``document`` as JSON on one line, ASCII only."""
    return json.dumps(document, ensure_ascii=True)


class Output:
    """stdout in text or JSON mode; every write failure becomes :class:`OutputError`."""

    def __init__(self, stream: TextIO, *, json_mode: bool) -> None:
        self.stream = stream
        self.json_mode = json_mode

    def is_terminal(self) -> bool:
        """Whether a person is likely reading (stdout is a tty)."""
        try:
            return self.stream.isatty()
        except (OSError, ValueError):
            return False

    def lines(self, lines: Sequence[str]) -> None:
        """Write text lines (ignored in JSON mode) and flush them."""
        if not self.json_mode:
            self._write("".join(line + "\n" for line in lines))

    def document(self, document: object) -> None:
        """Write one JSON document (ignored in text mode).

        ASCII only (other characters as ``\\u`` escapes): valid whatever the terminal's
        encoding, and no control or bidi character reaches the terminal raw.
        """
        if self.json_mode:
            self._write(json.dumps(document, indent=2, ensure_ascii=True) + "\n")

    def emit(self, lines: Sequence[str], document: object) -> None:
        """Write ``lines`` in text mode or ``document`` in JSON mode."""
        self.lines(lines)
        self.document(document)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except OSError as error:
            raise OutputError(error) from None
