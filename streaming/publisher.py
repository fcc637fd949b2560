"""The worker's side of a task's stream: every progress step and chunk, in order, cheaply.

An LLM may produce a token every millisecond; one round trip per token would cost more than the
token. Chunks are therefore coalesced over a short window (a few ms, the writer's): the texts
that arrive within it go out as one ``chunk`` event, so the client still receives every
character, in order, a few ms later at most. Any other event is queued after the pending
chunks, so the order is kept across types, and is written at once. The writing itself is the
loop's ``EventWriter``'s: it sends the queued events of every task on the loop in one round
trip. Used as an async context manager
inside the task's event loop; leaving it flushes.
"""

from types import TracebackType
from typing import Any, Self

from streaming.event_log import NewEvent
from streaming.event_writer import EventWriter
from streaming.events import EventType


class TaskEventPublisher:
    def __init__(self, writer: EventWriter, task_id: str) -> None:
        self._writer = writer
        self.task_id = task_id
        self._pending: list[str] = []  # chunk texts not yet sealed into an event
        self._queued: list[NewEvent] = []
        self._content: list[str] = []
        self._next_index = 0
        self._failure: Exception | None = None

    @property
    def content(self) -> str:
        """The answer so far in this attempt: every chunk text, published or still pending."""
        return "".join(self._content)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if exc is None:
            await self.flush()
            self._raise_failure()
        return None

    async def publish(self, kind: EventType, payload: Any) -> None:
        """Publish one event after any pending chunks (a ``reset`` restarts ``content``)."""
        self._raise_failure()
        self._seal_chunk()
        self._queued.append((kind, payload))
        if kind is EventType.RESET:
            self._content = [payload["content"]]
        await self._writer.flush(self)
        self._raise_failure()

    async def chunk(self, text: str) -> None:
        """Queue ``text`` for the next chunk event (sent at once when there is no window)."""
        if not text:
            return
        self._raise_failure()
        self._pending.append(text)
        self._content.append(text)
        if self._writer.window <= 0:
            await self._writer.flush(self)
            self._raise_failure()
        else:
            self._writer.mark(self)

    async def flush(self) -> None:
        if self._pending or self._queued:
            await self._writer.flush(self)

    def take_events(self) -> list[NewEvent]:
        self._seal_chunk()
        events, self._queued = self._queued, []
        return events

    def write_failed(self, error: Exception) -> None:
        self._failure = self._failure or error

    def _seal_chunk(self) -> None:
        if self._pending:
            text = "".join(self._pending)
            self._pending.clear()
            self._queued.append((EventType.CHUNK, {"text": text, "index": self._next_index}))
            self._next_index += 1

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
