"""Test configuration of the checklist app: settings for the test handles."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def taskcore_settings() -> dict[str, Any]:
    """Settings of the plugin's test handles: give up sooner, retry without waiting."""
    return {"deadline": 10, "retry_wait_initial": 0, "retry_wait_max": 0, "retry_wait_jitter": 0}
