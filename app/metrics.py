"""What the web process counts for Prometheus, served at ``/metrics``.

- requests by route (the path template, never the path: ids would make every task a series of
  its own), method and status, and their latency up to the response's first byte (an event
  stream's whole life would drown the other routes' latencies);
- open event streams, events delivered to stream clients, tasks the relay hub is subscribed to,
  listeners, and the hub's Redis connections: read once a second from the relay and the hub by
  ``WebMetrics.follow`` (nothing is counted per event on the relay's path);
- requests refused with ``429``, by the cap that refused them (``refused``, called by the
  handler of ``CapReachedError`` in ``app.errors``).

Each ``create_app`` has a registry of its own. Several web processes behind one port (``uvicorn
--workers N``, gunicorn) are summed when ``PROMETHEUS_MULTIPROC_DIR`` names a directory they
share (emptied before they start): prometheus_client then keeps every process's counts in files
there, and whichever process answers a scrape serves the sum (gauges: of the live processes).
A process that died (a supervisor replaced it) leaves its gauge files behind, and uvicorn's
supervisor has no hook to say so: the process answering a scrape first removes the gauge files of
every process that no longer exists (``mark_process_dead``), so its streams stop counting.
"""

import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from starlette.types import Message, Scope, Send

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
#: The route label of a request that matched no route (its path is not a label: unbounded).
UNMATCHED = "unmatched"
#: Seconds between two readings of the relay and the hub.
FOLLOW_INTERVAL = 1.0
#: A live gauge's file in the multiprocess directory, by the process that writes it.
_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w*_(\d+)\.db")


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class WebMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._multiprocess_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
        registry = self.registry
        self.requests = Counter(
            "agent_service_http_requests",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "agent_service_http_request_duration_seconds",
            "Seconds from a request's arrival to its response's first byte, by route and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "agent_service_http_refused_by_cap",
            "Requests refused with 429, by the per-user cap that refused them.",
            ["cap"],
            registry=registry,
        )
        self.open_streams = self._gauge("agent_service_sse_open_streams", "Open event streams.")
        self.listeners = self._gauge(
            "agent_service_hub_listeners", "Stream clients listening through the relay hub."
        )
        self.subscriptions = self._gauge(
            "agent_service_hub_subscriptions", "Tasks the relay hub is subscribed to."
        )
        self.stream_connections = self._gauge(
            "agent_service_stream_redis_connections",
            "Redis connections the relay hub holds (pub/sub and log reads).",
        )
        self.delivered = Counter(
            "agent_service_sse_events_delivered",
            "Events written to stream clients.",
            registry=registry,
        )

    def _gauge(self, name: str, documentation: str) -> Gauge:
        return Gauge(name, documentation, registry=self.registry, multiprocess_mode="livesum")

    def refused(self, cap: str) -> None:
        """A request refused with 429 by ``cap`` (active tasks, open streams, token mints...)."""
        self.refusals.labels(cap).inc()

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        if self._multiprocess_dir is None:
            return generate_latest(self.registry)
        forget_dead_processes(self._multiprocess_dir)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self._multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(registry)

    def wrap_send(self, scope: Scope, send: Send) -> Send:
        """``send``, counting the response and its latency when it starts."""
        started = time.perf_counter()
        method = scope.get("method", "")

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = _route_of(scope)
                self.latency.labels(route, method).observe(time.perf_counter() - started)
                self.requests.labels(route, method, str(message["status"])).inc()
            await send(message)

        return counted

    @asynccontextmanager
    async def follow(self, services: Any) -> AsyncIterator[None]:
        """While inside, read the relay's and the hub's figures once a second."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._follow_forever, services)
            try:
                yield
            finally:
                group.cancel_scope.cancel()

    async def _follow_forever(self, services: Any) -> None:
        delivered = 0
        while True:
            delivered = self.read(services, delivered_before=delivered)
            await anyio.sleep(FOLLOW_INTERVAL)

    def read(self, services: Any, *, delivered_before: int) -> int:
        """One reading; returns the relay's delivered count, for the next one's difference."""
        relay, hub = services.relay, services.hub
        self.open_streams.set(relay.open_streams)
        self.listeners.set(hub.listener_count)
        self.subscriptions.set(hub.subscription_count)
        self.stream_connections.set(hub.connection_count)
        delivered: int = relay.delivered
        if delivered > delivered_before:
            self.delivered.inc(delivered - delivered_before)
        return delivered


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive
    return True


def forget_dead_processes(directory: str) -> None:
    """Remove the live-gauge files of the processes in ``directory`` that no longer exist."""
    pids = {
        int(match.group(1))
        for name in os.listdir(directory)
        if (match := _LIVE_GAUGE_FILE.fullmatch(name))
    }
    for pid in sorted(pid for pid in pids if not _alive(pid)):
        mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
