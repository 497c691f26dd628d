"""Leak scanning for the sanitisation audit: what an exception or a log record shows, searched.

An exception "shows" its str, repr, args, every attribute, its notes, every link of its
``__cause__``/``__context__`` chain and its formatted traceback; a log record shows its message,
its args, every attribute in its ``__dict__`` (the ``extra`` fields included) and any attached
traceback. :func:`scan_exception` and :func:`scan_records` search all of that for
:class:`Needle` strings (a password, a DSN, SQL text, a sentinel value) and return every hit
with the path where it was found, its excerpt redacted, so a report never repeats the secret.
"""

from __future__ import annotations

import contextlib
import logging
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

import taskcore

__all__ = [
    "SQL_MARKERS",
    "Hit",
    "Needle",
    "Summary",
    "capture_logs",
    "chain",
    "exception_texts",
    "foreign_links",
    "record_texts",
    "scan",
    "scan_exception",
    "scan_records",
    "secret_needles",
    "summary_for",
]

_EXCERPT = 60  # characters shown on each side of a hit


@dataclass(frozen=True, slots=True)
class Needle:
    """A string that must never be shown; ``label`` names it in reports instead of its value."""

    label: str
    value: str
    ignore_case: bool = False

    def find(self, text: str) -> int:
        """Index of the first occurrence in ``text``, or -1."""
        if self.ignore_case:
            return text.lower().find(self.value.lower())
        return text.find(self.value)


#: SQL that taskcore sends (SQLAlchemy renders keywords upper-case), plus the markers
#: SQLAlchemy and PostgreSQL put around statement text and row values in their messages.
SQL_MARKERS: tuple[Needle, ...] = (
    Needle("sql:INSERT INTO", "INSERT INTO", ignore_case=True),
    Needle("sql:SELECT", "SELECT "),
    Needle("sql:UPDATE tasks", "UPDATE tasks", ignore_case=True),
    Needle("sql:DELETE FROM", "DELETE FROM", ignore_case=True),
    Needle("sql:FROM tasks", "FROM tasks", ignore_case=True),
    Needle("sql:RETURNING", "RETURNING"),
    Needle("sql:[SQL:", "[SQL:"),
    Needle("sql:[parameters:", "[parameters:"),
    Needle("driver:LINE 1:", "LINE 1:"),
    Needle("driver:DETAIL:", "DETAIL:"),
    Needle("driver:Failing row", "Failing row contains"),
)


def secret_needles(password: str, *urls: str, label: str = "password") -> list[Needle]:
    """The password (raw and percent-encoded) and each full URL that carries it."""
    needles = [Needle(label, password)]
    encoded = quote(password, safe="")
    if encoded != password:
        needles.append(Needle(f"{label}(percent-encoded)", encoded))
    needles.extend(Needle(f"dsn#{i}", url) for i, url in enumerate(dict.fromkeys(urls)))
    return needles


@dataclass(frozen=True, slots=True)
class Hit:
    """One needle found at one path (e.g. ``context.str`` or ``log[2].extra.operation``)."""

    path: str
    needle: str
    excerpt: str

    def __str__(self) -> str:
        return f"{self.needle} at {self.path}: ...{self.excerpt}..."


def scan(texts: Iterable[tuple[str, str]], needles: Iterable[Needle]) -> tuple[int, list[Hit]]:
    """Search every (path, text) for every needle; return (texts scanned, hits)."""
    needle_list = list(needles)
    hits: list[Hit] = []
    count = 0
    for path, text in texts:
        count += 1
        for needle in needle_list:
            at = needle.find(text)
            if at >= 0:
                hits.append(Hit(path, needle.label, _redacted_excerpt(text, at, needle)))
    return count, hits


def _redacted_excerpt(text: str, at: int, needle: Needle) -> str:
    """The text around a hit with the needle itself replaced by its label."""
    start, end = max(0, at - _EXCERPT), at + len(needle.value) + _EXCERPT
    excerpt = text[start:at] + f"<{needle.label}>" + text[at + len(needle.value) : end]
    return ascii(excerpt)[1:-1]


# ---------------------------------------------------------------------------- exceptions


def chain(exc: BaseException) -> list[tuple[str, BaseException]]:
    """The exception and every link of its __cause__/__context__ graph, with their paths."""
    seen: set[int] = set()
    links: list[tuple[str, BaseException]] = []
    todo: list[tuple[str, BaseException]] = [("exc", exc)]
    while todo:
        path, link = todo.pop(0)
        if id(link) in seen:
            continue
        seen.add(id(link))
        links.append((path, link))
        for name in ("__cause__", "__context__"):
            nxt = getattr(link, name)
            if nxt is not None:
                todo.append((f"{path}.{name.strip('_')}", nxt))
        if isinstance(link, BaseExceptionGroup):
            todo.extend((f"{path}.exceptions[{i}]", e) for i, e in enumerate(link.exceptions))
    return links


def foreign_links(exc: BaseException) -> list[str]:
    """Paths of chain links that are not taskcore errors (driver or library exceptions)."""
    return [
        f"{path} ({type(link).__module__}.{type(link).__qualname__})"
        for path, link in chain(exc)
        if not isinstance(link, taskcore.TaskcoreError)
    ]


def _safe(render: Callable[[Any], object], value: object) -> str:
    try:
        return str(render(value))
    except Exception as error:  # noqa: BLE001 - a failing __repr__ must not hide the others
        return f"<{render.__name__} raised {type(error).__name__}>"


def _link_texts(path: str, exc: BaseException) -> Iterator[tuple[str, str]]:
    yield f"{path}.str", _safe(str, exc)
    yield f"{path}.repr", _safe(repr, exc)
    yield f"{path}.args", _safe(repr, exc.args)
    for i, arg in enumerate(exc.args):
        yield f"{path}.args[{i}]", _safe(str, arg)
    for name, value in vars(exc).items():
        yield f"{path}.vars.{name}", _safe(repr, value)
        yield f"{path}.vars.{name}.str", _safe(str, value)
    for name in dir(exc):  # class-level and slot attributes too (retryable, errno, object, ...)
        if name.startswith("__") or name in vars(exc):
            continue
        value = getattr(exc, name, None)
        if callable(value):
            continue
        yield f"{path}.attr.{name}", _safe(repr, value)
    for i, note in enumerate(getattr(exc, "__notes__", None) or ()):
        yield f"{path}.notes[{i}]", _safe(str, note)


def exception_texts(exc: BaseException) -> Iterator[tuple[str, str]]:
    """Everything an exception shows: each chain link's texts, then the formatted traceback."""
    for path, link in chain(exc):
        yield from _link_texts(path, link)
    yield "traceback", "".join(traceback.format_exception(exc))
    # Shown without the chain-suppression flags too, the way a logging framework might.
    yield (
        "traceback(chain=all)",
        "".join("".join(traceback.format_exception(link, chain=False)) for _, link in chain(exc)),
    )


def scan_exception(exc: BaseException, needles: Iterable[Needle]) -> tuple[int, list[Hit]]:
    """Scan everything ``exc`` shows for ``needles``."""
    return scan(exception_texts(exc), needles)


# ---------------------------------------------------------------------------- log records


_FORMATTER = logging.Formatter(
    "%(asctime)s %(name)s %(levelname)s %(pathname)s:%(lineno)d %(message)s"
)


def record_texts(index: int, record: logging.LogRecord) -> Iterator[tuple[str, str]]:
    """Everything a log record shows: message, args, every attribute, any traceback."""
    path = f"log[{index}]({record.name}:{record.levelname})"
    yield f"{path}.getMessage()", record.getMessage()
    yield f"{path}.args", _safe(repr, record.args)
    for name, value in vars(record).items():
        yield f"{path}.{name}", _safe(repr, value)
        yield f"{path}.{name}.str", _safe(str, value)
    yield f"{path}.formatted", _FORMATTER.format(record)
    if record.exc_info and record.exc_info[1] is not None:
        for sub_path, text in exception_texts(record.exc_info[1]):
            yield f"{path}.exc_info.{sub_path}", text


def scan_records(
    records: Iterable[logging.LogRecord], needles: Iterable[Needle]
) -> tuple[int, list[Hit]]:
    """Scan every captured record for ``needles``."""
    needle_list = list(needles)
    return scan((item for i, r in enumerate(records) for item in record_texts(i, r)), needle_list)


class _ListHandler(logging.Handler):
    def __init__(self, records: list[logging.LogRecord], level: int) -> None:
        super().__init__(level)
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        if not any(r is record for r in self.records):  # a record reaches both handlers
            self.records.append(record)


@contextlib.contextmanager
def capture_logs() -> Iterator[list[logging.LogRecord]]:
    """Collect records of logger ``taskcore`` at DEBUG and of every logger at WARNING (root)."""
    records: list[logging.LogRecord] = []
    core, root = logging.getLogger("taskcore"), logging.getLogger()
    core_handler = _ListHandler(records, logging.DEBUG)
    root_handler = _ListHandler(records, logging.WARNING)
    core_level, root_level = core.level, root.level
    core.setLevel(logging.DEBUG)
    if root.level == logging.NOTSET or root.level > logging.WARNING:
        root.setLevel(logging.WARNING)
    core.addHandler(core_handler)
    root.addHandler(root_handler)
    try:
        yield records
    finally:
        core.removeHandler(core_handler)
        root.removeHandler(root_handler)
        core.setLevel(core_level)
        root.setLevel(root_level)


# ---------------------------------------------------------------------------- summary lines


@dataclass
class Summary:
    """Counters a test module adds to, printed once in pytest's terminal summary."""

    title: str
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: Where the scanned log records came from (logger:event), printed after the counters.
    sources: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, amount: int = 1) -> None:
        """Add ``amount`` to counter ``name``."""
        self.counts[name] = self.counts.get(name, 0) + amount

    def line(self) -> str:
        """One line: the title and every counter."""
        return f"{self.title}: " + ", ".join(f"{k}={v}" for k, v in self.counts.items())

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """pytest hook: print the counters (and notes) after the run."""
        if self.counts:
            terminalreporter.write_line(self.line())
        if self.sources:
            terminalreporter.write_line(f"  log records scanned, by logger:event: {self.sources}")
        for note in self.notes:
            terminalreporter.write_line(f"  {note}")


_SUMMARIES: dict[str, Summary] = {}


def summary_for(config: pytest.Config, title: str) -> Summary:
    """The session's Summary called ``title``, registered as a plugin on first use."""
    summary = _SUMMARIES.get(title)
    if summary is None:
        summary = _SUMMARIES[title] = Summary(title)
    if not config.pluginmanager.is_registered(summary):
        config.pluginmanager.register(summary, name=f"taskcore-summary-{title}")
    return summary
