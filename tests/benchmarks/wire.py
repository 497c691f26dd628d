"""What goes over the wire: a tracing FlakyProxy, and taskcore's statements captured for replay.

The raw psycopg2 baseline must run *the same SQL statement* as taskcore. taskcore's statements
change as the library grows (idempotency keys, operation keys in a CTE, ...), so they are not
copied here by hand: each one is captured where taskcore hands it to the DBAPI cursor (its hot
path runs compiled Core statements straight on the cursor, see :func:`capture_statements`) and
replayed by psycopg2 with fresh values for the parts that differ per call (title, task id,
owner, keys). The SQL text sent by both is then identical; only the bound values differ.
"""

from __future__ import annotations

import importlib
import re
import threading
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import taskcore._link as taskcore_link
from taskcore.testing import FlakyProxy

__all__ = ["Captured", "StatementTemplate", "TracingProxy", "capture_statements", "summarize"]

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# "tasks.id, tasks.title, ..., tasks.updated_at" and "tasks.id AS tasks_id, ..." -> "tasks.*"
_COLUMN_LIST = re.compile(r"\btasks\.\w+(?: AS \w+)?(?:, tasks\.\w+(?: AS \w+)?){3,}")
_SPACES = re.compile(r"\s+")
_TRACE_WIDTH = 150
#: The function of taskcore._link that runs a compiled statement on a DBAPI cursor.
_HOOK = "execute"


def summarize(sql: str, width: int = _TRACE_WIDTH) -> str:
    """One line of SQL for reports: whitespace collapsed, full column lists shortened."""
    text = _COLUMN_LIST.sub("tasks.*", _SPACES.sub(" ", sql).strip())
    return text if len(text) <= width else text[: width - 3] + "..."


class TracingProxy(FlakyProxy):
    """A FlakyProxy that can also record the text of every simple-query message it forwards.

    The proxy counts round trips through its public stats; the statement texts come from its
    per-statement callback, a private method of the project's own test tool. That method has
    moved before (``FlakyProxy._statement(link, text)``, then ``_statement(text)`` on a class
    of ``taskcore.testing._link`` or ``._intercept``): whichever exists is wrapped while
    :meth:`tracing` runs; if none does, the trace stays empty (round trips are still counted).
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port)
        self._trace_lock = threading.Lock()
        self._trace: list[str] = []

    def _record(self, text: bytes) -> None:
        with self._trace_lock:
            self._trace.append(summarize(text.rstrip(b"\0").decode("utf-8", "replace")))

    @contextmanager
    def tracing(self) -> Iterator[list[str]]:
        """Record statements while the block runs; the yielded list fills in as they pass."""
        with self._trace_lock:
            self._trace = []
        owner, original = _statement_hook()
        if owner is None or original is None:
            yield self._trace
            return
        record = self._record
        if owner is FlakyProxy:

            def traced(proxy: Any, link: Any, text: bytes) -> Any:
                record(text)
                return original(proxy, link, text)

        else:

            def traced(link: Any, text: bytes) -> Any:  # type: ignore[misc]
                record(text)
                return original(link, text)

        setattr(owner, "_statement", traced)  # noqa: B010 - a private hook, named on purpose
        try:
            yield self._trace
        finally:
            setattr(owner, "_statement", original)  # noqa: B010


#: Modules of taskcore.testing that have held the per-statement callback (newest first).
_HOOK_MODULES = ("taskcore.testing._intercept", "taskcore.testing._link")


def _statement_hook() -> tuple[type | None, Any]:
    """The class whose ``_statement(text)`` sees each query's text, and that function."""
    for name in _HOOK_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        for owner in vars(module).values():
            if isinstance(owner, type) and owner.__module__ == name:
                hook = owner.__dict__.get("_statement")
                if callable(hook):
                    return owner, hook
    hook = getattr(FlakyProxy, "_statement", None)
    return (FlakyProxy, hook) if callable(hook) else (None, None)


@dataclass(frozen=True)
class StatementTemplate:
    """A statement taskcore ran, with the parameters that change from call to call marked.

    ``title_params``/``id_params``/``user_params`` held the capture's title, task id and owner;
    ``key_params`` held UUIDs (idempotency and operation keys): each replay gets a fresh one,
    as taskcore does.
    """

    sql: str
    params: Mapping[str, Any] = field(repr=False)
    title_params: tuple[str, ...] = ()
    id_params: tuple[str, ...] = ()
    key_params: tuple[str, ...] = ()
    user_params: tuple[str, ...] = ()

    @classmethod
    def from_capture(
        cls,
        sql: str,
        params: Mapping[str, Any],
        *,
        title: str | None,
        task_id: int | None,
        user: str | None = None,
    ) -> StatementTemplate:
        """Mark the parameters whose value is the capture's title, task id, owner or a UUID."""
        titles, ids, keys, users = [], [], [], []
        for name, value in params.items():
            if title is not None and value == title:
                titles.append(name)
            elif user is not None and value == user:
                users.append(name)
            elif task_id is not None and isinstance(value, int) and value == task_id:
                ids.append(name)
            elif isinstance(value, str) and _UUID.match(value):
                keys.append(name)
        return cls(sql, dict(params), tuple(titles), tuple(ids), tuple(keys), tuple(users))

    def bind(
        self, *, title: str | None = None, task_id: int | None = None, user: str | None = None
    ) -> dict[str, Any]:
        """Parameters for one replay (the capture's owner unless ``user`` is given)."""
        values = dict(self.params)
        for name in self.title_params:
            values[name] = title
        for name in self.id_params:
            values[name] = task_id
        for name in self.key_params:
            values[name] = str(uuid.uuid4())
        if user is not None:
            for name in self.user_params:
                values[name] = user
        return values

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (handed to the load-test worker processes)."""
        return {
            "sql": self.sql,
            "params": dict(self.params),
            "title_params": list(self.title_params),
            "id_params": list(self.id_params),
            "key_params": list(self.key_params),
            "user_params": list(self.user_params),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StatementTemplate:
        """The inverse of :meth:`as_dict`."""
        return cls(
            str(data["sql"]),
            dict(data["params"]),
            tuple(data["title_params"]),
            tuple(data["id_params"]),
            tuple(data["key_params"]),
            tuple(data["user_params"]),
        )


@dataclass
class Captured:
    """Statements taskcore handed to a DBAPI cursor during a ``capture_statements`` block."""

    statements: list[tuple[str, Mapping[str, Any]]] = field(default_factory=list)

    def only(
        self, *, title: str | None = None, task_id: int | None = None, user: str | None = None
    ) -> StatementTemplate:
        """The single statement captured, as a template (an error if there were more)."""
        if len(self.statements) != 1:
            shown = [summarize(sql, 60) for sql, _ in self.statements]
            raise RuntimeError(f"expected one statement, taskcore sent {len(shown)}: {shown}")
        sql, params = self.statements[0]
        return StatementTemplate.from_capture(sql, params, title=title, task_id=task_id, user=user)

    def first(
        self,
        verb: str,
        *,
        title: str | None = None,
        task_id: int | None = None,
        user: str | None = None,
    ) -> StatementTemplate:
        """The first captured statement starting with ``verb`` (e.g. "INSERT")."""
        for sql, params in self.statements:
            if sql.lstrip().upper().startswith(verb):
                return StatementTemplate.from_capture(
                    sql, params, title=title, task_id=task_id, user=user
                )
        raise RuntimeError(f"taskcore sent no {verb} statement")


class _RecordingCursor:
    """A DBAPI cursor that records what it is asked to execute, then does it."""

    def __init__(self, cursor: Any, captured: Captured) -> None:
        self._cursor = cursor
        self._captured = captured

    def execute(self, sql: str, params: Any = None) -> Any:
        if not isinstance(params, Mapping):
            raise TypeError(f"expected named parameters for psycopg2, got {type(params)}")
        self._captured.statements.append((sql, dict(params)))
        return self._cursor.execute(sql, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


@contextmanager
def capture_statements() -> Iterator[Captured]:
    """Record (SQL, parameters) of every statement taskcore runs on its hot path in the block.

    taskcore's one-shots and units run compiled Core statements through
    ``taskcore._link.execute(cursor, compiled, params)`` (no SQLAlchemy Connection, so no
    ``before_cursor_execute`` event); the capture wraps that function's cursor for the block.
    The hook is private to taskcore: if it moves, this fails loudly rather than measuring
    something else.
    """
    original = getattr(taskcore_link, _HOOK, None)
    if original is None:
        raise RuntimeError(
            "taskcore._link.execute is gone: update tests/benchmarks/wire.py to the core's "
            "new statement path"
        )
    captured = Captured()

    def recording(cursor: Any, compiled: Any, params: Mapping[str, Any]) -> list[Any]:
        rows: list[Any] = original(_RecordingCursor(cursor, captured), compiled, params)
        return rows

    setattr(taskcore_link, _HOOK, recording)
    try:
        yield captured
    finally:
        setattr(taskcore_link, _HOOK, original)
