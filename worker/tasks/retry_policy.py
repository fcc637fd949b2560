"""How long a transient failure waits before the next attempt.

Exponential backoff from ``CELERY_TASK_DEFAULT_RETRY_DELAY`` (doubling per attempt, capped at
``retry_backoff_max``) with "equal jitter": half the delay is kept, the other half drawn at random,
so a burst of failures spreads out without any retry coming back at once. A ``Retry-After`` from
the LLM is a floor: we never come back sooner than the server asked.
"""

import random

_JITTER = random.Random()  # noqa: S311 - spreads retries in time; no secret depends on it


def retry_countdown(
    retries: int,
    *,
    base: float,
    maximum: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before attempt ``retries + 2`` (``retries`` retries have happened)."""
    backoff = min(maximum, base * 2.0**retries)
    half = backoff / 2
    draw = (rng or _JITTER).uniform(0, half)
    countdown = half + draw
    if retry_after is not None:
        countdown = max(countdown, min(retry_after, maximum))
    return countdown
