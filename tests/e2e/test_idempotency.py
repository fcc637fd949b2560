"""``Idempotency-Key``: a client that retries its submit gets one task and one LLM call."""

import hashlib
import uuid

import orjson
import redis

from app.idempotency import fingerprint
from contract import keys
from tests.e2e.conftest import Stack
from teststack.llm.control import LLMControl
from teststack.polling import invoke, poll_until_done

AGENT = "simple_llm_agent"


def test_same_key_and_body_is_one_task_and_one_llm_call(stack: Stack, llm: LLMControl) -> None:
    message = f"only once {uuid.uuid4()}"
    llm.script(message, tokens=["once"])
    key = str(uuid.uuid4())

    first = invoke(stack.web.client, AGENT, message, idempotency_key=key)
    second = invoke(stack.web.client, AGENT, message, idempotency_key=key)

    assert first.status_code == second.status_code == 202
    assert second.json()["task_id"] == first.json()["task_id"]
    assert second.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    done = poll_until_done(stack.web.client, first.json()["task_id"])
    assert done["result"]["content"] == "once"
    assert len(llm.calls(message)) == 1


def test_same_key_with_another_body_is_409(stack: Stack, llm: LLMControl) -> None:
    key = str(uuid.uuid4())
    first = invoke(stack.web.client, AGENT, "the first request", idempotency_key=key)

    second = invoke(stack.web.client, AGENT, "a different request", idempotency_key=key)

    assert first.status_code == 202
    assert second.status_code == 409
    assert "different request" in second.json()["detail"]
    poll_until_done(stack.web.client, first.json()["task_id"])
    assert llm.calls("a different request") == []


def test_same_key_from_another_user_is_another_task(stack: Stack) -> None:
    key = str(uuid.uuid4())
    message = "shared key, separate users"

    alice = invoke(stack.web.client, AGENT, message, idempotency_key=key, user="alice")
    bob = invoke(stack.web.client, AGENT, message, idempotency_key=key, user="bob")

    assert alice.status_code == bob.status_code == 202
    assert alice.json()["task_id"] != bob.json()["task_id"]


def test_bad_idempotency_key_is_422_naming_the_header(stack: Stack) -> None:
    response = invoke(stack.web.client, AGENT, "hi", idempotency_key="x" * 256)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_repeat_while_the_first_is_still_being_created_is_409_then_the_task(
    stack: Stack,
) -> None:
    key = str(uuid.uuid4())
    message = "racing repeats"
    store_key = keys.idempotency("alice", hashlib.sha256(key.encode()).hexdigest())
    admin = redis.Redis.from_url(stack.redis_url)
    try:
        # What a repeat sees while the first request is between its claim and its queueing.
        admin.set(
            store_key,
            orjson.dumps(
                {
                    "task_id": "not-yet",
                    "fingerprint": fingerprint({"agent_id": AGENT, **_full(message)}),
                    "queued": False,
                }
            ),
            ex=60,
        )
        early = invoke(stack.web.client, AGENT, message, idempotency_key=key)
        admin.delete(store_key)
        first = invoke(stack.web.client, AGENT, message, idempotency_key=key)
        repeat = invoke(stack.web.client, AGENT, message, idempotency_key=key)
    finally:
        admin.close()

    assert early.status_code == 409
    assert "still being processed" in early.json()["detail"]
    assert first.status_code == repeat.status_code == 202
    assert repeat.json()["task_id"] == first.json()["task_id"]


def _full(message: str) -> dict[str, object]:
    """The body as the API reads it, defaults included (what the fingerprint covers)."""
    return {
        "message": message,
        "session_id": None,
        "metadata": None,
        "stream": False,
        "priority": 5,
    }
