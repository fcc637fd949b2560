"""Celery's configuration, from the worker's settings.

It keeps the promises of the task contract: JSON only (never pickle); late acknowledgement and
rejection on worker loss so a killed worker's task is delivered again; a broker visibility timeout
above the longest time limit so Redis never hands a running task to a second worker; the queues
and routes of ``contract.tasks``; each task's hard time limit, retries and rate limit from the
settings (``task_annotations``: applied when the tasks are bound, so importing a task module reads
no settings); the maintenance jobs' beat schedule, sent once per period however many beats run.

Task events (what Flower shows) are off by default: each costs a publish per task state; Flower
turns them on in the workers when it starts (``celery control enable_events``), and
``CELERY_WORKER_SEND_TASK_EVENTS=true`` turns them on from the start.
"""

from typing import Any

from kombu import Queue

from contract.tasks import (
    AGENT_QUEUE,
    AGENT_TASK_PREFIX,
    CLEANUP_QUEUE,
    CLEANUP_TASK_PREFIX,
    CLEANUP_TASKS,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    PRIORITIES,
    REDIS_PRIORITY_SEPARATOR,
    TIME_LIMITS,
)
from worker.maintenance.schedule import beat_schedule
from worker.redis_transport import BROKER_TRANSPORT
from worker.settings import WorkerSettings

TASK_ROUTES = {
    f"{AGENT_TASK_PREFIX}*": {"queue": AGENT_QUEUE},
    f"{CLEANUP_TASK_PREFIX}*": {"queue": CLEANUP_QUEUE},
}


def task_annotations(settings: WorkerSettings) -> dict[str, dict[str, Any]]:
    """Per task: Celery's hard time limit (the backstop in prefork; the soft limit is enforced
    inside the event loop) and the retries allowed. Rate limits are the deployment's, not
    Celery's per process (``worker.tasks.rate_limits``)."""
    annotations: dict[str, dict[str, Any]] = {}
    for name, limit in TIME_LIMITS.items():
        _, hard = settings.time_limits(limit)
        annotations[name] = {"time_limit": hard, "max_retries": settings.celery_task_max_retries}
    _, cleanup_hard = settings.time_limits(settings.celery_task_time_limit)
    for name in CLEANUP_TASKS:
        annotations[name] = {"time_limit": cleanup_hard}
    return annotations


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """Every Celery setting the worker, beat and ``celery`` commands use."""
    redis_broker = settings.broker_url.startswith(("redis://", "rediss://"))
    return {
        "broker_url": settings.broker_url,
        # Our Redis transport: it outlives a Redis restart under Celery 5.7, and takes the most
        # urgent priority first (worker.redis_transport).
        **({"broker_transport": BROKER_TRANSPORT} if redis_broker else {}),
        "result_backend": settings.result_backend_url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_default_queue": settings.celery_task_default_queue,
        "task_queues": (Queue(DEFAULT_QUEUE), Queue(AGENT_QUEUE), Queue(CLEANUP_QUEUE)),
        # RabbitMQ: priority queues (x-max-priority), declared alike by the web's producer.
        "task_queue_max_priority": PRIORITIES[-1],
        "task_default_priority": DEFAULT_PRIORITY,
        "task_routes": TASK_ROUTES,
        "task_annotations": task_annotations(settings),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": False,
        "task_send_sent_event": False,
        "worker_send_task_events": settings.celery_worker_send_task_events,
        "task_default_retry_delay": settings.celery_task_default_retry_delay,
        "task_time_limit": settings.celery_task_time_limit,
        # A retry's next attempt is published through a Redis restart rather than lost.
        "task_publish_retry_policy": {
            "max_retries": 30,
            "interval_start": 0.1,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
        "worker_prefetch_multiplier": settings.celery_worker_prefetch_multiplier,
        "worker_max_tasks_per_child": settings.celery_worker_max_tasks_per_child,
        "worker_concurrency": settings.worker_concurrency,
        "result_expires": settings.celery_result_expires,
        # Every pool thread may talk to the result backend at once; redis-py's default pool
        # refuses the 101st connection.
        "redis_max_connections": max(200, 2 * settings.worker_concurrency),
        "broker_transport_options": {
            "visibility_timeout": settings.celery_broker_visibility_timeout,
            # A list per priority (0-9), as the web sends them (app.acceptance).
            "sep": REDIS_PRIORITY_SEPARATOR,
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "worker_hijack_root_logger": True,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": beat_schedule(settings),
        "beat_scheduler": "worker.maintenance.schedule:SingleRunScheduler",
    }
