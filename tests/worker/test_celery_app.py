"""The worker's Celery routing, read from its configuration (nothing talks to a broker)."""

import pytest

from worker.celery_app import AGENT_QUEUE, celery_app
from worker.tasks.agent_tasks import INVOKE_AGENT_ASYNC, INVOKE_AGENT_WITH_STREAMING


@pytest.mark.parametrize("task_name", [INVOKE_AGENT_ASYNC, INVOKE_AGENT_WITH_STREAMING])
def test_route_sends_agent_task_to_agent_queue(task_name: str) -> None:
    assert celery_app.amqp.router.route({}, task_name)["queue"].name == AGENT_QUEUE
