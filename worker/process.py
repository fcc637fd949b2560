"""Everything one worker process owns, in one object, opened and closed by Celery's signals.

A worker process holds: its settings, read once; the TLS context every HTTP client shares; the
runtime that runs tasks' async work (one loop per task, or one shared loop); the cancel watcher
that delivers cancel requests into running tasks; the lease that keeps its deliveries alive
and recovers dead workers'; and its metrics (a prefork child shares its parent's, which sum the
children's counts). ``worker.celery_app`` creates the process's ``WorkerProcess`` when
the worker starts (``worker_init``, and again in each prefork child, ``worker_process_init``)
and closes it when it shuts down; tasks reach it with ``WorkerProcess.current()``.

Each part is started when first needed (a cleanup worker never starts a cancel watcher), under
one lock, and closed in reverse order.
"""

import asyncio
import logging
import os
import ssl
import threading
import uuid
from typing import Any, ClassVar

import redis
from celery import Celery

from contract.agents import encode_specs
from storage.database import Database
from storage.schema import SchemaStatus, schema_status
from streaming.cancellation import CancelWatcher
from streaming.memory_policy import eviction_risk
from worker.agents.plugins import plugin_specs
from worker.observability.logs import log_event
from worker.observability.metrics import LoopLag, MetricsExporter, WorkerMetrics
from worker.observability.progress_events import ProgressEvents
from worker.recovery.lease import WorkerLease
from worker.runtime.cancellation import start_cancel_watcher
from worker.runtime.http_client import create_tls_context
from worker.runtime.loop import AgentRuntime, create_runtime
from worker.settings import WorkerSettings, get_settings

logger = logging.getLogger("agent_service.worker")


class WorkerProcess:
    _current: ClassVar["WorkerProcess | None"] = None
    _current_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        app: "Celery[Any]",
        node_name: str = "",
        pool_name: str = "",
        exporter: MetricsExporter | None = None,
    ) -> None:
        self.settings = settings
        self.app = app
        self.pool_name = pool_name
        #: This process in holder keys: its node, pid and a random part, so that a process
        #: restarted under the same node name is a different holder.
        self.incarnation = f"{node_name or 'worker'}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self.tls: ssl.SSLContext = create_tls_context()
        #: Deployment-wide starts per second of the rate-limited tasks (``worker.tasks``'s
        #: rate limits), from the settings.
        self.rates = settings.task_rates()
        self._lock = threading.Lock()
        self._runtime: AgentRuntime | None = None
        self._watcher: CancelWatcher | None = None
        self._lease: WorkerLease | None = None
        #: A prefork child counts into its parent's exporter, which only the parent closes.
        self._owns_exporter = exporter is None
        self.exporter = exporter or MetricsExporter(
            settings, multiprocess="prefork" in pool_name.lower()
        )
        #: Progress reports as task events, for Flower (sent while task events are on).
        self.progress = ProgressEvents(app)

    @property
    def metrics(self) -> WorkerMetrics:
        return self.exporter.metrics

    def serve_metrics(self) -> None:
        """Serve the metrics on ``WORKER_METRICS_PORT`` (when set)."""
        self.exporter.serve(loop_lag=self._loop_lag)

    def _loop_lag(self) -> LoopLag | None:
        monitor: LoopLag | None = getattr(self._runtime, "monitor", None)
        return monitor

    @classmethod
    def current(cls) -> "WorkerProcess":
        """This process's ``WorkerProcess``; one is created on first use where no worker signal
        made one (a task run by a program that is not a worker)."""
        if cls._current is None:
            with cls._current_lock:
                if cls._current is None:
                    from worker.celery_app import celery_app  # here: celery_app imports this module

                    cls._current = cls(get_settings(), app=celery_app)
        return cls._current

    @classmethod
    def open(cls, process: "WorkerProcess") -> "WorkerProcess":
        """Make ``process`` this process's, closing the one it replaces (a prefork child
        inherits its parent's, whose threads did not survive the fork)."""
        with cls._current_lock:
            previous, cls._current = cls._current, process
        if previous is not None:
            previous.forget()
        return process

    @classmethod
    def close_current(cls) -> None:
        with cls._current_lock:
            process, cls._current = cls._current, None
        if process is not None:
            process.close()

    @property
    def runtime(self) -> AgentRuntime:
        if self._runtime is None:
            with self._lock:
                if self._runtime is None:
                    self._runtime = create_runtime(
                        self.settings, pool_name=self.pool_name, tls=self.tls
                    )
        return self._runtime

    @property
    def cancel_watcher(self) -> CancelWatcher:
        if self._watcher is None:
            with self._lock:
                if self._watcher is None:
                    self._watcher = start_cancel_watcher(self.settings)
        return self._watcher

    @property
    def lease(self) -> WorkerLease:
        """The lease: started when the worker is ready (it recovers dead workers' tasks even
        while this one is idle), or by the first run in a prefork child."""
        if self._lease is None:
            with self._lock:
                if self._lease is None:
                    lease = WorkerLease(
                        self.app,
                        self.settings,
                        incarnation=self.incarnation,
                        on_recovery=self.metrics.recovery,
                    )
                    lease.start()
                    self._lease = lease
        return self._lease

    def check_database(self) -> SchemaStatus | None:
        """Say once, at start, if the database's schema is behind the code (every audit row and
        session write would fail) or the database does not answer; the status, if known."""
        database = Database(self.settings.database_url_async, pool_size=1)

        async def check() -> SchemaStatus:
            try:
                return await schema_status(database.engine)
            finally:
                await database.aclose()

        try:
            status = asyncio.run(check())
        except Exception as exc:
            log_event(logger, logging.WARNING, "database_unreachable", error=repr(exc)[:300])
            return None
        if not status.up_to_date:
            log_event(logger, logging.ERROR, "database_schema_behind", detail=status.describe())
        return status

    def check_redis(self) -> None:
        """Say once, at start, if Redis would delete keys when its memory is full
        (``streaming.memory_policy``); a Redis that does not answer is the lease's to report."""
        client = redis.Redis.from_url(
            self.settings.redis_url_normalised,
            client_name="agent-service:worker:checks",
            socket_timeout=5,
            socket_connect_timeout=5,
        )
        try:
            risk = eviction_risk(client.info("memory"))
        except (redis.RedisError, OSError):
            return
        finally:
            client.close()
        if risk is not None:
            log_event(logger, logging.WARNING, "redis_evicts_keys", detail=risk)

    def publish_agents(self) -> None:
        """Tell the web which agents this worker adds (``AGENT_MODULES``): their specs go to
        Redis, where the web reads them (``contract.agents``)."""
        specs = plugin_specs(self.settings.agent_modules)
        self.lease.publish_catalog(encode_specs(specs))

    @property
    def lease_if_started(self) -> WorkerLease | None:
        return self._lease

    def close(self) -> None:
        """Stop the lease, the runtime (after the running tasks ended) and the watcher."""
        with self._lock:
            lease, self._lease = self._lease, None
            runtime, self._runtime = self._runtime, None
            watcher, self._watcher = self._watcher, None
        if lease is not None:
            lease.stop()
        if runtime is not None:
            runtime.stop()
        if watcher is not None:
            watcher.stop()
        self.progress.close()
        if self._owns_exporter:
            self.exporter.close()

    def forget(self) -> None:
        """Drop what a fork inherited without running it (its threads are the parent's)."""
        with self._lock:
            self._lease = self._runtime = self._watcher = None
