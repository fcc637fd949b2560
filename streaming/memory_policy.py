"""Whether a Redis deletes the service's keys when its memory is full (its ``maxmemory-policy``).

Every queued task, result, stream and owner record lives in Redis. Under ``noeviction`` a Redis
at its ``maxmemory`` refuses writes, which the service rides out and answers with 503s (README,
"Redis's memory is full"); under any other policy it deletes keys to make room, without an error
to anyone: ``allkeys-*`` queued tasks among them, ``volatile-*`` every key with an expiry
(results, streams, records). Read from ``INFO memory``, which managed Redis services that disable
``CONFIG`` still answer.
"""

from collections.abc import Mapping
from typing import Any


def eviction_risk(memory_info: Mapping[str, Any]) -> str | None:
    """What ``INFO memory`` says Redis would delete when full, or None if it deletes nothing."""
    policy = str(memory_info.get("maxmemory_policy", "noeviction"))
    limit = int(memory_info.get("maxmemory", 0) or 0)
    if policy == "noeviction" or limit == 0:  # no limit: Redis grows (and never evicts)
        return None
    victims = "queued tasks too" if policy.startswith("allkeys") else "keys with an expiry"
    return (
        f"Redis's maxmemory-policy is {policy}: at its maxmemory ({limit} bytes) it deletes "
        f"keys to make room ({victims}: results, event streams, task records) without an error; "
        "set maxmemory-policy noeviction, under which a full Redis refuses writes instead"
    )
