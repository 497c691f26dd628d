"""Fault-injection and test helpers that ship with taskcore.

``FlakyProxy`` puts a controllable, PostgreSQL-aware TCP proxy between your code and the
database; ``no_retry_waits`` makes retries immediate in tests.
"""

from taskcore.retry import no_retry_waits

__all__ = ["no_retry_waits"]
