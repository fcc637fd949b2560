"""What one attempt of an agent task tells the process's observability, bound once per attempt.

Each token the agent streams is counted (``agent_service_tokens_streamed``: the counter's labels
were resolved when the attempt began, so a token costs one increment) and each progress report
goes to Flower's view when task events are on (``worker.observability.progress_events``).
"""

from collections.abc import Callable
from typing import Any

from worker.agents.base import ChunkSink


class AttemptObserver:
    __slots__ = ("_inc", "_progress", "_task_id")

    def __init__(
        self,
        task_id: str,
        *,
        tokens: Any,
        progress: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._task_id = task_id
        self._inc: Callable[[], None] = tokens.inc
        self._progress = progress

    def counting(self, sink: ChunkSink) -> ChunkSink:
        """``sink``, counting each token (each chunk the agent hands on) as it passes."""
        inc = self._inc

        async def counted(text: str) -> None:
            inc()
            await sink(text)

        return counted

    def progressed(self, meta: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress(self._task_id, meta)
