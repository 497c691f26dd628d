"""Round trips per operation, counted on the wire (contracts/round-trips.md); a regression fails here."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import taskcore
from _pgserver import PgTarget
from taskcore import TaskCreate, TaskUpdate, UnitOfWork
from taskcore.testing import FlakyProxy

pytestmark = pytest.mark.postgres


@pytest.fixture(params=[True, False], ids=["protected", "unprotected"])
def protection(request: pytest.FixtureRequest) -> bool:
    """Commit protection on (the default: +1 round trip per writing unit) or off."""
    value: bool = request.param
    return value


@pytest.fixture
def wire(proxy: FlakyProxy, pg: PgTarget, protection: bool) -> FlakyProxy:
    """taskcore talking to the test server through the counting proxy, pool warmed up."""
    taskcore.configure(database_url=proxy.url(pg.url), commit_protection=protection)
    taskcore.get_tasks()  # first use: connect and SQLAlchemy's one-time dialect set-up
    return proxy


def _count(proxy: FlakyProxy, operation: Callable[[], object]) -> int:
    proxy.reset_stats()
    operation()
    stats = proxy.stats
    assert stats.connections == 0, "steady state must not open connections"
    return stats.round_trips


def test_each_one_shot_costs_one_round_trip(wire: FlakyProxy) -> None:
    """create, get, list, update, toggle and delete each cost exactly 1 round trip."""
    task = taskcore.create_task(TaskCreate(title="warm"), user_id="u")
    costs = {
        "create_task": _count(
            wire, lambda: taskcore.create_task(TaskCreate(title="a"), user_id="u")
        ),
        "get_task": _count(wire, lambda: taskcore.get_task(task.id, user_id="u")),
        "get_tasks": _count(wire, lambda: taskcore.get_tasks(user_id="u")),
        "update_task": _count(wire, lambda: taskcore.update_task(task.id, TaskUpdate(title="b"))),
        "toggle_complete": _count(wire, lambda: taskcore.toggle_complete(task.id)),
        "delete_task": _count(wire, lambda: taskcore.delete_task(task.id)),
    }
    assert costs == dict.fromkeys(costs, 1)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_unit_of_work_with_k_statements_costs_k_plus_2(
    wire: FlakyProxy, k: int, protection: bool
) -> None:
    """BEGIN, k statements, COMMIT (+1 ticket when protected): no ping, refresh or reset."""

    def unit() -> None:
        with UnitOfWork() as uow:
            for i in range(k):
                uow.tasks.create(TaskCreate(title=f"t{i}"), user_id="u")

    assert _count(wire, unit) == k + 2 + protection


def test_read_only_unit_costs_k_plus_2(wire: FlakyProxy) -> None:
    """A read-only unit of work with 2 reads costs 4 round trips."""

    def unit() -> None:
        with UnitOfWork(read_only=True, isolation="repeatable read") as uow:
            uow.tasks.list()
            uow.tasks.get(1)

    assert _count(wire, unit) == 4


def test_unit_without_statements_costs_nothing(wire: FlakyProxy) -> None:
    """A unit of work that runs no statement never touches the network."""

    def unit() -> None:
        with UnitOfWork():
            pass

    assert _count(wire, unit) == 0


def test_rolled_back_unit_costs_k_plus_2(wire: FlakyProxy) -> None:
    """A unit that raises costs BEGIN, its statements and one ROLLBACK."""

    def unit() -> None:
        with pytest.raises(KeyError), UnitOfWork() as uow:
            uow.tasks.create(TaskCreate(title="x"), user_id="u")
            raise KeyError

    assert _count(wire, unit) == 3


def test_savepoint_adds_two_round_trips(wire: FlakyProxy, protection: bool) -> None:
    """A savepoint block adds SAVEPOINT and RELEASE around its statements."""

    def unit() -> None:
        with UnitOfWork() as uow:
            uow.tasks.create(TaskCreate(title="a"), user_id="u")
            with uow.savepoint():
                uow.tasks.create(TaskCreate(title="b"), user_id="u")

    assert _count(wire, unit) == 2 + 2 + 2 + protection


def test_modes_do_not_leak_into_the_next_one_shot(wire: FlakyProxy) -> None:
    """After serializable and read-only units, a one-shot still costs 1 round trip."""
    with UnitOfWork(read_only=True, isolation="serializable") as uow:
        uow.tasks.list()
    assert _count(wire, taskcore.get_tasks) == 1
    assert _count(wire, lambda: taskcore.create_task(TaskCreate(title="x"), user_id="u")) == 1


@pytest.mark.parametrize(("n", "expected"), [(1, 3), (1000, 3), (1001, 4), (2500, 5)])
def test_bulk_create_costs_one_round_trip_per_thousand_rows(
    wire: FlakyProxy, n: int, expected: int, protection: bool
) -> None:
    """create_many of N tasks in one unit costs ceil(N/1000) + 2 (+1 ticket when protected)."""

    def unit() -> None:
        with UnitOfWork() as uow:
            uow.tasks.create_many([TaskCreate(title=f"t{i}") for i in range(n)], user_id="u")

    assert _count(wire, unit) == expected + protection
