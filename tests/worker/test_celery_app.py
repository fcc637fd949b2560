"""The worker's Celery configuration, read from its settings (nothing talks to a broker)."""

import re

import pytest

from contract.tasks import AGENT_QUEUE, CLEANUP_QUEUE, CLEANUP_TASKS, DEFAULT_QUEUE, TIME_LIMITS
from worker.celery_app import celery_app
from worker.config import celery_config
from worker.settings import WorkerSettings


@pytest.mark.parametrize("task_name", sorted(TIME_LIMITS))
def test_route_sends_agent_task_to_agent_queue(task_name: str) -> None:
    assert celery_app.amqp.router.route({}, task_name)["queue"].name == AGENT_QUEUE


@pytest.mark.parametrize("task_name", CLEANUP_TASKS)
def test_route_sends_maintenance_to_its_own_queue(task_name: str) -> None:
    assert celery_app.amqp.router.route({}, task_name)["queue"].name == CLEANUP_QUEUE


def test_task_limits_come_from_the_settings() -> None:
    settings = WorkerSettings(
        _env_file=None,
        celery_task_time_limit=300,
        celery_task_soft_time_limit=200,
        celery_task_max_retries=5,
        streaming_task_rate_limit="7/m",
    )

    annotations = celery_config(settings)["task_annotations"]

    for name in TIME_LIMITS:
        assert annotations[name]["time_limit"] == 300
        assert annotations[name]["max_retries"] == 5
        assert "rate_limit" not in annotations[name]  # the deployment's, not Celery's per worker
    streaming = "agent_service.workers.tasks.agent_tasks.invoke_agent_with_streaming"
    assert settings.task_rates()[streaming] == pytest.approx(7 / 60)


@pytest.mark.parametrize("text", ["100", "100/d", "-1/m", "0/s", "fast"])
def test_a_rate_limit_that_does_not_read_is_refused_naming_the_form(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape("<calls>/<s|m|h>")):
        WorkerSettings(_env_file=None, agent_task_rate_limit=text)


def test_the_worker_registers_every_task_of_the_contract() -> None:
    celery_app.loader.import_default_modules()  # what a worker does when it starts
    registered = set(celery_app.tasks)

    assert set(TIME_LIMITS) <= registered
    assert set(CLEANUP_TASKS) <= registered


def test_the_worker_declares_every_queue_of_the_contract() -> None:
    queues = {queue.name for queue in celery_app.conf.task_queues}

    assert queues == {AGENT_QUEUE, CLEANUP_QUEUE, DEFAULT_QUEUE}
