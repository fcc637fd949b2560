"""Submit over REST, run in a real Celery worker, poll the result: the agent task end to end."""

import uuid
from typing import Any

import pytest

from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import poll_until_done, submit
from teststack.processes import wait_for
from teststack.sse import events_path, read_stream
from teststack.stack import headers_for

#: The agent task, streaming and control behave the same on either event-loop runtime.
RUN_IN_BOTH_LOOP_MODES = True
RUN_ON_BOTH_BROKERS = True


@pytest.mark.parametrize("stream", [False, True], ids=["invoke_agent_async", "with_streaming"])
def test_echo_agent_completes_with_exact_content(stack: Stack, stream: bool) -> None:
    task_id = submit(stack.web.client, "echo", "hello   there, world", stream=stream)

    status = poll_until_done(stack.web.client, task_id)

    assert status["status"] == "completed"
    assert status["state"] == "SUCCESS"
    assert status["progress"] == 100
    assert status["error"] is None
    result = status["result"]
    assert result["content"] == "hello there, world"
    assert result["metadata"]["agent_id"] == "echo"
    assert result["metadata"]["streamed"] is stream
    assert result["metadata"]["chunks"] == 3
    assert result["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


@pytest.mark.parametrize("stream", [False, True], ids=["invoke_agent_async", "with_streaming"])
def test_llm_agent_completes_with_the_llm_answer(
    stack: Stack, llm: LLMControl, stream: bool
) -> None:
    key = f"what is streaming? ({stream})"
    llm.script(key, tokens=["Streaming", " sends", " tokens", " early."])

    status = poll_until_done(stack.web.client, submit(stack.web.client, "simple_llm_agent", key))

    assert status["status"] == "completed"
    assert status["result"]["content"] == "Streaming sends tokens early."
    assert status["result"]["metadata"]["model"] == "loopback-model"
    assert status["result"]["metadata"]["finish_reason"] == "stop"
    assert status["result"]["usage"]["completion_tokens"] == 4
    (call,) = llm.calls(key)
    assert call["messages"] == [{"role": "user", "content": key}]
    assert call["headers"] == {"authorization": "Bearer test-llm-key"}


def test_progress_rises_while_the_llm_streams(stack: Stack, llm: LLMControl) -> None:
    key = "a slow answer for progress"
    llm.script(key, tokens=[f" t{i}" for i in range(40)], delay=0.05)
    seen: list[dict[str, Any]] = []

    task_id = submit(stack.web.client, "simple_llm_agent", key)
    final = poll_until_done(stack.web.client, task_id, seen=seen, interval=0.02)

    assert final["status"] == "completed"
    running = [s["progress"] for s in seen if s["status"] == "running"]
    assert running == sorted(running), "progress never goes back"
    assert len(set(running)) >= 3, f"progress should rise while streaming, saw {running}"
    assert {s["stage"] for s in seen if s["status"] == "running"} >= {"generating"}
    assert [s["progress"] for s in seen][-1] == 100


def test_llm_503_twice_then_completes_after_two_retries(stack: Stack, llm: LLMControl) -> None:
    key = "flaky upstream"
    llm.script(
        key, tokens=["fine", " now"], failures=[{"status": 503, "retry_after": 0}, {"status": 503}]
    )

    status = poll_until_done(stack.web.client, submit(stack.web.client, "simple_llm_agent", key))

    assert status["status"] == "completed"
    assert status["result"]["content"] == "fine now"
    assert status["result"]["metadata"]["attempt"] == 3
    assert [c["status"] for c in llm.calls(key)] == [503, 503, 200]


def test_llm_429_waits_at_least_its_retry_after(stack: Stack, llm: LLMControl) -> None:
    key = "rate limited upstream"
    llm.script(key, tokens=["ok"], failures=[{"status": 429, "retry_after": 1}])

    status = poll_until_done(stack.web.client, submit(stack.web.client, "simple_llm_agent", key))

    assert status["status"] == "completed"
    first, second = llm.calls(key)
    assert first["status"] == 429
    assert second["started_at"] - first["started_at"] >= 1.0


def test_llm_400_fails_at_once_with_the_error_in_status(stack: Stack, llm: LLMControl) -> None:
    key = "a request the LLM rejects"
    llm.script(key, tokens=["never"], failures=[{"status": 400, "body": "model not found"}])

    status = poll_until_done(stack.web.client, submit(stack.web.client, "simple_llm_agent", key))

    assert status["status"] == "failed"
    assert status["state"] == "FAILURE"
    assert status["result"] is None
    assert status["error"]["type"] == "LLMRequestRejectedError"
    assert "400" in status["error"]["message"]
    assert "model not found" in status["error"]["message"]
    assert len(llm.calls(key)) == 1
    # An expected failure is one structured line, not a traceback an operator takes for a bug.
    task_id = status["task_id"]
    worker = stack.worker
    assert worker is not None
    wait_for(lambda: f"task_failed task_id={task_id}" in worker.output(tail=10**7), timeout=5)
    assert f"[{task_id}] raised unexpected" not in worker.output(tail=10**7)


def test_llm_503_on_every_attempt_fails_after_the_last_retry(stack: Stack, llm: LLMControl) -> None:
    key = "an upstream that stays down"
    llm.script(key, tokens=["never"], failures=[{"status": 503, "retry_after": 0}] * 4)

    status = poll_until_done(stack.web.client, submit(stack.web.client, "simple_llm_agent", key))

    assert status["status"] == "failed"
    assert status["error"]["type"] == "LLMUnavailableError"
    assert len(llm.calls(key)) == 4, "one attempt and three retries"


def test_time_limit_shorter_than_the_call_fails_with_timeout(bare_stack: Stack) -> None:
    words = " ".join(f"w{i}" for i in range(20))  # 19 pauses of 0.3 s: far past the 1 s limit

    status = poll_until_done(bare_stack.web.client, submit(bare_stack.web.client, "echo", words))

    assert status["status"] == "failed"
    assert status["error"]["type"] == "AgentTimeoutError"
    assert "time limit" in status["error"]["message"]


def test_llm_agent_without_llm_configured_fails_with_configuration_error(
    bare_stack: Stack,
) -> None:
    task_id = submit(bare_stack.web.client, "simple_llm_agent", "anyone there?")

    status = poll_until_done(bare_stack.web.client, task_id)

    assert status["status"] == "failed"
    assert status["error"]["type"] == "AgentConfigurationError"
    assert "LLM_BASE_URL" in status["error"]["message"]


@pytest.mark.parametrize("fixture", ["stack", "bare_stack"], ids=["threads", "prefork"])
def test_worker_log_never_holds_the_message_or_the_answer(
    request: pytest.FixtureRequest, fixture: str
) -> None:
    deployment: Stack = request.getfixturevalue(fixture)
    assert deployment.worker is not None
    secret = f"confidential-{uuid.uuid4().hex}"
    task_id = submit(deployment.web.client, "echo", f"{secret} words")

    status = poll_until_done(deployment.web.client, task_id)

    assert status["result"]["content"] == f"{secret} words"
    worker = deployment.worker
    wait_for(lambda: f"task_succeeded task_id={task_id}" in worker.output(tail=10**7), timeout=5)
    log = worker.output(tail=10**7)
    assert secret not in log


def test_an_answer_that_cannot_be_stored_fails_the_task_and_ends_its_stream(stack: Stack) -> None:
    task_id = submit(stack.web.client, "unstorable_agent", "say something odd", stream=True)

    status = poll_until_done(stack.web.client, task_id)
    events = read_stream(stack.web.client, events_path(task_id), headers=headers_for("alice"))

    assert status["status"] == "failed"
    assert status["error"]["type"] == "ResultNotStorableError"
    assert events[-1].event == "error"
    assert events[-1].data == status["error"]
