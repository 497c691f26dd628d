"""Every call on a deadline under silent partitions (issue 9): time bound and invariants.

The server runs in its own network namespace behind a veth pair; `cut()` drops every packet
with no RST, FIN or ICMP (tests/_netns.py). Each test runs a taskcore call on a handle with a
small deadline D, asserts it returns within D + 1 s with the taskcore error the outcome table
(contracts/errors-and-retries.md, "Outcome table") names, then heals and checks through an
independent superuser connection over the unix socket: acknowledged writes exactly once,
"not applied" really absent, units whole, and the first call after the heal succeeding within
2 s. Statements are made slow on the server by triggers that sleep for rows with a marked title,
so a cut can land while a statement or a COMMIT is in flight (seen in pg_stat_activity).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import psycopg2.extensions
import psycopg2.extras
import pytest
from sqlalchemy import func, select

import taskcore
import taskcore._deadline
from _netns import NetnsPg, SilentResolver
from _pgserver import APP_USER
from taskcore import TaskCreate
from taskcore.unit_of_work import UnitOfWork

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

DEADLINE = 4.0  # D: every call below gets this deadline
SLACK = 1.0  # the bar: a call returns within D + 1 s
HEALED_BOUND = 2.0  # the first call after heal() succeeds within this
HANG_LIMIT = DEADLINE + 20.0  # a call still running after this is reported, not waited for
USER = "u"

_TRIGGERS = f"""
CREATE OR REPLACE FUNCTION tc_sleep_for_title() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_sleep(split_part(NEW.title, ':', 2)::float8);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS tc_slow_statement ON tasks;
CREATE TRIGGER tc_slow_statement AFTER INSERT ON tasks FOR EACH ROW
    WHEN (NEW.title LIKE 'slow-statement:%') EXECUTE FUNCTION tc_sleep_for_title();
DROP TRIGGER IF EXISTS tc_slow_commit ON tasks;
CREATE CONSTRAINT TRIGGER tc_slow_commit AFTER INSERT ON tasks
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.title LIKE 'slow-commit:%') EXECUTE FUNCTION tc_sleep_for_title();
GRANT EXECUTE ON FUNCTION tc_sleep_for_title() TO {APP_USER};
"""


# -- fixtures and helpers --------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(shared_netns_pg: NetnsPg) -> NetnsPg:
    """The module's namespaced server, with taskcore's tables and the sleeping triggers."""
    with taskcore.Database(taskcore_url(shared_netns_pg), deadline=30) as db:
        db.init_db()
    with closing(shared_netns_pg.admin_connect()) as admin, admin.cursor() as cur:
        cur.execute(_TRIGGERS)
    return shared_netns_pg


@pytest.fixture
def net(server: NetnsPg) -> Iterator[NetnsPg]:
    """The server, healed and emptied after the test (leftover sessions are ended first)."""
    yield server
    if server.link.is_cut:
        server.heal()
    with closing(server.admin_connect()) as admin, admin.cursor() as cur:
        # A unit cut mid-transaction leaves its server session holding locks until the
        # client's retransmitted FIN arrives; end every app session so TRUNCATE cannot wait.
        cur.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
            (APP_USER,),
        )
        _wait_for(admin, "SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = %s", APP_USER)
        cur.execute("SET lock_timeout = '10s'")
        cur.execute("TRUNCATE tasks, task_operations RESTART IDENTITY")


def taskcore_url(server: NetnsPg) -> str:
    """The app role's URL for taskcore (no TLS: the namespaced server has none)."""
    return server.url + "?sslmode=disable"


def handle(server: NetnsPg, **settings: Any) -> taskcore.Database:
    """A handle on the namespaced server with the small deadline D."""
    settings.setdefault("deadline", DEADLINE)
    return taskcore.Database(taskcore_url(server), **settings)


@dataclass
class Timed:
    """What a call did and how long it took (measured in the thread that ran it)."""

    elapsed: float
    ended: float  # time.monotonic() when it returned
    result: Any = None
    error: BaseException | None = None


def timed(call: Callable[[], Any]) -> Timed:
    """Run `call` in a daemon thread; its outcome and duration (fails the test if it hangs)."""
    box: list[Timed] = []

    def run() -> None:
        started = time.monotonic()
        try:
            result = call()
        except BaseException as exc:  # noqa: BLE001 - recorded for the test to assert on
            ended = time.monotonic()
            box.append(Timed(ended - started, ended, error=exc))
        else:
            ended = time.monotonic()
            box.append(Timed(ended - started, ended, result=result))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT)
    if not box:
        pytest.fail(
            f"the call was still blocked after {HANG_LIMIT:.0f}s (bar: {DEADLINE + SLACK}s)"
        )
    return box[0]


def assert_within_bar(outcome: Timed, error: type[BaseException]) -> None:
    """The call failed with `error` within D + 1 s."""
    print(f"{type(outcome.error).__name__} after {outcome.elapsed:.2f}s")  # shown by -rP
    assert isinstance(outcome.error, error), f"expected {error.__name__}, got {outcome.error!r}"
    assert outcome.elapsed <= DEADLINE + SLACK, f"took {outcome.elapsed:.2f}s"


def scalar(server: NetnsPg, sql: str, *params: Any) -> Any:
    """One value read through an independent superuser connection (unix socket)."""
    with closing(server.admin_connect()) as admin, admin.cursor() as cur:
        cur.execute(sql, params)
        row = cur.fetchone()
        return None if row is None else row[0]


def titled(server: NetnsPg, title: str) -> int:
    """How many committed tasks have `title` (independent connection)."""
    count: int = scalar(server, "SELECT count(*) FROM tasks WHERE title = %s", title)
    return count


def _wait_for(admin: Any, sql: str, *params: Any, limit: float = 15.0) -> None:
    """Poll `sql` (one boolean) on the admin connection until true; fail after `limit` s."""
    ends = time.monotonic() + limit
    with admin.cursor() as cur:
        while True:
            cur.execute(sql, params)
            row = cur.fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() > ends:
                pytest.fail(f"condition not reached within {limit}s: {sql}")
            time.sleep(0.01)  # poll interval only; the loop waits on the condition above


def wait_until_sleeping(server: NetnsPg, query_prefix: str) -> None:
    """Wait until an app session runs a statement starting `query_prefix` inside pg_sleep."""
    with closing(server.admin_connect()) as admin:
        _wait_for(
            admin,
            "SELECT count(*) > 0 FROM pg_stat_activity WHERE usename = %s"
            " AND wait_event = 'PgSleep' AND query LIKE %s",
            APP_USER,
            query_prefix + "%",
        )


def wait_until_no_sleepers(server: NetnsPg) -> None:
    """Wait until no app session is inside pg_sleep (an abandoned statement has finished)."""
    with closing(server.admin_connect()) as admin:
        _wait_for(
            admin,
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE usename = %s"
            " AND wait_event = 'PgSleep'",
            APP_USER,
        )


def first_call_after_heal_succeeds(db: taskcore.Database, server: NetnsPg) -> None:
    """Heal, then the handle's next call (a keyed write) succeeds within 2 s, exactly once."""
    server.heal()
    title = f"after-heal-{uuid.uuid4()}"
    outcome = timed(lambda: db.create_task(TaskCreate(title=title), USER))
    print(f"first call after heal: {outcome.elapsed:.3f}s")  # shown by -rP
    assert outcome.error is None, f"first call after heal failed: {outcome.error!r}"
    assert outcome.elapsed < HEALED_BOUND, f"first call after heal took {outcome.elapsed:.2f}s"
    assert titled(server, title) == 1


def warm(db: taskcore.Database, title: str) -> taskcore.Task:
    """One acknowledged write, which also leaves an open connection idle in the pool."""
    task = db.create_task(TaskCreate(title=title), USER)
    assert db.stats().idle == 1
    return task


# -- a warm pooled connection ----------------------------------------------------------------


def test_oneshot_write_on_a_warm_connection_is_unknown_within_the_deadline(
    net: NetnsPg,
) -> None:
    """A keyed one-shot write sent into a silent partition: CommitOutcomeUnknownError within
    D + 1 s, its connection discarded; after heal, a retry with the same key applies it once."""
    with handle(net) as db:
        acknowledged = warm(db, "acknowledged")
        dropped = net.link.dropped_packets()
        net.cut()
        key = str(uuid.uuid4())
        outcome = timed(
            lambda: db.create_task(TaskCreate(title="in the void"), USER, idempotency_key=key)
        )
        assert_within_bar(outcome, taskcore.CommitOutcomeUnknownError)
        assert net.link.dropped_packets() > dropped  # the write was sent, and swallowed
        stats = db.stats()
        assert (stats.in_use, stats.idle, stats.discarded) == (0, 0, 1)  # abandoned, not reused
        first_call_after_heal_succeeds(db, net)
        again = db.create_task(TaskCreate(title="in the void"), USER, idempotency_key=key)
        assert titled(net, "in the void") == 1
        assert scalar(net, "SELECT id FROM tasks WHERE idempotency_key = %s", key) == again.id
    assert titled(net, "acknowledged") == 1
    assert acknowledged.id == scalar(net, "SELECT id FROM tasks WHERE title = 'acknowledged'")


def test_read_on_a_warm_connection_gives_up_within_the_deadline(net: NetnsPg) -> None:
    """A one-shot read during a silent partition: DatabaseUnavailableError (reason deadline)
    within D + 1 s; after heal the same read succeeds within 2 s."""
    with handle(net) as db:
        task = warm(db, "to read")
        net.cut()
        outcome = timed(lambda: db.get_task(task.id))
        assert_within_bar(outcome, taskcore.DatabaseUnavailableError)
        assert isinstance(outcome.error, taskcore.DatabaseUnavailableError)
        assert outcome.error.reason == "deadline"
        net.heal()
        healed = timed(lambda: db.get_task(task.id))
        assert healed.error is None and healed.result == task
        assert healed.elapsed < HEALED_BOUND


def test_create_many_and_check_connection_return_within_the_deadline(net: NetnsPg) -> None:
    """create_many (a unit under Database's loop) and check_connection (a fresh connection,
    one try) during a silent partition: each a taskcore error within D + 1 s, nothing applied."""
    with handle(net) as db:
        warm(db, "warm")
        net.cut()
        many = timed(lambda: db.create_many([TaskCreate(title="many")] * 3, USER))
        assert_within_bar(many, taskcore.DatabaseUnavailableError)
        check = timed(db.check_connection)
        assert_within_bar(check, taskcore.TransientError)
        first_call_after_heal_succeeds(db, net)
        assert titled(net, "many") == 0


def _two_statements(title: str) -> Callable[[UnitOfWork], None]:
    """A unit writing two rows (`title` a and b)."""

    def unit(uow: UnitOfWork) -> None:
        uow.tasks.create(TaskCreate(title=f"{title} a"), user_id=USER)
        uow.tasks.create(TaskCreate(title=f"{title} b"), user_id=USER)

    return unit


def test_run_of_a_two_statement_unit_gives_up_within_the_deadline(net: NetnsPg) -> None:
    """Database.run during a silent partition: DatabaseUnavailableError within D + 1 s and
    nothing applied; after heal the same run succeeds within 2 s, each row once."""
    with handle(net) as db:
        warm(db, "warm")
        net.cut()
        outcome = timed(lambda: db.run(_two_statements("run")))
        assert_within_bar(outcome, taskcore.DatabaseUnavailableError)
        net.heal()
        assert titled(net, "run a") == titled(net, "run b") == 0
        healed = timed(lambda: db.run(_two_statements("run")))
        assert healed.error is None and healed.elapsed < HEALED_BOUND
        assert titled(net, "run a") == titled(net, "run b") == 1


def test_run_cut_between_its_statements_applies_nothing(net: NetnsPg) -> None:
    """Database.run whose first attempt is cut between its two statements: a taskcore error
    within D + 1 s and neither row applied; after heal the run succeeds, each row once."""
    with handle(net) as db:
        warm(db, "warm")
        cuts = 0

        def unit(uow: UnitOfWork) -> None:
            nonlocal cuts
            uow.tasks.create(TaskCreate(title="between a"), user_id=USER)
            if not net.link.is_cut and cuts == 0:
                cuts += 1
                net.cut()
            uow.tasks.create(TaskCreate(title="between b"), user_id=USER)

        outcome = timed(lambda: db.run(unit))
        assert_within_bar(outcome, taskcore.DatabaseUnavailableError)
        net.heal()
        assert titled(net, "between a") == titled(net, "between b") == 0
        healed = timed(lambda: db.run(unit))
        assert healed.error is None and healed.elapsed < HEALED_BOUND
        assert titled(net, "between a") == titled(net, "between b") == 1


def test_unit_cut_between_its_statements_is_never_half_applied(net: NetnsPg) -> None:
    """A `with db.unit()` block cut between two statements: the second raises TransientError
    within D + 1 s, the block leaves at once, and the first statement is not applied."""
    with handle(net) as db:
        warm(db, "warm")
        marks: dict[str, float] = {}

        def block() -> None:
            with db.unit() as uow:
                uow.tasks.create(TaskCreate(title="half a"), user_id=USER)
                net.cut()
                marks["cut"] = time.monotonic()
                uow.tasks.create(TaskCreate(title="half b"), user_id=USER)

        outcome = timed(block)
        assert isinstance(outcome.error, taskcore.TransientError)
        assert not outcome.error.maybe_applied
        assert outcome.ended - marks["cut"] <= DEADLINE + SLACK
        first_call_after_heal_succeeds(db, net)
        assert titled(net, "half a") == titled(net, "half b") == 0


# -- COMMIT ----------------------------------------------------------------------------------


def test_cut_before_commit_is_known_not_applied(net: NetnsPg) -> None:
    """Cut after the last statement, then leave the block: the commit ticket's statement (sent
    before COMMIT) times out, TransientError within D + 1 s, and the work really is absent."""
    with handle(net) as db:
        warm(db, "warm")
        marks: dict[str, float] = {}

        def block() -> None:
            with db.unit() as uow:
                uow.tasks.create(TaskCreate(title="before commit"), user_id=USER)
                net.cut()
                marks["exit"] = time.monotonic()

        outcome = timed(block)
        assert isinstance(outcome.error, taskcore.TransientError)
        assert not outcome.error.maybe_applied
        assert outcome.ended - marks["exit"] <= DEADLINE + SLACK
        first_call_after_heal_succeeds(db, net)
        assert titled(net, "before commit") == 0


def test_cut_while_commit_is_in_flight_is_unknown_and_the_row_is_there(net: NetnsPg) -> None:
    """COMMIT in flight (a deferred trigger sleeps in it) when the link is cut: the reply is
    lost, resolution cannot reach the server before the deadline, so CommitOutcomeUnknownError
    within D + 1 s of leaving the block; the server did commit, so "not applied" would be wrong."""
    title = "slow-commit:1.5"
    with handle(net) as db:
        warm(db, "warm")
        marks: dict[str, float] = {}

        def block() -> None:
            with db.unit() as uow:
                uow.tasks.create(TaskCreate(title=title), user_id=USER)
                marks["exit"] = time.monotonic()

        results: list[Timed] = []
        runner = threading.Thread(target=lambda: results.append(timed(block)), daemon=True)
        runner.start()
        wait_until_sleeping(net, "COMMIT")
        net.cut()
        runner.join(HANG_LIMIT + 1)
        assert results, "the block never returned"
        outcome = results[0]
        assert isinstance(outcome.error, taskcore.CommitOutcomeUnknownError)
        assert outcome.ended - marks["exit"] <= DEADLINE + SLACK  # from the start of COMMIT
        first_call_after_heal_succeeds(db, net)
        wait_until_no_sleepers(net)
        assert titled(net, title) == 1


def test_cut_before_an_unprotected_commit_is_unknown_never_doubled(net: NetnsPg) -> None:
    """With commit protection off, a COMMIT sent into a silent partition is
    CommitOutcomeUnknownError within D + 1 s; after heal the row is there at most once."""
    with handle(net, commit_protection=False) as db:
        warm(db, "warm")
        marks: dict[str, float] = {}

        def block() -> None:
            with db.unit() as uow:
                uow.tasks.create(TaskCreate(title="unprotected"), user_id=USER)
                net.cut()
                marks["exit"] = time.monotonic()

        outcome = timed(block)
        assert isinstance(outcome.error, taskcore.CommitOutcomeUnknownError)
        assert outcome.ended - marks["exit"] <= DEADLINE + SLACK
        first_call_after_heal_succeeds(db, net)
        assert titled(net, "unprotected") <= 1


# -- keyed writes whose reply is lost: maybe applied, never "not applied" --------------------


def test_keyed_write_cut_mid_statement_is_unknown_and_a_retry_applies_it_once(
    net: NetnsPg,
) -> None:
    """A keyed one-shot write cut while the server runs it: CommitOutcomeUnknownError within
    D + 1 s although the server applied it; after heal, the same key returns that row, once."""
    title = "slow-statement:1.5"
    key = str(uuid.uuid4())
    with handle(net) as db:
        warm(db, "warm")
        results: list[Timed] = []

        def write() -> None:
            results.append(
                timed(lambda: db.create_task(TaskCreate(title=title), USER, idempotency_key=key))
            )

        runner = threading.Thread(target=write, daemon=True)
        runner.start()
        wait_until_sleeping(net, "INSERT")
        net.cut()
        runner.join(HANG_LIMIT + 1)
        assert results, "the write never returned"
        assert_within_bar(results[0], taskcore.CommitOutcomeUnknownError)
        net.heal()
        wait_until_no_sleepers(net)
        assert titled(net, title) == 1  # it was applied: "not applied" would have been a lie
        again = timed(lambda: db.create_task(TaskCreate(title=title), USER, idempotency_key=key))
        assert again.error is None and again.elapsed < HEALED_BOUND
        assert titled(net, title) == 1
        assert again.result.id == scalar(net, "SELECT id FROM tasks WHERE title = %s", title)


def test_keyed_write_past_its_deadline_is_unknown_and_a_retry_applies_it_once(
    net: NetnsPg,
) -> None:
    """No fault at all: a keyed one-shot write the server takes longer than D to run is
    abandoned at the deadline (CommitOutcomeUnknownError, not "not applied"), the server applies
    it anyway, and re-running it with the same key returns that row without a second one."""
    title = f"slow-statement:{DEADLINE + 1.0}"
    key = str(uuid.uuid4())
    with handle(net) as db:
        outcome = timed(lambda: db.create_task(TaskCreate(title=title), USER, idempotency_key=key))
        assert_within_bar(outcome, taskcore.CommitOutcomeUnknownError)
        assert outcome.elapsed >= DEADLINE - 0.05
        wait_until_no_sleepers(net)
        assert titled(net, title) == 1
        again = db.create_task(TaskCreate(title=title), USER, idempotency_key=key)
        assert titled(net, title) == 1
        assert again.id == scalar(net, "SELECT id FROM tasks WHERE title = %s", title)


# -- connect -----------------------------------------------------------------------------------


@pytest.mark.parametrize("connect_timeout", [10, 2], ids=["one-attempt", "several-attempts"])
def test_connect_during_a_partition_gives_up_within_the_deadline(
    net: NetnsPg, connect_timeout: int
) -> None:
    """A fresh handle's first call while cut: DatabaseUnavailableError within D + 1 s, whether
    one connect attempt fills the deadline or several shorter ones (connect_timeout 2 s) do."""
    with handle(net, connect_timeout=connect_timeout) as db:
        net.cut()
        key = str(uuid.uuid4())
        outcome = timed(lambda: db.create_task(TaskCreate(title="never sent"), USER,
                                               idempotency_key=key))  # fmt: skip
        assert_within_bar(outcome, taskcore.DatabaseUnavailableError)
        assert isinstance(outcome.error, taskcore.DatabaseUnavailableError)
        expected_attempts = 1 if connect_timeout >= DEADLINE else 2
        assert outcome.error.attempts >= expected_attempts
        assert db.stats().open == 0  # nothing half-open was kept
        first_call_after_heal_succeeds(db, net)
        assert titled(net, "never sent") == 0


# -- a resolver that never answers -------------------------------------------------------------

_LOOKUPS = """
import json, sys, time
import taskcore

deadline = float(sys.argv[1])
report = {}
for name, url in (("resolvable", sys.argv[2]), ("silent", sys.argv[3])):
    db = taskcore.Database(url, deadline=deadline)
    started = time.monotonic()
    try:
        db.get_task(1)
        report[name] = {"error": None}
    except taskcore.TaskcoreError as exc:
        report[name] = {"error": type(exc).__name__, "reason": getattr(exc, "reason", None)}
    report[name]["elapsed"] = time.monotonic() - started
print(json.dumps(report))
"""


def test_a_resolver_that_never_answers_is_bounded_by_the_deadline(
    server: NetnsPg, silent_resolver: SilentResolver
) -> None:
    """With DNS silent (glibc would wait 2 x 30 s), a call naming the server by a host name
    gives up within D + 1 s (DatabaseUnavailableError, reason deadline): the lookup runs under
    the deadline; a name the child's /etc/hosts knows connects through the same path."""
    silent, known = "db.taskcore-silent.example", "db.taskcore-known.example"
    proc = silent_resolver.run(
        _LOOKUPS,
        str(DEADLINE),
        server.url_for_host(known) + "?sslmode=disable",
        server.url_for_host(silent) + "?sslmode=disable",
        timeout=DEADLINE + 60,
        options="timeout:30 attempts:2",
        hosts={known: server.host},
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    print(report)  # shown by -rP
    assert report["resolvable"]["error"] is None, report
    assert report["silent"]["error"] == "DatabaseUnavailableError", report
    assert report["silent"]["reason"] == "deadline", report
    assert DEADLINE - 0.1 <= report["silent"]["elapsed"] <= DEADLINE + SLACK, report
    assert silent in silent_resolver.queries  # the lookup really asked the silent server
    assert known not in silent_resolver.queries


# -- someone else's wait callback ---------------------------------------------------------------


def test_with_another_wait_callback_only_the_tcp_backstop_bounds_a_read(
    net: NetnsPg, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When another psycopg2 wait callback is installed (gevent's, say), taskcore keeps it, says
    so once, and a read on a cut link is ended by tcp_user_timeout (10 s), not by the deadline."""
    previous = psycopg2.extensions.get_wait_callback()
    monkeypatch.setattr(taskcore._deadline, "_warned", False)
    psycopg2.extensions.set_wait_callback(psycopg2.extras.wait_select)
    try:
        with caplog.at_level("WARNING", "taskcore"), handle(net) as db:
            task = warm(db, "to read")
            assert psycopg2.extensions.get_wait_callback() is psycopg2.extras.wait_select
            net.cut()
            outcome = timed(lambda: db.get_task(task.id))
            net.heal()
    finally:
        psycopg2.extensions.set_wait_callback(previous)
    events = [getattr(r, "taskcore_event", None) for r in caplog.records]
    assert events.count("wait_callback_in_use") == 1
    print(f"{type(outcome.error).__name__} after {outcome.elapsed:.2f}s")  # shown by -rP
    assert isinstance(outcome.error, taskcore.DatabaseUnavailableError)
    assert 10.0 - 0.5 <= outcome.elapsed <= 10.0 + 3.0


# -- statements through SQLAlchemy -------------------------------------------------------------


@pytest.mark.parametrize("call", ["run_statement", "init_db"])
def test_sqlalchemy_statements_cut_mid_unit_return_within_the_deadline(
    net: NetnsPg, call: str
) -> None:
    """uow.run_statement and init_db on a cut warm link raise a taskcore error within D + 1 s,
    like the repository's statements do."""
    # tcp_user_timeout at 6 s (default 10 s): longer than D, so only the deadline can end it.
    with taskcore.Database(taskcore_url(net) + "&tcp_user_timeout=6000", deadline=DEADLINE) as db:
        db.init_db()  # warm: a pooled connection, and the handle's SQLAlchemy engine built

        def block() -> None:
            if call == "init_db":
                db.init_db()
                return
            with db.unit() as uow:
                uow.run_statement(select(func.now()), writes=False)
                net.cut()
                uow.run_statement(select(func.now()), writes=False)

        if call == "init_db":
            net.cut()
        outcome = timed(block)
        net.heal()
        assert_within_bar(outcome, taskcore.TaskcoreError)
