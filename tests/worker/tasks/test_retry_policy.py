"""``retry_countdown``: exponential backoff with equal jitter, capped, Retry-After as a floor."""

import random

import pytest

from worker.tasks.retry_policy import retry_countdown


@pytest.mark.parametrize(
    ("retries", "low", "high"),
    [(0, 1.0, 2.0), (1, 2.0, 4.0), (2, 4.0, 8.0), (3, 8.0, 16.0), (5, 32.0, 64.0)],
)
def test_countdown_between_half_and_full_backoff_for_each_retry(
    retries: int, low: float, high: float
) -> None:
    rng = random.Random(20240601)

    values = [retry_countdown(retries, base=2.0, maximum=600.0, rng=rng) for _ in range(500)]

    assert all(low <= value <= high for value in values)
    # The jitter really spreads the retries over the whole upper half.
    assert min(values) < low + 0.05 * (high - low)
    assert max(values) > high - 0.05 * (high - low)


def test_countdown_is_half_backoff_plus_seeded_draw_when_seeded() -> None:
    expected_draw = random.Random(7).uniform(0, 4.0)

    countdown = retry_countdown(2, base=2.0, maximum=600.0, rng=random.Random(7))

    assert countdown == 4.0 + expected_draw


def test_countdown_sequence_is_repeatable_when_seed_is_the_same() -> None:
    first, second = random.Random(99), random.Random(99)

    run_a = [retry_countdown(n, base=1.5, maximum=60.0, rng=first) for n in range(8)]
    run_b = [retry_countdown(n, base=1.5, maximum=60.0, rng=second) for n in range(8)]

    assert run_a == run_b
    assert len(set(run_a)) == 8


@pytest.mark.parametrize("retries", [6, 10, 20])
def test_countdown_capped_at_maximum_when_backoff_exceeds_it(retries: int) -> None:
    rng = random.Random(3)

    values = [retry_countdown(retries, base=2.0, maximum=60.0, rng=rng) for _ in range(200)]

    assert all(30.0 <= value <= 60.0 for value in values)
    assert max(values) > 57.0


def test_countdown_is_zero_when_base_is_zero() -> None:
    assert retry_countdown(4, base=0.0, maximum=600.0, rng=random.Random(1)) == 0.0


def test_countdown_waits_retry_after_when_it_exceeds_backoff() -> None:
    countdown = retry_countdown(0, base=2.0, maximum=600.0, retry_after=30.0, rng=random.Random(5))

    assert countdown == 30.0


def test_countdown_keeps_backoff_when_retry_after_is_shorter() -> None:
    with_header = retry_countdown(
        3, base=2.0, maximum=600.0, retry_after=1.0, rng=random.Random(11)
    )
    without_header = retry_countdown(3, base=2.0, maximum=600.0, rng=random.Random(11))

    assert with_header == without_header
    assert 8.0 <= with_header <= 16.0


def test_countdown_caps_retry_after_at_maximum_when_server_asks_for_longer() -> None:
    countdown = retry_countdown(
        0, base=2.0, maximum=60.0, retry_after=86_400.0, rng=random.Random(5)
    )

    assert countdown == 60.0


def test_countdown_without_rng_stays_within_bounds() -> None:
    values = [retry_countdown(1, base=2.0, maximum=600.0) for _ in range(100)]

    assert all(2.0 <= value <= 4.0 for value in values)
