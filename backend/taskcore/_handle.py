"""What a Database handle runs on: its pool, budget and events, and how calls use a connection."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar, cast

from sqlalchemy import Engine
from sqlalchemy.engine import Dialect

from taskcore import _pool, events
from taskcore._connect import connector
from taskcore._deadline import Deadline
from taskcore._link import Link, lending_engine
from taskcore._pool import ConnectionSource, Pool
from taskcore._translate import Phase, translate
from taskcore.budget import RetryBudget
from taskcore.config import Settings
from taskcore.errors import PoolExhaustedError
from taskcore.events import EventHub
from taskcore.retry import RetryPolicy, call_with_retries
from taskcore.unit_of_work import Isolation, UnitOfWork

if TYPE_CHECKING:
    from taskcore.database import Database

__all__ = ["HandleCore"]

T = TypeVar("T")
_log = logging.getLogger("taskcore")


class HandleCore:
    """The machinery under :class:`taskcore.Database`: private, used by units and one-shots."""

    settings: Settings
    #: True for the handle ``isolated()`` yields: everything runs in one rolled-back transaction.
    is_isolated: bool

    def _setup(self, settings: Settings) -> None:
        self.settings = settings
        self.dialect: Dialect = settings.url.get_dialect()()
        self.policy = RetryPolicy.from_settings(settings)
        self.events = EventHub(parent=events.process)
        self.is_isolated = False
        self._lock = threading.Lock()
        self._pool: ConnectionSource | None = None
        self._engine: Engine | None = None
        self._budget: tuple[int, RetryBudget] | None = None
        self._savepoints = itertools.count(1)

    @property
    def budget(self) -> RetryBudget | None:
        """This process's retry budget for the handle (None when turned off)."""
        if not self.settings.retry_budget:
            return None
        held = self._budget
        if held is None or held[0] != _pool.process_id:  # each process has its own budget
            s = self.settings
            held = (
                _pool.process_id,
                RetryBudget(
                    ratio=s.retry_budget_ratio,
                    floor=s.retry_budget_floor,
                    window=s.retry_budget_window,
                    probe_interval=s.retry_probe_interval,
                ),
            )
            self._budget = held
        return held[1]

    def _connections(self) -> ConnectionSource:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    s = self.settings
                    self._pool = Pool(
                        connector(s),
                        size=s.pool_size,
                        idle_timeout=s.pool_idle_timeout,
                        recycle=s.pool_recycle,
                        on_stale=self._stale_replaced,
                    )
                pool = self._pool
        return pool

    def _stale_replaced(self) -> None:
        _log.info(
            "replacing a pooled connection the server closed",
            extra={"taskcore_event": "stale_connection_replaced"},
        )
        self.events.emit(events.StaleConnectionReplaced())

    def _open_link(self, deadline: Deadline, *, oneshot: bool = False) -> Link:
        """A connection from the pool; for a one-shot, in autocommit (or a savepoint)."""
        pool = self._pool or self._connections()
        try:
            pooled = pool.acquire(deadline)
        except PoolExhaustedError:
            raise
        except Exception as exc:  # noqa: BLE001 - translated below, outside the except block
            error = translate(exc, Phase.CONNECT)
        else:
            link: Link | None = pooled.link
            if link is None or link.pool is not pool:  # an isolated handle lends its own
                link = pooled.link = Link(pool, pooled, self.dialect)
            link.savepoint_name = None
            if oneshot:
                if self.is_isolated:
                    name = link.savepoint_name = self._savepoint_name()
                    self._guard(link, lambda: link.savepoint(name, deadline))
                elif link.postgres:
                    link.dbapi.autocommit = True  # client-side switch: no round trip
            return link
        raise error

    def _guard(self, link: Link, fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException:
            link.close(reuse=False)
            raise

    def _begin(self, unit: UnitOfWork, deadline: Deadline, *, retry: bool) -> Link:
        """Check out a connection and begin the unit's transaction (connecting is retried)."""

        def attempt() -> Link:
            link = self._open_link(deadline)
            savepoint = self.is_isolated
            if savepoint:
                link.savepoint_name = self._savepoint_name()
            self._guard(
                link,
                lambda: link.begin(
                    isolation=unit.isolation,
                    read_only=unit.read_only,
                    deadline=deadline,
                    savepoint=savepoint,
                ),
            )
            return link

        if not retry:
            return attempt()
        return call_with_retries(
            "connect", attempt, self.policy, deadline, budget=self.budget, hub=self.events
        )

    def _end(self, link: Link, *, commit: bool, deadline: Deadline) -> None:
        """COMMIT or ROLLBACK (on an isolated handle: release or undo the unit's savepoint)."""
        name = link.savepoint_name
        if name is None:
            link.commit(Phase.STATEMENT, deadline) if commit else link.rollback(deadline)
            return
        if not commit:
            link.rollback_to(name, deadline)
        link.release(name, deadline)

    def _oneshot_done(self, link: Link, *, ok: bool, deadline: Deadline) -> None:
        try:
            if link.savepoint_name is not None and not link.broken:
                self._end(link, commit=ok, deadline=deadline)
        finally:
            link.close()

    def _savepoint_name(self) -> str:
        return f"taskcore_{next(self._savepoints)}"

    def _lending_engine(self) -> Engine:
        """The SQLAlchemy Engine for ORM sessions and arbitrary Core statements (built once)."""
        if self._engine is None:
            engine = lending_engine(self.settings.url)
            with self._lock:
                self._engine = self._engine or engine
        return self._engine

    def _unit_started(self, unit: UnitOfWork) -> None:
        unit._started = time.monotonic()

    def _unit_finished(self, unit: UnitOfWork) -> None:
        self.events.emit(
            events.UnitFinished(
                unit._operation,
                unit.status.value,
                time.monotonic() - unit._started,
                unit._attempt,
                unit.read_only,
            )
        )

    def _run(
        self,
        operation: str,
        fn: Callable[[UnitOfWork], T],
        *,
        read_only: bool = False,
        isolation: Isolation | None = None,
        statement_timeout: float | None = None,
        deadline: float | None = None,
        policy: RetryPolicy | None = None,
    ) -> T:
        clock = Deadline(deadline or self.settings.deadline)
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            unit = UnitOfWork(
                cast("Database", self),
                read_only=read_only,
                isolation=isolation,
                statement_timeout=statement_timeout,
            )
            unit._deadline, unit._operation, unit._attempt = clock, operation, attempts
            with unit:
                return fn(unit)

        return call_with_retries(
            operation, attempt, policy or self.policy, clock, budget=self.budget, hub=self.events
        )
