"""Sessions end to end: the LLM receives the earlier turns, the exchange is kept, and a session
is its owner's alone."""

import httpx
import pytest
from celery import Celery

from tests.conftest import ServiceEnvironment
from tests.e2e.conftest import Stack
from tests.support.audit import audit_rows
from teststack.llm.control import LLMControl
from teststack.polling import invoke, poll_until_done, submit
from teststack.sse import content_of, events_path, read_stream
from teststack.stack import headers_for

SESSIONS = "/api/v1/sessions"


def _create_session(client: httpx.Client, user: str = "alice") -> str:
    response = client.post(SESSIONS, headers=headers_for(user))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["messages"] == []
    assert response.headers["location"] == f"{SESSIONS}/{body['session_id']}"
    session_id: str = body["session_id"]
    return session_id


def test_session_memory_reaches_the_llm(stack: Stack, llm: LLMControl) -> None:
    client = stack.web.client
    session_id = _create_session(client)
    llm.script("my name is Ada", tokens=["Hello", " Ada."])
    llm.script("what is my name?", tokens=["You", " are", " Ada."])

    first = poll_until_done(
        client, submit(client, "simple_llm_agent", "my name is Ada", session_id=session_id)
    )
    second = poll_until_done(
        client,
        submit(client, "simple_llm_agent", "what is my name?", session_id=session_id, stream=True),
    )

    assert first["result"]["content"] == "Hello Ada."
    assert second["result"]["content"] == "You are Ada."
    [call] = llm.calls("what is my name?")
    assert call["messages"] == [
        {"role": "user", "content": "my name is Ada"},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "what is my name?"},
    ]
    session = client.get(f"{SESSIONS}/{session_id}", headers=headers_for("alice")).json()
    assert [(m["role"], m["content"]) for m in session["messages"]] == [
        ("user", "my name is Ada"),
        ("assistant", "Hello Ada."),
        ("user", "what is my name?"),
        ("assistant", "You are Ada."),
    ]
    assert session["last_activity_at"] >= session["created_at"]


def test_an_answer_with_a_nul_is_kept_in_the_session_with_it_replaced(
    stack: Stack, llm: LLMControl
) -> None:
    """PostgreSQL refuses NUL in text: an answer holding one (a user can ask the model for it)
    failed the task with SessionStorageError after the LLM had answered. The character is
    replaced where the answer enters the service, so the stream, the result and the session
    agree."""
    client = stack.web.client
    session_id = _create_session(client)
    key = "answer with a NUL character"
    llm.script(key, tokens=["bad ", "\u0000", " answer"])

    task_id = submit(client, "simple_llm_agent", key, session_id=session_id, stream=True)
    final = poll_until_done(client, task_id)

    assert final["status"] == "completed", final
    assert final["result"]["content"] == "bad \ufffd answer"
    streamed = read_stream(client, events_path(task_id), headers=headers_for("alice"))
    assert content_of(streamed) == "bad \ufffd answer"
    session = client.get(f"{SESSIONS}/{session_id}", headers=headers_for("alice")).json()
    assert session["messages"][-1]["content"] == "bad \ufffd answer"


def test_invocation_without_session_sends_only_the_message(stack: Stack, llm: LLMControl) -> None:
    llm.script("no memory here", tokens=["ok"])

    poll_until_done(
        stack.web.client, submit(stack.web.client, "simple_llm_agent", "no memory here")
    )

    [call] = llm.calls("no memory here")
    assert call["messages"] == [{"role": "user", "content": "no memory here"}]


def test_another_users_session_is_404_everywhere(stack: Stack, llm: LLMControl) -> None:
    client = stack.web.client
    session_id = _create_session(client, "alice")
    llm.script("bob tries alice's session", tokens=["never"])

    invoked = invoke(
        client, "simple_llm_agent", "bob tries alice's session", session_id=session_id, user="bob"
    )
    read = client.get(f"{SESSIONS}/{session_id}", headers=headers_for("bob"))
    delete = client.delete(f"{SESSIONS}/{session_id}", headers=headers_for("bob"))

    assert invoked.status_code == 404
    assert "unknown session" in invoked.json()["detail"]
    assert read.status_code == 404
    assert delete.status_code == 404
    assert llm.calls("bob tries alice's session") == []
    still_there = client.get(f"{SESSIONS}/{session_id}", headers=headers_for("alice"))
    assert still_there.status_code == 200


def test_unknown_session_is_404_and_queues_nothing(stack: Stack) -> None:
    response = invoke(stack.web.client, "echo", "hi", session_id="no-such-session")

    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown session 'no-such-session'")


def test_deleted_session_is_gone(stack: Stack, service_environment: ServiceEnvironment) -> None:
    client = stack.web.client
    session_id = _create_session(client)

    deleted = client.delete(f"{SESSIONS}/{session_id}", headers=headers_for("alice"))
    again = client.delete(f"{SESSIONS}/{session_id}", headers=headers_for("alice"))

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert client.get(f"{SESSIONS}/{session_id}", headers=headers_for("alice")).status_code == 404
    actions = [
        row["action"]
        for row in audit_rows(service_environment.database_url, resource_id=session_id)
    ]
    assert actions == ["session.create", "session.delete"]


def test_a_task_naming_a_foreign_session_fails_in_the_worker(stack: Stack) -> None:
    """A producer that bypasses the API (send_task) still cannot read another user's session."""
    client = stack.web.client
    session_id = _create_session(client, "alice")
    producer = Celery(broker=stack.redis_url, backend=stack.redis_url)
    try:
        result = producer.send_task(
            "agent_service.workers.tasks.agent_tasks.invoke_agent_async",
            kwargs={
                "agent_id": "echo",
                "message": "sneaky",
                "user_id": "bob",
                "session_id": session_id,
            },
            queue="agent-tasks",
        )
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE"
        assert type(result.result).__name__ == "UnknownSessionError"
    finally:
        producer.close()


@pytest.mark.parametrize("session_id", ["%00", "a" * 200, "..", "x%2Fy", "-leading-dash"])
def test_malformed_session_ids_are_404(stack: Stack, session_id: str) -> None:
    client = stack.web.client

    read = client.get(f"{SESSIONS}/{session_id}", headers=headers_for("alice"))
    delete = client.delete(f"{SESSIONS}/{session_id}", headers=headers_for("alice"))

    assert read.status_code == 404
    assert read.json()["detail"] in {"session not found", "Not Found"}  # the latter: no route
    assert delete.status_code == 404
