"""Bad input, by property: any text in any field is stored exactly, or refused and nothing changes.

Hypothesis draws titles, descriptions, owner ids and idempotency keys from the whole of Unicode
(lone surrogates and NUL included) and from targeted strategies: quotes, backslashes, SQL and
format-string fragments, emoji and ZWJ sequences, whitespace-only text, and lengths on each side
of every limit. Each call must either store exactly what it was given (read back, compared as
exact strings, through the independent connection and through taskcore) or raise
taskcore.ValidationError and leave the table exactly as it was. Nothing else may escape. Which of
the two happens is predicted from the documented rules (public-api.md) and checked too.

Runs on every backend of the `db` fixture. In CI (``$CI`` set) the examples are derandomised.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings
from hypothesis import strategies as st

import taskcore
from _db import Db
from _scan import Summary, summary_for
from taskcore import TaskCreate, TaskUpdate, UnitOfWork, ValidationError
from taskcore.models import DESCRIPTION_MAX, IDEMPOTENCY_KEY_MAX, TITLE_MAX, USER_ID_MAX

_CI = bool(os.environ.get("CI"))
EXAMPLES = 150


def _profile(examples: int) -> settings:
    profile = settings(
        max_examples=examples,
        deadline=None,
        derandomize=_CI,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,  # examples share `db`; each one is independent
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    # In CI: the same examples every run, and no example database to carry between runs.
    return settings(profile, database=None) if _CI else profile


# ------------------------------------------------------------------------------ strategies

#: Every code point: NUL, controls, lone surrogates, unassigned and private-use ones included.
ANY_CHAR = st.characters(codec=None, exclude_categories=())
#: Every code point the documented rules accept (no NUL, no surrogate).
STORABLE_CHAR = st.characters(codec=None, exclude_categories=["Cs"], exclude_characters="\x00")

FRAGMENTS = (
    "'",
    '"',
    "''",
    "\\",
    "\\'",
    "\\x00",
    "\\0",
    "'; DROP TABLE tasks; --",
    "\"; DELETE FROM tasks WHERE '1'='1",
    "' OR 1=1 --",
    "/* */",
    "$$",
    "$tag$",
    "E'\\\\'",
    "%s",
    "%(title)s",
    "%%",
    "{0}",
    "{}",
    "{title}",
    "?",
    ":title",
    "$1",
    "NULL",
    "None",
    "\x00",
    "\ud800",
    "\udfff",
    "\ud83d",  # the high half of an emoji's UTF-16 pair, alone
    "😀",
    "👩‍👩‍👧‍👦",  # ZWJ sequence
    "🏳️‍🌈",
    "🇫🇷",
    "e\u0301",  # combining accent
    "\u200b",  # zero-width space (not whitespace to Python)
    "\u200d",  # zero-width joiner
    "\u202e",  # right-to-left override
    "\ufeff",  # byte-order mark
    "\ufffd",
    "\uffff",
    "\U0010ffff",
    "\r\n",
    "\t",
    "\x1b[31m",
    "漢字",
    "Ω",
)
WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u3000"

_FRAGMENT = st.sampled_from(FRAGMENTS)
_PIECE = st.one_of(_FRAGMENT, st.text(ANY_CHAR, max_size=6), st.text(STORABLE_CHAR, max_size=6))


def _repeated_to(n: int) -> st.SearchStrategy[str]:
    """A fragment (or a storable string) repeated and cut to exactly ``n`` code points."""
    seed = st.one_of(_FRAGMENT, st.text(STORABLE_CHAR, min_size=1, max_size=5))
    return seed.map(lambda s: (s * (n // len(s) + 1))[:n])


def _exactly(lengths: tuple[int, ...]) -> st.SearchStrategy[str]:
    """Text of exactly one of ``lengths`` code points (on and next to a limit).

    Long ones repeat a short drawn string: drawing a thousand characters one by one would cost
    more than the database calls, and the limit cares about the count, not the variety.
    """

    def of_length(n: int) -> st.SearchStrategy[str]:
        if n > 256:
            return _repeated_to(n)
        return st.one_of(st.text(STORABLE_CHAR, min_size=n, max_size=n), _repeated_to(n))

    return st.sampled_from(lengths).flatmap(of_length)


def field_text(limit: int, lengths: tuple[int, ...]) -> st.SearchStrategy[str]:
    """Any text for a field limited to ``limit`` characters, biased towards the interesting."""
    return st.one_of(
        st.text(ANY_CHAR, max_size=limit + 10),
        st.text(STORABLE_CHAR, min_size=1, max_size=limit),
        st.lists(_PIECE, max_size=8).map("".join),
        _exactly(lengths),
        st.text(st.sampled_from(WHITESPACE), max_size=4),
    )


TITLES = field_text(TITLE_MAX, (0, 1, TITLE_MAX - 1, TITLE_MAX, TITLE_MAX + 1))
DESCRIPTIONS = st.none() | field_text(
    DESCRIPTION_MAX, (0, 1, DESCRIPTION_MAX - 1, DESCRIPTION_MAX, DESCRIPTION_MAX + 1)
)
USER_IDS = field_text(USER_ID_MAX, (0, 1, USER_ID_MAX - 1, USER_ID_MAX, USER_ID_MAX + 1))
#: None (create_task makes one), a few fixed ones (so repeats happen), or any text.
KEYS = st.one_of(
    st.none(),
    st.sampled_from(["job-1", "job-2"]),
    field_text(IDEMPOTENCY_KEY_MAX, (0, 1, IDEMPOTENCY_KEY_MAX, IDEMPOTENCY_KEY_MAX + 1)),
)


# ------------------------------------------------------------------- the documented rules


def _text_ok(value: str, low: int, high: int) -> bool:
    """No NUL, no lone surrogate, and ``low``-``high`` code points."""
    if "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return False
    return low <= len(value) <= high


def title_ok(title: object) -> bool:
    """1-200 characters, not blank (not only whitespace)."""
    return isinstance(title, str) and _text_ok(title, 1, TITLE_MAX) and not title.isspace()


def description_ok(description: object) -> bool:
    """None, or up to 1,000 characters."""
    return description is None or (
        isinstance(description, str) and _text_ok(description, 0, DESCRIPTION_MAX)
    )


def user_ok(user: object) -> bool:
    """Up to 255 characters; "" allowed."""
    return isinstance(user, str) and _text_ok(user, 0, USER_ID_MAX)


def key_ok(key: object) -> bool:
    """None, or 1-200 characters."""
    return key is None or (isinstance(key, str) and _text_ok(key, 1, IDEMPOTENCY_KEY_MAX))


# ------------------------------------------------------------------------------ helpers


def _snapshot(db: Db) -> list[tuple[Any, ...]]:
    """Every row, every column, through the independent connection; owner and key come last."""
    return db.query("SELECT tasks.*, user_id, idempotency_key FROM tasks ORDER BY id")


def _stored(db: Db, task_id: int) -> list[tuple[Any, ...]]:
    """(title, description, user_id, rows in the table) for one task, in one round trip."""
    return db.query(
        "SELECT title, description, user_id, (SELECT count(*) FROM tasks) FROM tasks"
        f" WHERE id = {db.placeholder}",
        (task_id,),
    )


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> Summary:
    """Counts of stored and refused examples, printed once at the end of the run."""
    return summary_for(request.config, "bad input (hypothesis)")


def _count(summary: Summary, db: Db, what: str) -> None:
    """Count one example under its backend (sqlite, postgres or pgbouncer) and outcome."""
    backend = type(db).__name__.removesuffix("Db").lower()
    summary.add(f"{backend} {what}")


def _refused(
    db: Db, summary: Summary, valid: bool, before: list[tuple[Any, ...]], operation: str
) -> None:
    """A refusal: the documented rules must refuse the input too, and nothing was written."""
    assert not valid, "refused input the documented rules accept"
    assert _snapshot(db) == before, f"a refused {operation} changed the table"
    _count(summary, db, f"{operation} refused")


# ------------------------------------------------------------------------------ properties


@_profile(EXAMPLES)
@given(title=TITLES, description=DESCRIPTIONS, user=USER_IDS, key=KEYS)
def test_create_task_stores_text_exactly_or_refuses_it_changing_nothing(
    db: Db,
    summary: Summary,
    title: str,
    description: str | None,
    user: str,
    key: str | None,
) -> None:
    """create_task stores any accepted text exactly and refuses the rest with ValidationError."""
    valid = title_ok(title) and description_ok(description) and user_ok(user) and key_ok(key)
    before = _snapshot(db)
    existing = [row for row in before if key is not None and row[-2:] == (user, key)]
    try:
        task = taskcore.create_task(
            TaskCreate(title=title, description=description), user, idempotency_key=key
        )
    except ValidationError:
        _refused(db, summary, valid, before, "create")
        return
    assert valid, "accepted input the documented rules refuse"
    if existing:  # a repeated (owner, key): the first task comes back, nothing is written
        assert task.id == existing[0][0]
        assert _snapshot(db) == before
        assert _stored(db, task.id)[0][:2] == (task.title, task.description)
        _count(summary, db, "create repeated key")
        return
    assert _stored(db, task.id) == [(title, description, user, len(before) + 1)]
    assert (task.title, task.description, task.user_id) == (title, description, user)
    again = taskcore.get_task(task.id, user_id=user)
    assert again is not None
    assert (again.title, again.description, again.user_id) == (title, description, user)
    _count(summary, db, "create stored")


_UPDATE_FIELDS = st.fixed_dictionaries(
    {}, optional={"title": st.none() | TITLES, "description": DESCRIPTIONS}
)


@_profile(EXAMPLES)
@given(fields=_UPDATE_FIELDS, user=USER_IDS)
def test_update_task_stores_text_exactly_or_refuses_it_changing_nothing(
    db: Db, summary: Summary, fields: dict[str, Any], user: str
) -> None:
    """update_task applies any accepted text exactly and refuses the rest with ValidationError."""
    owner = user if user_ok(user) else "owner"
    base = taskcore.create_task(TaskCreate(title="base", description="before"), owner)
    valid = (
        user_ok(user)
        and bool(fields)
        and ("title" not in fields or title_ok(fields["title"]))
        and ("description" not in fields or description_ok(fields["description"]))
    )
    before = _snapshot(db)
    try:
        task = taskcore.update_task(base.id, TaskUpdate(**fields), user_id=user)
    except ValidationError:
        _refused(db, summary, valid, before, "update")
        return
    assert valid, "accepted input the documented rules refuse"
    expected = (fields.get("title", "base"), fields.get("description", "before"), owner)
    assert _stored(db, base.id) == [(*expected, len(before))]
    assert (task.title, task.description, task.user_id) == expected
    after = _snapshot(db)
    assert [row for row in after if row[0] != base.id] == [
        row for row in before if row[0] != base.id
    ], "an update touched another row"
    _count(summary, db, "update stored")


#: Mostly storable items, so that whole units land as often as they are refused.
_STORABLE_TITLES = st.text(STORABLE_CHAR, min_size=1, max_size=TITLE_MAX).filter(
    lambda t: not t.isspace()
)
_ITEMS = st.lists(
    st.tuples(_STORABLE_TITLES | TITLES, st.none() | st.text(STORABLE_CHAR) | DESCRIPTIONS),
    min_size=1,
    max_size=4,
)


@_profile(EXAMPLES // 3)
@given(items=_ITEMS, user=st.text(STORABLE_CHAR, max_size=20) | USER_IDS)
def test_a_unit_of_work_with_a_refused_create_leaves_nothing_behind(
    db: Db, summary: Summary, items: list[tuple[str, str | None]], user: str
) -> None:
    """Creates in one unit of work all land exactly, or a refused one rolls back the whole unit."""
    valid = user_ok(user) and all(title_ok(t) and description_ok(d) for t, d in items)
    before = _snapshot(db)
    try:
        with UnitOfWork() as uow:
            created = [
                uow.tasks.create(TaskCreate(title=t, description=d), user_id=user) for t, d in items
            ]
    except ValidationError:
        _refused(db, summary, valid, before, "unit")
        return
    assert valid, "accepted input the documented rules refuse"
    for task, (title, description) in zip(created, items, strict=True):
        assert _stored(db, task.id) == [(title, description, user, len(before) + len(items))]
    _count(summary, db, "unit stored")


_EDGES: list[tuple[str, st.SearchStrategy[Any], Any]] = [
    *[(f"title of {n}", TITLES, lambda t, n=n: len(t) == n) for n in (0, 1, 199, 200, 201)],
    *[
        (f"description of {n}", DESCRIPTIONS, lambda d, n=n: d is not None and len(d) == n)
        for n in (999, 1000, 1001)
    ],
    *[(f"user id of {n}", USER_IDS, lambda u, n=n: len(u) == n) for n in (0, 254, 255, 256)],
    ("NUL", TITLES, lambda t: "\x00" in t),
    ("lone surrogate", TITLES, lambda t: any(0xD800 <= ord(c) <= 0xDFFF for c in t)),
    ("astral character", TITLES, lambda t: any(ord(c) > 0xFFFF for c in t)),
    ("ZWJ sequence", TITLES, lambda t: "\u200d" in t),
    ("SQL fragment", TITLES, lambda t: "DROP TABLE" in t),
    ("quote and backslash", TITLES, lambda t: "'" in t and "\\" in t),
    ("format placeholders", DESCRIPTIONS, lambda d: d is not None and "%s" in d),
    ("whitespace only", TITLES, lambda t: t != "" and t.isspace()),
    ("no description", DESCRIPTIONS, lambda d: d is None),
    ("a repeated idempotency key", KEYS, lambda k: k == "job-1"),
    ("an empty idempotency key", KEYS, lambda k: k == ""),
]


# Generation only: finding one example is the point, shrinking it would only cost time.
_NO_SHRINK = settings(max_examples=5_000, database=None, derandomize=True, phases=[Phase.generate])


@pytest.mark.parametrize(("edge", "strategy", "condition"), _EDGES, ids=[e[0] for e in _EDGES])
def test_the_strategies_reach_every_edge_case(
    edge: str, strategy: st.SearchStrategy[Any], condition: Any
) -> None:
    """The strategies above really produce each edge case the properties claim to cover."""
    found = find(strategy, condition, settings=_NO_SHRINK)
    assert condition(found), edge
