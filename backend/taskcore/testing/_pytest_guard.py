"""The taskcore pytest plugin's guard: TEST_DATABASE_URL must name a database made for tests."""

from __future__ import annotations

import os

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

from taskcore.testing._pgserver import ENV_URL

INI_ALLOW = "taskcore_allow_any_database"
ENV_ALLOW = "TEST_DATABASE_ALLOW_ANY_NAME"
REQUIRED_PREFIX = "test"


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def guard(config: pytest.Config) -> None:
    """Refuse a TEST_DATABASE_URL whose database is not named test... unless allowed."""
    url = os.environ.get(ENV_URL, "").strip()
    if not url:
        return
    try:
        dbname = parse_dsn(url).get("dbname", "")
    except psycopg2.ProgrammingError:
        # The URL is not echoed: it may hold a password.
        raise pytest.UsageError(f"taskcore: ${ENV_URL} is not a valid PostgreSQL URL") from None
    if dbname.startswith(REQUIRED_PREFIX):
        return
    if config.getini(INI_ALLOW) or _truthy(os.environ.get(ENV_ALLOW, "")):
        return
    shown = repr(dbname) if dbname else "no database"
    raise pytest.UsageError(
        f"taskcore: ${ENV_URL} names {shown}, whose name does not start with "
        f"'{REQUIRED_PREFIX}'; the taskcore pytest plugin runs tests only against databases "
        f"made for tests. Point ${ENV_URL} at a database named test..., or allow this one with "
        f"{ENV_ALLOW}=1 or '{INI_ALLOW} = true' in your pytest configuration."
    )


def add_guard_option(parser: pytest.Parser) -> None:
    """Register the ini option that lifts the guard."""
    parser.addini(
        INI_ALLOW,
        type="bool",
        default=False,
        help=(
            f"taskcore: allow ${ENV_URL} to name a database whose name does not start "
            f"with '{REQUIRED_PREFIX}' (also: {ENV_ALLOW}=1)"
        ),
    )
