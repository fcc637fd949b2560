"""One delivery runs a task at a time: the claim a run makes when it starts.

A task may be delivered more than once: a worker died and its delivery went back to the queue, an
acknowledgement was lost with a connection, Redis restarted and kombu put every unacknowledged
message back. The claim decides, atomically in one script (one round trip, which also starts the
run's stream), what this delivery does:

- the task's log already ends with its outcome: nothing (``Ended``; the LLM is not called again);
- another run holds the task (its ``runner`` key, kept alive by its worker's lease): wait for it
  to end, then decide again (``Held``);
- a cancel was requested before it started: end it cancelled (``CancelRequested``);
- otherwise the run is this delivery's (``Claimed``): the runner key is set (expiring with the
  lease unless renewed), the start is counted (the attempt number, across retries and
  redeliveries), and the stream gets ``reset`` (from the second attempt on), ``status: running``
  and the first ``progress``, with the Celery ``PROGRESS`` state when it lives in the same
  database.

Every key the script touches carries the task's hash tag, except Celery's own state key.
"""

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from contract import celery_meta, keys
from contract.events import lua_log_has_ended
from streaming import lean_pipeline
from streaming.event_log import APPEND_FUNCTION, log_keys
from worker.agents.progress import STARTING as STARTING_PROGRESS

#: The first progress report of a run goes out in the claim's round trip.
STARTING_STAGE = "starting"

_RESET = '{"attempt":%d,"content":""}'
_RUNNING = '{"status":"running","attempt":%d}'
_STARTING = '{"progress":%d,"stage":"%s"}' % (STARTING_PROGRESS, STARTING_STAGE)  # noqa: UP031

# KEYS: events, content, attempt, runner, starts, cancel[, Celery state].
# ARGV: channel, maxlen, ttl, run, runner ttl (ms), Celery state record of the start ('' for
# none; '%d' for the attempt), its expiry.
_CLAIM_SCRIPT = (
    APPEND_FUNCTION
    + f"""
if {lua_log_has_ended("KEYS[1]")} then
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then return {{'ended', fields[i + 1]}} end
  end
end
local runner = redis.call('GET', KEYS[4])
-- This very run: the script was sent again after its reply was lost, and had been applied.
if runner == ARGV[4] then return {{'claimed', tonumber(redis.call('GET', KEYS[5]))}} end
if runner then return {{'held', runner}} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {{'cancel'}} end
redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
local attempt = redis.call('INCR', KEYS[5])
redis.call('EXPIRE', KEYS[5], ARGV[3])
local events = {{}}
local function add(kind, data, text, number)
  events[#events + 1] = kind
  events[#events + 1] = data
  events[#events + 1] = text
  events[#events + 1] = number
end
if attempt > 1 then add('reset', string.format('{_RESET}', attempt), '', tostring(attempt)) end
add('status', string.format('{_RUNNING}', attempt), '', '')
add('progress', '{_STARTING}', '', '')
append_events(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], events, 1)
if ARGV[6] ~= '' then
  redis.call('SET', KEYS[7], ARGV[6], 'EX', ARGV[7])
end
return {{'claimed', attempt}}
"""
)


@dataclass(frozen=True, slots=True)
class Claimed:
    attempt: int


@dataclass(frozen=True, slots=True)
class Ended:
    #: The type of the log's terminal event (``result``, ``error``, ``cancelled``).
    kind: str


@dataclass(frozen=True, slots=True)
class Held:
    runner: str


@dataclass(frozen=True, slots=True)
class CancelRequested:
    pass


Claim = Claimed | Ended | Held | CancelRequested


def starting_state(task_id: str) -> bytes:
    """The Celery ``PROGRESS`` record of a run that has just started."""
    return celery_meta.encode_meta(
        task_id,
        celery_meta.PROGRESS,
        {"progress": STARTING_PROGRESS, "stage": STARTING_STAGE},
    )


_CLAIM_SHA = lean_pipeline.script_sha(_CLAIM_SCRIPT)


class RunClaims:
    """Claims runs of tasks on one loop's Redis client."""

    def __init__(
        self,
        redis: "Redis",
        *,
        maxlen: int,
        ttl: int,
        lease_ms: int,
        state_expires: int,
        state_in_script: bool,
    ) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._ttl = ttl
        self._lease_ms = lease_ms
        self._state_expires = state_expires
        #: Celery's state key is in the logs' database: the start's state goes in the script.
        self._state_in_script = state_in_script

    async def claim(self, task_id: str, *, run: str) -> Claim:
        task_keys = [
            *log_keys(task_id),
            keys.task_runner(task_id),
            keys.task_starts(task_id),
            keys.task_cancel(task_id),
        ]
        state: bytes | str = ""
        if self._state_in_script:
            task_keys.append(keys.celery_task_meta(task_id))
            state = starting_state(task_id)
        args: list[bytes | str | int] = [keys.task_channel(task_id), self._maxlen, self._ttl]
        args += [run, self._lease_ms, state, self._state_expires]
        command = ("EVALSHA", _CLAIM_SHA, len(task_keys), *task_keys, *args)
        (reply,) = await lean_pipeline.execute(self._redis, [command])
        if isinstance(reply, NoScriptError):  # Redis restarted: its scripts are gone
            await self._redis.script_load(_CLAIM_SCRIPT)
            (reply,) = await lean_pipeline.execute(self._redis, [command])
        if isinstance(reply, Exception):
            raise reply
        assert isinstance(reply, list)
        verdict = _text(reply[0])
        if verdict == "claimed":
            return Claimed(attempt=int(reply[1]))
        if verdict == "ended":
            return Ended(kind=_text(reply[1]))
        if verdict == "held":
            return Held(runner=_text(reply[1]))
        return CancelRequested()


def _text(value: bytes | str | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
