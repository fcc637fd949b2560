"""What a worker process counts for Prometheus, and the port it serves the counts on.

Every worker process counts its tasks by name and outcome, how long they ran and waited in the
queue, the tokens it streamed, the LLM's errors by class, retries, and the dead workers'
deliveries it recovered and lost messages it sent again; at each scrape it adds the shared event
loop's lag and the depth of every queue. ``WORKER_METRICS_PORT`` serves them (unset: counted,
not served), in production only to the scrapes the web's ``/metrics`` would answer
(``metrics_server``). ``WorkerMetrics`` belongs to the process's ``WorkerProcess``; nothing is
registered at import time.

In the prefork pool, tasks run in child processes: the counts are then kept in files, one per
child, in a directory of the worker's own (prometheus_client's multiprocess mode), and the
parent's port serves their sum, so a child replaced after ``CELERY_WORKER_MAX_TASKS_PER_CHILD``
tasks keeps its counts. The threads and solo pools count in memory.

On the hot path a streamed token costs one increment of a counter whose labels were resolved
once per attempt (``worker.observability.observer``); a label lookup per token would cost more.
"""

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol
from wsgiref.simple_server import WSGIServer

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from contract.tasks import AGENT_QUEUE, CLEANUP_QUEUE, DEFAULT_QUEUE, PRIORITIES, redis_queue_list
from worker.errors import (
    LLMConnectionError,
    LLMProtocolError,
    LLMRequestRejectedError,
    LLMUnavailableError,
)
from worker.observability.metrics_server import serve_metrics
from worker.settings import WorkerSettings

logger = logging.getLogger("agent_service.worker.metrics")

#: The errors that say the LLM failed (as opposed to the agent, Redis or the database).
LLM_ERRORS = (LLMUnavailableError, LLMConnectionError, LLMRequestRejectedError, LLMProtocolError)
#: kombu's hash of deliveries taken and not yet acknowledged.
UNACKED_KEY = "unacked"
QUEUES = (AGENT_QUEUE, DEFAULT_QUEUE, CLEANUP_QUEUE)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900)
QUEUED_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)


class LoopLag(Protocol):
    """What the shared loop's monitor knows (``worker.runtime.loop_monitor``)."""

    lag: float
    max_lag: float


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.tasks = Counter(
            "agent_service_tasks",
            "Task deliveries by task and outcome (completed, failed, cancelled, retrying, "
            "deferred: its rate limit sent it back for later, skipped: it had ended already, "
            "requeued: its outcome could not be stored).",
            ["task", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "agent_service_task_duration_seconds",
            "How long a delivery ran, by task and outcome.",
            ["task", "outcome"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queued = Histogram(
            "agent_service_task_queued_seconds",
            "How long a task waited from being sent (or its retry being due) to starting.",
            ["task"],
            buckets=QUEUED_BUCKETS,
            registry=registry,
        )
        self.tokens = Counter(
            "agent_service_tokens_streamed",
            "Tokens (chunks of the answer as the agent produced them) streamed, by task.",
            ["task"],
            registry=registry,
        )
        self.llm_errors = Counter(
            "agent_service_llm_errors",
            "Deliveries that ended on an LLM error, by its class (retried or not).",
            ["error"],
            registry=registry,
        )
        self.retries = Counter(
            "agent_service_task_retries",
            "Retries scheduled, by task and the error that caused them.",
            ["task", "error"],
            registry=registry,
        )
        self.recovered = Counter(
            "agent_service_deliveries_recovered",
            "Deliveries of dead workers put back on their queue by this process.",
            registry=registry,
        )
        self.resent = Counter(
            "agent_service_lost_messages_resent",
            "Tasks sent again by this process: their message was lost, or their web process "
            "recorded them and never sent them.",
            registry=registry,
        )

    def delivery_ended(
        self,
        task: str,
        outcome: str,
        *,
        seconds: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.tasks.labels(task, outcome).inc()
        if seconds is not None:
            self.duration.labels(task, outcome).observe(seconds)
        if error is None:
            return
        if isinstance(error, LLM_ERRORS):
            self.llm_errors.labels(type(error).__name__).inc()
        if outcome == "retrying":
            self.retries.labels(task, type(error).__name__).inc()

    def waited(self, task: str, seconds: float) -> None:
        self.queued.labels(task).observe(max(0.0, seconds))

    def recovery(self, restored: int, resent: int) -> None:
        if restored:
            self.recovered.inc(restored)
        if resent:
            self.resent.inc(resent)


class QueueDepthCollector(Collector):
    """At each scrape: the messages waiting in each queue, and the deliveries taken and not
    yet acknowledged, read from the broker (one pipelined round trip)."""

    def __init__(self, broker_url: str, *, queues: Iterable[str] = QUEUES) -> None:
        self._queues = tuple(queues)
        self._client = redis.Redis.from_url(
            broker_url,
            client_name="agent-service:worker:metrics",
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def collect(self) -> Iterator[Metric]:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for queue in self._queues:
                    for priority in PRIORITIES:  # a list per priority (contract.tasks)
                        pipe.llen(redis_queue_list(queue, priority))
                pipe.hlen(UNACKED_KEY)
                replies = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            logger.warning("metrics: the queue depths could not be read: %r", exc)
            return
        depth = GaugeMetricFamily(
            "agent_service_queue_depth", "Messages waiting in each queue.", labels=["queue"]
        )
        steps = len(PRIORITIES)
        for i, queue in enumerate(self._queues):
            depth.add_metric([queue], sum(replies[i * steps : (i + 1) * steps]))
        yield depth
        yield GaugeMetricFamily(
            "agent_service_unacknowledged_deliveries",
            "Deliveries taken by a worker and not yet acknowledged (running, or prefetched).",
            value=replies[-1],
        )

    def close(self) -> None:
        self._client.close()


class LoopLagCollector(Collector):
    """At each scrape: the shared event loop's lag, as its monitor last measured it."""

    def __init__(self, monitor: Callable[[], LoopLag | None]) -> None:
        self._monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self._monitor()
        if monitor is None:  # no shared loop (prefork, solo), or not started yet
            return
        yield GaugeMetricFamily(
            "agent_service_event_loop_lag_seconds",
            "How late the shared event loop woke up last (a blocking call holds every task).",
            value=monitor.lag,
        )
        yield GaugeMetricFamily(
            "agent_service_event_loop_lag_max_seconds",
            "The longest the shared event loop was late since the worker started.",
            value=monitor.max_lag,
        )


class MetricsExporter:
    """The worker's counts and the port that serves them; ``close`` stops serving and removes
    the multiprocess directory."""

    def __init__(self, settings: WorkerSettings, *, multiprocess: bool) -> None:
        self._settings = settings
        self._directory: str | None = None
        if multiprocess:
            # Forked children inherit this: their counts go to files of their own.
            self._directory = tempfile.mkdtemp(prefix="agent-service-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = self._directory
            values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
        self._registry = CollectorRegistry(auto_describe=True)
        self.metrics = WorkerMetrics(self._registry)
        self._collectors: list[QueueDepthCollector] = []
        self._server: WSGIServer | None = None

    def serve(self, *, loop_lag: Callable[[], LoopLag | None]) -> None:
        """Serve on ``WORKER_METRICS_PORT`` (when set), from a thread of its own."""
        port = self._settings.worker_metrics_port
        if port is None:
            return
        registry = self._registry
        if self._directory is not None:  # the children's counts, from their files
            registry = CollectorRegistry(auto_describe=True)
            MultiProcessCollector(registry, path=self._directory)  # type: ignore[no-untyped-call]
        broker_url = self._settings.broker_url
        if broker_url.startswith(REDIS_SCHEMES):  # queue lists to count (RabbitMQ: its own UI)
            queues = QueueDepthCollector(broker_url)
            self._collectors.append(queues)
            registry.register(queues)
        registry.register(LoopLagCollector(loop_lag))
        self._server = serve_metrics(registry, self._settings, port)
        if self._settings.environment == "production" and not (
            self._settings.metrics_token or self._settings.metrics_networks
        ):
            logger.warning(
                "the metrics port refuses every scrape in production: set METRICS_TOKEN or "
                "METRICS_ALLOWED_NETWORKS"
            )
        logger.info("metrics on http://%s:%d/metrics", self._settings.worker_metrics_address, port)

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        for collector in self._collectors:
            collector.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
