"""Rate limits that mean what an operator means: so many calls a minute for the whole deployment.

``AGENT_TASK_RATE_LIMIT`` and ``STREAMING_TASK_RATE_LIMIT`` (``"100/m"``, ``"2/s"``, ``"600/h"``)
are one schedule in Redis shared by every worker process (GCRA: the time the next call may
start), not Celery's per-process token buckets, which allow N times the figure with N workers
and hold a pool thread while a task waits. A task that may not start yet reserves the next free
start time and goes back to its queue until then (a new message with a countdown, the same task
id and retries, and its reservation in a header, so it does not reserve again): it holds no pool
thread meanwhile, and it is not lost (the worker holding it until its time acknowledges it late).

So that one user's backlog cannot fill the schedule far ahead of everyone else, a user may hold
reservations at most ``RATE_LIMIT_USER_HORIZON`` seconds ahead: past it, that user's task waits
half the horizon without reserving, then tries again, and another user's first task finds a start
time within the horizon.
"""

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from contract import keys

#: The header a re-sent task carries its reserved start time in.
RESERVED_HEADER = "agent_service_rate_slot"

# KEYS: the schedule's next start time, the user's last reservation. ARGV: now, interval,
# horizon. Returns {verdict, seconds}: 'now' (start), 'reserved' (start then), 'wait' (try again
# then, nothing reserved).
_ADMIT = """
local now, interval, horizon = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local next_start = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(now, next_start)
local users_last = tonumber(redis.call('GET', KEYS[2]) or '0')
if start - now > horizon and users_last > now then
  return {'wait', tostring(horizon / 2)}
end
local ttl = math.ceil(start - now + interval) + 60
redis.call('SET', KEYS[1], tostring(start + interval), 'EX', ttl)
redis.call('SET', KEYS[2], tostring(start), 'EX', ttl)
if start <= now then return {'now', '0'} end
return {'reserved', tostring(start - now)}
"""


@dataclass(frozen=True, slots=True)
class Admission:
    #: Start now (0), or the seconds to wait.
    delay: float
    #: The wait ends at a start time reserved for this task (it must not reserve again).
    reserved: bool


class RateGate:
    """Admits task starts against the deployment-wide schedule of each limited task name."""

    def __init__(self, redis: "Redis", *, rates: dict[str, float], user_horizon: float) -> None:
        self._redis = redis
        self._script = redis.register_script(_ADMIT)
        self._intervals = {name: 1 / rate for name, rate in rates.items()}
        self._horizon = user_horizon

    def limits(self, task_name: str) -> bool:
        return task_name in self._intervals

    async def admit(self, task_name: str, *, user_id: str) -> Admission:
        interval = self._intervals.get(task_name)
        if interval is None:
            return Admission(delay=0.0, reserved=False)
        reply = await self._script(
            keys=[keys.rate_schedule(task_name), keys.rate_user_reservation(task_name, user_id)],
            args=[time.time(), interval, self._horizon],
        )
        verdict = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        seconds = float(reply[1])
        if verdict == "now":
            return Admission(delay=0.0, reserved=False)
        return Admission(delay=seconds, reserved=verdict == "reserved")
