"""Keys generated per call are random RFC 4122 version-4 UUIDs in text form (issue 10's cheap path).

The purge tells call keys (kept 10 minutes) from callers' keys (UUIDv5, kept a day) by the
version digit, so the format matters, not only uniqueness.
"""

from __future__ import annotations

import re
import uuid

from taskcore.repository import call_key, caller_key


def test_call_keys_are_uuid4_text_and_distinct() -> None:
    keys = [call_key() for _ in range(2000)]
    assert len(set(keys)) == len(keys)
    for key in keys:
        parsed = uuid.UUID(key)
        assert str(parsed) == key
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", key
        )
    # every variant digit appears: the variant is drawn from the random bits, not fixed
    assert {key[19] for key in keys} == set("89ab")


def test_caller_keys_are_uuid5_so_the_purge_keeps_them_longer() -> None:
    assert uuid.UUID(caller_key("job-1")).version == 5
    assert caller_key("job-1") == caller_key("job-1") != caller_key("job-2")
