"""Control of running work: cancellation that stops the LLM, time limits with partial answers."""

import time
from typing import Any

import httpx
import pytest

from scripts.embedded_redis import EmbeddedRedis
from tests.e2e.conftest import Stack
from tests.support import redis_databases
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.polling import poll_until_done, submit
from teststack.sse import Received, content_of, events_path, read_stream
from teststack.stack import headers_for, redis_db_url, start_web, start_worker

#: The agent task, streaming and control behave the same on either event-loop runtime.
RUN_IN_BOTH_LOOP_MODES = True
RUN_ON_BOTH_BROKERS = True

ALICE = headers_for("alice")
QUEUED_DB = redis_databases.QUEUED


def _cancel(client: httpx.Client, task_id: str, user: str = "alice") -> httpx.Response:
    return client.post(f"/api/v1/agents/tasks/{task_id}/cancel", headers=headers_for(user))


def test_cancel_mid_stream_closes_the_llm_stream_and_ends_cancelled(
    stack: Stack, llm: LLMControl
) -> None:
    key = "a long answer to cancel"
    llm.script(key, tokens=[f" w{i}" for i in range(200)], delay=0.05)
    task_id = submit(stack.web.client, "simple_llm_agent", key, stream=True)
    cancelled_at: list[float] = []

    def cancel_after_five_chunks(events: list[Received]) -> bool:
        if not cancelled_at and sum(e.event == "chunk" for e in events) == 5:
            cancelled_at.append(time.monotonic())
            assert _cancel(stack.web.client, task_id).status_code == 202
        return False

    events = read_stream(
        stack.web.client, events_path(task_id), headers=ALICE, stop=cancel_after_five_chunks
    )
    stream_ended_at = time.monotonic()

    assert events[-1].event == "cancelled"
    assert events[-1].data == {"reason": "cancelled", "content": content_of(events[:-1])}
    assert 5 <= sum(e.event == "chunk" for e in events) < 200
    (call,) = llm.calls(key)
    assert call["disconnected"] is True
    assert call["disconnected_at"] is not None
    # Uncancelled, the stream would go on for about 9.7 s more: the bounds leave a busy machine
    # room and still tell a cancel that works from one that does not.
    to_disconnect = call["disconnected_at"] - cancelled_at[0]
    to_end = stream_ended_at - cancelled_at[0]
    print(f"cancel -> LLM stream closed {to_disconnect:.3f} s, -> stream ended {to_end:.3f} s")
    assert to_disconnect < 2.0
    assert to_end < 3.0
    polled = poll_until_done(stack.web.client, task_id)
    assert polled["status"] == "cancelled"
    assert polled["state"] == "REVOKED"
    again = _cancel(stack.web.client, task_id)
    assert again.status_code == 202
    assert again.json()["status"] == "cancelled"


def test_cancel_of_another_users_or_unknown_task_is_404(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "not yours to cancel", stream=True)

    assert _cancel(stack.web.client, task_id, user="bob").status_code == 404
    assert _cancel(stack.web.client, "0" * 36).status_code == 404
    assert poll_until_done(stack.web.client, task_id)["status"] == "completed"


def test_cancel_of_a_finished_task_changes_nothing(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "already finished", stream=True)
    done = poll_until_done(stack.web.client, task_id)

    response = _cancel(stack.web.client, task_id)

    assert response.status_code == 202
    assert response.json() == done
    assert poll_until_done(stack.web.client, task_id) == done


@pytest.fixture
def queued_db(redis_server: EmbeddedRedis) -> str:
    """A Redis database no worker consumes until the test starts one."""
    return redis_db_url(redis_server.url, QUEUED_DB)


def test_cancelled_queued_task_never_calls_the_llm(
    queued_db: str, llm_server: LLMServerProcess, llm: LLMControl
) -> None:
    key = "cancelled while queued"
    llm.script(key, tokens=["never"])
    web = start_web(queued_db)
    try:
        task_id = submit(web.client, "simple_llm_agent", key, stream=True)
        response = _cancel(web.client, task_id)
        assert response.status_code == 202
        assert response.json()["status"] == "queued"
        worker = start_worker(queued_db, env={"LLM_BASE_URL": llm_server.base_url})
        try:
            polled = poll_until_done(web.client, task_id)
            events = read_stream(web.client, events_path(task_id), headers=ALICE)
        finally:
            worker.stop()
    finally:
        web.stop()

    assert polled["status"] == "cancelled"
    assert [e.event for e in events] == ["status", "cancelled"]
    assert events[-1].data == {"reason": "cancelled", "content": ""}
    assert llm.calls(key) == []


def test_soft_time_limit_ends_with_a_timeout_error_and_the_partial_answer(
    bare_stack: Stack,
) -> None:
    words = " ".join(f"w{i}" for i in range(20))  # 0.3 s a word: the 1 s limit cuts it short

    task_id = submit(bare_stack.web.client, "echo", words, stream=True)
    events = read_stream(bare_stack.web.client, events_path(task_id), headers=ALICE)
    polled = poll_until_done(bare_stack.web.client, task_id)

    error: dict[str, Any] = events[-1].data
    assert events[-1].event == "error"
    assert error["type"] == "AgentTimeoutError"
    assert error["reason"] == "timeout"
    assert 0 < len(error["content"]) < len(words)
    assert words.startswith(error["content"])
    assert content_of(events[:-1]) == error["content"]
    assert polled["status"] == "failed"
    assert polled["error"] == error


def test_cancel_stops_a_running_task_in_the_prefork_pool(bare_stack: Stack) -> None:
    words = " ".join(f"p{i}" for i in range(20))
    task_id = submit(bare_stack.web.client, "echo", words, stream=True)
    cancelled_at: list[float] = []

    def cancel_after_two_chunks(events: list[Received]) -> bool:
        if not cancelled_at and sum(e.event == "chunk" for e in events) == 2:
            cancelled_at.append(time.monotonic())
            assert _cancel(bare_stack.web.client, task_id).status_code == 202
        return False

    events = read_stream(
        bare_stack.web.client, events_path(task_id), headers=ALICE, stop=cancel_after_two_chunks
    )

    assert events[-1].event == "cancelled"
    assert events[-1].data["content"] == content_of(events[:-1])
    # The 18 words left would take 5.4 s more.
    assert time.monotonic() - cancelled_at[0] < 3.0
    assert poll_until_done(bare_stack.web.client, task_id)["status"] == "cancelled"
