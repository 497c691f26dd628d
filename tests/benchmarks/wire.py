"""What goes over the wire: a tracing FlakyProxy, and taskcore's statements captured for replay.

The raw psycopg2 baseline must run *the same SQL statement* as taskcore. taskcore's statements
change as the library grows (idempotency keys, operation keys in a CTE, ...), so they are not
copied here by hand: each one is captured from taskcore's engine (``before_cursor_execute``)
and replayed by psycopg2 with fresh values for the parts that differ per call (title, task id,
keys). The SQL text sent by both is then identical; only the bound values differ.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event

from taskcore.testing import FlakyProxy

__all__ = ["Captured", "StatementTemplate", "TracingProxy", "capture_statements", "summarize"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# "tasks.id, tasks.title, ..., tasks.updated_at" and "tasks.id AS tasks_id, ..." -> "tasks.*"
_COLUMN_LIST = re.compile(r"\btasks\.\w+(?: AS \w+)?(?:, tasks\.\w+(?: AS \w+)?){3,}")
_SPACES = re.compile(r"\s+")
_TRACE_WIDTH = 150


def summarize(sql: str, width: int = _TRACE_WIDTH) -> str:
    """One line of SQL for reports: whitespace collapsed, full column lists shortened."""
    text = _COLUMN_LIST.sub("tasks.*", _SPACES.sub(" ", sql).strip())
    return text if len(text) <= width else text[: width - 3] + "..."


class TracingProxy(FlakyProxy):
    """A FlakyProxy that can also record the text of every simple-query message it forwards.

    Hooks FlakyProxy's per-statement callback (a private method of the project's own test
    tool), so the trace sees exactly what the round-trip counter counts.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self._trace_lock = threading.Lock()
        self._tracing = False
        self._trace: list[str] = []

    def _statement(self, link: Any, text: bytes) -> str | None:
        with self._trace_lock:
            if self._tracing:
                self._trace.append(summarize(text.rstrip(b"\0").decode("utf-8", "replace")))
        return super()._statement(link, text)

    @contextmanager
    def tracing(self) -> Iterator[list[str]]:
        """Record statements while the block runs; the yielded list fills in as they pass."""
        with self._trace_lock:
            self._trace = []
            self._tracing = True
        try:
            yield self._trace
        finally:
            with self._trace_lock:
                self._tracing = False


@dataclass(frozen=True)
class StatementTemplate:
    """A statement taskcore ran, with the parameters that change from call to call marked.

    ``title_params``/``id_params`` held the capture's title and task id; ``key_params`` held
    UUIDs (idempotency and operation keys): each replay gets a fresh one, as taskcore does.
    """

    sql: str
    params: Mapping[str, Any] = field(repr=False)
    title_params: tuple[str, ...] = ()
    id_params: tuple[str, ...] = ()
    key_params: tuple[str, ...] = ()

    @classmethod
    def from_capture(
        cls, sql: str, params: Mapping[str, Any], *, title: str | None, task_id: int | None
    ) -> StatementTemplate:
        """Mark the parameters whose value is the capture's title, task id or a UUID."""
        titles, ids, keys = [], [], []
        for name, value in params.items():
            if title is not None and value == title:
                titles.append(name)
            elif task_id is not None and isinstance(value, int) and value == task_id:
                ids.append(name)
            elif isinstance(value, str) and _UUID.match(value):
                keys.append(name)
        return cls(sql, dict(params), tuple(titles), tuple(ids), tuple(keys))

    def bind(self, *, title: str | None = None, task_id: int | None = None) -> dict[str, Any]:
        """Parameters for one replay."""
        values = dict(self.params)
        for name in self.title_params:
            values[name] = title
        for name in self.id_params:
            values[name] = task_id
        for name in self.key_params:
            values[name] = str(uuid.uuid4())
        return values


@dataclass
class Captured:
    """Statements taskcore's engine sent to the driver during a ``capture_statements`` block."""

    statements: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)

    def only(self, *, title: str | None = None, task_id: int | None = None) -> StatementTemplate:
        """The single statement captured, as a template (an error if there were more)."""
        if len(self.statements) != 1:
            shown = [summarize(sql, 60) for sql, _ in self.statements]
            raise RuntimeError(f"expected one statement, taskcore sent {len(shown)}: {shown}")
        sql, params = self.statements[0]
        return StatementTemplate.from_capture(sql, params, title=title, task_id=task_id)

    def first(
        self, verb: str, *, title: str | None = None, task_id: int | None = None
    ) -> StatementTemplate:
        """The first captured statement starting with ``verb`` (e.g. "INSERT")."""
        for sql, params in self.statements:
            if sql.lstrip().upper().startswith(verb):
                return StatementTemplate.from_capture(sql, params, title=title, task_id=task_id)
        raise RuntimeError(f"taskcore sent no {verb} statement")


@contextmanager
def capture_statements(engine: Engine) -> Iterator[Captured]:
    """Record (SQL, parameters) of every statement ``engine`` executes inside the block."""
    captured = Captured()

    def record(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool
    ) -> None:
        if not isinstance(parameters, Mapping):
            raise TypeError(f"expected named parameters from psycopg2, got {type(parameters)}")
        captured.statements.append((statement, dict(parameters)))

    listener: Callable[..., None] = record
    event.listen(engine, "before_cursor_execute", listener)
    try:
        yield captured
    finally:
        event.remove(engine, "before_cursor_execute", listener)
