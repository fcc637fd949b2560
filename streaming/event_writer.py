"""One writer per event loop: the pending events of every task on the loop, in one round trip.

A worker's loop runs a hundred tasks at once, each publishing its chunks every few ms. Appended
one task at a time, each append cost a timer, a pool checkout, a packed command, a socket write
and a wake-up for the answer: ~0.15 ms of worker CPU, a third of the cost of a streamed token
(bench/README.md). Here each task's publisher (``streaming.publisher``) only marks itself
pending; once the oldest pending chunk has waited a window, or at once when a publisher asks to
be flushed (a status, a progress step, the end), the writer takes the events of every pending
publisher and sends one ``EVALSHA`` of the append script per task in one pipeline. Each
task's events keep their order: a writer sends one batch at a time.

::

    publisher ─mark pending─▶ writer ──every window, or at once──▶ pipeline: EVALSHA per task
    publisher ─mark pending─▶   │                                   (one round trip)
                                └─▶ resolves the batch every flushing publisher awaits
"""

import asyncio
import logging
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from streaming.event_log import APPEND_SCRIPT, NewEvent, script_call

logger = logging.getLogger("agent_service.streaming.event_writer")


class PendingEvents(Protocol):
    """What the writer asks of a publisher."""

    task_id: str

    def take_events(self) -> list[NewEvent]:
        """Everything queued since the last call, in order (the writer sends it now)."""
        ...

    def write_failed(self, error: Exception) -> None:
        """The events last taken were not written (raised again in the task's own frame)."""
        ...


class Batch:
    """One round trip's worth of events. ``written`` waits until it was sent; a publisher whose
    events failed has been told (``write_failed``), the others are not concerned."""

    __slots__ = ("_done",)

    def __init__(self) -> None:
        self._done = asyncio.Event()

    async def written(self) -> None:
        await self._done.wait()

    def finish(self) -> None:
        self._done.set()


class EventWriter:
    """Use as an async context manager on the loop it serves; leaving it writes what is left."""

    def __init__(self, redis: "Redis", *, maxlen: int, ttl: int, window: float) -> None:
        self._redis = redis
        self._script = redis.register_script(APPEND_SCRIPT)
        self._maxlen = maxlen
        self._ttl = ttl
        #: How long a chunk may wait for others (``STREAM_COALESCE_WINDOW``); 0: never.
        self.window = window
        #: Publishers with events to send (an insertion-ordered set).
        self._pending: dict[PendingEvents, None] = {}
        #: Plain ``SET key value EX seconds`` to send with the next batch.
        self._sets: list[tuple[str, bytes, int]] = []
        #: When the oldest of what waits was queued.
        self._oldest = 0.0
        self._next = Batch()
        self._wanted = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task_group: TaskGroup | None = None

    async def __aenter__(self) -> Self:
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        self._task_group.start_soon(self._write_forever)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        await self._task_group.__aexit__(None, None, None)
        if self._pending or self._sets:  # left when the loop closes: write it
            with anyio.CancelScope(shield=True):
                await self._write_batch()
        return None

    def mark(self, publisher: PendingEvents) -> Batch:
        """``publisher`` has events to send within the window; the batch that will carry them."""
        if publisher not in self._pending:
            self._queued()
            self._pending[publisher] = None
        return self._next

    def set_with_next(self, key: str, value: bytes, *, expires: int) -> None:
        """Send ``SET key value EX expires`` with the next batch (a task's Celery state: its
        round trip is shared with the events it goes with)."""
        self._queued()
        self._sets.append((key, value, expires))

    def _queued(self) -> None:
        if not self._wanted.is_set():
            self._oldest = asyncio.get_running_loop().time()
            self._wanted.set()

    async def flush(self, publisher: PendingEvents) -> None:
        """Send ``publisher``'s events now (with whatever else is pending) and wait for it."""
        batch = self.mark(publisher)
        self._urgent.set()
        await batch.written()

    async def _write_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wanted.wait()
            if not self._urgent.is_set():
                delay = self._oldest + self.window - loop.time()
                if delay > 0:
                    with anyio.move_on_after(delay):
                        await self._urgent.wait()
            await self._write_batch()

    async def _write_batch(self) -> None:
        """Send every pending publisher's events, those whose window is not over too: sending
        only the due ones made more round trips and saved few events (measured: 305 against
        280 us of worker CPU per token)."""
        publishers, self._pending = list(self._pending), {}
        sets, self._sets = self._sets, []
        batch, self._next = self._next, Batch()
        self._wanted.clear()
        self._urgent.clear()
        calls = [(p, p.take_events()) for p in publishers]
        calls = [(p, events) for p, events in calls if events]
        try:
            results = await self._append(calls, sets)
        except Exception as exc:  # Redis unreachable: every task of the batch learns of it
            results = [exc] * len(calls)
        except BaseException:  # cancelled with the loop: nobody may wait on this batch forever
            for publisher, _ in calls:
                publisher.write_failed(RuntimeError("the event writer stopped"))
            batch.finish()
            raise
        for (publisher, _), result in zip(calls, results, strict=True):
            if isinstance(result, Exception):
                publisher.write_failed(result)
        batch.finish()

    async def _append(
        self,
        calls: Sequence[tuple[PendingEvents, list[NewEvent]]],
        sets: Sequence[tuple[str, bytes, int]] = (),
    ) -> list[object]:
        """One pipelined ``EVALSHA`` per task; each task's outcome (its ids or its error). A
        script Redis lost (a restart) is loaded again and the refused calls sent once more:
        refused, they did nothing."""
        if not calls and not sets:
            return []
        packed = [
            script_call(p.task_id, events, maxlen=self._maxlen, ttl=self._ttl)
            for p, events in calls
        ]
        results = await self._pipeline(packed, sets)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            await self._redis.script_load(APPEND_SCRIPT)
            again = await self._pipeline([packed[i] for i in missing])
            for i, result in zip(missing, again, strict=True):
                results[i] = result
        return results

    async def _pipeline(
        self,
        packed: Sequence[tuple[list[str], list[bytes | str | int]]],
        sets: Sequence[tuple[str, bytes, int]] = (),
    ) -> list[object]:
        """The script calls' outcomes; a failed ``SET`` is logged (nobody waits for it)."""
        sha = self._script.sha
        async with self._redis.pipeline(transaction=False) as pipe:
            for key, value, expires in sets:
                pipe.set(key, value, ex=expires)
            for task_keys, args in packed:
                pipe.execute_command("EVALSHA", sha, len(task_keys), *task_keys, *args)
            results: list[object] = await pipe.execute(raise_on_error=False)
        for (key, _, _), outcome in zip(sets, results, strict=False):
            if isinstance(outcome, Exception):
                logger.warning("SET %s failed (%r)", key, outcome)
        return results[len(sets) :]
