"""Flower against the real workers: it turns their task events on by itself, shows the agent
tasks under the contract's names with their progress, never shows a message or an answer, and
its revoke stops a running task the way the cancel endpoint does."""

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from contract.tasks import INVOKE_AGENT_WITH_STREAMING
from tests.e2e.conftest import OpsStack
from teststack.flower import Flower, procfile_flower
from teststack.llm.control import LLMControl
from teststack.polling import submit
from teststack.processes import wait_for
from teststack.sse import events_path, read_stream
from teststack.stack import headers_for
from teststack.task_log import last_entry

ALICE = headers_for("alice")
AUTH = ("operator", "flower-test-password")
EVENTS_ENABLED = "Events of group {task} enabled by remote"


@pytest.fixture(scope="module")
def flower(ops_stack: OpsStack) -> Iterator[Flower]:
    assert ops_stack.worker is not None
    # The worker started with task events off (the default): Flower must turn them on.
    assert EVENTS_ENABLED not in ops_stack.worker.output(tail=10**7)
    flower = Flower(ops_stack.redis_url, auth=AUTH).start()
    try:
        ops_stack.worker.wait_for_output(EVENTS_ENABLED, timeout=30)
        yield flower
    finally:
        flower.stop()


def _flower_json(flower: Flower, path: str) -> object:
    response = flower.client.get(path)
    assert response.status_code == 200, response.text
    return response.json()


def test_flower_shows_workers_and_agent_tasks_with_progress_and_no_text(
    ops_stack: OpsStack, flower: Flower, llm: LLMControl
) -> None:
    message = f"flower-message-{uuid.uuid4().hex}"
    answer = f"flower-answer-{uuid.uuid4().hex}"
    llm.script(message, tokens=[answer[:20], answer[20:], *[" more"] * 8], delay=0.5)
    task_id = submit(ops_stack.web.client, "simple_llm_agent", message, stream=True)

    # While it runs: the PROGRESS state with its meta (from the task-progress events, as
    # Flower's task page shows it, and in the result backend), and the worker's active task.
    def progressing() -> bool:
        info = flower.client.get(f"/api/task/info/{task_id}")
        return info.status_code == 200 and info.json().get("state") == "PROGRESS"

    wait_for(progressing, timeout=30, message="Flower never showed the task's PROGRESS")
    running = _flower_json(flower, f"/api/task/info/{task_id}")
    assert isinstance(running, dict)
    assert "'progress': " in running["result"]
    assert "'stage': " in running["result"]
    assert running["name"] == INVOKE_AGENT_WITH_STREAMING
    backend = _flower_json(flower, f"/api/task/result/{task_id}")
    assert isinstance(backend, dict)
    assert backend["state"] == "PROGRESS"

    workers = _flower_json(flower, "/api/workers?refresh=1")
    assert isinstance(workers, dict)
    (name,) = [name for name in workers if name.startswith("test-")]
    # One worker's page lists its running tasks (``celery inspect active``).
    workers_raw = flower.client.get(
        "/api/workers", params={"refresh": "1", "workername": name}
    ).text
    active = json.loads(workers_raw)[name]["active"]
    assert [task["name"] for task in active if task["id"] == task_id] == [
        INVOKE_AGENT_WITH_STREAMING
    ]
    assert message not in workers_raw

    events = read_stream(ops_stack.web.client, events_path(task_id), headers=ALICE)
    assert events[-1].event == "result"

    def succeeded() -> bool:
        info = flower.client.get(f"/api/task/info/{task_id}")
        return info.status_code == 200 and info.json().get("state") == "SUCCESS"

    wait_for(succeeded, timeout=30, message="Flower never saw the task succeed")
    info = _flower_json(flower, f"/api/task/info/{task_id}")
    assert isinstance(info, dict)
    assert info["name"] == INVOKE_AGENT_WITH_STREAMING
    assert "'agent_id': 'simple_llm_agent'" in info["kwargs"]
    assert f"'message': '<{len(message)} characters>'" in info["kwargs"]
    assert info["result"] == "<answer not shown>"

    listed = flower.client.get("/api/tasks", params={"limit": 1000}).text
    assert task_id in listed
    for shown in (listed, json.dumps(info), workers_raw):
        assert message not in shown
        assert answer[:20] not in shown


def test_flower_refuses_a_request_without_its_credentials(flower: Flower) -> None:
    response = httpx.get(f"{flower.base_url}/api/workers", timeout=10)

    assert response.status_code == 401


def test_the_procfile_flower_does_not_start_without_basic_auth(ops_stack: OpsStack) -> None:
    process = procfile_flower(
        ops_stack.redis_url, env={"FLOWER_PORT": "1", "FLOWER_BASIC_AUTH": ""}
    ).start()
    assert process.process is not None
    try:
        code = process.process.wait(timeout=30)
        output = process.output()
    finally:
        process.stop()

    assert code != 0
    assert "FLOWER_BASIC_AUTH" in output


def test_flower_terminate_stops_the_llm_and_ends_the_stream_cancelled(
    ops_stack: OpsStack, flower: Flower, llm: LLMControl
) -> None:
    message = f"flower-revoke-{uuid.uuid4().hex}"
    llm.script(message, tokens=[f"t{i} " for i in range(200)], delay=0.2)
    task_id = submit(ops_stack.web.client, "simple_llm_agent", message, stream=True)
    wait_for(lambda: bool(llm.calls(message)), timeout=30, message="the LLM was never called")

    response = flower.client.post(f"/api/task/revoke/{task_id}", params={"terminate": "true"})
    assert response.status_code == 200, response.text

    events = read_stream(ops_stack.web.client, events_path(task_id), headers=ALICE)
    assert events[-1].event == "cancelled"
    wait_for(
        lambda: bool(llm.calls(message)[0]["disconnected"]),
        timeout=10,
        message="the LLM stream was left open",
    )
    status = ops_stack.web.client.get(f"/api/v1/agents/tasks/{task_id}", headers=ALICE).json()
    assert status["status"] == "cancelled"
    assert len(llm.calls(message)) == 1


def test_flower_never_shows_the_message_of_a_task_a_foreign_producer_sent(
    ops_stack: OpsStack, flower: Flower
) -> None:
    """A plain Celery producer sends Celery's own repr of the kwargs, message included: the
    worker shows its redacted one instead."""
    from celery import Celery

    message = f"foreign-message-{uuid.uuid4().hex}"
    producer = Celery(broker=ops_stack.redis_url)
    try:
        sent = producer.send_task(
            "agent_service.workers.tasks.agent_tasks.invoke_agent_async",
            kwargs={"agent_id": "echo", "message": message, "user_id": "foreign"},
            queue="agent-tasks",
        )
    finally:
        producer.close()

    def succeeded() -> bool:
        info = flower.client.get(f"/api/task/info/{sent.id}")
        return info.status_code == 200 and info.json().get("state") == "SUCCESS"

    wait_for(succeeded, timeout=30, message="Flower never saw the foreign task succeed")
    info = flower.client.get(f"/api/task/info/{sent.id}").text
    assert f"<{len(message)} characters>" in info
    assert message not in info


def test_flower_revoke_of_a_task_not_yet_started_ends_it_cancelled_without_the_llm(
    ops_stack: OpsStack, flower: Flower, llm: LLMControl
) -> None:
    """Celery would discard a revoked task on arrival (REVOKED, and its stream never ends); ours
    runs it as far as its claim, which finds the cancel request."""
    from celery import Celery

    message = f"flower-revoked-early-{uuid.uuid4().hex}"
    llm.script(message, tokens=["never"])
    task_id = str(uuid.uuid4())
    revoked = flower.client.post(f"/api/task/revoke/{task_id}")
    assert revoked.status_code == 200, revoked.text

    producer = Celery(broker=ops_stack.redis_url)
    try:
        producer.send_task(
            "agent_service.workers.tasks.agent_tasks.invoke_agent_async",
            kwargs={"agent_id": "simple_llm_agent", "message": message, "user_id": "ops"},
            task_id=task_id,
            queue="agent-tasks",
        )
    finally:
        producer.close()

    client = redis.Redis.from_url(ops_stack.redis_url)
    try:

        def last_event() -> bytes | None:
            entry = last_entry(client, task_id)
            return entry.event if entry else None

        wait_for(lambda: last_event() == b"cancelled", timeout=30, message="never cancelled")
    finally:
        client.close()
    assert llm.calls(message) == []
