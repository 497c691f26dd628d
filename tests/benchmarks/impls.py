"""The three implementations measured side by side, doing the same logical work per operation.

* ``taskcore``: the library's one-shot functions and UnitOfWork.
* ``raw_psycopg2``: the baseline. The same SQL statement taskcore sends (captured from it,
  see wire.py) on a plain autocommit psycopg2 connection: one statement, same RETURNING.
* ``tutorial``: the SQLModel tutorial pattern the requirement documents describe: a Session
  on an engine with ``pool_pre_ping=True``; add/commit/refresh to create, ``session.get`` to
  read, get + modify + commit + refresh to update or toggle, get + delete + commit to delete,
  ``select`` to list.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg2.extensions import connection
from psycopg2.extras import execute_values
from sqlalchemy import Engine, create_engine
from sqlmodel import Session, col, select

import taskcore
from taskcore import Task, TaskCreate, TaskUpdate

from .config import LOAD_PAGE
from .database import Database
from .driver import no_wait_callback
from .link import Endpoint
from .wire import StatementTemplate, capture_statements

__all__ = [
    "ONE_SHOTS",
    "READS",
    "Fixture",
    "Implementation",
    "RawPsycopg2",
    "Taskcore",
    "Tutorial",
    "Users",
]

#: The one-shot operations, in report order, and which of them only read.
ONE_SHOTS = (
    "create_task",
    "get_task",
    "get_tasks",
    "update_task",
    "toggle_complete",
    "delete_task",
)
READS = frozenset({"get_task", "get_tasks"})

DESCRIPTION = "measured by tests/bench.py"
_CAPTURE_TITLE = "bench capture title"

Call = Callable[[int], object]


@dataclass(frozen=True)
class Users:
    """Owner ids of this run's rows: all start with ``prefix`` so cleanup finds them."""

    prefix: str

    def __getitem__(self, role: str) -> str:
        return f"{self.prefix}-{role}"


@dataclass
class Fixture:
    """The rows the operations work on, written and cleaned up by a direct psycopg2 connection."""

    seeder: connection
    users: Users
    list_size: int
    read_id: int = 0
    write_ids: dict[str, int] = field(default_factory=dict)

    def seed(self, role: str, n: int, title: str = "seeded") -> list[int]:
        """Insert ``n`` tasks owned by ``users[role]`` (untimed set-up); return their ids."""
        if n == 0:
            return []
        with self.seeder.cursor() as cur:
            rows = execute_values(
                cur,
                "INSERT INTO tasks (title, description, user_id) VALUES %s RETURNING id",
                [(f"{title} {i}", DESCRIPTION, self.users[role]) for i in range(n)],
                page_size=1000,
                fetch=True,
            )
        return [int(row[0]) for row in rows]

    def setup(self, implementations: Sequence[str]) -> None:
        """One task to read, ``list_size`` to list, one to update/toggle per implementation."""
        self.read_id = self.seed("read", 1)[0]
        self.seed("list", self.list_size)
        for name in implementations:
            self.write_ids[name] = self.seed(f"write-{name}", 1)[0]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run one untimed statement (cleanup, VACUUM)."""
        with self.seeder.cursor() as cur:
            cur.execute(sql, params)

    def cleanup(self) -> None:
        """Delete every row this run created."""
        self.execute("DELETE FROM tasks WHERE user_id LIKE %s", (self.users.prefix + "-%",))


class Implementation:
    """One way of doing each operation. ``operation(op, n)`` prepares n calls (untimed)."""

    name: str
    label: str

    def __init__(self, db: Database, fixture: Fixture) -> None:
        self.db = db
        self.fixture = fixture
        self.users = fixture.users

    def bind(self, proxy: Endpoint | None) -> None:
        """(Re)connect directly, or through ``proxy``, and warm up with one read."""
        self.connect(proxy)
        with self.driver_mode():
            self.get_task()

    def driver_mode(self) -> AbstractContextManager[object]:
        """Around this implementation's timed calls: how psycopg2 waits for the socket.

        taskcore installs a process-wide psycopg2 wait callback (its deadlines); a program
        without taskcore has none, so the baselines run with it removed (the driver's floor).
        """
        return contextlib.nullcontext()

    def connect(self, proxy: Endpoint | None) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""
        raise NotImplementedError

    def operation(self, op: str, n: int) -> Call:
        """A callable doing call number i (0 <= i < n) of ``op``; set-up happens here."""
        if op == "delete_task":
            ids = self.fixture.seed("delete", n, "to delete")
            delete = self.delete_task
            return lambda i: delete(ids[i])
        calls: dict[str, Call] = {
            "create_task": self.create_task,
            "get_task": lambda i: self.get_task(),
            "get_tasks": lambda i: self.get_tasks(),
            "update_task": self.update_task,
            "toggle_complete": lambda i: self.toggle_complete(),
        }
        return calls[op]

    def create_task(self, i: int) -> object:
        raise NotImplementedError

    def get_task(self) -> object:
        raise NotImplementedError

    def get_tasks(self) -> object:
        raise NotImplementedError

    def update_task(self, i: int) -> object:
        raise NotImplementedError

    def toggle_complete(self) -> object:
        raise NotImplementedError

    def delete_task(self, task_id: int) -> object:
        raise NotImplementedError

    @property
    def write_id(self) -> int:
        return self.fixture.write_ids[self.name]


class Taskcore(Implementation):
    """taskcore's public API on an explicit handle (``taskcore.Database(url, **settings)``)."""

    name = "taskcore"
    label = "taskcore"

    def __init__(self, db: Database, fixture: Fixture, **settings: Any) -> None:
        super().__init__(db, fixture)
        self.settings = settings
        self._handle: taskcore.Database | None = None

    @property
    def handle(self) -> taskcore.Database:
        """The handle in use (``connect`` makes it)."""
        assert self._handle is not None, "connect() first"
        return self._handle

    def connect(self, proxy: Endpoint | None) -> None:
        self.close()
        self._handle = taskcore.Database(self.db.sa_url(proxy), **self.settings)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def create_task(self, i: int) -> object:
        data = TaskCreate(title=f"task {i}", description=DESCRIPTION)
        return self.handle.create_task(data, user_id=self.users["create"])

    def get_task(self) -> object:
        return self.handle.get_task(self.fixture.read_id, user_id=self.users["read"])

    def get_tasks(self) -> object:
        return self.handle.get_tasks(user_id=self.users["list"])

    def update_task(self, i: int) -> object:
        owner = self.users[f"write-{self.name}"]
        return self.handle.update_task(self.write_id, TaskUpdate(title=f"title {i}"), user_id=owner)

    def toggle_complete(self) -> object:
        return self.handle.toggle_complete(self.write_id, user_id=self.users[f"write-{self.name}"])

    def delete_task(self, task_id: int) -> object:
        return self.handle.delete_task(task_id, user_id=self.users["delete"])

    def unit(self, k: int, i: int) -> None:
        """One unit of work creating ``k`` tasks."""
        with self.handle.unit() as uow:
            for j in range(k):
                uow.tasks.create(TaskCreate(title=f"unit {i}.{j}"), user_id=self.users["unit"])

    def read_only_unit(self) -> None:
        """A read-only unit of work: get one task, list 20."""
        with self.handle.unit(read_only=True) as uow:
            uow.tasks.get(self.fixture.read_id, user_id=self.users["read"])
            uow.tasks.list(user_id=self.users["list"])

    def bulk(self, n: int) -> Callable[[], int]:
        """``db.create_many`` of ``n`` tasks (inputs built beforehand, untimed)."""
        items = [TaskCreate(title=f"bulk {i}") for i in range(n)]
        owner = self.users["bulk"]
        handle = self.handle

        def run() -> int:
            return len(handle.create_many(items, owner))

        return run

    def capture(self) -> dict[str, StatementTemplate]:
        """The statement each operation sends (bound to a direct or proxied URL, pool warm)."""
        owner = self.users[f"write-{self.name}"]
        creator, reader, lister = self.users["create"], self.users["read"], self.users["list"]
        templates: dict[str, StatementTemplate] = {}
        with capture_statements() as got:
            self.handle.create_task(
                TaskCreate(title=_CAPTURE_TITLE, description=DESCRIPTION), user_id=creator
            )
        templates["create_task"] = got.only(title=_CAPTURE_TITLE, user=creator)
        with capture_statements() as got:
            self.get_task()
        templates["get_task"] = got.only(task_id=self.fixture.read_id, user=reader)
        with capture_statements() as got:
            self.get_tasks()
        templates["get_tasks"] = got.only(user=lister)
        with capture_statements() as got:  # the many-clients list: the first page
            self.handle.get_tasks(user_id=lister, limit=LOAD_PAGE)
        templates["get_tasks_page"] = got.only(user=lister)
        templates["update_task"] = _capture_without_purge(
            lambda: self.handle.update_task(
                self.write_id, TaskUpdate(title=_CAPTURE_TITLE), user_id=owner
            ),
            title=_CAPTURE_TITLE,
            task_id=self.write_id,
            user=owner,
        )
        templates["toggle_complete"] = _capture_without_purge(
            self.toggle_complete, title=None, task_id=self.write_id, user=owner
        )
        victims = iter(self.fixture.seed("delete", 20, "to delete"))
        templates["delete_task"] = _capture_without_purge(
            lambda: self.delete_task(next(victims)),
            title=None,
            task_id=None,
            user=self.users["delete"],
        )
        with capture_statements() as got:
            self.unit(1, 0)
        templates["unit_insert"] = got.first("INSERT", title="unit 0.0")
        with capture_statements() as got:
            self.read_only_unit()
        selects = [
            StatementTemplate.from_capture(sql, params, title=None, task_id=None)
            for sql, params in got.statements
            if sql.lstrip().upper().startswith("SELECT")
        ]
        if len(selects) != 2:
            raise RuntimeError(f"the read-only unit sent {len(selects)} SELECTs, expected 2")
        templates["unit_get"], templates["unit_list"] = selects
        return templates


def _capture_without_purge(
    call: Callable[[], object],
    *,
    title: str | None,
    task_id: int | None,
    user: str | None,
) -> StatementTemplate:
    """Capture a write's statement; retry if it drew the occasional purge of old keys.

    For delete, the task id changes per call: the capture's own id is found as the only
    integer parameter that is not a constant of the statement.
    """
    for _ in range(50):
        with capture_statements() as got:
            call()
        sql, params = got.statements[0]
        if len(got.statements) == 1 and "purge" not in sql:
            if task_id is None:
                ints = [
                    v for v in params.values() if isinstance(v, int) and not isinstance(v, bool)
                ]
                task_id = ints[0] if ints else None
            return StatementTemplate.from_capture(
                sql, params, title=title, task_id=task_id, user=user
            )
    raise RuntimeError("could not capture the write statement without its occasional purge")


class RawPsycopg2(Implementation):
    """The baseline: taskcore's own statements on plain psycopg2 connections.

    Without taskcore's wait callback (blocking libpq calls, as in a program without taskcore)
    unless ``green``: then the same calls go through the callback taskcore installs, which
    isolates what the callback itself costs.
    """

    name = "raw_psycopg2"
    label = "raw psycopg2"

    def __init__(
        self,
        db: Database,
        fixture: Fixture,
        templates: dict[str, StatementTemplate],
        *,
        green: bool = False,
    ) -> None:
        super().__init__(db, fixture)
        self.templates = templates
        self.green = green
        if green:
            self.name = "raw_wait_callback"
            self.label = "raw psycopg2 + taskcore's wait callback"
        self._auto: connection | None = None
        self._tx: connection | None = None
        self._ro: connection | None = None

    def driver_mode(self) -> AbstractContextManager[object]:
        return contextlib.nullcontext() if self.green else no_wait_callback()

    @property
    def write_id(self) -> int:
        return self.fixture.write_ids["raw_psycopg2"]

    @property
    def owner(self) -> str:
        """The owner of ``write_id`` (the captured statements name taskcore's own)."""
        return self.fixture.users["write-raw_psycopg2"]

    def connect(self, proxy: Endpoint | None) -> None:
        self.close()
        self._auto = self.db.connect(proxy, autocommit=True)
        self._tx = self.db.connect(proxy, autocommit=False)
        self._ro = self.db.connect(proxy, autocommit=False)
        self._ro.set_session(readonly=True)

    def close(self) -> None:
        for conn in (self._auto, self._tx, self._ro):
            if conn is not None:
                conn.close()
        self._auto = self._tx = self._ro = None

    def _one(self, op: str, **values: Any) -> list[tuple[Any, ...]]:
        assert self._auto is not None
        template = self.templates[op]
        with self._auto.cursor() as cur:
            cur.execute(template.sql, template.bind(**values))
            return cur.fetchall()

    def create_task(self, i: int) -> object:
        return self._one("create_task", title=f"task {i}")

    def get_task(self) -> object:
        return self._one("get_task", task_id=self.fixture.read_id)

    def get_tasks(self) -> object:
        return self._one("get_tasks")

    def update_task(self, i: int) -> object:
        return self._one("update_task", title=f"title {i}", task_id=self.write_id, user=self.owner)

    def toggle_complete(self) -> object:
        return self._one("toggle_complete", task_id=self.write_id, user=self.owner)

    def delete_task(self, task_id: int) -> object:
        return self._one("delete_task", task_id=task_id)

    def unit(self, k: int, i: int) -> None:
        """BEGIN, k INSERTs (taskcore's statement), COMMIT: the physical minimum, k + 2."""
        assert self._tx is not None
        template = self.templates["unit_insert"]
        with self._tx.cursor() as cur:
            for j in range(k):
                cur.execute(template.sql, template.bind(title=f"unit {i}.{j}"))
                cur.fetchall()
        self._tx.commit()

    def read_only_unit(self) -> None:
        """BEGIN READ ONLY, taskcore's get and list statements, COMMIT."""
        assert self._ro is not None
        with self._ro.cursor() as cur:
            for op in ("unit_get", "unit_list"):
                template = self.templates[op]
                cur.execute(template.sql, template.bind())
                cur.fetchall()
        self._ro.commit()

    def bulk(self, n: int, *, returning: str = "id") -> Callable[[], int]:
        """execute_values(page_size=1000) with RETURNING id (or ``*``), in one transaction."""
        rows = [(f"bulk {i}", None, self.users["bulk"]) for i in range(n)]
        sql = f"INSERT INTO tasks (title, description, user_id) VALUES %s RETURNING {returning}"

        def run() -> int:
            assert self._tx is not None
            with self._tx.cursor() as cur:
                ids = execute_values(
                    cur,
                    sql,
                    rows,
                    page_size=1000,
                    fetch=True,
                )
            self._tx.commit()
            return len(ids)

        return run


class _NotFoundError(LookupError):
    pass


class Tutorial(Implementation):
    """The SQLModel tutorial pattern, with the liveness ping the tutorial's engine uses."""

    name = "tutorial"
    label = "SQLModel tutorial"

    def __init__(self, db: Database, fixture: Fixture) -> None:
        super().__init__(db, fixture)
        self._engine: Engine | None = None

    def driver_mode(self) -> AbstractContextManager[object]:
        return no_wait_callback()

    def connect(self, proxy: Endpoint | None) -> None:
        self.close()
        self._engine = create_engine(self.db.sa_url(proxy), pool_pre_ping=True)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @property
    def engine(self) -> Engine:
        assert self._engine is not None
        return self._engine

    def create_task(self, i: int) -> object:
        # Table models skip validation and need keyword construction (the tutorial's way).
        fields: dict[str, Any] = {
            "title": f"task {i}",
            "description": DESCRIPTION,
            "user_id": self.users["create"],
        }
        with Session(self.engine) as session:
            task = Task(**fields)
            session.add(task)
            session.commit()
            session.refresh(task)
            return task

    def get_task(self) -> object:
        with Session(self.engine) as session:
            task = session.get(Task, self.fixture.read_id)
            if task is None or task.user_id != self.users["read"]:
                return None
            return task

    def get_tasks(self) -> object:
        with Session(self.engine) as session:
            statement = (
                select(Task).where(col(Task.user_id) == self.users["list"]).order_by(col(Task.id))
            )
            return list(session.exec(statement).all())

    def _modify(self, change: Callable[[Task], None]) -> Task:
        owner = self.users[f"write-{self.name}"]
        with Session(self.engine) as session:
            task = session.get(Task, self.write_id)
            if task is None or task.user_id != owner:
                raise _NotFoundError(self.write_id)
            change(task)
            task.updated_at = datetime.now(UTC)
            session.add(task)
            session.commit()
            session.refresh(task)
            return task

    def update_task(self, i: int) -> object:
        def retitle(task: Task) -> None:
            task.sqlmodel_update({"title": f"title {i}"})

        return self._modify(retitle)

    def toggle_complete(self) -> object:
        def flip(task: Task) -> None:
            task.completed = not task.completed

        return self._modify(flip)

    def delete_task(self, task_id: int) -> object:
        with Session(self.engine) as session:
            task = session.get(Task, task_id)
            if task is None or task.user_id != self.users["delete"]:
                return False
            session.delete(task)
            session.commit()
            return True
