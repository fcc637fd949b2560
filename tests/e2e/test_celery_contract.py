"""The worker as a Celery service: any producer can send the seed's task names, and one worker
process carries many I/O-bound invocations at once."""

import time
from typing import Any

from celery import Celery

from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import poll_until_done, submit

INVOKE_AGENT_ASYNC = "agent_service.workers.tasks.agent_tasks.invoke_agent_async"


def test_foreign_celery_client_gets_the_result(stack: Stack) -> None:
    client = Celery("someone-else", broker=stack.redis_url, backend=stack.redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        result = client.send_task(
            INVOKE_AGENT_ASYNC,
            kwargs={"agent_id": "echo", "message": "from a foreign producer", "user_id": "ext"},
            queue="agent-tasks",
        )
        value = result.get(timeout=20)
    finally:
        client.close()

    assert value["content"] == "from a foreign producer"
    assert value["metadata"]["agent_id"] == "echo"


def test_foreign_celery_client_sees_progress_while_the_task_runs(
    stack: Stack, llm: LLMControl
) -> None:
    key = "progress for a celery client"
    llm.script(key, tokens=[f" p{i}" for i in range(40)], delay=0.05)
    client = Celery("someone-else", broker=stack.redis_url, backend=stack.redis_url)
    try:
        result = client.send_task(
            INVOKE_AGENT_ASYNC,
            kwargs={"agent_id": "simple_llm_agent", "message": key, "user_id": "ext"},
            queue="agent-tasks",
        )
        seen: list[tuple[str, object]] = []
        deadline = time.monotonic() + 20
        while not result.ready() and time.monotonic() < deadline:
            seen.append((result.state, result.info))
            time.sleep(0.05)
        value = result.get(timeout=5)
    finally:
        client.close()

    progress: list[dict[str, Any]] = []
    for state, info in seen:
        if state == "PROGRESS":
            assert isinstance(info, dict), seen
            progress.append(info)
    assert progress, seen
    assert all(set(info) == {"progress", "stage"} for info in progress)
    assert [info["progress"] for info in progress] == sorted(info["progress"] for info in progress)
    assert value["content"] == "".join(f" p{i}" for i in range(40))
    assert result.state == "SUCCESS"


def test_foreign_client_with_bad_kwargs_gets_a_clear_failure(stack: Stack) -> None:
    client = Celery("someone-else", broker=stack.redis_url, backend=stack.redis_url)
    client.conf.update(task_serializer="json", accept_content=["json"])
    try:
        result = client.send_task(
            INVOKE_AGENT_ASYNC,
            kwargs={"agent_id": "echo", "message": 42, "user_id": "ext"},
            queue="agent-tasks",
        )
        result.get(timeout=20, propagate=False)
        state, error = result.state, result.result
    finally:
        client.close()

    assert state == "FAILURE"
    assert type(error).__name__ == "InvalidInvocationError"
    assert "message" in str(error)


def test_hundred_one_second_llm_calls_finish_together_on_one_worker(
    stack: Stack, llm: LLMControl
) -> None:
    key = "a one-second answer"
    llm.script(key, tokens=[f" w{i}" for i in range(50)], delay=0.02)
    expected = "".join(f" w{i}" for i in range(50))

    started = time.monotonic()
    task_ids = [submit(stack.web.client, "simple_llm_agent", key) for _ in range(100)]
    results = [poll_until_done(stack.web.client, t, interval=0.1) for t in task_ids]
    elapsed = time.monotonic() - started

    assert [r["result"]["content"] for r in results] == [expected] * 100
    assert len(llm.calls(key)) == 100
    # One after another they would take 100 s. Together they are bound by the worker's CPU
    # (5,000 streamed tokens): 4-9 s on 2 shared cores, depending on the host's load.
    assert elapsed < 15.0, f"100 one-second calls took {elapsed:.1f} s"
