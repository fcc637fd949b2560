"""One writer per event loop: the pending events of every task on the loop, in one round trip.

A worker's loop runs a hundred tasks at once, each publishing its chunks every few ms. Appended
one task at a time, each append cost a timer, a pool checkout, a packed command, a socket write
and a wake-up for the answer. Here each task's publisher (``streaming.publisher``) only marks
itself pending; once the oldest pending chunk has waited a window, or at once when a publisher
asks to be flushed (a status, a progress step, the end), the writer takes the writes of every
pending publisher and sends one ``EVALSHA`` of the append script per task in one pipeline. Each
task's writes keep their order: a writer sends one batch at a time.

::

    publisher ─mark pending─▶ writer ──every window, or at once──▶ pipeline: EVALSHA per task
    publisher ─mark pending─▶   │                                   (one round trip)
                                └─▶ resolves the batch every flushing publisher awaits

**Redis going away** (a restart, a failover, a cut connection) does not fail the tasks: a batch
that could not be sent is sent again, with growing pauses, for up to ``outage_limit`` seconds,
while the tasks go on (their new writes wait for the next batch). Only then is every publisher of
the batch told (``EventLogUnavailableError``). Each task's batches are numbered, and the script
keeps the number of the last one it applied, so a batch sent twice (its reply was lost with the
connection) is applied once; one that finds the log behind its number (Redis came back from its
append-only file without the last second of writes, or without any) is refused as a gap, and the
publisher replaces it with a ``reset`` carrying the whole answer so far: a client's text is never
left with a hole.

Errors that are not about the connection (a payload that is not JSON, a key of the wrong type)
fail only the task whose writes caused them.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self

import anyio
from anyio.abc import TaskGroup
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from contract import keys
from contract.events import lua_log_has_ended
from streaming import lean_pipeline
from streaming.event_log import APPEND_FUNCTION, NewEvent, event_args, log_keys
from streaming.outage import OUTAGE_ERRORS, pause

logger = logging.getLogger("agent_service.streaming.writer")

# KEYS: events, content, attempt, written[, the task's Celery state key when ARGV[9] is set].
# ARGV: channel, maxlen, ttl, unless_ended ('1'), run, batch number, resync ('1': apply whatever
# the last number), state record ('' for none), its expiry, then events.
# Returns {'ok', ids...}, {'ended'}, {'dup'} (applied already) or {'gap'} (earlier batches of
# this run are missing).
WRITE_SCRIPT = (
    APPEND_FUNCTION
    + f"""
if ARGV[4] == '1' and {lua_log_has_ended("KEYS[1]")} then
  return {{'ended'}}
end
local number = tonumber(ARGV[6])
local last = redis.call('GET', KEYS[4])
local last_run, last_number = '', 0
if last then
  local sep = string.find(last, ':', 1, true)
  last_run, last_number = string.sub(last, 1, sep - 1), tonumber(string.sub(last, sep + 1))
end
if ARGV[7] ~= '1' then
  if last_run == ARGV[5] and last_number >= number then return {{'dup'}} end
  if number > 1 and (last_run ~= ARGV[5] or last_number ~= number - 1) then return {{'gap'}} end
end
redis.call('SET', KEYS[4], ARGV[5] .. ':' .. ARGV[6], 'EX', ARGV[3])
if ARGV[8] ~= '' then
  redis.call('SET', KEYS[5], ARGV[8], 'EX', ARGV[9])
end
local ids = append_events(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV, 10)
table.insert(ids, 1, 'ok')
return ids
"""
)


class EventLogUnavailableError(Exception):
    """Redis did not take a task's events for longer than the writer's outage limit."""


class WriteGapError(Exception):
    """The log does not hold this run's earlier batches (Redis lost its last writes)."""


@dataclass(slots=True)
class Writes:
    """What a publisher hands the writer for one batch."""

    events: list[NewEvent]
    #: The task's Celery state record to store with the events, if it changed.
    state: bytes | None
    #: This run's batch number (1, 2, ...): the script applies each number once, in order.
    number: int
    #: Apply whatever the log's last number (the batch starts with a ``reset``).
    resync: bool = False


class PendingEvents(Protocol):
    """What the writer asks of a publisher."""

    task_id: str
    #: Names this run of the task in the log's batch numbering.
    run: str

    def take_writes(self) -> Writes | None:
        """Everything queued since the last call, in order (the writer sends it now)."""
        ...

    def write_failed(self, error: Exception) -> None:
        """The writes last taken failed (raised again in the task's own frame)."""
        ...

    def write_gap(self, writes: Writes) -> None:
        """The log lost earlier batches: write ``writes`` again behind a ``reset``."""
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


_Taken = tuple[PendingEvents, Writes]


class EventWriter:
    """Use as an async context manager on the loop it serves; leaving it writes what is left.

    ``state_expires`` is the expiry of the Celery state records the publishers hand over; they
    are written on ``backend`` when that is another Redis database than the logs' (the seed's
    layout), else inside the same script as the events.
    """

    def __init__(
        self,
        redis: "Redis",
        *,
        maxlen: int,
        ttl: int,
        window: float,
        state_expires: int = 86_400,
        backend: "Redis | None" = None,
        outage_limit: float = 30.0,
    ) -> None:
        self._redis = redis
        self._backend = backend
        self._script = redis.register_script(WRITE_SCRIPT)
        self._maxlen = maxlen
        self._ttl = ttl
        self._state_expires = state_expires
        self._outage_limit = outage_limit
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
        if self._pending:  # left when the loop closes: write it, without riding out an outage
            with anyio.CancelScope(shield=True):
                self._outage_limit = 0.0
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

    def hurry(self, publisher: PendingEvents) -> Batch:
        """Like ``mark``, but the batch leaves without waiting for the window (the caller does
        not wait for it either): for a write a reader is waiting on, such as an answer's first
        text."""
        batch = self.mark(publisher)
        self._urgent.set()
        return batch

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
        only the due ones made more round trips and saved few events (bench/README.md)."""
        publishers, self._pending = list(self._pending), {}
        batch, self._next = self._next, Batch(self._next.number + 1)
        self.sending = batch
        self._wanted.clear()
        self._urgent.clear()
        taken: list[_Taken] = []
        for publisher in publishers:
            writes = publisher.take_writes()
            if writes is not None:
                taken.append((publisher, writes))
        try:
            await self._send_riding_out_outages(taken)
        except BaseException:  # cancelled with the loop: nobody may wait on this batch forever
            for publisher, _ in taken:
                publisher.write_failed(RuntimeError("the event writer stopped"))
            batch.finish()
            raise
        batch.finish()

    async def _send_riding_out_outages(self, taken: list[_Taken]) -> None:
        """Send ``taken``; during an outage, again and again until ``outage_limit``."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while taken:
            outcomes = await self._send(taken)
            retry: list[_Taken] = []
            outage: Exception | None = None
            for (publisher, writes), outcome in zip(taken, outcomes, strict=True):
                if outcome is None:
                    continue
                if isinstance(outcome, WriteGapError):
                    publisher.write_gap(writes)
                elif isinstance(outcome, OUTAGE_ERRORS):
                    retry.append((publisher, writes))
                    outage = outcome
                else:
                    publisher.write_failed(outcome)
            if not retry:
                return
            waited = loop.time() - started
            if waited >= self._outage_limit:
                for publisher, _ in retry:
                    publisher.write_failed(
                        EventLogUnavailableError(
                            f"Redis did not take the task's events for {waited:.0f} s: {outage!r}"
                        )
                    )
                return
            if attempt == 0:
                logger.warning("event log writes failed (%r); retrying", outage)
            await anyio.sleep(pause(attempt))
            attempt += 1
            taken = retry

    async def _send(self, taken: Sequence[_Taken]) -> list[Exception | None]:
        """One pipeline: per task one ``EVALSHA`` (with its state record, or that record on the
        backend's pipeline). Each task's outcome: None, or its own error. A script Redis lost
        (a restart) is loaded again and the calls it refused sent once more: refused, they did
        nothing."""
        outcomes: list[Exception | None] = [None] * len(taken)
        calls: dict[int, tuple[list[str], list[bytes | str | int]]] = {}
        states: dict[int, tuple[str, bytes]] = {}
        for i, (publisher, writes) in enumerate(taken):
            try:
                calls[i] = self._call(publisher, writes)
            except (TypeError, ValueError) as exc:  # not JSON-serialisable
                outcomes[i] = exc
                continue
            if writes.state is not None and self._backend is not None:
                states[i] = (keys.celery_task_meta(publisher.task_id), writes.state)
        if not calls:
            return outcomes
        try:
            results = await self._evaluate(calls)
            if states:
                await self._store_states(states, results, outcomes)
        except OUTAGE_ERRORS as exc:
            return [exc if outcome is None else outcome for outcome in outcomes]
        for i, result in results.items():
            if isinstance(result, Exception):
                outcomes[i] = result
            elif result == b"gap":
                outcomes[i] = WriteGapError()
        return outcomes

    def _call(
        self, publisher: PendingEvents, writes: Writes
    ) -> tuple[list[str], list[bytes | str | int]]:
        task_id = publisher.task_id
        task_keys = [*log_keys(task_id), keys.task_written(task_id)]
        in_script = writes.state is not None and self._backend is None
        if in_script:
            task_keys.append(keys.celery_task_meta(task_id))
        args: list[bytes | str | int] = [keys.task_channel(task_id), self._maxlen, self._ttl]
        # unless_ended: a write that arrives after the task's outcome (a batch held up past the
        # publisher's wait) must not land after it.
        args += ["1", publisher.run, writes.number, "1" if writes.resync else ""]
        args += [writes.state or b"", self._state_expires] if in_script else ["", 0]
        args += event_args(writes.events)
        return task_keys, args

    async def _evaluate(
        self, calls: dict[int, tuple[list[str], list[bytes | str | int]]]
    ) -> dict[int, object]:
        """Each call's first reply word (``ok``, ``ended``, ``dup``, ``gap``) or its error."""
        results = await self._pipeline(calls)
        refused = [i for i, result in results.items() if isinstance(result, NoScriptError)]
        if refused:
            await self._redis.script_load(WRITE_SCRIPT)
            results.update(await self._pipeline({i: calls[i] for i in refused}))
        for i, result in results.items():
            if isinstance(result, list) and result:
                results[i] = result[0]
        return results

    async def _pipeline(
        self, calls: dict[int, tuple[list[str], list[bytes | str | int]]]
    ) -> dict[int, object]:
        """One round trip: the calls' replies, or their errors, by index."""
        sha = self._script.sha
        commands = [
            ("EVALSHA", sha, len(task_keys), *task_keys, *args)
            for task_keys, args in calls.values()
        ]
        replies = await lean_pipeline.execute(self._redis, commands)
        return dict(zip(calls, replies, strict=True))

    async def _store_states(
        self,
        states: dict[int, tuple[str, bytes]],
        results: dict[int, object],
        outcomes: list[Exception | None],
    ) -> None:
        """The state records of the tasks whose events were applied, on the backend's Redis."""
        assert self._backend is not None
        applied = {i: state for i, state in states.items() if results.get(i) == b"ok"}
        if not applied:
            return
        async with self._backend.pipeline(transaction=False) as pipe:
            for key, record in applied.values():
                pipe.set(key, record, ex=self._state_expires)
            replies: list[object] = await pipe.execute(raise_on_error=False)
        for i, reply in zip(applied, replies, strict=True):
            if isinstance(reply, Exception) and not isinstance(reply, OUTAGE_ERRORS):
                outcomes[i] = reply
