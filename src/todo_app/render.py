"""Turning tasks into text for a terminal: pure functions, no I/O."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime

from taskcore import Task

__all__ = [
    "printable",
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


def printable(text: str, *, keep_newlines: bool = False) -> str:
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
    return printable(user_id) if user_id else "(default)"


def task_line(task: Task) -> str:
    """One task in one line: ``<id> [x] <title>``."""
    return f"{task.id} {_status(task)} {printable(task.title)}"


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


def task_table(
    tasks: Sequence[Task], *, show_user: bool = False, width: int | None = 100
) -> list[str]:
    """An aligned table of ``tasks`` with a summary line at the end.

    With a ``width`` (a terminal's), long titles and descriptions are cut to fit it; with None
    (stdout is a file or a pipe) every cell is shown in full.
    """
    if not tasks:
        return ["no tasks"]
    ids = [str(task.id) for task in tasks]
    users = [_user(task.user_id) for task in tasks]
    id_width = max(2, *(len(i) for i in ids))
    user_width = max(4, *(_width(u) for u in users)) if show_user else 0
    if width is not None:
        user_width = min(user_width, 20)
    created_width = len("YYYY-MM-DD HH:MM")
    # id, status, created and (maybe) user, each followed by two spaces
    fixed = id_width + 2 + 4 + 2 + created_width + 2 + (user_width + 2 if show_user else 0)
    titles = [printable(task.title) for task in tasks]
    descriptions = [printable(task.description or "") for task in tasks]
    title_need = max(len("TITLE"), *(_width(t) for t in titles))
    description_need = max(_width(d) for d in descriptions)
    if width is None:
        title_width = title_need
        description_width = max(description_need, len("DESCRIPTION")) if description_need else 0
    else:
        room = max(max(width, _TABLE_WIDTH_MIN) - fixed, _TITLE_MIN)
        title_width, description_width = _split(room, title_need, description_need)
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
        description = printable(task.description, keep_newlines=True).replace("\n", "\n" + indent)
    return [
        f"id:          {task.id}",
        f"title:       {printable(task.title)}",
        f"status:      {'done' if task.completed else 'pending'}",
        f"description: {description}",
        f"user:        {_user(task.user_id)}",
        f"created:     {_local(task.created_at, _TIMESTAMP_FORMAT)}",
        f"updated:     {_local(task.updated_at, _TIMESTAMP_FORMAT)}",
    ]
