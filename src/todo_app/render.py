"""Turning tasks and diagnostics into text for a terminal: pure functions, no I/O."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime

from taskcore import ConnectionReport, Settings, Task

__all__ = [
    "doctor_lines",
    "settings_lines",
    "task_details",
    "task_line",
    "task_table",
]

_ELLIPSIS = "…"
_DATE_FORMAT = "%Y-%m-%d %H:%M"
_TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S %Z"
_TABLE_WIDTH_MIN = 60
_DESCRIPTION_MIN = 12  # narrower than this, the description column is left out
_TITLE_MIN = 10
# Shown escaped, like control characters: line/paragraph separators (a new line on some
# terminals) and the bidirectional overrides/isolates that can make text display out of order.
_ESCAPED_CATEGORIES = {"Cc", "Cs", "Zl", "Zp"}
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _printable(text: str, *, keep_newlines: bool = False) -> str:
    """Escape control characters (newline, tab, ESC, bidi overrides...): no garbled terminals."""
    out = []
    for char in text:
        if char == "\n" and keep_newlines:
            out.append(char)
        elif unicodedata.category(char) in _ESCAPED_CATEGORIES or char in _BIDI_CONTROLS:
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def _char_width(char: str) -> int:
    """Terminal columns one character takes: 2 for East Asian wide, 0 for combining marks."""
    if unicodedata.combining(char) or unicodedata.category(char) in {"Mn", "Me", "Cf"}:
        return 0
    return 2 if unicodedata.east_asian_width(char) in {"W", "F"} else 1


def _width(text: str) -> int:
    return sum(_char_width(char) for char in text)


def _fit(text: str, width: int) -> str:
    """Cut ``text`` to at most ``width`` columns (marking a cut with an ellipsis), then pad it."""
    if _width(text) > width:
        kept, used = [], 0
        for char in text:
            if used + _char_width(char) > width - 1:
                break
            kept.append(char)
            used += _char_width(char)
        text = "".join(kept) + _ELLIPSIS
    return text + " " * (width - _width(text))


def _local(moment: datetime, fmt: str) -> str:
    """A stored (UTC) timestamp shown in the machine's local time zone."""
    return moment.astimezone().strftime(fmt)


def _status(task: Task) -> str:
    return "[x]" if task.completed else "[ ]"


def _user(user_id: str) -> str:
    return _printable(user_id) if user_id else "(default)"


def task_line(task: Task) -> str:
    """One task in one line: ``<id> [x] <title>``."""
    return f"{task.id} {_status(task)} {_printable(task.title)}"


def _split(room: int, title_need: int, description_need: int) -> tuple[int, int]:
    """Columns for the title and the description (0: leave it out) within ``room``."""
    if description_need == 0:
        return min(title_need, room), 0
    description_need = max(description_need, len("DESCRIPTION"))
    if title_need + 2 + description_need <= room:
        return title_need, description_need
    title_width = min(title_need, max(room - 2 - description_need, room * 3 // 5))
    description_width = room - 2 - title_width
    if description_width < _DESCRIPTION_MIN:
        return min(title_need, room), 0
    return title_width, description_width


def task_table(tasks: Sequence[Task], *, show_user: bool = False, width: int = 100) -> list[str]:
    """An aligned table of ``tasks`` fitting ``width`` columns, with a summary line at the end."""
    if not tasks:
        return ["no tasks"]
    width = max(width, _TABLE_WIDTH_MIN)
    ids = [str(task.id) for task in tasks]
    users = [_user(task.user_id) for task in tasks]
    id_width = max(2, *(len(i) for i in ids))
    user_width = min(20, max(4, *(_width(u) for u in users))) if show_user else 0
    created_width = len("YYYY-MM-DD HH:MM")
    # id, status, created and (maybe) user, each followed by two spaces
    fixed = id_width + 2 + 4 + 2 + created_width + 2 + (user_width + 2 if show_user else 0)
    titles = [_printable(task.title) for task in tasks]
    descriptions = [_printable(task.description or "") for task in tasks]
    room = max(width - fixed, _TITLE_MIN)
    title_width, description_width = _split(
        room,
        max(len("TITLE"), *(_width(t) for t in titles)),
        max(_width(d) for d in descriptions),
    )
    show_description = description_width > 0

    def row(
        task_id: str, status: str, created: str, user: str, title: str, description: str
    ) -> str:
        cells = [task_id.rjust(id_width), _fit(status, 4), created.ljust(created_width)]
        if show_user:
            cells.append(_fit(user, user_width))
        cells.append(_fit(title, title_width))
        if show_description:
            cells.append(_fit(description, description_width))
        return "  ".join(cells).rstrip()

    lines = [row("ID", "DONE", "CREATED", "USER", "TITLE", "DESCRIPTION")]
    for task, task_id, user, title, description in zip(
        tasks, ids, users, titles, descriptions, strict=True
    ):
        created = _local(task.created_at, _DATE_FORMAT)
        lines.append(row(task_id, _status(task), created, user, title, description))
    done = sum(1 for task in tasks if task.completed)
    noun = "task" if len(tasks) == 1 else "tasks"
    lines.append(f"{len(tasks)} {noun} ({done} done, {len(tasks) - done} pending)")
    return lines


def task_details(task: Task) -> list[str]:
    """Every field of ``task``, one per line; a multi-line description stays multi-line."""
    indent = " " * 13
    if task.description is None:
        description = "(none)"
    elif not task.description:
        description = "(empty)"
    else:
        description = _printable(task.description, keep_newlines=True).replace("\n", "\n" + indent)
    return [
        f"id:          {task.id}",
        f"title:       {_printable(task.title)}",
        f"status:      {'done' if task.completed else 'pending'}",
        f"description: {description}",
        f"user:        {_user(task.user_id)}",
        f"created:     {_local(task.created_at, _TIMESTAMP_FORMAT)}",
        f"updated:     {_local(task.updated_at, _TIMESTAMP_FORMAT)}",
    ]


def settings_lines(settings: Settings) -> list[str]:
    """The backend, masked URL and pool/retry settings: what ``doctor`` knows before connecting."""
    pool_note = "" if settings.backend == "postgresql" else " (PostgreSQL only)"
    return [
        f"backend:         {settings.backend}",
        f"url:             {settings.masked_url}",
        f"pool:            size {settings.pool_size}, max overflow {settings.pool_max_overflow},"
        f" checkout timeout {settings.pool_timeout:g} s,"
        f" recycle after {settings.pool_recycle:g} s{pool_note}",
        f"connect timeout: {settings.connect_timeout} s{pool_note}",
        f"retries:         up to {settings.retry_attempts} attempts within"
        f" {settings.retry_deadline:g} s, waits {settings.retry_wait_initial:g}"
        f"-{settings.retry_wait_max:g} s + jitter up to {settings.retry_wait_jitter:g} s",
    ]


def doctor_lines(report: ConnectionReport) -> list[str]:
    """What the connection check measured."""
    return [
        f"server version:  {_printable(report.server_version)}",
        f"connect:         {report.connect_seconds * 1000:.1f} ms",
        f"round trip:      {report.round_trip_seconds * 1000:.1f} ms",
        "status:          ok",
    ]
