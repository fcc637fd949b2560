"""Reading from ``INFO memory`` whether Redis would delete the service's keys when full."""

import pytest

from streaming.memory_policy import eviction_risk


@pytest.mark.parametrize(
    ("policy", "limit", "victims"),
    [
        ("noeviction", 1 << 30, None),
        ("allkeys-lru", 0, None),  # no limit: Redis never evicts
        ("allkeys-lru", 1 << 30, "queued tasks too"),
        ("allkeys-random", 1 << 30, "queued tasks too"),
        ("volatile-ttl", 1 << 30, "keys with an expiry"),
    ],
)
def test_eviction_risk_names_the_policy_and_what_it_deletes(
    policy: str, limit: int, victims: str | None
) -> None:
    risk = eviction_risk({"maxmemory_policy": policy, "maxmemory": limit})
    if victims is None:
        assert risk is None
    else:
        assert risk is not None
        assert policy in risk
        assert victims in risk
        assert "noeviction" in risk


def test_an_info_without_the_fields_is_no_risk() -> None:
    assert eviction_risk({}) is None
