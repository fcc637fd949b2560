"""Where a task's async work runs: an anyio event loop per task, or one per worker process.

``AGENT_EVENT_LOOP`` chooses:

- ``per-task``: ``anyio.run`` per task, with its own HTTP and Redis clients opened and closed
  inside that loop. Works in every pool; natural for prefork and solo, where a process runs one
  task at a time.
- ``shared``: one loop per worker process, in a thread behind a blocking portal, started with the
  first task and stopped when the worker shuts down (after warm shutdown let running tasks end).
  Each Celery task runs its call as a task of that loop, in a cancel scope of its own, so time
  limits and errors stay per task, while the HTTP and Redis clients (and their connections) are
  shared by every task of the process. This is the fast mode for the threads pool: with a loop per
  task, each token wakes its own thread and a hundred threads fight for the GIL; one loop wakes
  once for many ready sockets. A monitor logs every stall of that loop longer than
  ``LOOP_LAG_WARNING_MS``, with the tasks running then (``worker.runtime.loop_monitor``).
- ``auto`` (default): ``shared`` in the threads pool, ``per-task`` otherwise.

Either kind of loop runs on uvloop where it is installed (``AGENT_UVLOOP``, on by default: less
worker CPU per streamed token, measured in bench/README.md); ``AGENT_UVLOOP=false`` keeps
asyncio's own loop.

In both, the time limit is a cancel scope inside the loop (the threads pool ignores Celery's
signal-based limits): when it runs out, the call is cancelled (its HTTP stream closed) and
``AgentTimeoutError`` is raised. The runtime belongs to the process's ``WorkerProcess``, which
creates it with the first task and stops it when the worker shuts down.
"""

import asyncio
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from concurrent.futures import Future
from contextlib import AbstractContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import anyio
import httpx
from anyio.from_thread import BlockingPortal, start_blocking_portal
from redis.asyncio import BlockingConnectionPool, Redis

from storage.audit import AuditLog
from storage.database import LazyDatabase
from streaming.event_writer import EventWriter
from streaming.redis_retry import reconnect_retry
from worker.agents.llm_session import LazyLLMSession
from worker.errors import AgentTimeoutError
from worker.runtime.http_client import open_http_client
from worker.runtime.loop_monitor import LoopLagMonitor
from worker.settings import WorkerSettings

T = TypeVar("T")
CLIENT_NAME = "agent-service:worker"
#: Seconds a command may wait for a free connection of the loop's pool.
POOL_WAIT_SECONDS = 20
#: Seconds the shared loop gathers audit rows into one transaction.
AUDIT_BATCH_WINDOW = 0.01


@dataclass(frozen=True, slots=True)
class LoopResources:
    """What a task's async work may use: clients bound to the loop it runs on. The database
    engine is opened by the first task that needs it."""

    http: httpx.AsyncClient
    #: The built-in LLM client's aiohttp session, opened by the first agent that calls the LLM.
    llm_session: LazyLLMSession
    redis: "Redis"
    #: Celery's result backend: ``redis`` itself unless the backend is another database.
    backend: "Redis"
    database: LazyDatabase
    audit: AuditLog
    #: Appends the events of every task on the loop, one round trip per coalescing window.
    events: EventWriter


TaskCall = Callable[[LoopResources], Awaitable[T]]


class AgentRuntime(Protocol):
    mode: str

    def run(self, fn: TaskCall[T], *, time_limit: float, task_id: str | None = None) -> T: ...

    def stop(self) -> None: ...


def _uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:  # not on Windows or PyPy, or a broken build
        return False
    return True


def _backend_options(settings: WorkerSettings) -> dict[str, object]:
    """asyncio's options: uvloop's event loop when ``AGENT_UVLOOP`` asks for it (the default)
    and it imports."""
    return {"use_uvloop": settings.agent_uvloop and _uvloop_available()}


def _redis(url: str, *, connections: int) -> "Redis":
    # A blocking pool sized for every task of the loop at once: redis-py's default pool (100
    # connections) fails the 101st concurrent command instead of letting it wait.
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=POOL_WAIT_SECONDS,
        client_name=CLIENT_NAME,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=reconnect_retry(),  # connections pooled before a Redis restart are dead
    )
    return Redis(connection_pool=pool)


@asynccontextmanager
async def open_loop_resources(
    settings: WorkerSettings, *, shared: bool, tls: ssl.SSLContext
) -> AsyncIterator[LoopResources]:
    """Open the clients of one loop; closed when the loop's work is done."""
    connections = settings.worker_concurrency + 16 if shared else 8
    redis = _redis(settings.redis_url_normalised, connections=connections)
    backend = redis
    if settings.result_backend_url != settings.redis_url_normalised:
        backend = _redis(settings.result_backend_url, connections=connections)
    database = LazyDatabase(settings.database_url_async, pool_size=settings.database_pool_size)
    llm_session = LazyLLMSession(tls=tls)
    try:
        async with (
            open_http_client(settings, shared=shared, tls=tls) as http,
            EventWriter(
                redis,
                maxlen=settings.event_log_maxlen,
                ttl=settings.task_data_ttl,
                window=settings.stream_coalesce_window,
                state_expires=settings.celery_result_expires,
                backend=None if backend is redis else backend,
                outage_limit=settings.redis_outage_limit,
            ) as events,
        ):
            yield LoopResources(
                http=http,
                llm_session=llm_session,
                redis=redis,
                backend=backend,
                database=database,
                # On the shared loop, the outcome rows of tasks ending together share a commit.
                audit=AuditLog(database, batch_window=AUDIT_BATCH_WINDOW if shared else 0.0),
                events=events,
            )
    finally:
        with anyio.CancelScope(shield=True):
            await llm_session.aclose()
            await database.aclose()
            if backend is not redis:
                await backend.aclose()
            await redis.aclose()


async def _bounded(fn: TaskCall[T], resources: LoopResources, time_limit: float) -> T:
    with anyio.move_on_after(time_limit):
        return await fn(resources)
    raise AgentTimeoutError(f"the agent did not finish within its time limit ({time_limit:g} s)")


class PerTaskRuntime:
    mode = "per-task"

    def __init__(self, settings: WorkerSettings, *, tls: ssl.SSLContext) -> None:
        self._settings = settings
        self._tls = tls

    def run(self, fn: TaskCall[T], *, time_limit: float, task_id: str | None = None) -> T:
        async def main() -> T:
            async with open_loop_resources(
                self._settings, shared=False, tls=self._tls
            ) as resources:
                return await _bounded(fn, resources, time_limit)

        return anyio.run(main, backend_options=_backend_options(self._settings))

    def stop(self) -> None:
        pass


class SharedLoopRuntime:
    mode = "shared"

    def __init__(self, settings: WorkerSettings, *, tls: ssl.SSLContext) -> None:
        self._settings = settings
        self._tls = tls
        self._lock = threading.Lock()
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._resources_cm: AbstractContextManager[LoopResources] | None = None
        self._portal: BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resources: LoopResources | None = None
        self._running: set[str] = set()
        self._monitor_future: Future[None] | None = None
        self.monitor = LoopLagMonitor(
            threshold=settings.loop_lag_warning_ms / 1000, running=lambda: list(self._running)
        )

    def _start(self) -> tuple[asyncio.AbstractEventLoop, LoopResources]:
        with self._lock:
            if self._loop is None or self._resources is None:
                self._portal_cm = start_blocking_portal(
                    backend="asyncio", backend_options=_backend_options(self._settings)
                )
                portal = self._portal_cm.__enter__()
                self._resources_cm = portal.wrap_async_context_manager(
                    open_loop_resources(self._settings, shared=True, tls=self._tls)
                )
                self._resources = self._resources_cm.__enter__()
                self._monitor_future = portal.start_task_soon(self.monitor.run)
                self._portal = portal
                self._loop = portal.call(asyncio.get_running_loop)
            return self._loop, self._resources

    def run(self, fn: TaskCall[T], *, time_limit: float, task_id: str | None = None) -> T:
        loop, resources = self._start()
        if task_id is None:
            return _call_on(loop, _bounded(fn, resources, time_limit))
        self._running.add(task_id)
        try:
            return _call_on(loop, _bounded(fn, resources, time_limit))
        finally:
            self._running.discard(task_id)

    def stop(self) -> None:
        """Close the shared clients and stop the loop (after the running tasks have ended)."""
        with self._lock:
            resources_cm, self._resources_cm = self._resources_cm, None
            portal_cm, self._portal_cm = self._portal_cm, None
            monitor, self._monitor_future = self._monitor_future, None
            self._portal = self._loop = self._resources = None
        if monitor is not None:
            monitor.cancel()
        if resources_cm is not None:
            resources_cm.__exit__(None, None, None)
        if portal_cm is not None:
            portal_cm.__exit__(None, None, None)


def _call_on(loop: asyncio.AbstractEventLoop, call: Coroutine[Any, Any, T]) -> T:
    """Run ``call`` as a task of ``loop`` (in another thread) and wait for its end: one
    hand-off there and one back, where the portal's ``call`` makes two (it waits for the task
    to be spawned, then for its result)."""
    return asyncio.run_coroutine_threadsafe(call, loop).result()


def resolve_mode(setting: str, pool_name: str) -> str:
    """``AGENT_EVENT_LOOP=auto`` is ``shared`` in the threads pool, ``per-task`` otherwise."""
    if setting != "auto":
        return setting
    return "shared" if "thread" in pool_name.lower() else "per-task"


def create_runtime(
    settings: WorkerSettings, *, pool_name: str, tls: ssl.SSLContext
) -> AgentRuntime:
    """The runtime ``AGENT_EVENT_LOOP`` asks for in a worker of ``pool_name``."""
    if resolve_mode(settings.agent_event_loop, pool_name) == "shared":
        return SharedLoopRuntime(settings, tls=tls)
    return PerTaskRuntime(settings, tls=tls)
