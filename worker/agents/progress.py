"""Progress of one invocation as a number from 0 to 100, a stage name and an optional detail.

Agents that report their own stages (``worker.agents.steps``) decide their progress; for the
others, progress while generating follows the chunk count along a curve that rises fast, then
slows and never reaches 100 before the end (an LLM does not say how long its answer will be).
Either way progress never goes back within an attempt and stays below 100 until the end.
Chunk-count reports are throttled (a new stage, or at least ``min_step`` points and
``min_interval`` seconds since the last report) because each one is a write to the result
backend: a client polling a few times a second gains nothing from more.
"""

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

STARTING = 5
GENERATING = 10
#: Chunks after which the generating stage is half-way between GENERATING and 95.
_HALF_WAY_CHUNKS = 20
#: The most progress an unfinished attempt shows.
MAX_RUNNING = 99


class ProgressReport(Protocol):
    """Publishes ``{"progress", "stage"[, "detail"]}``: at once (``urgent``) or with the next
    batch of the task's events."""

    def __call__(self, meta: dict[str, Any], *, urgent: bool = True) -> Awaitable[None]: ...


def progress_for_chunks(chunks: int) -> int:
    """Progress after ``chunks`` chunks: from GENERATING towards (never reaching) 95."""
    return GENERATING + (85 * chunks) // (chunks + _HALF_WAY_CHUNKS)


class ProgressTracker:
    def __init__(
        self,
        report: ProgressReport,
        *,
        min_step: int = 5,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        stage: str = "",
        progress: int = -1,
    ) -> None:
        """``stage`` and ``progress``: where the run is already (reported by someone else)."""
        self._report = report
        self._min_step = min_step
        self._min_interval = min_interval
        self._clock = clock
        self._progress = progress
        self._stage = stage
        self._reported_at = clock() if stage else float("-inf")
        #: The agent reports its own stages: chunk counting no longer moves anything.
        self.agent_led = False

    @property
    def progress(self) -> int:
        return max(self._progress, 0)

    @property
    def stage_name(self) -> str:
        return self._stage

    async def stage(self, stage: str, progress: int) -> None:
        """Enter ``stage`` at ``progress``; always reported."""
        self._stage = stage
        self._progress = max(self._progress, progress)
        self._reported_at = self._clock()
        await self._report({"progress": self._progress, "stage": stage})

    async def agent_stage(self, stage: str, *, progress: int | None, detail: str | None) -> None:
        """The agent says where it is: reported with its next events, and from now on the
        agent, not the chunk count, moves the progress."""
        self.agent_led = True
        self._stage = stage
        if progress is not None:
            self._progress = max(self._progress, min(MAX_RUNNING, max(0, progress)))
        self._reported_at = self._clock()
        meta: dict[str, Any] = {"progress": self.progress, "stage": stage}
        if detail:
            meta["detail"] = detail
        await self._report(meta, urgent=False)

    async def chunks(self, count: int) -> None:
        """``count`` chunks have arrived; reported when progress moved at least ``min_step``
        and ``min_interval`` has passed since the last report."""
        if self.agent_led:
            return
        if count == 1:
            await self.stage("generating", GENERATING)
        value = progress_for_chunks(count)
        if value - self._progress < self._min_step:
            return
        now = self._clock()
        if now - self._reported_at >= self._min_interval:
            self._progress = value
            self._reported_at = now
            await self._report({"progress": value, "stage": self._stage})
