"""Fault-injection and test helpers that ship with taskcore.

``FlakyProxy`` puts a controllable, PostgreSQL-aware TCP proxy between your code and the
database; ``no_retry_waits`` makes retries immediate in tests.
"""

from taskcore.retry import no_retry_waits
from taskcore.testing._proxy import FlakyProxy, ProxyStats

__all__ = ["FlakyProxy", "ProxyStats", "no_retry_waits"]
