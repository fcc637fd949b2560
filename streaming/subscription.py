"""One listener of one task's stream: replay from the log, then live events, never a gap.

The hub (``streaming.hub``) owns the pub/sub connection and offers each announcement to the
``Listener`` buffers of a task; a ``Subscription`` turns its listener into the task's events after
a cursor: first what the log holds, then what is announced, dropping ids it already yielded. When
its bounded buffer overflows, or when the hub finds the log ahead of it (announcements lost), it
goes back to the log. A log read that fails (Redis restarting, the pool's connections all busy)
is retried with a growing pause, never ending the stream early. A terminal event ends the
subscription even when it is not after the cursor (a cursor ahead of the log, which the web
refuses at the door but may meet in a race): a stream must end with its task. A log that is gone
although events of it were yielded (Redis came back without its data, or the log expired) can
never continue: the stream ends with an ``error`` event of type ``TaskLost`` instead of waiting
forever. It knows the hub only as the ``detach`` callable it is given, which it calls exactly
once, however it ends.
"""

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import TypeVar

import anyio
from redis.exceptions import RedisError

from contract.events import EventType
from streaming.event_log import EventLogReader
from streaming.events import Event, encode_payload, parse_event_id

logger = logging.getLogger("agent_service.streaming.subscription")
T = TypeVar("T")
#: Pauses between attempts at a log read that failed; the last one repeats.
READ_RETRY_DELAYS = (0.1, 0.5, 1.0, 2.0)


async def _retrying(read: Callable[[], Awaitable[T]], *, task_id: str) -> T:
    for attempt in range(1_000_000):
        try:
            return await read()
        except (RedisError, OSError) as exc:
            delay = READ_RETRY_DELAYS[min(attempt, len(READ_RETRY_DELAYS) - 1)]
            if attempt == 0:
                logger.warning("log read failed task=%s (%r); retrying", task_id, exc)
            await anyio.sleep(delay)
    raise AssertionError("unreachable")


#: The ``error`` payload of a stream whose log vanished (polling then answers 404).
TASK_LOST = {
    "type": "TaskLost",
    "message": "the task's events are gone (Redis lost its data, or they expired); its outcome "
    "is unknown: submit it again",
}


def lost_event(after: str) -> Event:
    """The terminal event that ends a stream whose log vanished after event ``after``."""
    ms, seq = parse_event_id(after)
    return Event(f"{ms}-{seq + 1}", EventType.ERROR, encode_payload(TASK_LOST))


class Listener:
    """One listener's bounded buffer of announced events, and the flag that sends it back to
    the log when the buffer overflowed (or announcements may have been lost)."""

    __slots__ = ("_waiter", "buffer", "lagging", "poked", "seen", "seen_at_check")

    def __init__(self, size: int) -> None:
        self.buffer: deque[Event] = deque(maxlen=size)
        self.lagging = False
        self.poked = False
        #: The future its subscriber awaits while idle: a bare future, not an ``Event``, because
        #: every announcement wakes every listener (the relay's most repeated step).
        self._waiter: asyncio.Future[None] | None = None
        #: The order of the last event its subscriber yielded: the hub's idle check compares it
        #: with the log's newest entry.
        self.seen: tuple[int, int] = (-1, -1)
        self.seen_at_check: tuple[int, int] = (-1, -1)

    def offer(self, event: Event) -> None:
        if self.lagging:
            pass
        elif len(self.buffer) == self.buffer.maxlen:
            self.lagging = True
            self.buffer.clear()
        else:
            self.buffer.append(event)
        self._wake()

    def poke(self) -> None:
        """Wake the subscriber with nothing new: it yields an empty batch, so that whoever
        iterates gets control back (a heartbeat is due, its client left, the server stops)."""
        self.poked = True
        self._wake()

    def fall_behind(self) -> None:
        self.lagging = True
        self.buffer.clear()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def wait(self) -> None:
        """Until the next offer, poke or fall-behind (the caller checked there is none yet)."""
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        try:
            await waiter
        finally:
            self._waiter = None


def _through_terminal(events: list[Event]) -> list[Event]:
    """``events`` up to and including the first terminal one."""
    for index, event in enumerate(events):
        if event.terminal:
            return events[: index + 1]
    return events


class Subscription:
    """One listener of one task: iterate ``events`` once, then ``close`` (idempotent)."""

    def __init__(
        self,
        task_id: str,
        listener: Listener,
        *,
        reader: EventLogReader,
        detach: Callable[[str, Listener], Awaitable[None]],
    ) -> None:
        self._task_id = task_id
        self._listener = listener
        self._reader = reader
        self._detach = detach
        self._closed = False

    @property
    def listener(self) -> Listener:
        return self._listener

    async def close(self) -> None:
        """Detach from the hub; a close interrupted by a native cancellation (which anyio's
        shield does not stop) has not happened, and the next call does it again."""
        if not self._closed:
            with anyio.CancelScope(shield=True):
                await self._detach(self._task_id, self._listener)
            self._closed = True

    async def events(self, *, after: str | None = None) -> AsyncGenerator[Event, None]:
        """Events after ``after`` (None: from the start) until and including a terminal one."""
        async for batch in self.batches(after=after):
            for event in batch:
                yield event

    async def batches(self, *, after: str | None = None) -> AsyncGenerator[list[Event], None]:
        """The same events, in batches of what is available at once: a relay writes each batch
        to its client in one send, however many events a fast stream queued meanwhile. A batch
        is empty when the listener was poked while nothing was queued."""
        reader, listener, task_id = self._reader, self._listener, self._task_id
        cursor = after
        listener.seen = parse_event_id(after) if after else (-1, -1)
        try:
            while True:
                # From the log: on joining, after falling behind, when the hub found it ahead.
                listener.lagging = False
                listener.buffer.clear()
                while True:
                    page = await _retrying(
                        partial(reader.read_after, task_id, cursor), task_id=task_id
                    )
                    batch = _through_terminal(page)
                    if batch:
                        yield batch
                        cursor, listener.seen = batch[-1].id, batch[-1].order
                        if batch[-1].terminal:
                            return
                    if len(page) < reader.page_size:
                        break
                if not page and cursor is not None:
                    last = await _retrying(partial(reader.last, task_id), task_id=task_id)
                    if last is None:  # events were read from it, and it is gone
                        logger.warning("event log vanished task=%s; ending its stream", task_id)
                        yield [lost_event(cursor)]
                        return
                    if last.terminal and last.order <= listener.seen:
                        return  # a reconnect after the end: nothing more will come
                # Live announcements, until lagging sends us back to the log.
                while not listener.lagging:
                    if not listener.buffer:
                        if listener.poked:
                            listener.poked = False
                            yield []
                            continue
                        await listener.wait()
                        continue
                    held = list(listener.buffer)
                    listener.buffer.clear()
                    batch = _through_terminal([e for e in held if e.order > listener.seen])
                    if not batch:
                        if any(e.terminal for e in held):
                            # Never a repeat (we return after a terminal event): the cursor was
                            # ahead of the log. The task has ended, and so does its stream.
                            return
                        continue  # only repeats: a poke meanwhile still yields its empty batch
                    listener.poked = False  # any batch gives the iterating code control back
                    yield batch
                    cursor, listener.seen = batch[-1].id, batch[-1].order
                    if batch[-1].terminal:
                        return
        finally:
            await self.close()
