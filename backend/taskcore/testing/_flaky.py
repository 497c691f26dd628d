"""What the pytest plugin's ``flaky_taskcore_db`` fixture yields (importable without pytest)."""

from __future__ import annotations

from typing import NamedTuple

from taskcore.database import Database
from taskcore.testing._proxy import FlakyProxy

__all__ = ["FlakyDatabase"]


class FlakyDatabase(NamedTuple):
    """A handle that reaches the test database through a proxy: unpack it as ``db, proxy``."""

    db: Database
    proxy: FlakyProxy
