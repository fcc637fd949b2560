"""The one seam through which the web process starts work: send a task by name.

The web process never imports task bodies; it holds a producer-only Celery app and sends the
task contract's names with ``send_task``, as any foreign Celery producer would. Publishing is a
blocking kombu call, so it runs in a worker thread to keep the event loop free.

Each message carries a repr of its arguments without the user's message (``contract.task_repr``:
Celery copies that repr into its events, Flower and ``celery inspect``) and the time it was sent
(the ``sent_at`` header: the worker measures how long tasks wait in the queue); so does the
message ``app.celery_message`` builds.
"""

import time
from functools import partial

import anyio.to_thread
from celery import Celery

from contract.task_repr import agent_kwargs_repr
from contract.tasks import (
    AGENT_QUEUE,
    DEFAULT_PRIORITY,
    PRIORITIES,
    REDIS_PRIORITY_SEPARATOR,
    SENT_AT_HEADER,
    AgentTaskKwargs,
)


def broker_transport_options() -> dict[str, object]:
    """kombu's Redis transport: a list per priority (what the workers consume)."""
    return {"priority_steps": list(PRIORITIES), "sep": REDIS_PRIORITY_SEPARATOR}


class SubmissionError(RuntimeError):
    """The broker did not take the task; nothing was queued."""


def create_producer(*, broker_url: str) -> Celery:
    """A Celery app that only sends: JSON, no task modules, no worker configuration, and no
    result backend: the web reads results itself (``app.task_status``), and Celery's Redis
    backend would subscribe to, then unsubscribe from, every submitted task's result channel
    (two of a submit's five round trips to Redis)."""
    producer = Celery("agent_service_web", broker=broker_url, backend=None)
    producer.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        broker_connection_retry_on_startup=False,
        # One pooled broker connection per thread that may publish at once (anyio's default
        # thread limit is 40): a smaller pool opens and closes connections under load.
        broker_pool_limit=64,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2},
        broker_transport_options=broker_transport_options(),
        # RabbitMQ: priority queues, declared as the workers declare them.
        task_queue_max_priority=PRIORITIES[-1],
        task_default_priority=DEFAULT_PRIORITY,
    )
    return producer


class TaskSubmitter:
    def __init__(self, producer: Celery) -> None:
        self._producer = producer

    async def submit(
        self, task_name: str, *, task_id: str, kwargs: AgentTaskKwargs, priority: int
    ) -> None:
        """Send the task (``priority`` 0-9, 9 the most urgent, as the workers take it on every
        broker)."""
        send = partial(
            self._producer.send_task,
            task_name,
            kwargs=dict(kwargs),
            task_id=task_id,
            queue=AGENT_QUEUE,
            priority=priority,
            argsrepr="()",
            kwargsrepr=agent_kwargs_repr(kwargs),
            headers={SENT_AT_HEADER: time.time()},
        )
        try:
            await anyio.to_thread.run_sync(send)
        except Exception as exc:
            raise SubmissionError(f"the task queue is unavailable: {type(exc).__name__}") from exc
