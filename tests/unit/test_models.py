"""Input validation: the same typed errors on every backend, naming fields and never inputs."""

from __future__ import annotations

import traceback
from typing import Any

import pytest

import taskcore
from taskcore import TaskCreate, TaskUpdate

SENTINEL = "SENTINEL-7f3a"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({}, "title"),
        ({"title": ""}, "title"),
        ({"title": "   \t"}, "title"),
        ({"title": "x" * 201}, "title"),
        ({"title": SENTINEL + "\x00"}, "title"),
        ({"title": SENTINEL + "\ud800"}, "title"),
        ({"title": 42}, "title"),
        ({"title": "ok", "description": SENTINEL + "d" * 1000}, "description"),
        ({"title": "ok", "description": SENTINEL + "\x00"}, "description"),
        ({"title": "ok", "owner": SENTINEL}, "owner"),
    ],
)
def test_bad_create_input_raises_our_validation_error(kwargs: dict[str, Any], field: str) -> None:
    """Bad input raises taskcore.ValidationError naming the field, with no input echoed or chained."""
    with pytest.raises(taskcore.ValidationError) as info:
        TaskCreate(**kwargs)
    error = info.value
    assert field in error.fields
    rendered = "".join(traceback.format_exception(error))
    assert SENTINEL not in rendered + repr(error) + repr(error.args)
    assert error.__cause__ is None and error.__context__ is None


def test_limits_are_inclusive_and_text_is_kept_exactly() -> None:
    """200-character titles and 1000-character descriptions are accepted untouched (no trimming)."""
    data = TaskCreate(title="  é" + "x" * 197, description="d" * 1000)
    assert len(data.title) == 200 and data.title.startswith("  é")
    assert TaskCreate(title="t", description="").description == ""


@pytest.mark.parametrize(
    "kwargs",
    [{"title": None}, {"title": ""}, {"completed": None}, {"completed": "yes"}, {"x": 1}],
)
def test_bad_update_input_raises_our_validation_error(kwargs: dict[str, Any]) -> None:
    """A title cannot be removed or blanked, and completed must be a real boolean."""
    with pytest.raises(taskcore.ValidationError):
        TaskUpdate(**kwargs)


def test_update_changes_only_what_was_set() -> None:
    """TaskUpdate records exactly the fields given; description=None means clear it."""
    assert TaskUpdate(description=None).changes() == {"description": None}
    assert TaskUpdate(title="t", completed=True).changes() == {"title": "t", "completed": True}


def test_empty_update_is_refused() -> None:
    """An update that changes nothing is a ValidationError, not a silent no-op."""
    with pytest.raises(taskcore.ValidationError, match="at least one field"):
        TaskUpdate().changes()


def test_model_validate_raises_our_error_too() -> None:
    """model_validate follows the same contract as the constructor."""
    with pytest.raises(taskcore.ValidationError):
        TaskCreate.model_validate({"title": ""})


def test_invalid_values_slipped_in_after_construction_are_caught() -> None:
    """validated() re-checks instances changed after construction or built unvalidated."""
    data = TaskCreate(title="ok")
    assert data.validated() is data  # known valid: no second validation
    data.title = "x" * 201
    with pytest.raises(taskcore.ValidationError):
        data.validated()
    with pytest.raises(taskcore.ValidationError):
        TaskCreate.model_construct(title="").validated()
    with pytest.raises(taskcore.ValidationError):
        TaskUpdate.model_construct(title=None).validated()
