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
from collections.abc import Sequence
from types import TracebackType
from typing import Protocol, Self

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from streaming.event_log import APPEND_SCRIPT, NewEvent, script_call

#: ``SET key value EX seconds``: a write that goes with a task's events (its Celery state).
SetCommand = tuple[str, bytes, int]


class PendingEvents(Protocol):
    """What the writer asks of a publisher."""

    task_id: str

    def take_writes(self) -> tuple[list[NewEvent], list[SetCommand]]:
        """Everything queued since the last call, in order (the writer sends it now)."""
        ...

    def write_failed(self, error: Exception) -> None:
        """The writes last taken failed (raised again in the task's own frame)."""
        ...


class Batch:
    """One round trip's worth of events. ``written`` waits until it was sent; a publisher whose
    events failed has been told (``write_failed``), the others are not concerned."""

    __slots__ = ("_done", "number")

    def __init__(self, number: int = 0) -> None:
        self._done = asyncio.Event()
        #: Batches are written one at a time, in this order.
        self.number = number

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
        #: Publishers with writes to send (an insertion-ordered set).
        self._pending: dict[PendingEvents, None] = {}
        #: When the oldest of what waits was queued.
        self._oldest = 0.0
        self._next = Batch()
        #: The batch being written (the one ``take_writes`` is called for).
        self.sending = self._next
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
        if self._pending:  # left when the loop closes: write it
            with anyio.CancelScope(shield=True):
                await self._write_batch()
        return None

    def mark(self, publisher: PendingEvents) -> Batch:
        """``publisher`` has writes to send within the window; the batch that will carry them."""
        if publisher not in self._pending:
            if not self._wanted.is_set():
                self._oldest = asyncio.get_running_loop().time()
                self._wanted.set()
            self._pending[publisher] = None
        return self._next

    def forget(self, publisher: PendingEvents) -> None:
        """Drop ``publisher`` from the next batch (its task failed: its writes are void)."""
        self._pending.pop(publisher, None)

    async def flush(self, publisher: PendingEvents) -> Batch:
        """Send ``publisher``'s writes now (with whatever else is pending); the batch, sent."""
        batch = self.mark(publisher)
        self._urgent.set()
        await batch.written()
        return batch

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
        """Send every pending publisher's writes, those whose window is not over too: sending
        only the due ones made more round trips and saved few events (measured: 305 against
        280 us of worker CPU per token)."""
        publishers, self._pending = list(self._pending), {}
        batch, self._next = self._next, Batch(self._next.number + 1)
        self.sending = batch
        self._wanted.clear()
        self._urgent.clear()
        taken = [(p, *p.take_writes()) for p in publishers]
        taken = [(p, events, sets) for p, events, sets in taken if events or sets]
        try:
            outcomes = await self._send(taken)
        except Exception as exc:  # Redis unreachable: every task of the batch learns of it
            outcomes = [exc] * len(taken)
        except BaseException:  # cancelled with the loop: nobody may wait on this batch forever
            for publisher, _, _ in taken:
                publisher.write_failed(RuntimeError("the event writer stopped"))
            batch.finish()
            raise
        for (publisher, _, _), outcome in zip(taken, outcomes, strict=True):
            if outcome is not None:
                publisher.write_failed(outcome)
        batch.finish()

    async def _send(
        self, taken: Sequence[tuple[PendingEvents, list[NewEvent], list[SetCommand]]]
    ) -> list[Exception | None]:
        """One pipeline: per task its ``SET``s, then one ``EVALSHA`` for its events. Each
        task's outcome: None, or its own error (a payload that is not JSON fails its task, not
        the batch). A script Redis lost (a restart) is loaded again and the calls it refused
        sent once more: refused, they did nothing."""
        outcomes: list[Exception | None] = [None] * len(taken)
        scripts: dict[int, tuple[list[str], list[bytes | str | int]]] = {}
        for i, (publisher, events, _) in enumerate(taken):
            if events:
                try:
                    # unless_ended: a write that arrives after the task's outcome (a batch held
                    # up past the publisher's wait) must not land after it.
                    scripts[i] = script_call(
                        publisher.task_id,
                        events,
                        maxlen=self._maxlen,
                        ttl=self._ttl,
                        unless_ended=True,
                    )
                except (TypeError, ValueError) as exc:  # not JSON-serialisable
                    outcomes[i] = exc
        if not taken:
            return outcomes
        sha = self._script.sha
        owners: list[int] = []
        async with self._redis.pipeline(transaction=False) as pipe:
            for i, (_, _, sets) in enumerate(taken):
                if outcomes[i] is not None:
                    continue
                for key, value, expires in sets:
                    pipe.set(key, value, ex=expires)
                    owners.append(i)
                if i in scripts:
                    task_keys, args = scripts[i]
                    pipe.execute_command("EVALSHA", sha, len(task_keys), *task_keys, *args)
                    owners.append(i)
            results: list[object] = await pipe.execute(raise_on_error=False)
        refused = []
        for i, result in zip(owners, results, strict=True):
            if isinstance(result, NoScriptError):
                refused.append(i)
            elif isinstance(result, Exception) and outcomes[i] is None:
                outcomes[i] = result
        if refused:
            await self._redis.script_load(APPEND_SCRIPT)
            async with self._redis.pipeline(transaction=False) as pipe:
                for i in refused:
                    task_keys, args = scripts[i]
                    pipe.execute_command("EVALSHA", sha, len(task_keys), *task_keys, *args)
                again: list[object] = await pipe.execute(raise_on_error=False)
            for i, result in zip(refused, again, strict=True):
                if isinstance(result, Exception):
                    outcomes[i] = result
        return outcomes
