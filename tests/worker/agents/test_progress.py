"""Progress of an invocation: the chunk curve and the throttled tracker."""

import itertools
from typing import Any

import pytest

from worker.agents.progress import GENERATING, STARTING, ProgressTracker, progress_for_chunks

pytestmark = pytest.mark.anyio

Report = tuple[int, str]


class Reports:
    """An in-memory ``ProgressReport``."""

    def __init__(self) -> None:
        self.calls: list[Report] = []

    async def __call__(self, meta: dict[str, Any], *, urgent: bool = True) -> None:
        self.calls.append((meta["progress"], meta["stage"]))


def test_progress_for_chunks_starts_at_generating_when_no_chunk_arrived() -> None:
    assert progress_for_chunks(0) == GENERATING == 10


def test_progress_for_chunks_is_half_way_to_95_when_20_chunks_arrived() -> None:
    assert progress_for_chunks(20) == 52


def test_progress_for_chunks_never_decreases_when_chunks_grow() -> None:
    values = [progress_for_chunks(n) for n in range(20_000)]

    assert all(a <= b for a, b in itertools.pairwise(values))
    assert values[-1] > values[0]


@pytest.mark.parametrize(
    ("chunks", "expected"), [(1_000, 93), (10**6, 94), (10**9, 94), (10**12, 94)]
)
def test_progress_for_chunks_stays_below_95_when_chunks_are_many(
    chunks: int, expected: int
) -> None:
    assert progress_for_chunks(chunks) == expected


async def test_tracker_reports_zero_when_nothing_happened() -> None:
    tracker = ProgressTracker(Reports())

    assert tracker.progress == 0


async def test_tracker_reports_every_stage_when_stages_are_entered() -> None:
    reports = Reports()
    tracker = ProgressTracker(reports)

    await tracker.stage("starting", STARTING)
    await tracker.stage("connecting", 7)
    await tracker.stage("generating", GENERATING)

    assert reports.calls == [(5, "starting"), (7, "connecting"), (10, "generating")]
    assert tracker.progress == 10


async def test_tracker_reports_same_stage_again_when_entered_twice() -> None:
    reports = Reports()
    tracker = ProgressTracker(reports)

    await tracker.stage("starting", STARTING)
    await tracker.stage("starting", STARTING)

    assert reports.calls == [(5, "starting"), (5, "starting")]


async def test_tracker_throttles_chunk_reports_when_progress_moves_less_than_min_step() -> None:
    reports = Reports()
    tracker = ProgressTracker(reports)
    await tracker.stage("starting", STARTING)

    for count in range(1, 6):
        await tracker.chunks(count)

    # Chunks 1..5 sit at 14, 17, 21, 24, 27: only moves of 5 points or more are written.
    assert reports.calls == [
        (5, "starting"),
        (10, "generating"),
        (17, "generating"),
        (24, "generating"),
    ]
    assert tracker.progress == 24


@pytest.mark.parametrize("min_step", [1, 5, 10])
async def test_tracker_reports_only_steps_of_min_step_when_many_chunks_arrive(
    min_step: int,
) -> None:
    reports = Reports()
    tracker = ProgressTracker(reports, min_step=min_step)
    await tracker.stage("starting", STARTING)

    for count in range(1, 2_001):
        await tracker.chunks(count)

    assert reports.calls[:2] == [(5, "starting"), (10, "generating")]
    chunk_reports = reports.calls[2:]
    assert chunk_reports, "progress must move while generating"
    assert {stage for _, stage in chunk_reports} == {"generating"}
    values = [value for value, _ in reports.calls[1:]]
    assert all(b - a >= min_step for a, b in itertools.pairwise(values))
    # Throttled, not starved: the last report is within one step of the true progress.
    assert progress_for_chunks(2_000) - values[-1] < min_step
    assert max(values) < 95


async def test_tracker_reports_every_point_when_min_step_is_one() -> None:
    reports = Reports()
    tracker = ProgressTracker(reports, min_step=1)

    for count in range(1, 4):
        await tracker.chunks(count)

    assert reports.calls == [
        (10, "generating"),
        (14, "generating"),
        (17, "generating"),
        (21, "generating"),
    ]


async def test_tracker_never_reports_a_decrease_when_later_stage_is_lower() -> None:
    reports = Reports()
    tracker = ProgressTracker(reports)
    await tracker.stage("starting", STARTING)
    for count in range(1, 41):
        await tracker.chunks(count)
    reached = tracker.progress

    await tracker.stage("finishing", 20)

    assert reached >= 60
    assert reports.calls[-1] == (reached, "finishing")
    values = [value for value, _ in reports.calls]
    assert values == sorted(values)


async def test_tracker_ignores_chunk_count_when_it_goes_backwards() -> None:
    reports = Reports()
    tracker = ProgressTracker(reports)
    for count in range(1, 31):
        await tracker.chunks(count)
    before = list(reports.calls)

    await tracker.chunks(2)

    assert reports.calls == before
