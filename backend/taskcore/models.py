"""The Task table model and its validated Create/Update input models."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Self

import pydantic
from sqlalchemy import DateTime, false
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

from taskcore.errors import ValidationError

__all__ = [
    "DESCRIPTION_MAX",
    "TITLE_MAX",
    "USER_ID_MAX",
    "Task",
    "TaskCreate",
    "TaskUpdate",
    "check_task_id",
    "check_user_id",
]

TITLE_MAX = 200
DESCRIPTION_MAX = 1000
USER_ID_MAX = 255


class utcnow(FunctionElement[datetime]):  # noqa: N801 - named like the SQL functions it renders
    """The database's current time in UTC, per statement (two updates in one transaction differ)."""

    type = DateTime(timezone=True)
    inherit_cache = True


@compiles(utcnow, "postgresql")
def _pg_utcnow(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    return "statement_timestamp()"


@compiles(utcnow, "sqlite")
def _sqlite_utcnow(element: utcnow, compiler: SQLCompiler, **kw: Any) -> str:
    # CURRENT_TIMESTAMP has one-second resolution on SQLite; keep microseconds like PostgreSQL
    return "strftime('%Y-%m-%d %H:%M:%f', 'now')"


class UTCDateTime(TypeDecorator[datetime]):
    """TIMESTAMP WITH TIME ZONE that always comes back timezone-aware in UTC (SQLite included)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:  # SQLite stores naive UTC text
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Task(SQLModel, table=True):
    """A todo item owned by ``user_id``; rows are written by the repository, never constructed."""

    __tablename__ = "tasks"

    id: int = Field(primary_key=True)
    title: str = Field(max_length=TITLE_MAX)
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)
    completed: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    user_id: str = Field(max_length=USER_ID_MAX, index=True)
    created_at: datetime = Field(
        sa_type=UTCDateTime, sa_column_kwargs={"server_default": utcnow(), "nullable": False}
    )
    updated_at: datetime = Field(
        sa_type=UTCDateTime, sa_column_kwargs={"server_default": utcnow(), "nullable": False}
    )


def _check_text(value: str, field: str, *, min_length: int, max_length: int) -> str:
    """Refuse what either backend would store differently or not at all."""
    if "\x00" in value:
        raise ValueError(f"{field} must not contain a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{field} must be valid Unicode text (no lone surrogates)") from None
    if not min_length <= len(value) <= max_length:
        raise ValueError(f"{field} must be {min_length}-{max_length} characters, got {len(value)}")
    return value


def _check_title(value: str) -> str:
    _check_text(value, "title", min_length=1, max_length=TITLE_MAX)
    if not value.strip():
        raise ValueError("title must not be blank")
    return value


def _check_description(value: str | None) -> str | None:
    if value is None:
        return None
    return _check_text(value, "description", min_length=0, max_length=DESCRIPTION_MAX)


class _Input(SQLModel):
    """Base of input models: pydantic's errors (which echo the input) become our ValidationError."""

    model_config = SQLModel.model_config | {"extra": "forbid", "strict": True}

    def __init__(self, **data: Any) -> None:
        error = None
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            error = _validation_error(exc)
        if error is not None:
            raise error  # raised outside the except block: no __context__ holding the input

    def validated(self) -> Self:
        """A re-validated copy: catches instances built with ``model_construct`` or mutated."""
        return type(self).model_validate(self.model_dump(exclude_unset=True))

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate like the constructor, raising taskcore's ValidationError."""
        error = None
        try:
            return super().model_validate(obj, *args, **kwargs)
        except pydantic.ValidationError as exc:
            error = _validation_error(exc)
        raise error


def _validation_error(exc: pydantic.ValidationError) -> ValidationError:
    """Build a message from field names and our own messages only (pydantic's echo the input)."""
    problems = []
    fields = []
    for err in exc.errors(include_input=False, include_url=False):
        field = ".".join(str(p) for p in err["loc"]) or "input"
        fields.append(field)
        ctx_error = err.get("ctx", {}).get("error")
        if isinstance(ctx_error, ValueError):
            problems.append(str(ctx_error))
        elif err["type"] == "missing":
            problems.append(f"{field} is required")
        elif err["type"] == "extra_forbidden":
            problems.append(f"{field} is not a task field")
        else:
            problems.append(f"{field} has the wrong type ({err['type']})")
    return ValidationError("invalid task: " + "; ".join(problems), fields=tuple(fields))


class TaskCreate(_Input):
    """Input for creating a task: a title (1-200 characters, not blank), maybe a description."""

    title: str
    description: str | None = None

    @pydantic.field_validator("title")
    @classmethod
    def _title(cls, value: str) -> str:
        return _check_title(value)

    @pydantic.field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return _check_description(value)


class TaskUpdate(_Input):
    """A partial update: only the fields given change; ``description=None`` clears it."""

    title: str | None = None
    description: str | None = None
    completed: bool | None = None

    @pydantic.field_validator("title")
    @classmethod
    def _title(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("title cannot be removed")
        return _check_title(value)

    @pydantic.field_validator("description")
    @classmethod
    def _description(cls, value: str | None) -> str | None:
        return _check_description(value)

    @pydantic.field_validator("completed")
    @classmethod
    def _completed(cls, value: bool | None) -> bool:
        if value is None:
            raise ValueError("completed must be true or false")
        return value

    def changes(self) -> dict[str, Any]:
        """The fields the caller set, ready for an UPDATE; refuses an empty update."""
        values = self.model_dump(exclude_unset=True)
        if not values:
            raise ValidationError("invalid task: an update must change at least one field")
        return values


def check_user_id(user_id: object, *, required: bool) -> str | None:
    """Validate an owner id: any string up to 255 characters ("" allowed); None when optional."""
    if user_id is None and not required:
        return None
    error = None
    if not isinstance(user_id, str):
        error = ValidationError("user_id must be a string", fields=("user_id",))
    else:
        try:
            return _check_text(user_id, "user_id", min_length=0, max_length=USER_ID_MAX)
        except ValueError as exc:
            error = ValidationError(f"invalid task: {exc}", fields=("user_id",))
    raise error


def check_task_id(task_id: object) -> int:
    """Validate a task id: an int (not a bool)."""
    if isinstance(task_id, bool) or not isinstance(task_id, int):
        raise ValidationError("task_id must be an integer", fields=("task_id",))
    return task_id
