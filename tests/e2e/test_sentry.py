"""Errors reach Sentry from a real ``sentry-sdk`` in each process, through the loopback receiver:
one event per failed task (tagged), none for a retry that recovers, one for a web 500, and no
envelope ever carries a message, an answer, a key or a token."""

import hashlib
import uuid
from typing import Any

import httpx
import redis

from contract import keys
from contract.tasks import INVOKE_AGENT_WITH_STREAMING
from tests.e2e.conftest import OpsStack
from teststack.llm.control import LLMControl
from teststack.polling import accept, submit
from teststack.processes import wait_for
from teststack.sse import events_path, read_stream
from teststack.stack import API_KEYS, headers_for

ALICE = headers_for("alice")
LLM_API_KEY = "test-llm-key"  # the ops stack's LLM_API_KEY


def _run(stack: OpsStack, message: str) -> tuple[str, str]:
    """Submit ``message`` and read its stream to the end: (task id, terminal event)."""
    task_id = submit(stack.web.client, "simple_llm_agent", message, stream=True)
    events = read_stream(stack.web.client, events_path(task_id), headers=ALICE)
    return task_id, events[-1].event


def _events_for(stack: OpsStack, task_id: str) -> list[dict[str, Any]]:
    return [e for e in stack.sentry.events() if (e.get("tags") or {}).get("task_id") == task_id]


def _wait_for_event(stack: OpsStack, task_id: str) -> None:
    """Until ``task_id``'s event has arrived: the stream ends with the outcome a moment before
    the pool thread's Celery tracer reports the failure, so a later task may report first."""
    wait_for(lambda: bool(_events_for(stack, task_id)), timeout=15, message="no event arrived")


def _flush_worker_reports(stack: OpsStack, llm: LLMControl) -> None:
    """Fail one more task and wait for its event: the worker's transport sends in order, so
    every event reported before it has arrived too (a duplicate included)."""
    sentinel = f"sentry-sentinel-{uuid.uuid4().hex}"
    llm.script(sentinel, tokens=["never"], failures=[{"status": 400, "body": "refused"}])
    task_id, _ = _run(stack, sentinel)
    wait_for(lambda: bool(_events_for(stack, task_id)), timeout=15, message="no sentinel")


def _assert_nothing_secret(stack: OpsStack, *texts: str) -> None:
    raw = stack.sentry.raw()
    assert raw, "no envelope arrived"
    for text in (*texts, LLM_API_KEY, *API_KEYS.values()):
        assert text.encode() not in raw, f"{text!r} left the process in a Sentry envelope"


def test_a_failed_task_sends_one_tagged_event_without_text(
    ops_stack: OpsStack, llm: LLMControl
) -> None:
    message = f"sentry-failing-{uuid.uuid4().hex}"
    llm.script(message, tokens=["never"], failures=[{"status": 400, "body": "refused"}])

    task_id, ended = _run(ops_stack, message)

    assert ended == "error"
    _wait_for_event(ops_stack, task_id)
    _flush_worker_reports(ops_stack, llm)  # a duplicate of it would have arrived by now
    (event,) = _events_for(ops_stack, task_id)
    assert event["tags"]["task"] == INVOKE_AGENT_WITH_STREAMING
    assert event["tags"]["agent_id"] == "simple_llm_agent"
    assert event["exception"]["values"][-1]["type"] == "LLMRequestRejectedError"
    _assert_nothing_secret(ops_stack, message)


def test_a_retried_error_sends_nothing_until_the_last_attempt_fails(
    ops_stack: OpsStack, llm: LLMControl
) -> None:
    recovered = f"sentry-recovered-{uuid.uuid4().hex}"
    answer = f"answer-{uuid.uuid4().hex}"
    llm.script(recovered, tokens=[answer], failures=[{"status": 503, "body": "busy"}])
    exhausted = f"sentry-exhausted-{uuid.uuid4().hex}"
    # The ops stack allows two retries: three attempts, all refused.
    llm.script(exhausted, tokens=["never"], failures=[{"status": 503, "body": "busy"}] * 3)

    recovered_id, recovered_end = _run(ops_stack, recovered)
    exhausted_id, exhausted_end = _run(ops_stack, exhausted)

    assert (recovered_end, exhausted_end) == ("result", "error")
    assert len(llm.calls(exhausted)) == 3
    _wait_for_event(ops_stack, exhausted_id)
    _flush_worker_reports(ops_stack, llm)
    assert _events_for(ops_stack, recovered_id) == []
    (event,) = _events_for(ops_stack, exhausted_id)
    assert event["exception"]["values"][-1]["type"] == "LLMUnavailableError"
    _assert_nothing_secret(ops_stack, recovered, answer, exhausted)


def test_a_web_500_sends_one_event_without_credentials(ops_stack: OpsStack) -> None:
    message = f"sentry-web-{uuid.uuid4().hex}"
    stream_token = accept(ops_stack.web.client, "echo", message).stream_token
    # What no code path expects: an idempotency record that is not one (a foreign writer, a
    # record from another version).
    idempotency_key = f"key-{uuid.uuid4().hex}"
    client = redis.Redis.from_url(ops_stack.redis_url)
    try:
        record = keys.idempotency("alice", hashlib.sha256(idempotency_key.encode()).hexdigest())
        client.set(record, b"\xff not a record", ex=60)
    finally:
        client.close()
    before = len(ops_stack.sentry.events())

    url = f"{ops_stack.web.base_url}/api/v1/agents/echo/invoke-async"
    # A connection of its own for each: uvicorn closes the one a 500 went out on.
    failed = httpx.post(
        url,
        timeout=10,
        json={"message": message},
        params={"token": stream_token},
        headers={**ALICE, "Idempotency-Key": idempotency_key},
    )

    assert failed.status_code == 500
    # A second 500 after it: once its event is in, the first's duplicates would be too.
    again = httpx.post(
        url,
        timeout=10,
        json={"message": message},
        headers={**ALICE, "Idempotency-Key": idempotency_key},
    )
    assert again.status_code == 500
    wait_for(
        lambda: len(ops_stack.sentry.events()) >= before + 2,
        timeout=15,
        message="no event for the 500s",
    )
    new = ops_stack.sentry.events()[before:]
    assert len(new) == 2
    assert new[0]["request"]["url"].endswith("/api/v1/agents/echo/invoke-async")
    _assert_nothing_secret(ops_stack, message, stream_token)
