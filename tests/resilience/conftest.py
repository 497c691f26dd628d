"""Fixtures for the kernel-level fault tests: a PostgreSQL behind a cuttable veth, a silent DNS.

Both skip, saying why, when the machine cannot build them (not root, or `ip` / `setpriv` /
`unshare` missing). See `tests/_netns.py` for what "silent" means and what was measured.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import _netns


@pytest.fixture
def netns_pg() -> Iterator[_netns.NetnsPg]:
    """A fresh PostgreSQL in its own network namespace; deleted after the test, pass or fail."""
    reason = _netns.netns_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with _netns.netns_postgres() as server:
        yield server


@pytest.fixture
def silent_resolver() -> Iterator[_netns.SilentResolver]:
    """A DNS server that never answers, and `run(script, ...)` for children that must use it."""
    reason = _netns.resolver_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with _netns.silent_resolver() as resolver:
        yield resolver


@pytest.fixture(scope="module")
def shared_netns_pg() -> Iterator[_netns.NetnsPg]:
    """One namespaced PostgreSQL for a whole module (starting one costs ~5 s); tests must heal
    and clean up after themselves (see the `net` fixture of test_partitions.py)."""
    reason = _netns.netns_missing_reason()
    if reason is not None:
        pytest.skip(reason)
    with _netns.netns_postgres() as server:
        yield server
