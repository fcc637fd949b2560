"""The worker's side of a task's stream: every progress step and chunk, in order, cheaply.

An LLM may produce a token every millisecond; one round trip per token would cost more than the
token. Chunks are therefore coalesced over a short window (a few ms): the texts that arrive within
it go out as one ``chunk`` event, so the client still receives every character, in order, a few ms
later at most. Any other event first flushes the pending chunks, so the order is kept across types.
Used as an async context manager inside the task's event loop; leaving it flushes.
"""

from types import TracebackType
from typing import Any, Self

import anyio
from anyio.abc import TaskGroup

from streaming.event_log import EventLog, NewEvent
from streaming.events import EventType


class TaskEventPublisher:
    def __init__(self, log: EventLog, task_id: str, *, coalesce_window: float) -> None:
        self._log = log
        self._task_id = task_id
        self._window = coalesce_window
        self._pending: list[str] = []
        self._content: list[str] = []
        self._flush_scheduled = False
        self._next_index = 0
        self._lock = anyio.Lock()
        self._task_group: TaskGroup | None = None
        self._failure: Exception | None = None

    @property
    def content(self) -> str:
        """The answer so far in this attempt: every chunk text, published or still pending."""
        return "".join(self._content)

    async def __aenter__(self) -> Self:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        try:
            if exc is None:
                await self.flush()
                self._raise_failure()
        finally:
            # Only the flush timer runs in the group: the body's own exception propagates as is,
            # not wrapped in an exception group.
            self._task_group.cancel_scope.cancel()
            await self._task_group.__aexit__(None, None, None)
        return None

    async def publish(self, kind: EventType, payload: Any) -> None:
        """Publish one event after any pending chunks (a ``reset`` restarts ``content``)."""
        await self._send([(kind, payload)])
        if kind is EventType.RESET:
            self._content = [payload["content"]]

    async def chunk(self, text: str) -> None:
        """Queue ``text`` for the next chunk event (sent at once when there is no window)."""
        if not text:
            return
        self._pending.append(text)
        self._content.append(text)
        if self._window <= 0:
            await self.flush()
        elif not self._flush_scheduled:
            assert self._task_group is not None, "use the publisher as an async context manager"
            self._flush_scheduled = True
            self._task_group.start_soon(self._flush_later)

    async def flush(self) -> None:
        await self._send([])

    async def _flush_later(self) -> None:
        await anyio.sleep(self._window)
        try:
            await self.flush()
        except Exception as exc:  # raised again by the next send, in the task's own frame
            self._failure = exc

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    async def _send(self, events: list[NewEvent]) -> None:
        self._raise_failure()
        async with self._lock:
            if self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                chunk = {"text": text, "index": self._next_index}
                self._next_index += 1
                events = [(EventType.CHUNK, chunk), *events]
            self._flush_scheduled = False
            if events:
                await self._log.append(self._task_id, events)
