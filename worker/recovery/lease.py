"""Prompt recovery of the tasks a dead worker held, instead of after the visibility timeout.

With late acknowledgement, a task delivered to a worker stays in Redis (kombu's ``unacked`` hash)
until the worker acknowledges it; if the worker dies (SIGKILL, a lost machine), kombu hands it to
another worker only after ``visibility_timeout``, an hour by default, which must stay above the
longest time limit. So every worker process keeps a lease, in a daemon thread:

- every ``lease / 3`` seconds it renews, in one pipelined round trip (``PEXPIRE``, which a
  Redis whose memory is full still takes), a ``holder`` key per delivery it holds (received and
  not yet finished; queued in memory, waiting for a rate limit or an ETA, or running) and the
  ``runner`` key of every run it is executing (set by the run's claim). Both expire after
  ``WORKER_LEASE_SECONDS`` unless renewed, so liveness belongs to this process, not to its node
  name: a replacement started under the same name (a container or unit restarted in place) does
  not keep a dead process's deliveries alive;
- at the same pace, one worker at a time (a short Redis lock that outlives a dead scanner by at
  most two renewal periods), it puts back on their queue the deliveries whose holder key has
  lapsed, so that a live worker runs them within about twice the lease (10 s by default: well
  inside 30 s), and sends again the tasks whose message was lost (``worker.recovery.redelivery``).

The new run announces itself on the stream with ``reset``. A delivery whose task has ended, or is
still being run by a live worker, does not run it again (``worker.recovery.claim``).
"""

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import redis
from celery import Celery
from redis.exceptions import LockError

from contract import keys
from worker.observability.logs import log_event
from worker.recovery.redelivery import DeliveryRecovery
from worker.redis_transport import raise_refusals_in_this_thread
from worker.settings import WorkerSettings

logger = logging.getLogger("agent_service.worker.recovery")
CLIENT_NAME = "agent-service:worker:lease"
#: The agent catalogue a worker publishes is written again every this many renewals, and
#: expires a day after the last worker that knew its agents stopped.
CATALOG_EVERY = 20
CATALOG_TTL = 86_400


class WorkerLease:
    """Keeps this process's deliveries and runs alive in Redis, and recovers dead workers'."""

    def __init__(
        self,
        app: "Celery[Any]",
        settings: WorkerSettings,
        *,
        incarnation: str,
        on_recovery: Callable[[int, int], None] | None = None,
    ) -> None:
        self._app = app
        #: Told (deliveries restored, messages sent again) after each recovery pass.
        self._on_recovery = on_recovery
        #: This process, as holder keys name it (node name, pid and a random part).
        self.incarnation = incarnation
        self._lease_ms = settings.worker_lease_seconds * 1000
        self._period = settings.worker_lease_seconds / 3
        self._client = redis.Redis.from_url(
            settings.redis_url_normalised,
            client_name=CLIENT_NAME,
            socket_timeout=5,
            socket_connect_timeout=5,
        )
        self._lock = threading.Lock()
        #: Deliveries held, by task id (a task can be delivered twice to one process).
        self._held: Counter[str] = Counter()
        #: Runs executing here: task id -> run.
        self._running: dict[str, str] = {}
        #: The specs of the agents this worker adds (``contract.agents``), published for the web.
        self._catalog: dict[str, bytes] = {}
        self._renewals = 0
        self._recovery = DeliveryRecovery(
            app, self._client, lease_seconds=settings.worker_lease_seconds
        )
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-lease", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (a warm shutdown has requeued what it held but had not started; what
        it was running has finished)."""
        self._stopping.set()
        if self._thread.ident is not None:  # started
            self._thread.join(timeout=5)
        self._client.close()

    def holding(self, task_id: str) -> None:
        """A delivery of ``task_id`` reached this process (called in the consumer)."""
        with self._lock:
            self._held[task_id] += 1

    def released(self, task_id: str) -> None:
        """A delivery of ``task_id`` is finished with (acknowledged, rejected or revoked)."""
        with self._lock:
            self._held[task_id] -= 1
            if self._held[task_id] <= 0:
                del self._held[task_id]

    def publish_catalog(self, fields: dict[str, bytes]) -> None:
        """Publish these agent specs now, and keep them published while this worker lives."""
        with self._lock:
            self._catalog = dict(fields)
        if fields:
            self._write_catalog(fields)

    def _write_catalog(self, fields: dict[str, bytes]) -> None:
        with self._client.pipeline(transaction=False) as pipe:
            pipe.hset(keys.AGENT_CATALOG, mapping=fields)  # type: ignore[arg-type]
            pipe.expire(keys.AGENT_CATALOG, CATALOG_TTL)
            pipe.execute()

    def running(self, task_id: str, run: str) -> None:
        with self._lock:
            self._running[task_id] = run

    def stopped(self, task_id: str) -> None:
        with self._lock:
            self._running.pop(task_id, None)

    def renew(self) -> None:
        """One renewal of every holder and runner key of this process."""
        with self._lock:
            held = list(self._held)
            running = list(self._running)
            catalog = self._catalog
        self._renewals += 1
        if catalog and self._renewals % CATALOG_EVERY == 0:
            self._write_catalog(catalog)
        if not held and not running:
            return
        # PEXPIRE, not SET: a Redis whose memory is full refuses SET but takes PEXPIRE, so the
        # lease outlives a full memory; only a holder key not there yet (a new delivery, or
        # one that lapsed) is SET, in a second round trip.
        with self._client.pipeline(transaction=False) as pipe:
            for task_id in held:
                pipe.pexpire(keys.task_holder(task_id), self._lease_ms)
            for task_id in running:
                pipe.pexpire(keys.task_runner(task_id), self._lease_ms)
            renewed = pipe.execute()
        missing = [task_id for task_id, kept in zip(held, renewed, strict=False) if not kept]
        if missing:
            with self._client.pipeline(transaction=False) as pipe:
                for task_id in missing:
                    pipe.set(keys.task_holder(task_id), self.incarnation, px=self._lease_ms)
                pipe.execute()

    def _run(self) -> None:
        raise_refusals_in_this_thread()  # a recovery pass must never hold up the renewals
        renewed = time.monotonic()
        while not self._stopping.wait(self._period):
            try:
                self.renew()
                renewed = time.monotonic()
            except (redis.RedisError, OSError) as exc:
                log_event(
                    logger,
                    logging.WARNING,
                    "worker_lease_failed",
                    error=repr(exc),
                    unrenewed_for=round(time.monotonic() - renewed, 1),
                )
                continue
            try:
                restored, resent = self.recover()
                if self._on_recovery is not None:
                    self._on_recovery(restored, resent)
            except (redis.RedisError, OSError) as exc:  # away or full: the next pass tries again
                log_event(logger, logging.WARNING, "dead_worker_recovery_failed", error=repr(exc))
            except Exception:  # never let a bad entry stop the renewals: we would look dead
                logger.exception("recovering dead workers' tasks failed")

    def recover(self) -> tuple[int, int]:
        """One recovery pass (``worker.recovery.redelivery``), if no other worker is making
        one: (deliveries restored, lost messages sent again)."""
        # A lock with an owner token, expiring two renewal periods after it was taken: a
        # scanner that dies holds up the others that long at most.
        lock = self._client.lock(
            keys.RECOVERY_LOCK, timeout=max(2.0, 2 * self._period), blocking=False
        )
        if not lock.acquire():
            return 0, 0
        try:
            return self._recovery.run()
        finally:
            with suppress(LockError):  # expired meanwhile
                lock.release()
