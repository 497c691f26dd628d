"""Fault-injection and test helpers that ship with taskcore.

``FlakyProxy`` puts a controllable, PostgreSQL-aware TCP proxy between your code and the
database; ``no_retry_waits`` makes retries immediate in tests. The pytest plugin
(``taskcore.testing.pytest_plugin``, loaded automatically with ``taskcore[test]``) provides the
fixtures; ``FlakyDatabase`` is what its ``flaky_taskcore_db`` yields.
"""

from taskcore.retry import no_retry_waits
from taskcore.testing._flaky import FlakyDatabase
from taskcore.testing._proxy import FlakyProxy, ProxyStats

__all__ = ["FlakyDatabase", "FlakyProxy", "ProxyStats", "no_retry_waits"]
