"""The Celery application: configuration, queues, routes, and two helpers for callers.

``celery -A worker.celery_app worker`` finds ``celery_app`` here. Its configuration keeps the
promises of the task contract: JSON only (never pickle); late acknowledgement and rejection on
worker loss so a killed worker's task is delivered again; a broker visibility timeout above the
longest time limit so Redis never hands a running task to a second worker; task events on, for
Flower; the maintenance jobs' beat schedule, sent once per period however many beats run
(``worker.schedule``).
"""

from typing import Any

import redis
from celery import Celery, signals
from celery.result import AsyncResult
from kombu import Queue

from streaming.cancellation import request_cancel_blocking
from worker.agents.plugins import load_agent_modules, module_names
from worker.base_task import BaseTask
from worker.control import stop_cancel_watcher
from worker.http_client import shared_ssl_context
from worker.logs import install_answer_redaction
from worker.observability import init_sentry
from worker.recovery import WorkerLease
from worker.runtime import note_worker_pool, stop_runtime
from worker.schedule import beat_schedule
from worker.settings import WorkerSettings, get_settings

AGENT_QUEUE = "agent-tasks"
DEFAULT_QUEUE = "agent-service"
CLEANUP_QUEUE = "cleanup-tasks"

TASK_ROUTES = {
    "agent_service.workers.tasks.agent_tasks.*": {"queue": AGENT_QUEUE},
    "agent_service.workers.tasks.cleanup_tasks.*": {"queue": CLEANUP_QUEUE},
}


def create_celery_app(settings: WorkerSettings) -> Celery:
    """A Celery app configured from ``settings``; tasks are imported when a worker starts."""
    app: Celery = Celery(
        "agent_service",
        broker=settings.broker_url,
        backend=settings.result_backend_url,
        include=["worker.tasks.agent_tasks", "worker.tasks.cleanup_tasks"],
        task_cls=BaseTask,
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_default_queue=settings.celery_task_default_queue,
        task_queues=(Queue(DEFAULT_QUEUE), Queue(AGENT_QUEUE), Queue(CLEANUP_QUEUE)),
        task_routes=TASK_ROUTES,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        task_default_retry_delay=settings.celery_task_default_retry_delay,
        task_time_limit=settings.celery_task_time_limit,
        worker_prefetch_multiplier=settings.celery_worker_prefetch_multiplier,
        worker_max_tasks_per_child=settings.celery_worker_max_tasks_per_child,
        worker_concurrency=settings.worker_concurrency,
        result_expires=settings.celery_result_expires,
        # Every pool thread may talk to the result backend at once; redis-py's default pool
        # refuses the 101st connection.
        redis_max_connections=max(200, 2 * settings.worker_concurrency),
        broker_transport_options={"visibility_timeout": settings.celery_broker_visibility_timeout},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=beat_schedule(settings),
        beat_scheduler="worker.schedule:SingleRunScheduler",
    )
    return app


celery_app = create_celery_app(get_settings())


@signals.celeryd_init.connect
@signals.worker_process_init.connect
@signals.beat_init.connect
def _start_error_reporting(**_: Any) -> None:
    init_sentry(get_settings())


@signals.worker_init.connect
def _prepare_worker(sender: Any = None, **_: Any) -> None:
    """Note the pool (it decides ``AGENT_EVENT_LOOP=auto``) and load the CA bundle once, before
    the first task rather than inside it (~48 ms of CPU)."""
    note_worker_pool(getattr(sender, "pool_cls", ""))
    shared_ssl_context()
    install_answer_redaction()
    load_agent_modules(module_names(get_settings().agent_modules))  # a bad one stops the worker


@signals.worker_process_init.connect
def _prepare_child(**_: Any) -> None:
    shared_ssl_context()


_lease: WorkerLease | None = None


@signals.worker_ready.connect
def _start_lease(sender: Any = None, **_: Any) -> None:
    """Renew this worker's liveness and recover dead workers' tasks (``worker.recovery``)."""
    global _lease
    settings = get_settings()
    _lease = WorkerLease(celery_app, settings, worker_name=sender.hostname)
    _lease.start()


@signals.task_received.connect
def _record_holder(sender: Any = None, request: Any = None, **_: Any) -> None:
    if _lease is not None and request is not None:
        _lease.record_holder(request.id)


@signals.worker_shutdown.connect
def _stop_lease(**_: Any) -> None:
    global _lease
    lease, _lease = _lease, None
    if lease is not None:
        lease.stop()


@signals.worker_shutdown.connect
@signals.worker_process_shutdown.connect
def _stop_runtime(**_: Any) -> None:
    """Close the shared loop's clients and stop it, once the pool has finished its tasks."""
    stop_runtime()
    stop_cancel_watcher()


def get_task_info(task_id: str, *, app: Celery | None = None) -> dict[str, Any]:
    """A task's state as plain data: ``task_id, state, ready, successful, result``.

    ``result`` is the return value once successful, the error's text once failed, and the
    progress metadata (``{"progress", "stage"}``) while running.
    """
    result: AsyncResult[Any] = AsyncResult(task_id, app=app or celery_app)
    ready = result.ready()
    successful = result.successful() if ready else False
    value: Any = result.result
    if isinstance(value, BaseException):
        value = f"{type(value).__name__}: {value}"
    return {
        "task_id": task_id,
        "state": result.state,
        "ready": ready,
        "successful": successful,
        "result": value,
    }


def revoke_task(
    task_id: str,
    *,
    terminate: bool = False,
    settings: WorkerSettings | None = None,
) -> None:
    """Make sure ``task_id`` does not run; with ``terminate``, also stop it if it is running.

    Celery's own ``terminate`` kills a prefork child mid-stream (no terminal event) and raises
    NotImplementedError in the threads pool, so a running task is stopped the way
    ``POST /tasks/{id}/cancel`` stops it, in every pool: its LLM stream closed, its stream ended
    with ``cancelled``. A task not yet started ends ``cancelled`` without calling the LLM either
    way. (Celery's ``control.revoke`` is not used: a worker would mark the task REVOKED without
    running it, and its stream would never get its ``cancelled`` event.)
    """
    settings = settings or get_settings()
    client = redis.Redis.from_url(settings.redis_url_normalised, client_name="agent-service:ops")
    try:
        request_cancel_blocking(client, task_id, ttl=settings.task_data_ttl, announce=terminate)
    finally:
        client.close()
