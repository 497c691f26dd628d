"""Sanitisation audit: no error or log record taskcore produces shows a secret, SQL or task data.

Every network fault the FlakyProxy can inject and every permanent error (bad credentials, unknown
host or database, malformed URL, refused input, statements the server rejects) is driven with a
sentinel value in task titles, descriptions, owner ids and idempotency keys. For each scenario the
exception (str, repr, args, every attribute, the whole cause/context chain, the formatted
traceback) and every log record captured meanwhile (logger ``taskcore`` at DEBUG, every logger at
WARNING) are searched for the password, the full DSN (raw and proxied), SQL text and the sentinel
(see ``_scan.py``). Zero hits, and every exception is the typed taskcore error the scenario
expects. The counts are printed in pytest's terminal summary.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.engine import make_url

import taskcore
from _db import Db
from _pgserver import APP_PASSWORD, PgTarget
from _scan import (
    SQL_MARKERS,
    Hit,
    Needle,
    Summary,
    capture_logs,
    foreign_links,
    scan_exception,
    scan_records,
    secret_needles,
    summary_for,
)
from taskcore import (
    CommitOutcomeUnknownError,
    ConfigurationError,
    ConnectionRejectedError,
    DatabaseError,
    DatabaseUnavailableError,
    Task,
    TaskcoreError,
    TaskCreate,
    TaskUpdate,
    TransientError,
    UnitOfWork,
    UsageError,
    ValidationError,
)
from taskcore.testing import FlakyProxy

#: An outcome class meaning "the call succeeded" (only its log records are then scanned).
Ok = type(None)
Outcome = type[BaseException] | type[None]
SqlStates = dict[str, tuple[str | None, ...]]
NO_SQLSTATE: SqlStates = {"postgres": (None,), "sqlite": (None,)}
# Connect-time errors: psycopg2 reports libpq's text only; a driver that passes the server's
# SQLSTATE on would give the code in the second slot.
AUTH_SQLSTATES: SqlStates = {"postgres": (None, "28P01", "28000")}


def _pg(code: str) -> SqlStates:
    """PostgreSQL reports ``code``; SQLite has no SQLSTATEs."""
    return {"postgres": (code,), "sqlite": (None,)}


# ------------------------------------------------------------------------------- context


@dataclass
class Ctx:
    """What one scenario works with: its database, URL, sentinel values and extra needles."""

    kind: str  # "postgres" or "sqlite" (PgBouncer runs are "postgres" too)
    url: str  # the URL taskcore is configured with
    db: Db | None = None
    pg: PgTarget | None = None
    proxy: FlakyProxy | None = None
    monkeypatch: pytest.MonkeyPatch | None = None
    tmp_path: Path | None = None
    sentinel: str = field(default_factory=lambda: "Snt" + secrets.token_hex(6))
    extra: list[Needle] = field(default_factory=list)
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    # Sentinel-bearing values. Built at run time so no source line (shown in tracebacks) has them.
    @property
    def title(self) -> str:
        return f"{self.sentinel} title"

    @property
    def description(self) -> str:
        return f"{self.sentinel} description, with 'quotes' and %s and {{0}}"

    @property
    def user(self) -> str:
        return f"user-{self.sentinel}"

    @property
    def key(self) -> str:
        return f"key-{self.sentinel}"

    def data(self) -> TaskCreate:
        return TaskCreate(title=self.title, description=self.description)

    def configure(self, **overrides: Any) -> None:
        taskcore.configure(database_url=self.url, **overrides)

    def use_url(self, url: str, **overrides: Any) -> None:
        """Point taskcore at ``url`` (a wrong or malformed one); it becomes a needle too."""
        self.add_secret(url)
        taskcore.configure(database_url=url, **overrides)

    def add_secret(self, url: str, password: str | None = None) -> None:
        """Make ``url`` and its password (or ``password``) needles of this scenario."""
        try:
            pw = password or make_url(url).password
        except Exception:  # noqa: BLE001 - a malformed URL has no parsable password
            pw = password
        self.extra.extend(secret_needles(str(pw), url, label="password(scenario)") if pw else [])
        self.extra.append(Needle("dsn(scenario)", url))

    def seed(self, n: int = 1) -> list[Task]:
        """Store ``n`` sentinel tasks through taskcore (its logs are scanned too)."""
        return [taskcore.create_task(self.data(), self.user) for _ in range(n)]

    def warm(self) -> None:
        """Put a connection in the pool so an armed cut lands on a statement, not on connect."""
        taskcore.get_tasks(user_id=self.user)

    @property
    def px(self) -> FlakyProxy:
        assert self.proxy is not None, "scenario needs the proxy"
        return self.proxy

    def admin(self, sql: str) -> None:
        """Run one statement on the independent (admin/sqlite3) connection."""
        assert self.db is not None
        self.db.query(sql)

    def needles(self) -> list[Needle]:
        found = [Needle("sentinel", self.sentinel), *SQL_MARKERS, *self.extra]
        found.append(Needle("dsn(configured)", self.url))
        if self.pg is not None:
            found += secret_needles(self.pg.password, self.pg.url)
        if self.kind == "postgres":
            url = make_url(self.url)
            if url.password:
                found += secret_needles(str(url.password), url.render_as_string(False))
        return found


@dataclass(frozen=True)
class Scenario:
    """One way to make taskcore fail, what it must raise, and the SQLSTATE it must carry."""

    name: str
    run: Callable[[Ctx], object]
    expect: tuple[Outcome, ...]
    sqlstates: SqlStates = field(default_factory=lambda: dict(NO_SQLSTATE))
    backends: frozenset[str] = frozenset({"postgres", "sqlite"})
    password_auth: bool = False  # needs a server that really checks passwords
    real_waits: bool = False
    fault: bool = True  # a proxy scenario that arms a fault (which must then fire)


def _audit(ctx: Ctx, sc: Scenario, summary: Summary) -> None:
    """Run ``sc``; scan its exception and log records; check the outcome class and SQLSTATE."""
    outcome: BaseException | None = None
    try:
        with capture_logs() as records:
            try:
                sc.run(ctx)
            except Exception as exc:  # noqa: BLE001 - any escape is what we audit
                outcome = exc
    finally:
        for cleanup in reversed(ctx.cleanups):
            cleanup()
    needles = ctx.needles()
    hits: list[Hit] = []
    texts = 0
    if outcome is not None:
        texts, hits = scan_exception(outcome, needles)
    log_texts, log_hits = scan_records(records, needles)
    hits += log_hits
    summary.add("scenarios")
    summary.add("exceptions", outcome is not None)
    summary.add("log records", len(records))
    for record in records:
        source = f"{record.name}:{getattr(record, 'taskcore_event', record.levelname)}"
        summary.sources[source] = summary.sources.get(source, 0) + 1
    summary.add("texts scanned", texts + log_texts)
    summary.add("hits", len(hits))
    problems = [f"LEAK {hit}" for hit in hits]
    kind = type(outcome)
    if kind not in sc.expect:
        wanted = ", ".join("success" if e is Ok else e.__name__ for e in sc.expect)
        got = "success" if outcome is None else f"{kind.__module__}.{kind.__qualname__}"
        problems.append(f"OUTCOME {got}, expected {wanted}")
    if outcome is not None and not isinstance(outcome, TaskcoreError):
        problems.append(f"UNTYPED ESCAPE {kind.__module__}.{kind.__qualname__}")
    if outcome is not None:
        problems += [f"FOREIGN LINK in chain: {link}" for link in foreign_links(outcome)]
    if isinstance(outcome, TaskcoreError):
        allowed = sc.sqlstates.get(ctx.kind, (None,))
        if outcome.sqlstate not in allowed:
            problems.append(f"SQLSTATE {outcome.sqlstate!r}, expected one of {allowed}")
    if problems:
        summary.notes.append(f"{sc.name} [{ctx.kind}]: " + "; ".join(problems))
        pytest.fail(f"{sc.name} [{ctx.kind}]:\n" + "\n".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> Summary:
    """The audit's counters, printed once at the end of the run."""
    return summary_for(request.config, "sanitisation audit")


def _params(scenarios: list[Scenario]) -> list[Any]:
    return [
        pytest.param(sc, id=sc.name, marks=[pytest.mark.real_waits] if sc.real_waits else [])
        for sc in scenarios
    ]


# ------------------------------------------------------------------ faults on the link


def _refuse_one_shot_create(ctx: Ctx) -> object:
    ctx.configure(retry_attempts=3, deadline=5)
    ctx.px.refuse_connections()
    return taskcore.create_task(ctx.data(), ctx.user, idempotency_key=ctx.key)


def _refuse_one_shot_read(ctx: Ctx) -> object:
    ctx.configure(retry_attempts=3, deadline=5)
    ctx.px.refuse_connections()
    return taskcore.get_tasks(user_id=ctx.user)


def _refuse_unit(ctx: Ctx) -> object:
    ctx.configure(retry_attempts=3, deadline=5)
    ctx.px.refuse_connections()
    with UnitOfWork() as uow:
        return uow.tasks.create(ctx.data(), user_id=ctx.user)


def _refuse_run(ctx: Ctx) -> object:
    ctx.configure(retry_attempts=3, deadline=5)
    ctx.px.refuse_connections()
    return UnitOfWork.run(_two_creates(ctx))


def _refuse_init_db(ctx: Ctx) -> object:
    ctx.configure(retry_attempts=3, deadline=5)
    ctx.px.refuse_connections()
    taskcore.init_db()
    return None


def _refuse_check_connection(ctx: Ctx) -> object:
    ctx.configure()
    ctx.px.refuse_connections()
    return taskcore.check_connection()  # diagnostics try once, never retry


def _wrong_password_through_proxy(ctx: Ctx) -> object:
    assert ctx.pg is not None
    wrong = make_url(ctx.pg.url).set(password=WRONG_PASSWORD).render_as_string(False)
    ctx.use_url(ctx.px.url(wrong))
    return taskcore.create_task(ctx.data(), ctx.user)


def _two_creates(ctx: Ctx) -> Callable[[UnitOfWork], object]:
    def work(uow: UnitOfWork) -> object:
        uow.tasks.create(ctx.data(), user_id=ctx.user)
        return uow.tasks.create(ctx.data(), user_id=ctx.user, idempotency_key=ctx.key)

    return work


def _refused_briefly_then_recovers(ctx: Ctx) -> object:
    ctx.configure(deadline=10, retry_wait_initial=0.05, retry_wait_max=0.1, retry_wait_jitter=0.0)
    ctx.px.refuse_for(0.4)
    return taskcore.create_task(ctx.data(), ctx.user)


def _reset_then_statement(ctx: Ctx) -> object:
    ctx.configure()
    with UnitOfWork() as uow:
        uow.tasks.create(ctx.data(), user_id=ctx.user)
        ctx.px.reset_all()
        return uow.tasks.create(ctx.data(), user_id=ctx.user)


def _reset_then_commit(ctx: Ctx) -> object:
    ctx.configure()
    with UnitOfWork() as uow:
        uow.tasks.create(ctx.data(), user_id=ctx.user, idempotency_key=ctx.key)
        ctx.px.reset_all()
    return None


def _reset_in_run(ctx: Ctx) -> object:
    ctx.configure(retry_attempts=2)

    def work(uow: UnitOfWork) -> object:
        uow.tasks.create(ctx.data(), user_id=ctx.user)
        ctx.px.reset_all()
        return uow.tasks.list(user_id=ctx.user)

    return UnitOfWork.run(work)


def _cut_after_commit(protection: bool, *, via_run: bool) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        ctx.configure(commit_protection=protection)
        ctx.warm()
        ctx.px.cut_after_commit()
        if via_run:
            return UnitOfWork.run(_two_creates(ctx))
        with UnitOfWork() as uow:
            return _two_creates(ctx)(uow)

    return run


def _cut_after_commit_unreachable(ctx: Ctx) -> object:
    ctx.configure(retry_attempts=2, deadline=5)
    ctx.warm()
    ctx.px.cut_after_commit()
    ctx.px.refuse_connections()  # the pooled link carries the unit; any new connection fails
    with UnitOfWork() as uow:
        return _two_creates(ctx)(uow)


def _cut_mid_result(where: str, attempts: int) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        ctx.configure(retry_attempts=attempts)
        ctx.seed(3)
        ctx.px.cut_mid_result(after_rows=1)
        if where == "unit":
            with UnitOfWork() as uow:
                return uow.tasks.list(user_id=ctx.user)
        return taskcore.get_tasks(user_id=ctx.user)

    return run


def _cut_one_shot(op: str, attempts: int) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        ctx.configure(retry_attempts=attempts)
        task = ctx.seed()[0]
        ctx.px.cut_after_statements(1)
        if op == "create":
            return taskcore.create_task(ctx.data(), ctx.user, idempotency_key=ctx.key)
        if op == "update":
            change = TaskUpdate(title=ctx.title + "!", description=ctx.description + "!")
            return taskcore.update_task(task.id, change, user_id=ctx.user)
        if op == "toggle":
            return taskcore.toggle_complete(task.id, user_id=ctx.user)
        if op == "delete":
            return taskcore.delete_task(task.id, user_id=ctx.user)
        return taskcore.get_task(task.id, user_id=ctx.user)

    return run


def _cut_unit_at_statement(n: int, *, via_run: bool, attempts: int = 10) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        ctx.configure(retry_attempts=attempts)
        ctx.warm()
        ctx.px.cut_after_statements(n)  # 1 is BEGIN, then each INSERT, then COMMIT (or ticket)
        if via_run:
            return UnitOfWork.run(_two_creates(ctx))
        with UnitOfWork() as uow:
            return _two_creates(ctx)(uow)

    return run


_UNAVAILABLE = (DatabaseUnavailableError,)
# A one-shot write cut in flight: CommitOutcomeUnknownError, unless the write is keyed (retryable)
# and then, with no attempts left, DatabaseUnavailableError.
_CUT_WRITE = (DatabaseUnavailableError, CommitOutcomeUnknownError)

LINK_FAULTS = [
    Scenario("refused-past-deadline-create", _refuse_one_shot_create, _UNAVAILABLE),
    Scenario("refused-past-deadline-get-tasks", _refuse_one_shot_read, _UNAVAILABLE),
    Scenario("refused-past-deadline-unit", _refuse_unit, _UNAVAILABLE),
    Scenario("refused-past-deadline-run", _refuse_run, _UNAVAILABLE),
    Scenario("refused-past-deadline-init-db", _refuse_init_db, _UNAVAILABLE),
    Scenario("refused-check-connection", _refuse_check_connection, (TransientError,)),
    Scenario(
        "wrong-password-through-proxy",
        _wrong_password_through_proxy,
        (ConnectionRejectedError,),
        AUTH_SQLSTATES,
        password_auth=True,
        fault=False,
    ),
    Scenario("refused-briefly-recovers", _refused_briefly_then_recovers, (Ok,), real_waits=True),
    Scenario("reset-mid-transaction-next-statement", _reset_then_statement, (TransientError,)),
    Scenario(
        "reset-mid-transaction-then-commit",
        _reset_then_commit,
        (TransientError, CommitOutcomeUnknownError),
    ),
    Scenario("reset-mid-transaction-in-run", _reset_in_run, _UNAVAILABLE),
    Scenario(
        "cut-after-commit-unit-unprotected",
        _cut_after_commit(False, via_run=False),
        (CommitOutcomeUnknownError,),
    ),
    Scenario(
        "cut-after-commit-run-unprotected",
        _cut_after_commit(False, via_run=True),
        (CommitOutcomeUnknownError,),
    ),
    Scenario("cut-after-commit-unit-resolved", _cut_after_commit(True, via_run=False), (Ok,)),
    Scenario("cut-after-commit-run-resolved", _cut_after_commit(True, via_run=True), (Ok,)),
    Scenario(
        "cut-after-commit-server-unreachable",
        _cut_after_commit_unreachable,
        (CommitOutcomeUnknownError,),
    ),
    Scenario("cut-mid-result-unit", _cut_mid_result("unit", 10), (TransientError,)),
    Scenario("cut-mid-result-get-tasks-no-retry", _cut_mid_result("one-shot", 1), _UNAVAILABLE),
    Scenario("cut-mid-result-get-tasks-retried", _cut_mid_result("one-shot", 10), (Ok,)),
    Scenario("cut-after-1-create-no-retry", _cut_one_shot("create", 1), _CUT_WRITE),
    Scenario("cut-after-1-update-no-retry", _cut_one_shot("update", 1), _CUT_WRITE),
    Scenario("cut-after-1-toggle-no-retry", _cut_one_shot("toggle", 1), _CUT_WRITE),
    Scenario("cut-after-1-delete-no-retry", _cut_one_shot("delete", 1), _CUT_WRITE),
    Scenario("cut-after-1-get-task-no-retry", _cut_one_shot("get", 1), _UNAVAILABLE),
    Scenario("cut-after-1-create-retried", _cut_one_shot("create", 10), (Ok,)),
    Scenario("cut-after-1-update-retried", _cut_one_shot("update", 10), (Ok,)),
    Scenario("cut-after-2-unit", _cut_unit_at_statement(2, via_run=False), (TransientError,)),
    Scenario("cut-after-3-unit", _cut_unit_at_statement(3, via_run=False), (TransientError,)),
    Scenario(
        "cut-after-4-unit-before-commit",
        _cut_unit_at_statement(4, via_run=False),
        (TransientError, CommitOutcomeUnknownError),
    ),
    Scenario(
        "cut-after-5-unit-at-commit",
        _cut_unit_at_statement(5, via_run=False),
        (Ok, CommitOutcomeUnknownError),
    ),
    Scenario(
        "cut-after-2-run-no-retry",
        _cut_unit_at_statement(2, via_run=True, attempts=1),
        _UNAVAILABLE,
    ),
    Scenario("cut-after-2-run-retried", _cut_unit_at_statement(2, via_run=True), (Ok,)),
]


@pytest.mark.postgres
@pytest.mark.parametrize("sc", _params(LINK_FAULTS))
def test_link_faults_raise_typed_errors_that_leak_nothing(
    sc: Scenario, pg: PgTarget, pg_db: Db, proxy: FlakyProxy, summary: Summary
) -> None:
    """Refusals, resets and cuts (connect, mid-transaction, at COMMIT, mid-result) leak nothing."""
    ctx = Ctx(kind="postgres", url=proxy.url(pg.url), db=pg_db, pg=pg, proxy=proxy)
    if sc.password_auth and not pg.password_auth_enforced:
        pytest.skip("this server trusts every password (TEST_DATABASE_URL with trust auth)")
    ctx.extra += secret_needles(WRONG_PASSWORD, label="wrong password")
    _audit(ctx, sc, summary)
    if sc.fault:
        # The proxy counts a cut just after resetting the link: the client may notice first.
        fired = proxy.faults_fired > 0 or proxy.wait_for_fault(5.0)
        assert fired, "the armed fault never fired: the scenario tested nothing"


# -------------------------------------------------------------- connection rejected for good


def _with_url(
    make: Callable[[PgTarget], str], op: str = "create", **kw: Any
) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        assert ctx.pg is not None
        ctx.use_url(make(ctx.pg), **kw)
        if op == "create":
            return taskcore.create_task(ctx.data(), ctx.user, idempotency_key=ctx.key)
        if op == "unit":
            with UnitOfWork() as uow:
                return uow.tasks.create(ctx.data(), user_id=ctx.user)
        if op == "run":
            return UnitOfWork.run(_two_creates(ctx))
        if op == "get":
            return taskcore.get_tasks(user_id=ctx.user)
        if op == "init":
            taskcore.init_db()
            return None
        return taskcore.check_connection()

    return run


def _url_with(**parts: Any) -> Callable[[PgTarget], str]:
    """The app role's URL with some parts replaced (password, host, database, ...)."""

    def make(pg: PgTarget) -> str:
        return make_url(pg.url).set(**parts).render_as_string(hide_password=False)

    return make


def _url_with_query(query: str) -> Callable[[PgTarget], str]:
    def make(pg: PgTarget) -> str:
        return f"{pg.url}?{query}"

    return make


def _url_with_port(port: str) -> Callable[[PgTarget], str]:
    def make(pg: PgTarget) -> str:
        return pg.url.replace(f":{pg.port}/", f":{port}/")

    return make


# The first wrong password contains the right one, so showing it would also show the known one.
WRONG_PASSWORD = "Wr0ng-" + APP_PASSWORD
OTHER_WRONG_PASSWORD = "an0ther:wr@ng/pa ss?#&%'\"\\"

REJECTIONS = [
    Scenario(
        "wrong-password-create",
        _with_url(_url_with(password=WRONG_PASSWORD)),
        (ConnectionRejectedError,),
        AUTH_SQLSTATES,
        password_auth=True,
    ),
    Scenario(
        "other-wrong-password-unit",
        _with_url(_url_with(password=OTHER_WRONG_PASSWORD), "unit"),
        (ConnectionRejectedError,),
        AUTH_SQLSTATES,
        password_auth=True,
    ),
    Scenario(
        "wrong-password-run",
        _with_url(_url_with(password=WRONG_PASSWORD), "run"),
        (ConnectionRejectedError,),
        AUTH_SQLSTATES,
        password_auth=True,
    ),
    Scenario(
        "wrong-password-init-db",
        _with_url(_url_with(password=OTHER_WRONG_PASSWORD), "init"),
        (ConnectionRejectedError,),
        AUTH_SQLSTATES,
        password_auth=True,
    ),
    Scenario(
        "wrong-password-check-connection",
        _with_url(_url_with(password=WRONG_PASSWORD), "check"),
        (ConnectionRejectedError,),
        AUTH_SQLSTATES,
        password_auth=True,
    ),
    Scenario(
        "unknown-user-with-the-known-password",
        _with_url(_url_with(username="no_such_role")),
        (ConnectionRejectedError,),
        AUTH_SQLSTATES,
        password_auth=True,
    ),
    Scenario(
        # A resolver that cannot answer at all says "temporary failure": retried, then unavailable.
        "unknown-host",
        _with_url(_url_with(host="nonexistent.invalid"), retry_attempts=2),
        (ConnectionRejectedError, DatabaseUnavailableError),
    ),
    Scenario(
        "unknown-database",
        _with_url(_url_with(database="no_such_database"), "get"),
        (ConnectionRejectedError,),
        {"postgres": (None, "3D000")},
    ),
    Scenario(
        "tls-required-by-url-server-without-tls",
        _with_url(_url_with_query("sslmode=require")),
        (ConnectionRejectedError,),
        {"postgres": (None, "08P01")},
    ),
    Scenario(
        # Out of range: libpq refuses it before connecting. Nothing classifies that text yet, so
        # it is a generic permanent DatabaseError; a ConfigurationError would be better.
        "port-out-of-range",
        _with_url(_url_with_port("99999")),
        (ConfigurationError, ConnectionRejectedError, DatabaseError),
    ),
]


@pytest.mark.postgres
@pytest.mark.parametrize("sc", _params(REJECTIONS))
def test_rejected_connections_raise_typed_errors_that_leak_nothing(
    sc: Scenario, pg: PgTarget, pg_db: Db, summary: Summary
) -> None:
    """Wrong passwords, unknown user/host/database, TLS and port problems leak nothing."""
    if sc.password_auth and not pg.password_auth_enforced:
        pytest.skip("this server trusts every password (TEST_DATABASE_URL with trust auth)")
    ctx = Ctx(kind="postgres", url=pg.url, db=pg_db, pg=pg)
    ctx.extra += secret_needles(WRONG_PASSWORD, label="wrong password")
    ctx.extra += secret_needles(OTHER_WRONG_PASSWORD, label="other wrong password")
    _audit(ctx, sc, summary)
    assert pg_db.scalar("SELECT count(*) FROM tasks") == 0


# ------------------------------------------------------------------------- malformed URLs


def _configure_with(url: Callable[[Ctx], str]) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        ctx.use_url(url(ctx))
        return taskcore.create_task(ctx.data(), ctx.user)

    return run


def _pg_url(text: str) -> Callable[[Ctx], str]:
    """A URL template: {pw} is the known password (percent-encoded where it must be)."""

    def make(ctx: Ctx) -> str:
        return text.format(pw=APP_PASSWORD, qpw="Kn0wn-Secr3t-pw%2142")

    return make


def _sqlite_url(relative: str) -> Callable[[Ctx], str]:
    def make(ctx: Ctx) -> str:
        return relative.format(tmp=ctx.tmp_path)

    return make


def _env_url(ctx: Ctx) -> object:
    assert ctx.monkeypatch is not None
    url = f"postgresql://taskcore_app:{APP_PASSWORD}@127.0.0.1:notaport/taskcore_test"
    ctx.add_secret(url, APP_PASSWORD)
    ctx.monkeypatch.setenv("DATABASE_URL", url)
    taskcore.configure()
    return None


MALFORMED = [
    Scenario(
        "non-numeric-port",
        _configure_with(
            _pg_url("postgresql://taskcore_app:{qpw}@127.0.0.1:notaport/taskcore_test")
        ),
        (ConfigurationError,),
    ),
    Scenario(
        # "@host" forgotten: the password lands where the port goes.
        "password-in-the-port-position",
        _configure_with(_pg_url("postgresql://taskcore_app:{pw}/taskcore_test")),
        (ConfigurationError,),
    ),
    Scenario(
        "unsupported-scheme",
        _configure_with(_pg_url("mysql://taskcore_app:{qpw}@127.0.0.1:5432/taskcore_test")),
        (ConfigurationError,),
    ),
    Scenario(
        "unsupported-driver",
        _configure_with(
            _pg_url("postgresql+asyncpg://taskcore_app:{qpw}@127.0.0.1:5432/taskcore_test")
        ),
        (ConfigurationError,),
    ),
    Scenario(
        "garbage",
        _configure_with(_pg_url("this is not a URL but it holds {pw}")),
        (ConfigurationError,),
    ),
    Scenario(
        "missing-scheme",
        _configure_with(_pg_url("taskcore_app:{qpw}@127.0.0.1:5432/taskcore_test")),
        (ConfigurationError,),
    ),
    Scenario(
        "no-database-name",
        _configure_with(_pg_url("postgresql://taskcore_app:{qpw}@127.0.0.1:5432")),
        (ConfigurationError,),
    ),
    Scenario(
        "bad-sslmode",
        _configure_with(
            _pg_url("postgresql://taskcore_app:{qpw}@127.0.0.1:5432/taskcore_test?sslmode={pw}")
        ),
        (ConfigurationError,),
    ),
    Scenario("malformed-database-url-env", _env_url, (ConfigurationError,)),
    Scenario(
        "sqlite-path-is-a-directory",
        _configure_with(_sqlite_url("sqlite:///{tmp}")),
        (ConnectionRejectedError,),
    ),
    Scenario(
        # The directory cannot be created (its parent is a file).
        "sqlite-directory-cannot-be-created",
        _configure_with(_sqlite_url("sqlite:////dev/null/taskcore/tasks.db")),
        (ConfigurationError, ConnectionRejectedError),
    ),
]


@pytest.mark.parametrize("sc", _params(MALFORMED))
def test_malformed_urls_raise_typed_errors_that_leak_nothing(
    sc: Scenario, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, summary: Summary
) -> None:
    """A malformed DATABASE_URL is refused with ConfigurationError (or a typed connect error)."""
    ctx = Ctx(kind="sqlite", url="sqlite:///unused", monkeypatch=monkeypatch, tmp_path=tmp_path)
    ctx.extra += secret_needles(APP_PASSWORD)
    try:
        _audit(ctx, sc, summary)
    finally:
        taskcore.dispose()


# ------------------------------------------------------------------------- refused input


def _create_with(**fields: Callable[[Ctx], Any]) -> Callable[[Ctx], object]:
    """create_task with some sentinel fields replaced by bad values."""

    def run(ctx: Ctx) -> object:
        ctx.configure()
        title = fields["title"](ctx) if "title" in fields else ctx.title
        description = fields["description"](ctx) if "description" in fields else ctx.description
        user = fields["user"](ctx) if "user" in fields else ctx.user
        key = fields["key"](ctx) if "key" in fields else ctx.key
        data = TaskCreate(title=title, description=description)
        return taskcore.create_task(data, user, idempotency_key=key)

    return run


def _update_with(**fields: Callable[[Ctx], Any]) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        ctx.configure()
        task = ctx.seed()[0]
        user = fields["user"](ctx) if "user" in fields else ctx.user
        values = {name: make(ctx) for name, make in fields.items() if name != "user"}
        return taskcore.update_task(task.id, TaskUpdate(**values), user_id=user)

    return run


def _constructed_without_validation(ctx: Ctx) -> object:
    ctx.configure()
    data = TaskCreate.model_construct(title=ctx.title * 20, description=ctx.description)
    return taskcore.create_task(data, ctx.user)


def _mutated_after_validation(ctx: Ctx) -> object:
    ctx.configure()
    data = ctx.data()
    data.description = ctx.description * 100
    return taskcore.create_task(data, ctx.user)


def _title_as_bytes(ctx: Ctx) -> object:
    ctx.configure()
    data = TaskCreate(title=ctx.title.encode(), description=ctx.description)  # type: ignore[arg-type]
    return taskcore.create_task(data, ctx.user)


def _in_unit(ctx: Ctx) -> object:
    ctx.configure()
    with UnitOfWork() as uow:
        uow.tasks.create(ctx.data(), user_id=ctx.user)
        bad = TaskCreate.model_construct(title=ctx.title + "\x00", description=ctx.description)
        return uow.tasks.create(bad, user_id=ctx.user)


def _title(ctx: Ctx) -> str:
    return ctx.title


def _description(ctx: Ctx) -> str:
    return ctx.description


def _user(ctx: Ctx) -> str:
    return ctx.user


def _key(ctx: Ctx) -> str:
    return ctx.key


def _with_nul(value: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    return lambda ctx: value(ctx) + "\x00" + value(ctx)


def _with_surrogate(value: Callable[[Ctx], str]) -> Callable[[Ctx], str]:
    return lambda ctx: value(ctx) + "\ud800" + value(ctx)


_REFUSED = (ValidationError,)
REFUSED_INPUT = [
    Scenario("over-long-title", _create_with(title=lambda c: c.title * 20), _REFUSED),
    Scenario(
        "over-long-description", _create_with(description=lambda c: c.description * 30), _REFUSED
    ),
    Scenario("over-long-user-id", _create_with(user=lambda c: c.user * 20), _REFUSED),
    Scenario("over-long-idempotency-key", _create_with(key=lambda c: c.key * 20), _REFUSED),
    Scenario("nul-in-title", _create_with(title=_with_nul(_title)), _REFUSED),
    Scenario("nul-in-description", _create_with(description=_with_nul(_description)), _REFUSED),
    Scenario("nul-in-user-id", _create_with(user=_with_nul(_user)), _REFUSED),
    Scenario("nul-in-idempotency-key", _create_with(key=_with_nul(_key)), _REFUSED),
    Scenario("lone-surrogate-in-title", _create_with(title=_with_surrogate(_title)), _REFUSED),
    Scenario(
        "lone-surrogate-in-description",
        _create_with(description=_with_surrogate(_description)),
        _REFUSED,
    ),
    Scenario("lone-surrogate-in-user-id", _create_with(user=_with_surrogate(_user)), _REFUSED),
    Scenario("update-over-long-title", _update_with(title=lambda c: c.title * 20), _REFUSED),
    Scenario(
        "update-nul-in-description", _update_with(description=_with_nul(_description)), _REFUSED
    ),
    Scenario(
        "update-surrogate-in-user-id",
        _update_with(title=_title, user=_with_surrogate(_user)),
        _REFUSED,
    ),
    Scenario("built-with-model-construct", _constructed_without_validation, _REFUSED),
    Scenario("mutated-after-validation", _mutated_after_validation, _REFUSED),
    Scenario("title-given-as-bytes", _title_as_bytes, _REFUSED),
    Scenario("refused-inside-a-unit-of-work", _in_unit, _REFUSED),
]


@pytest.mark.parametrize("sc", _params(REFUSED_INPUT))
def test_refused_input_raises_validation_errors_that_leak_nothing(
    sc: Scenario, db: Db, summary: Summary
) -> None:
    """Over-long fields, NUL, lone surrogates and wrong types are refused without echoing input."""
    before = db.scalar("SELECT count(*) FROM tasks")
    _audit(_db_ctx(db), sc, summary)
    seeded = 1 if sc.name.startswith("update-") else 0
    assert db.scalar("SELECT count(*) FROM tasks") == before + seeded


def _db_ctx(db: Db) -> Ctx:
    return Ctx(kind="sqlite" if db.kind == "sqlite" else "postgres", url=db.url, db=db)


# ---------------------------------------------------------------- statements the server rejects


def _table_dropped(op: str) -> Callable[[Ctx], object]:
    def run(ctx: Ctx) -> object:
        ctx.configure(retry_attempts=2)
        task = ctx.seed()[0]
        ctx.admin("DROP TABLE tasks")
        ctx.cleanups.append(taskcore.init_db)
        if op == "create":
            return taskcore.create_task(ctx.data(), ctx.user, idempotency_key=ctx.key)
        if op == "update":
            return taskcore.update_task(task.id, TaskUpdate(title=ctx.title), user_id=ctx.user)
        if op == "get":
            return taskcore.get_tasks(user_id=ctx.user)
        if op == "delete":
            return taskcore.delete_task(task.id, user_id=ctx.user)
        return UnitOfWork.run(_two_creates(ctx))

    return run


def _insert_raw(**values: Callable[[Ctx], Any]) -> Callable[[Ctx], object]:
    """Mid-unit, after a good create: a statement (built with the sentinel) the server rejects."""

    def run(ctx: Ctx) -> object:
        ctx.configure()
        with UnitOfWork() as uow:
            first = uow.tasks.create(ctx.data(), user_id=ctx.user, idempotency_key=ctx.key)
            row = {name: make(ctx) for name, make in values.items()}
            row = {k: (first.id if v == "<first id>" else v) for k, v in row.items()}
            statement = insert(Task).values(**row).returning(Task)
            return uow.run_statement(statement, writes=True)

    return run


def _over_long_in_run(ctx: Ctx) -> object:
    ctx.configure()

    def work(uow: UnitOfWork) -> object:
        uow.tasks.create(ctx.data(), user_id=ctx.user)
        statement = insert(Task).values(title=ctx.title * 20, user_id=ctx.user).returning(Task)
        return uow.run_statement(statement, writes=True)

    return UnitOfWork.run(work)


def _swallowed(then: str) -> Callable[[Ctx], object]:
    """The block catches the rejection and carries on (or just ends)."""

    def run(ctx: Ctx) -> object:
        ctx.configure()
        with UnitOfWork() as uow:
            uow.tasks.create(ctx.data(), user_id=ctx.user, idempotency_key=ctx.key)
            duplicate = insert(Task).values(
                title=ctx.title,
                description=ctx.description,
                user_id=ctx.user,
                idempotency_key=ctx.key,
            )
            with contextlib.suppress(DatabaseError):
                uow.run_statement(duplicate.returning(Task), writes=True)
            if then == "create":
                return uow.tasks.create(ctx.data(), user_id=ctx.user)
        return None

    return run


def _read_only_write(ctx: Ctx) -> object:
    ctx.configure()
    with UnitOfWork(read_only=True) as uow:
        return uow.tasks.create(ctx.data(), user_id=ctx.user)


def _privilege_revoked(ctx: Ctx) -> object:
    assert ctx.db is not None
    ctx.configure()
    ctx.admin("REVOKE INSERT ON tasks FROM taskcore_app")
    ctx.cleanups.append(lambda: ctx.admin("GRANT INSERT ON tasks TO taskcore_app"))
    return taskcore.create_task(ctx.data(), ctx.user, idempotency_key=ctx.key)


def _const(value: Any) -> Callable[[Ctx], Any]:
    return lambda ctx: value


_PG = frozenset({"postgres"})
SERVER_REJECTIONS = [
    Scenario("table-dropped-create", _table_dropped("create"), (DatabaseError,), _pg("42P01")),
    Scenario("table-dropped-update", _table_dropped("update"), (DatabaseError,), _pg("42P01")),
    Scenario("table-dropped-get-tasks", _table_dropped("get"), (DatabaseError,), _pg("42P01")),
    Scenario("table-dropped-delete", _table_dropped("delete"), (DatabaseError,), _pg("42P01")),
    Scenario("table-dropped-run", _table_dropped("run"), (DatabaseError,), _pg("42P01")),
    Scenario(
        # SQLite does not enforce VARCHAR lengths, so only PostgreSQL rejects this one.
        "over-long-value-mid-unit",
        _insert_raw(title=lambda c: c.title * 20, description=_description, user_id=_user),
        (DatabaseError,),
        _pg("22001"),
        backends=_PG,
    ),
    Scenario(
        "over-long-value-in-run", _over_long_in_run, (DatabaseError,), _pg("22001"), backends=_PG
    ),
    Scenario(
        # PostgreSQL's DETAIL repeats the whole failing row, sentinel values included.
        "null-title-mid-unit",
        _insert_raw(title=_const(None), description=_description, user_id=_user),
        (DatabaseError,),
        _pg("23502"),
    ),
    Scenario(
        # PostgreSQL's DETAIL names the duplicate key's values: the owner and idempotency key.
        "duplicate-idempotency-key-mid-unit",
        _insert_raw(title=_title, description=_description, user_id=_user, idempotency_key=_key),
        (DatabaseError,),
        _pg("23505"),
    ),
    Scenario(
        "duplicate-primary-key-mid-unit",
        _insert_raw(id=_const("<first id>"), title=_title, description=_description, user_id=_user),
        (DatabaseError,),
        _pg("23505"),
    ),
    Scenario("rejection-swallowed-by-the-block", _swallowed("end"), (DatabaseError,), _pg("23505")),
    Scenario("statement-after-a-rejection", _swallowed("create"), (UsageError,)),
    Scenario("write-in-a-read-only-unit", _read_only_write, (UsageError,)),
    Scenario("privilege-revoked", _privilege_revoked, (DatabaseError,), _pg("42501"), backends=_PG),
    Scenario(
        # run_statement skips the models' validation: the driver refuses NUL (PostgreSQL only).
        "nul-sent-with-run-statement",
        _insert_raw(title=_with_nul(_title), description=_description, user_id=_user),
        (ValidationError, DatabaseError),
        backends=_PG,
    ),
    Scenario(
        # ... and both drivers refuse to encode a lone surrogate.
        "lone-surrogate-sent-with-run-statement",
        _insert_raw(title=_title, description=_with_surrogate(_description), user_id=_user),
        (ValidationError, DatabaseError),
    ),
]


@pytest.mark.parametrize("sc", _params(SERVER_REJECTIONS))
def test_server_rejections_raise_typed_errors_that_leak_nothing(
    sc: Scenario, db: Db, summary: Summary
) -> None:
    """Statements the database refuses (missing table, too long, NULL, duplicate key) leak nothing;
    a unit of work they fail in is rolled back whole."""
    ctx = _db_ctx(db)
    if ctx.kind not in sc.backends:
        pytest.skip(f"{ctx.kind} accepts this statement")
    _audit(ctx, sc, summary)
    if sc.name.startswith("table-dropped") or sc.name == "privilege-revoked":
        return
    # Nothing of a failed unit of work is left behind (a one-shot seed may be).
    owned = db.scalar(f"SELECT count(*) FROM tasks WHERE user_id = {db.placeholder}", (ctx.user,))
    assert owned == 0


# ---------------------------------------------------------------------- seeded random faults

RANDOM_OPERATIONS = 150
_RANDOM_ALLOWED = (DatabaseUnavailableError, CommitOutcomeUnknownError, TransientError)


@pytest.mark.postgres
@pytest.mark.parametrize("protection", [True, False], ids=["commit-protection", "unprotected"])
def test_seeded_random_faults_raise_only_typed_errors_that_leak_nothing(
    protection: bool, pg: PgTarget, pg_db: Db, proxy: FlakyProxy, summary: Summary
) -> None:
    """Under seeded random faults at every phase, each failed call raises a typed error that
    leaks nothing, and no log record of the whole run shows a secret, SQL or task data."""
    ctx = Ctx(kind="postgres", url=proxy.url(pg.url), db=pg_db, pg=pg, proxy=proxy)
    ctx.configure(retry_attempts=4, deadline=5, commit_protection=protection)
    proxy.set_random_faults(
        p_reset_per_statement=0.05,
        p_cut_after_commit=0.3,
        p_cut_mid_result=0.05,
        p_refuse_connect=0.05,
    )
    rng = random.Random(1_234)
    known: list[int] = []
    needles = ctx.needles()
    problems: list[str] = []
    outcomes: dict[str, int] = {}
    with capture_logs() as records:
        for i in range(RANDOM_OPERATIONS):
            op = rng.choice(["create", "create", "update", "toggle", "read", "unit", "run"])
            try:
                _random_operation(ctx, op, known, rng)
            except Exception as exc:  # noqa: BLE001 - every escape is audited
                name = type(exc).__name__
                outcomes[name] = outcomes.get(name, 0) + 1
                _, hits = scan_exception(exc, needles)
                problems += [f"op {i} ({op}): LEAK {hit}" for hit in hits]
                if type(exc) not in _RANDOM_ALLOWED:
                    problems.append(f"op {i} ({op}): unexpected {type(exc).__module__}.{name}")
                problems += [f"op {i} ({op}): FOREIGN LINK {x}" for x in foreign_links(exc)]
            else:
                outcomes["ok"] = outcomes.get("ok", 0) + 1
    proxy.clear_faults()
    _, log_hits = scan_records(records, needles)
    problems += [f"LEAK {hit}" for hit in log_hits]
    summary.add("random-fault operations", RANDOM_OPERATIONS)
    summary.add("random-fault errors", RANDOM_OPERATIONS - outcomes.get("ok", 0))
    summary.add("log records", len(records))
    summary.add("hits", sum(p.startswith("LEAK") or ": LEAK" in p for p in problems))
    summary.notes.append(
        f"random faults ({'protected' if protection else 'unprotected'} commits, proxy seed "
        f"20240, workload seed 1234): {outcomes}, "
        f"faults fired={proxy.faults_fired}"
    )
    assert proxy.faults_fired > 0
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def _random_operation(ctx: Ctx, op: str, known: list[int], rng: random.Random) -> None:
    if op == "create" or not known:
        known.append(taskcore.create_task(ctx.data(), ctx.user).id)
    elif op == "update":
        change = TaskUpdate(title=ctx.title + " v2", description=ctx.description)
        taskcore.update_task(rng.choice(known), change, user_id=ctx.user)
    elif op == "toggle":
        taskcore.toggle_complete(rng.choice(known), user_id=ctx.user)
    elif op == "read":
        taskcore.get_tasks(user_id=ctx.user)
    elif op == "unit":
        with UnitOfWork() as uow:
            _two_creates(ctx)(uow)
    else:
        UnitOfWork.run(_two_creates(ctx))


# ------------------------------------------------------------------------- the scanner itself


@pytest.mark.postgres
def test_the_scanner_finds_what_a_raw_driver_error_shows(pg: PgTarget, pg_db: Db) -> None:
    """Positive control: an untranslated error and planted leaks are all found, at their paths."""
    ctx = Ctx(kind="postgres", url=pg.url, db=pg_db, pg=pg)
    ctx.configure()
    raw: BaseException | None = None
    try:
        with UnitOfWork() as uow:  # errors raised through uow.session are not translated
            uow.session.execute(
                insert(Task).values(title=None, description=ctx.description, user_id=ctx.user)
            )
    except Exception as exc:  # noqa: BLE001 - the raw SQLAlchemy error is the point
        raw = exc
    assert raw is not None and not isinstance(raw, TaskcoreError)
    _, hits = scan_exception(raw, ctx.needles())
    found = {hit.needle for hit in hits}
    assert {"sentinel", "sql:INSERT INTO", "sql:[SQL:", "driver:DETAIL:"} <= found, found

    planted = _PlantedError("harmless")
    planted.where = ctx.user
    with contextlib.suppress(_PlantedError):
        _raise_with_suppressed_context(planted, ValueError(pg.url))
    _, hits = scan_exception(planted, ctx.needles())
    paths = {(hit.path, hit.needle) for hit in hits}
    assert ("exc.vars.where", "sentinel") in paths
    assert ("exc.context.str", "dsn#0") in paths
    assert ("exc.context.str", "password(percent-encoded)") in paths
    assert not any(path == "traceback" for path, _ in paths)  # suppressed context is hidden there

    with capture_logs() as records:
        logging.getLogger("taskcore.anything").debug("ok", extra={"detail": ctx.title})
        logging.getLogger("elsewhere").warning("%s", "fine", extra={"dsn": pg.url})
        logging.getLogger("elsewhere").info("not captured: %s", pg.url)
    _, hits = scan_records(records, ctx.needles())
    paths = {(hit.path.split(").", 1)[1], hit.needle) for hit in hits}
    assert ("detail", "sentinel") in paths
    assert ("dsn", "dsn#0") in paths
    assert len(records) == 2


class _PlantedError(Exception):
    where: str = ""


def _raise_with_suppressed_context(exc: BaseException, context: BaseException) -> None:
    """Raise ``exc`` while handling ``context``, "from None" (context kept, but not shown)."""
    try:
        raise context
    except type(context):
        raise exc from None


def test_no_needle_matches_taskcore_own_messages() -> None:
    """A hit always means a leak: no needle is empty or occurs in taskcore's fixed reasons."""
    from taskcore import _classify  # the classifier's reasons are all an error message can say

    ctx = Ctx(kind="sqlite", url="sqlite:///x.db")
    assert all(needle.value.strip() for needle in ctx.needles())
    reasons = [reason for _, _, reason in _classify._MESSAGE_RULES]
    reasons += [reason for _, reason in _classify._TLS_RULES]
    rules = (
        *_classify._SQLSTATE_RULES.values(),
        *_classify._CLASS_RULES.values(),
        *_classify._FATAL_VERDICTS.values(),
        _classify._UNKNOWN,
    )
    reasons += [reason for _, reason in rules]
    for reason in reasons:
        assert [n.label for n in ctx.needles() if n.find(reason) >= 0] == [], reason
