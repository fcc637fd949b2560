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

from streaming import keys
from streaming.events import TERMINAL_TYPES, EventType
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
                self._recover()
            except (redis.RedisError, OSError) as exc:
                log_event(logger, logging.WARNING, "worker_lease_failed", error=repr(exc))

    def _recover(self) -> None:
        if not self._client.set(keys.RECOVERY_LOCK, self._worker_name, nx=True, ex=self._lease):
            return
        try:
            with self._app.connection_for_write() as connection:
                channel: Any = connection.default_channel
                for tag, task_id in self._lapsed_deliveries(channel):
                    channel.qos.restore_by_tag(tag, client=self._client)
                    log_event(
                        logger,
                        logging.WARNING,
                        "task_recovered",
                        task_id=task_id,
                        reason="its worker's lease lapsed",
                    )
        finally:
            self._client.delete(keys.RECOVERY_LOCK)

    def _lapsed_deliveries(self, channel: Any) -> list[tuple[str, str]]:
        """(delivery tag, task id) of deliveries older than the lease with no live holder."""
        ceiling = time.time() - self._lease
        tags: Any = self._client.zrangebyscore(channel.unacked_index_key, 0, ceiling)
        lapsed = []
        for raw_tag in tags:
            tag = raw_tag.decode()
            raw = self._client.hget(channel.unacked_key, tag)
            if raw is None:
                continue
            payload = json.loads(raw)[0]
            task_id = payload.get("headers", {}).get("id")
            if task_id and holder_alive(self._client, task_id) is None:
                lapsed.append((tag, task_id))
        return lapsed


class DuplicateRunError(Exception):
    """This delivery must not run: the task already ended, or runs on another live worker."""


async def claim_run(client: "AsyncRedis", task_id: str, *, worker_name: str) -> int:
    """Check a delivery may run and count its start: the attempt number (1 for the first).

    Raises ``DuplicateRunError`` when the task's log already holds its terminal event (an ack lost
    with a connection) or another live worker is running it (a premature redelivery): calling
    the LLM again would be wasted, or worse, duplicated.
    """
    async with client.pipeline(transaction=False) as pipe:
        pipe.xrevrange(keys.task_events(task_id), count=1)
        pipe.get(keys.task_runner(task_id))
        last_entries, runner = await pipe.execute()
    if last_entries:
        ((_, fields),) = last_entries
        if EventType(fields[b"e"].decode()) in TERMINAL_TYPES:
            raise DuplicateRunError("the task already ended")
    other = runner.decode() if runner is not None else worker_name
    if other != worker_name and await client.exists(keys.worker_alive(other)):
        raise DuplicateRunError(f"the task is running on {other}")
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(keys.task_runner(task_id), worker_name, ex=RUNNER_TTL)
        pipe.incr(keys.task_starts(task_id))
        pipe.expire(keys.task_starts(task_id), RUNNER_TTL)
        _, starts, _ = await pipe.execute()
    return int(starts)
