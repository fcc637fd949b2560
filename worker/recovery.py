"""Prompt recovery of the tasks a dead worker held, instead of after the visibility timeout.

With late acknowledgement, a task delivered to a worker stays in Redis (kombu's ``unacked`` hash)
until the worker acknowledges it; if the worker dies (SIGKILL, a lost machine), kombu hands it to
another worker only after ``visibility_timeout``, an hour by default, which must stay above the
longest time limit. So every worker also:

- records itself as the task's holder when it receives a task (``task_received``);
- renews a liveness key every ``lease / 3`` seconds (a daemon thread);
- scans, at the same pace and one worker at a time (a Redis lock), the deliveries older than the
  lease whose holder's liveness key has lapsed, and puts them back on their queue with kombu's own
  restore, so a live worker runs them within about twice the lease (``WORKER_LEASE_SECONDS``,
  10 s by default: well inside 30 s).

The new run announces itself on the stream with ``reset``. A delivery whose task already ended
(its log holds the terminal event) or is running on another live worker does nothing (see the
task's start).
"""

import json
import logging
import threading
import time
from contextlib import suppress
from typing import Any

import redis
from celery import Celery
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import LockError

from streaming import keys
from worker.logs import log_event
from worker.settings import WorkerSettings

logger = logging.getLogger("agent_service.worker.recovery")
CLIENT_NAME = "agent-service:worker:lease"
#: How long the runner and start count of a task are kept (a task never runs longer).
RUNNER_TTL = 86_400


def holder_alive(client: "redis.Redis", task_id: str) -> str | None:
    """The live worker holding ``task_id``, if any."""
    holder: Any = client.get(keys.task_holder(task_id))
    if holder is None:
        return None
    name = str(holder.decode())
    return name if client.exists(keys.worker_alive(name)) else None


class WorkerLease:
    """Keeps this worker's liveness key fresh and recovers dead workers' deliveries."""

    def __init__(self, app: Celery, settings: WorkerSettings, worker_name: str) -> None:
        self._app = app
        self._worker_name = worker_name
        self._lease = settings.worker_lease_seconds
        self._holder_ttl = settings.task_data_ttl
        self._client = redis.Redis.from_url(
            settings.redis_url_normalised, client_name=CLIENT_NAME, socket_timeout=5
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-lease", daemon=True)

    def start(self) -> None:
        self._renew()
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing and let go of the liveness key (a warm shutdown has requeued what it
        held but had not started; what it was running has finished)."""
        self._stopping.set()
        self._thread.join(timeout=5)
        with suppress(redis.RedisError):
            self._client.delete(keys.worker_alive(self._worker_name))
        self._client.close()

    def record_holder(self, task_id: str) -> None:
        """This worker received ``task_id`` (called in the consumer, for every delivery)."""
        try:
            self._client.set(keys.task_holder(task_id), self._worker_name, ex=self._holder_ttl)
        except redis.RedisError as exc:
            log_event(
                logger, logging.WARNING, "holder_not_recorded", task_id=task_id, error=repr(exc)
            )

    def _renew(self) -> None:
        self._client.set(keys.worker_alive(self._worker_name), b"1", ex=self._lease)

    def _run(self) -> None:
        period = self._lease / 3
        while not self._stopping.wait(period):
            try:
                self._renew()
            except (redis.RedisError, OSError) as exc:
                log_event(logger, logging.WARNING, "worker_lease_failed", error=repr(exc))
                continue
            try:
                self._recover()
            except Exception:  # never let a bad entry stop the renewals: we would look dead
                logger.exception("recovering dead workers' tasks failed")

    def _recover(self) -> None:
        # A lock with an owner token: a scan that outlives it cannot release another's lock.
        lock = self._client.lock(keys.RECOVERY_LOCK, timeout=self._lease, blocking=False)
        if not lock.acquire():
            return
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1)
                channel: Any = connection.default_channel
                broker = channel.client  # the broker's Redis, which may not be REDIS_URL's
                for tag, task_id in self._lapsed_deliveries(channel, broker):
                    channel.qos.restore_by_tag(tag, client=broker)
                    log_event(
                        logger,
                        logging.WARNING,
                        "task_recovered",
                        task_id=task_id,
                        reason="its worker's lease lapsed",
                    )
        finally:
            with suppress(LockError):  # expired meanwhile
                lock.release()

    def _lapsed_deliveries(self, channel: Any, broker: Any) -> list[tuple[str, str]]:
        """(delivery tag, task id) of deliveries older than the lease with no live holder."""
        ceiling = time.time() - self._lease
        tags: Any = broker.zrangebyscore(channel.unacked_index_key, 0, ceiling)
        lapsed = []
        for raw_tag in tags:
            tag = raw_tag.decode()
            raw = broker.hget(channel.unacked_key, tag)
            if raw is None:
                continue
            try:
                payload = json.loads(raw)[0]
                task_id = payload.get("headers", {}).get("id")
            except (ValueError, IndexError, AttributeError, TypeError):
                continue  # not a task message of ours: left to the visibility timeout
            if task_id and holder_alive(self._client, task_id) is None:
                lapsed.append((tag, task_id))
        return lapsed


class DuplicateRunError(Exception):
    """This delivery must not run: the task already ended, or runs on another live worker."""


# KEYS: events, runner, starts. ARGV: the runner we saw ('' for none), this worker, ttl.
# Refuses (-1) when the log's last event is terminal, and (-2) when the runner is no longer the one
# we saw (another delivery claimed the task meanwhile); else claims it and counts the start.
_CLAIM_SCRIPT = """
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #last > 0 then
  local fields = last[1][2]
  for i = 1, #fields, 2 do
    if fields[i] == 'e' then
      local kind = fields[i + 1]
      if kind == 'result' or kind == 'error' or kind == 'cancelled' then return -1 end
    end
  end
end
if (redis.call('GET', KEYS[2]) or '') ~= ARGV[1] then return -2 end
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
local starts = redis.call('INCR', KEYS[3])
redis.call('EXPIRE', KEYS[3], ARGV[3])
return starts
"""

# KEYS: runner. ARGV: this worker. Lets go of the task only if this worker still runs it.
_RELEASE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


async def claim_run(client: "AsyncRedis", task_id: str, *, worker_name: str) -> int:
    """Check a delivery may run and count its start: the attempt number (1 for the first).

    Raises ``DuplicateRunError`` when the task's log already holds its terminal event (an ack lost
    with a connection) or another live worker is running it (a premature redelivery): calling
    the LLM again would be wasted, or worse, duplicated. The claim itself is atomic, so two
    deliveries racing for one task cannot both run it.
    """
    claim = client.register_script(_CLAIM_SCRIPT)
    task_keys = [keys.task_events(task_id), keys.task_runner(task_id), keys.task_starts(task_id)]
    for _ in range(3):
        raw: Any = await client.get(keys.task_runner(task_id))
        runner = raw.decode() if raw else ""
        if runner and runner != worker_name and await client.exists(keys.worker_alive(runner)):
            raise DuplicateRunError(f"the task is running on {runner}")
        outcome = int(await claim(keys=task_keys, args=[runner, worker_name, RUNNER_TTL]))
        if outcome == -1:
            raise DuplicateRunError("the task already ended")
        if outcome > 0:
            return outcome
    raise DuplicateRunError("other deliveries kept claiming the task")


async def release_run(client: "AsyncRedis", task_id: str, *, worker_name: str) -> None:
    """This run has ended (done, failed, retrying, cancelled): the next delivery may run it."""
    release = client.register_script(_RELEASE_SCRIPT)
    await release(keys=[keys.task_runner(task_id)], args=[worker_name])
