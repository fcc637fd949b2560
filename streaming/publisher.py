"""The worker's side of a task's stream: every progress step and chunk, in order, cheaply.

An LLM may produce a token every millisecond; one round trip per token would cost more than the
token. Chunks are therefore coalesced over a short window (a few ms, the writer's): the texts
that arrive within it go out as one ``chunk`` event, so the client still receives every
character, in order, a few ms later at most; an attempt's first text is sent at once, never
held by the window. Any other event is queued after the pending chunks, so the order is kept
across types, and is written at once. The writing itself is the loop's ``EventWriter``'s: it
sends the queued events of every task on the loop in one round trip, numbering each task's
batches so that one sent twice is applied once. If the log lost earlier batches (Redis came back
without its last writes), the publisher sends a ``reset`` with the whole answer so far in their
place. Used as an async context manager inside the task's event loop; leaving it flushes.
"""

import uuid
from types import TracebackType
from typing import Any, Self

import anyio

from contract.events import EventType
from streaming.event_log import NewEvent
from streaming.event_writer import Batch, EventWriter, Writes

#: How long a publisher that ends with an error waits for its writes to go out.
IN_FLIGHT_WAIT = 5.0


class TaskEventPublisher:
    def __init__(
        self, writer: EventWriter, task_id: str, *, attempt: int = 1, run: str | None = None
    ) -> None:
        self._writer = writer
        self.task_id = task_id
        #: This run of the task, in the log's numbering of its batches.
        self.run = run or uuid.uuid4().hex
        self._attempt = attempt
        self._pending: list[str] = []  # chunk texts not yet sealed into an event
        self._queued: list[NewEvent] = []
        self._state: bytes | None = None  # the newest Celery state record not yet sent
        self._content: list[str] = []
        self._next_index = 0
        self._numbered = 0  # batches handed to the writer
        self._resync = False  # the next batch starts with a reset that replaces a gap
        self._failure: Exception | None = None  # a failed write's error, not raised yet
        #: The first failed write's error: once set, nothing more is written (no gap in the
        #: log), and leaving without error raises it, even if the task caught it once.
        self._error: Exception | None = None
        self._last_batch: Batch | None = None  # the newest batch that carries writes of ours

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
        """Everything is written before the task goes on, to store its outcome: what a client
        saw before a failure, a cancel or a retry's reset stays in the stream. On success a write
        that failed is raised; on an error the writes get ``IN_FLIGHT_WAIT`` seconds (the error
        may be Redis's own), and what is still not sent then is dropped. None of it can land
        after the outcome: the log takes no event after a terminal one."""
        if exc is None:
            await self._write_all()
            if self._error is not None:
                self._failure = None
                raise self._error
            return None
        with anyio.CancelScope(shield=True), anyio.move_on_after(IN_FLIGHT_WAIT):
            await self._write_all()
        self.discard()
        return None

    async def _write_all(self) -> None:
        await self.flush()
        while self._last_batch is not None and self._resync_pending():
            await self.flush()  # a gap found by the last batch: its reset goes out now
        if self._last_batch is not None:
            await self._last_batch.written()  # batches go out in order: all ours are out

    def discard(self) -> None:
        """Drop everything not sent yet (the task's outcome replaces it)."""
        self._writer.forget(self)
        self._pending.clear()
        self._queued.clear()
        self._state = None

    async def publish(self, kind: EventType, payload: Any) -> None:
        """Publish one event after any pending chunks (a ``reset`` restarts ``content``)."""
        self._raise_failure()
        self._seal_chunk()
        self._queued.append((kind, payload))
        if kind is EventType.RESET:
            self._content = [payload["content"]]
        self._note(await self._writer.flush(self))
        self._raise_failure()

    async def queue(self, kind: EventType, payload: Any) -> None:
        """Publish one event after any pending chunks, with the next batch (coalesced like
        chunks: an agent's steps, which need not go out the very moment they happen)."""
        self._raise_failure()
        self._seal_chunk()
        self._queued.append((kind, payload))
        if self._writer.window <= 0:
            self._note(await self._writer.flush(self))
            self._raise_failure()
        else:
            self._note(self._writer.mark(self))

    async def chunk(self, text: str) -> None:
        """Queue ``text`` for the next chunk event (sent at once when there is no window)."""
        if not text:
            return
        self._raise_failure()
        first = self._next_index == 0 and not self._pending
        self._pending.append(text)
        self._content.append(text)
        if self._writer.window <= 0:
            self._note(await self._writer.flush(self))
            self._raise_failure()
        elif first:  # the time to the first text is what a reader waits on: never held back
            self._note(self._writer.hurry(self))
        else:
            self._note(self._writer.mark(self))

    def state_with_next(self, record: bytes) -> None:
        """Store ``record`` as the task's Celery state with its next events (in their round
        trip, and only if they are written); a newer record replaces one not sent yet."""
        self._state = record
        self._note(self._writer.mark(self))

    async def flush(self) -> None:
        if self._pending or self._queued or self._state is not None or self._resync:
            self._note(await self._writer.flush(self))

    def _note(self, batch: Batch) -> None:
        """Keep the newest batch: two coroutines of one task publishing at once may return
        from their flushes out of order."""
        if self._last_batch is None or batch.number > self._last_batch.number:
            self._last_batch = batch

    def _resync_pending(self) -> bool:
        return self._resync and self._error is None

    def take_writes(self) -> Writes | None:
        if self._error is not None:
            return None
        self._seal_chunk()
        if not self._queued and self._state is None and not self._resync:
            return None
        self._note(self._writer.sending)
        events, self._queued = self._queued, []
        resync, self._resync = self._resync, False
        if resync:  # the reset carries every chunk so far: those queued too
            reset = {"attempt": self._attempt, "content": self.content}
            events = [(EventType.RESET, reset), *[e for e in events if e[0] is not EventType.CHUNK]]
        state, self._state = self._state, None
        self._numbered += 1
        return Writes(events=events, state=state, number=self._numbered, resync=resync)

    def write_failed(self, error: Exception) -> None:
        if self._error is None:
            self._error = self._failure = error

    def write_gap(self, writes: Writes) -> None:
        """Earlier batches are missing from the log: send these events again, behind a reset
        with the whole answer so far (their chunks are in it)."""
        kept = [(kind, payload) for kind, payload in writes.events if kind is not EventType.CHUNK]
        self._queued = [*[e for e in kept if e[0] is not EventType.RESET], *self._queued]
        self._state = self._state or writes.state
        self._resync = True
        self._note(self._writer.mark(self))  # leaving waits for the reset to be written

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
