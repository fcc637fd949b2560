"""``get_task_info``: the seed's helper, reading what a real worker stored."""

from collections.abc import Iterator

import pytest
from celery import Celery

from contract.tasks import INVOKE_AGENT_ASYNC
from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.processes import wait_for
from worker.celery_app import create_celery_app, get_task_info, revoke_task
from worker.settings import WorkerSettings


@pytest.fixture
def celery(stack: Stack) -> Iterator[Celery]:
    app = create_celery_app(WorkerSettings(_env_file=None, redis_url=stack.redis_url))
    try:
        yield app
    finally:
        app.close()


def _send(celery: Celery, message: str, agent_id: str = "echo") -> str:
    kwargs = {"agent_id": agent_id, "message": message, "user_id": "ops"}
    return str(celery.send_task(INVOKE_AGENT_ASYNC, kwargs=kwargs).id)


def test_task_info_of_a_successful_task(celery: Celery) -> None:
    task_id = _send(celery, "info please")
    wait_for(lambda: get_task_info(task_id, app=celery)["ready"], timeout=20)

    info = get_task_info(task_id, app=celery)

    result = info.pop("result")
    assert info == {"task_id": task_id, "state": "SUCCESS", "ready": True, "successful": True}
    assert result["content"] == "info please"
    assert result["metadata"]["agent_id"] == "echo"


def test_task_info_of_a_failed_task(celery: Celery, llm: LLMControl) -> None:
    llm.script("info of a failure", tokens=["x"], failures=[{"status": 401, "body": "bad key"}])
    task_id = _send(celery, "info of a failure", agent_id="simple_llm_agent")
    wait_for(lambda: get_task_info(task_id, app=celery)["ready"], timeout=20)

    info = get_task_info(task_id, app=celery)

    assert info["state"] == "FAILURE"
    assert info["successful"] is False
    assert info["result"].startswith("LLMRequestRejectedError: LLM rejected the request with 401")


def test_task_info_of_an_unknown_task_is_pending(celery: Celery) -> None:
    info = get_task_info("no-such-task", app=celery)

    assert info == {
        "task_id": "no-such-task",
        "state": "PENDING",
        "ready": False,
        "successful": False,
        "result": None,
    }


def test_revoke_task_with_terminate_stops_a_running_task_in_the_threads_pool(
    celery: Celery, stack: Stack, llm: LLMControl
) -> None:
    key = "revoke me while I run"
    llm.script(key, tokens=[f" r{i}" for i in range(100)], delay=0.05)
    task_id = _send(celery, key, agent_id="simple_llm_agent")
    wait_for(lambda: len(llm.calls(key)) == 1, timeout=20)

    revoke_task(
        task_id,
        terminate=True,
        settings=WorkerSettings(_env_file=None, redis_url=stack.redis_url),
    )

    wait_for(lambda: get_task_info(task_id, app=celery)["state"] == "REVOKED", timeout=10)
    assert llm.calls(key)[0]["disconnected"] is True
