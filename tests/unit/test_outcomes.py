"""The outcome table of contracts/errors-and-retries.md is what the code does, row by row.

The table is parsed from the markdown. For every (phase, error kind) row, a driver error of that
kind (libpq's and PostgreSQL's own texts, or the wait callback's DeadlineExpired) goes through
`taskcore._translate.translate` for the phase, or a real `Pool` is exhausted; the result must be
the "attempt raises" class with its flags, retryable as the "retried" column says, and what the
one retry loop (`call_with_retries`, whose last step is `taskcore.retry._gave_up`) raises in the
end must be the last column's class. Resolution rows drive `resolve_commit` with an opener that
fails the same way. Time is a fake clock: nothing here waits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import psycopg2
import pytest

import taskcore.errors
from _clock import FakeClock
from taskcore._deadline import Deadline, DeadlineExpired
from taskcore._pool import Pool
from taskcore._resolve import CommitTicket, Outcome, resolve_commit
from taskcore._translate import Phase, translate
from taskcore.errors import TaskcoreError, TransientError
from taskcore.events import EventHub
from taskcore.retry import RetryPolicy, _gave_up, call_with_retries

CONTRACT = (
    Path(__file__).resolve().parents[2]
    / "specs"
    / "003-db-persistence-layer"
    / "contracts"
    / "errors-and-retries.md"
)
PHASES = {
    "connect": Phase.CONNECT,
    "statement": Phase.STATEMENT,
    "COMMIT": Phase.COMMIT,
    "keyed autocommit write": Phase.KEYED_COMMIT,
}
KINDS = ("disconnect", "back-pressure", "conflict", "rejected", "permanent", "deadline expired")
POLICY = RetryPolicy(attempts=3)


def driver_error(kind: str) -> tuple[BaseException, bool]:
    """A driver-level error of `kind` as it reaches taskcore, and whether the link is dead."""
    texts = {
        "disconnect": (
            "server closed the connection unexpectedly\n\tThis probably means the server "
            "terminated abnormally\n\tbefore or while processing the request.\n",
            True,
        ),
        "back-pressure": (
            'connection to server at "db.example", port 5432 failed: FATAL:  sorry, too many '
            "clients already\n",
            True,
        ),
        "conflict": (
            "FATAL:  terminating connection due to conflict with recovery\nDETAIL:  User query "
            "might have needed to see row versions that must be removed.\n",
            True,
        ),
        "rejected": (
            'connection to server at "db.example", port 5432 failed: FATAL:  password '
            'authentication failed for user "app"\n',
            True,
        ),
        "permanent": ("FATAL:  terminating connection due to idle-in-transaction timeout\n", True),
    }
    if kind == "deadline expired":
        return DeadlineExpired(), True
    text, broken = texts[kind]
    return psycopg2.OperationalError(text), broken


@dataclass(frozen=True)
class Row:
    """One row of the outcome table."""

    phase: str
    kind: str
    raises: str  # the "attempt raises" cell
    retried: str
    gets: str  # the last cell

    @staticmethod
    def names(cell: str) -> list[str]:
        """The backticked words of a cell, in order."""
        return re.findall(r"`([^`]+)`", cell)


def outcome_table() -> list[Row]:
    """The rows of the "Outcome table" section of the contract."""
    text = CONTRACT.read_text()
    section = text.split("## Outcome table", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] in ("phase", "---"):
            continue
        rows.append(Row(*cells))
    return rows


ROWS = outcome_table()


def test_the_table_covers_every_phase_and_kind_once() -> None:
    """Six phases times six kinds, each pair exactly once."""
    pairs = [(row.phase, row.kind) for row in ROWS]
    phases = [*PHASES, "pool wait", "resolution"]
    assert sorted(pairs) == sorted((phase, kind) for phase in phases for kind in KINDS)


def _error(name: str) -> type[TaskcoreError]:
    error = getattr(taskcore.errors, name)
    assert isinstance(error, type) and issubclass(error, TaskcoreError), name
    return error


def _through_the_loop(
    raised: TaskcoreError, *, expire: bool
) -> tuple[BaseException | None, TaskcoreError | None]:
    """What call_with_retries raises when every attempt raises `raised` (after moving the
    clock to the deadline first if `expire`), and `_gave_up`'s verdict for it if retryable."""
    clock = FakeClock()
    deadline = Deadline(30.0, clock)
    hub = EventHub()

    def attempt() -> NoReturn:
        if expire:
            clock.advance(deadline.remaining())
        raise raised

    try:
        call_with_retries("op", attempt, POLICY, deadline, hub=hub, sleep=clock.sleep)
    except BaseException as exc:  # noqa: BLE001 - returned for the test to compare
        final: BaseException | None = exc
    else:
        final = None
    verdict = None
    if isinstance(raised, TransientError):
        verdict = _gave_up("op", raised, 2, 1.0, raised.maybe_applied, False, POLICY, hub)
    return final, verdict


def _check_attempt(row: Row, raised: TaskcoreError) -> None:
    names = Row.names(row.raises)
    assert type(raised) is _error(names[0]), (row, raised)
    if isinstance(raised, TransientError):
        assert raised.maybe_applied == ("maybe_applied" in names[1:]), row
        assert raised.backpressure == ("backpressure" in names[1:]), row
    assert raised.retryable == row.retried.startswith("yes"), row


def _check_final(row: Row, raised: TaskcoreError) -> None:
    expected = _error(Row.names(row.gets)[0])
    final, verdict = _through_the_loop(raised, expire=row.kind == "deadline expired")
    assert type(final) is expected, (row, final)
    if verdict is not None:
        assert type(verdict) is expected, (row, verdict)
    reason = re.search(r'`reason="(\w+)"`', row.gets)
    if reason is not None:
        assert getattr(final, "reason", None) == reason.group(1), (row, final)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r.phase in PHASES], ids=lambda r: f"{r.phase}/{r.kind}"
)
def test_translated_rows_match_translate_and_the_retry_loop(row: Row) -> None:
    """For connect, statement, COMMIT and keyed-write rows: translate() raises the listed
    error (flags, retryable) and the retry loop ends with the listed error."""
    error, broken = driver_error(row.kind)
    raised = translate(error, PHASES[row.phase], broken=broken)
    _check_attempt(row, raised)
    _check_final(row, raised)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r.phase == "pool wait"], ids=lambda r: f"pool wait/{r.kind}"
)
def test_pool_wait_rows_match_a_real_exhausted_pool(row: Row) -> None:
    """A real Pool whose only connection is out raises the listed back-pressure error at the
    deadline (nothing was opened), and the retry loop ends with it; other kinds cannot occur."""
    if Row.names(row.raises) == []:
        assert row.raises == row.retried == "—" and row.gets.startswith("—"), row
        return
    clock = FakeClock()
    opened: list[object] = []

    def connect(deadline: Deadline) -> object:
        opened.append(object())
        return opened[-1]

    pool = Pool(connect, size=1, idle_timeout=60, recycle=3600, clock=clock)
    pool.acquire(Deadline(5.0, clock))
    with pytest.raises(TaskcoreError) as info:
        pool.acquire(Deadline(0.0, clock))
    assert len(opened) == 1
    translated = translate(info.value, Phase.CONNECT)  # taskcore errors pass unchanged
    assert translated is info.value
    _check_attempt(row, translated)
    _check_final(row, translated)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r.phase == "resolution"], ids=lambda r: f"resolution/{r.kind}"
)
def test_resolution_rows_match_resolve_commit(row: Row) -> None:
    """resolve_commit asks again after any failure while the deadline and the policy's attempts
    last (not at all once the deadline has passed) and then answers UNKNOWN, which the
    unit's COMMIT reports as the listed CommitOutcomeUnknownError."""
    error, broken = driver_error(row.kind)
    clock = FakeClock()
    deadline = Deadline(30.0, clock)
    asked: list[Deadline] = []

    def open_link(given: Deadline) -> NoReturn:
        asked.append(given)
        if row.kind == "deadline expired":
            clock.advance(given.remaining())
        raise translate(error, Phase.CONNECT, broken=broken)

    ticket = CommitTicket(xid="1234", backend_pid=42)
    outcome = resolve_commit(open_link, ticket, deadline, POLICY, EventHub())
    assert outcome is Outcome.UNKNOWN
    assert Row.names(row.gets)[0] == "CommitOutcomeUnknownError"
    assert all(given is deadline for given in asked)  # the call's own deadline, no new one
    assert len(asked) == (POLICY.attempts if row.retried.startswith("yes") else 1), row
