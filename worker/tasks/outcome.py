"""How a run of an agent task ends, and the one place that writes it.

A run ends ``Completed``, ``Failed``, ``Cancelled`` or ``Retrying`` (a transient error, tried
again later). ``OutcomeWriter.write`` stores it in one round trip on the loop's client, from the
loop that ran the task, in one script: the stream's event (``result``, ``error``, ``cancelled``,
or ``status: retrying``), Celery's state record (what ``AsyncResult`` and polling read: the
return value, the error as Celery serialises one, ``REVOKED``, ``RETRY``) published on Celery's
channel for ``AsyncResult.get()``, and the release of the run's claim. When Celery's backend is
another Redis database, its record follows in a second round trip, after the event: the log is
the truth a redelivery reads, so a worker dying between the two leaves a log that says the task
ended, and that delivery restores the record (``restore_state``).

A terminal event is written only if the log has none yet: two runs of one task cannot both end
it. Celery itself stores nothing for these tasks (``ignore_result``); its hooks only log.

A Redis outage at that moment is ridden out (the write is tried again, with growing pauses, for
``REDIS_OUTAGE_LIMIT`` seconds); past it, ``OutcomeNotStoredError`` leaves the delivery
unacknowledged so that it runs again once Redis is back.
"""

from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from contract import celery_meta, keys
from contract.events import TERMINAL_TYPES, EventType, lua_log_has_ended
from contract.task_record import KWARGS
from streaming import lean_pipeline
from streaming.event_log import APPEND_FUNCTION, NewEvent, event_args, log_keys
from streaming.outage import OutageTooLongError, ride_out
from worker.errors import AgentError


@dataclass(frozen=True, slots=True)
class Completed:
    result: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Failed:
    error: Exception


@dataclass(frozen=True, slots=True)
class Cancelled:
    #: The answer as far as it had come.
    content: str = ""


@dataclass(frozen=True, slots=True)
class Retrying:
    error: Exception
    #: Seconds before the next attempt.
    countdown: float


@dataclass(frozen=True, slots=True)
class Deferred:
    """The task may not start yet (its rate limit): it goes back to its queue for ``delay``."""

    delay: float
    #: A start time is reserved for it: when it comes back it starts without asking again.
    reserved: bool
    #: The reserved start time (Unix seconds), when ``reserved``.
    start_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Skipped:
    """This delivery did not run the task: it had ended already."""

    reason: str
    #: The outcome the log holds (``result``, ``error``, ``cancelled``).
    kind: str = ""


Outcome = Completed | Failed | Cancelled | Retrying
DeliveryOutcome = Outcome | Skipped | Deferred


#: Celery stores a revoked task's result as the ``TaskRevokedError`` it raises for it.
REVOKED_RESULT = celery_meta.exception_result(
    "TaskRevokedError", "cancelled", module="celery.exceptions"
)


class OutcomeNotStoredError(Exception):
    """Redis did not take the outcome within the outage limit; the delivery must run again."""


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The ``error`` event's payload, which polling shows as ``error``: type, message, and the
    error's details (a timeout's reason and partial content)."""
    details = exc.details if isinstance(exc, AgentError) else {}
    return {"type": type(exc).__name__, "message": str(exc), **details}


def celery_error(exc: BaseException) -> dict[str, Any]:
    """``exc`` as Celery's JSON serialiser stores an exception."""
    kind = type(exc)
    return celery_meta.exception_result(
        getattr(kind, "__qualname__", kind.__name__), str(exc), module=kind.__module__
    )


@dataclass(frozen=True, slots=True)
class _Write:
    events: list[NewEvent]
    state: str
    result: Any
    terminal: bool = True


def _write_for(outcome: Outcome) -> _Write:
    if isinstance(outcome, Completed):
        return _Write([(EventType.RESULT, outcome.result)], celery_meta.SUCCESS, outcome.result)
    if isinstance(outcome, Failed):
        payload = error_payload(outcome.error)
        return _Write(
            [(EventType.ERROR, payload)], celery_meta.FAILURE, celery_error(outcome.error)
        )
    if isinstance(outcome, Cancelled):
        payload = {"reason": "cancelled", "content": outcome.content}
        return _Write([(EventType.CANCELLED, payload)], celery_meta.REVOKED, REVOKED_RESULT)
    status = {"status": "retrying", "error": error_payload(outcome.error)}
    return _Write(
        [(EventType.STATUS, status)],
        celery_meta.RETRY,
        celery_error(outcome.error),
        terminal=False,
    )


# KEYS: events, content, attempt, runner[, Celery state].
# ARGV: channel, maxlen, ttl, run, terminal ('1'), Celery state record ('' for none), its expiry,
# then events. Returns 1 if the events were written, 0 if the log had ended already.
_END_SCRIPT = (
    APPEND_FUNCTION
    + f"""
if redis.call('GET', KEYS[4]) == ARGV[4] then redis.call('DEL', KEYS[4]) end
if {lua_log_has_ended("KEYS[1]")} then return 0 end
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[7])
  redis.call('PUBLISH', KEYS[5], ARGV[6])
end
append_events(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV, 8)
return 1
"""
)
_END_SHA = lean_pipeline.script_sha(_END_SCRIPT)


class OutcomeWriter:
    """Writes runs' outcomes on one loop's clients (``backend`` when Celery's state lives in
    another database than the logs)."""

    def __init__(
        self,
        redis: "Redis",
        *,
        backend: "Redis",
        maxlen: int,
        ttl: int,
        state_expires: int,
        outage_limit: float,
    ) -> None:
        self._redis = redis
        self._backend = backend
        self._maxlen = maxlen
        self._ttl = ttl
        self._state_expires = state_expires
        self._outage_limit = outage_limit

    async def write(
        self, task_id: str, outcome: Outcome, *, run: str, user_id: str | None = None
    ) -> bool:
        """Store ``outcome`` and release the run's claim (and, once the task ends, its slot
        among ``user_id``'s active tasks); False when the log had ended already (another run's
        outcome stands)."""
        write = _write_for(outcome)
        record = celery_meta.encode_meta(task_id, write.state, write.result)
        in_script = self._backend is self._redis
        task_keys = [*log_keys(task_id), keys.task_runner(task_id)]
        args: list[bytes | str | int] = [keys.task_channel(task_id), self._maxlen, self._ttl]
        args += [run, "1" if write.terminal else ""]
        if in_script:
            task_keys.append(keys.celery_task_meta(task_id))
            args += [record, self._state_expires]
        else:
            args += ["", 0]
        args += event_args(write.events)
        written = bool(
            await self._ride_out(
                lambda: self._end(
                    task_id, task_keys, args, terminal=write.terminal, user_id=user_id
                )
            )
        )
        if written and not in_script:
            await self._ride_out(lambda: self._store_state(task_id, record))
        elif write.terminal and not in_script:
            # The log had ended: another run's outcome, or this very one, applied before a lost
            # reply made the pipeline send it again. Either way Celery's record follows the log.
            await self.restore_state(task_id)
        return written

    async def _end(
        self,
        task_id: str,
        task_keys: list[str],
        args: list[bytes | str | int],
        *,
        terminal: bool,
        user_id: str | None,
    ) -> object:
        """One round trip: the script, and for a task that ends, its leaving the open tasks
        and its user's active tasks (and its record letting go of the kwargs it kept for a
        resend). Those are not in the script: they are not in the task's hash slot, and a worker
        that dies between the two leaves them to the recovery, which finds the log ended."""
        commands: list[lean_pipeline.Command] = [
            ("EVALSHA", _END_SHA, len(task_keys), *task_keys, *args)
        ]
        if terminal:
            commands.append(("ZREM", keys.OPEN_TASKS, task_id))
            commands.append(("HDEL", keys.task_record(task_id), KWARGS))
            if user_id:
                commands.append(("ZREM", keys.user_active_tasks(user_id), task_id))
                commands.append(("ZREM", keys.user_urgent_tasks(user_id), task_id))
        for _ in range(2):
            replies = await lean_pipeline.execute(self._redis, commands)
            if not isinstance(replies[0], NoScriptError):
                break
            await self._redis.script_load(_END_SCRIPT)  # Redis restarted: its scripts are gone
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies[0]

    async def restore_state(
        self, task_id: str, kind: str | None = None, *, content: str = ""
    ) -> bool:
        """Make Celery's record agree with a log that ended with ``kind`` (the log's last event
        when not given: a worker died between the two writes, or the record expired first);
        True if it was rewritten."""
        stored = celery_meta.decode_meta(
            await self._ride_out(lambda: self._backend.get(keys.celery_task_meta(task_id)))
        )
        if stored is not None and stored.ready:
            return False
        last = await self._ride_out(
            lambda: self._redis.xrevrange(keys.task_events(task_id), count=1)
        )
        if not last:
            return False
        kind = kind or last[0][1].get(b"e", b"").decode()
        if kind not in TERMINAL_TYPES:
            return False
        payload = _payload(last[0][1])
        if kind == EventType.RESULT:
            record = celery_meta.encode_meta(task_id, celery_meta.SUCCESS, payload)
        elif kind == EventType.CANCELLED:
            record = celery_meta.encode_meta(task_id, celery_meta.REVOKED, REVOKED_RESULT)
        else:
            error = celery_meta.exception_result(
                str(payload.get("type", "Error")), str(payload.get("message", "")), module=None
            )
            record = celery_meta.encode_meta(task_id, celery_meta.FAILURE, error)
        await self._ride_out(lambda: self._store_state(task_id, record))
        return True

    async def _store_state(self, task_id: str, record: bytes) -> None:
        async with self._backend.pipeline(transaction=False) as pipe:
            pipe.set(keys.celery_task_meta(task_id), record, ex=self._state_expires)
            pipe.publish(keys.celery_task_meta(task_id), record)
            await pipe.execute()

    async def _ride_out(self, call: Any) -> Any:
        try:
            return await ride_out(call, limit=self._outage_limit, what="storing an outcome")
        except OutageTooLongError as exc:
            raise OutcomeNotStoredError(str(exc)) from exc


def _payload(fields: dict[bytes, bytes]) -> Any:
    return orjson.loads(fields[b"d"])
