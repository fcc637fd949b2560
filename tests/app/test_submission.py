"""The web process sends exactly the task names and queue the worker consumes.

Importing ``worker.celery_app`` builds a Celery app from the environment; nothing here talks to a
broker.
"""

from app import submission
from worker import celery_app as worker_celery_app
from worker.tasks import agent_tasks


def test_invoke_agent_async_name_matches_worker_task() -> None:
    assert submission.INVOKE_AGENT_ASYNC == agent_tasks.INVOKE_AGENT_ASYNC
    assert agent_tasks.invoke_agent_async.name == submission.INVOKE_AGENT_ASYNC


def test_invoke_agent_with_streaming_name_matches_worker_task() -> None:
    assert submission.INVOKE_AGENT_WITH_STREAMING == agent_tasks.INVOKE_AGENT_WITH_STREAMING
    assert agent_tasks.invoke_agent_with_streaming.name == submission.INVOKE_AGENT_WITH_STREAMING


def test_agent_queue_matches_worker_queue() -> None:
    assert submission.AGENT_QUEUE == worker_celery_app.AGENT_QUEUE == "agent-tasks"


def test_worker_registers_both_task_names_the_web_process_sends() -> None:
    registered = worker_celery_app.celery_app.tasks

    assert submission.INVOKE_AGENT_ASYNC in registered
    assert submission.INVOKE_AGENT_WITH_STREAMING in registered


def test_worker_consumes_the_queue_the_web_process_sends_to() -> None:
    queues = {queue.name for queue in worker_celery_app.celery_app.conf.task_queues}

    assert submission.AGENT_QUEUE in queues
