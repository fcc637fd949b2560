"""The REST contract at its edges: who may call, what is refused, and that refusals change nothing.

Refusals are checked on ``idle_web``, a web process with no worker on a Redis database of its own:
after the bad requests that database must still be empty (no owner record, nothing queued).
"""

from collections.abc import Iterator

import httpx
import pytest
import redis

from contract import keys
from scripts.embedded_redis import EmbeddedRedis, free_port
from tests.e2e.conftest import IDLE_DB, Stack
from teststack.polling import poll_until_done, submit
from teststack.stack import headers_for, redis_db_url, start_web

INVOKE = "/api/v1/agents/echo/invoke-async"


@pytest.fixture
def web(idle_web: Stack, idle_redis: redis.Redis) -> Iterator[httpx.Client]:
    """The idle web process; every test using it must leave its Redis database empty."""
    assert idle_redis.dbsize() == 0
    yield idle_web.web.client
    assert idle_redis.keys("*") == [], "a refused request must not write or queue anything"


@pytest.mark.parametrize(
    "headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}], ids=["missing", "wrong", "empty"]
)
def test_invoke_without_valid_key_is_401(web: httpx.Client, headers: dict[str, str]) -> None:
    response = web.post(INVOKE, json={"message": "hi"}, headers=headers)

    assert response.status_code == 401
    assert "API key" in response.json()["detail"]
    assert response.headers["www-authenticate"].startswith("ApiKey")


def test_status_and_agent_list_without_key_are_401(web: httpx.Client) -> None:
    assert web.get("/api/v1/agents").status_code == 401
    assert web.get("/api/v1/agents/tasks/some-id").status_code == 401


def test_unknown_agent_is_404_naming_it(web: httpx.Client) -> None:
    response = web.post(
        "/api/v1/agents/nope/invoke-async", json={"message": "hi"}, headers=headers_for("alice")
    )

    assert response.status_code == 404
    assert "nope" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"message": ""}, ["body", "message"]),
        ({"message": "   \n"}, ["body", "message"]),
        ({}, ["body", "message"]),
        ({"message": 42}, ["body", "message"]),
        ({"message": "hi", "stream": "yes"}, ["body", "stream"]),
        ({"message": "hi", "metadata": [1, 2]}, ["body", "metadata"]),
        ({"message": "hi", "session_id": "../etc"}, ["body", "session_id"]),
        ({"message": "hi", "session_id": "s" * 129}, ["body", "session_id"]),
        ({"message": "hi", "surprise": 1}, ["body", "surprise"]),
        ({"message": "nul\u0000byte"}, ["body", "message"]),
    ],
    ids=[
        "empty",
        "blank",
        "missing",
        "number",
        "stream-not-bool",
        "metadata-not-object",
        "session-id-path",
        "session-id-long",
        "unknown-field",
        "nul-in-message",
    ],
)
def test_invalid_body_is_422_naming_the_field(
    web: httpx.Client, body: dict[str, object], loc: list[str]
) -> None:
    response = web.post(INVOKE, json=body, headers=headers_for("alice"))

    assert response.status_code == 422
    assert loc in [item["loc"] for item in response.json()["detail"]]


def test_malformed_json_is_422(web: httpx.Client) -> None:
    response = web.post(
        INVOKE,
        content=b'{"message": "hi"',
        headers={**headers_for("alice"), "Content-Type": "application/json"},
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_message_over_the_limit_is_413_naming_message(web: httpx.Client) -> None:
    response = web.post(INVOKE, json={"message": "é" * 16_385}, headers=headers_for("alice"))

    assert response.status_code == 413
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body", "message"]
    assert item["ctx"] == {"limit": 32 * 1024}


def test_message_at_the_limit_is_accepted_by_validation(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "a" * (32 * 1024))

    assert poll_until_done(stack.web.client, task_id)["result"]["content"] == "a" * 32 * 1024


def test_metadata_over_the_limit_is_413_naming_metadata(web: httpx.Client) -> None:
    body = {"message": "hi", "metadata": {"blob": "x" * 9000}}

    response = web.post(INVOKE, json=body, headers=headers_for("alice"))

    assert response.status_code == 413
    assert response.json()["detail"][0]["loc"] == ["body", "metadata"]


def test_huge_body_is_413_before_parsing(web: httpx.Client) -> None:
    response = web.post(
        INVOKE,
        content=b'{"message": "' + b"x" * 2_000_000 + b'"}',
        headers={**headers_for("alice"), "Content-Type": "application/json"},
    )

    assert response.status_code == 413
    assert response.json()["detail"][0]["loc"] == ["body"]


def test_huge_chunked_body_is_413(web: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"message": "'
        for _ in range(40):
            yield b"x" * 50_000
        yield b'"}'

    response = web.post(
        INVOKE,
        content=chunks(),
        headers={**headers_for("alice"), "Content-Type": "application/json"},
    )

    assert response.status_code == 413


def test_unknown_task_is_404(stack: Stack) -> None:
    for task_id in ["00000000-0000-0000-0000-000000000000", "not a uuid", "x" * 200]:
        response = stack.web.client.get(
            f"/api/v1/agents/tasks/{task_id}", headers=headers_for("alice")
        )
        assert response.status_code == 404, task_id
        assert response.json() == {"detail": "task not found"}


def test_another_users_task_is_404(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "private words", user="alice")
    poll_until_done(stack.web.client, task_id, user="alice")

    response = stack.web.client.get(f"/api/v1/agents/tasks/{task_id}", headers=headers_for("bob"))

    assert response.status_code == 404
    assert response.json() == {"detail": "task not found"}


def test_a_status_record_that_is_not_json_is_503_naming_the_store(stack: Stack) -> None:
    """A record Celery's JSON backend did not write: the store's trouble, said as one, not a 500."""
    task_id = submit(stack.web.client, "echo", "hi", user="alice")
    poll_until_done(stack.web.client, task_id, user="alice")
    client = redis.Redis.from_url(stack.redis_url)
    client.delete(keys.task_events(task_id))
    client.set(keys.celery_task_meta(task_id), b"\x80\x04not json")

    response = stack.web.client.get(f"/api/v1/agents/tasks/{task_id}", headers=headers_for("alice"))

    assert response.status_code == 503
    assert response.json() == {"detail": "task store unavailable"}


def test_submit_answers_202_with_urls_and_location(stack: Stack) -> None:
    response = stack.web.client.post(INVOKE, json={"message": "hi"}, headers=headers_for("alice"))

    assert response.status_code == 202
    body = response.json()
    task_id = body["task_id"]
    stream_url = body.pop("stream_url")
    assert body == {
        "task_id": task_id,
        "status": "queued",
        "status_url": f"/api/v1/agents/tasks/{task_id}",
    }
    assert stream_url.startswith(f"/api/v1/agents/tasks/{task_id}/events?token=")
    assert response.headers["location"] == body["status_url"]
    assert poll_until_done(stack.web.client, task_id)["status"] == "completed"


def test_agent_list_names_the_built_in_agents_then_those_the_workers_add(stack: Stack) -> None:
    """The web imports no agent code: the workers' AGENT_MODULES agents reach it through Redis."""
    response = stack.web.client.get("/api/v1/agents", headers=headers_for("bob"))

    assert response.status_code == 200
    ids = [a["id"] for a in response.json()["agents"]]
    assert ids[:3] == ["echo", "simple_llm_agent", "tool_agent"]
    assert sorted(ids[3:]) == ["blocking_agent", "shouting_agent", "unstorable_agent"]


def test_health_and_readiness(stack: Stack) -> None:
    assert stack.web.client.get("/healthz").json() == {"status": "ok"}
    ready = stack.web.client.get("/readyz").json()
    assert ready == {"status": "ok", "redis": "ok", "database": "ok", "database_schema": "ok"}


def test_dead_redis_gives_503_and_not_ready() -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    web = start_web(dead, ready_path="/healthz")
    try:
        submitted = web.client.post(INVOKE, json={"message": "hi"}, headers=headers_for("alice"))
        polled = web.client.get("/api/v1/agents/tasks/some-id", headers=headers_for("alice"))
        ready = web.client.get("/readyz")
    finally:
        web.stop()

    assert submitted.status_code == 503
    assert "nothing was queued" in submitted.json()["detail"]
    assert polled.status_code == 503
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable",
        "redis": "unreachable",
        "database": "ok",
        "database_schema": "ok",
    }


def test_dead_database_gives_503_on_sessions_and_not_ready(redis_server: EmbeddedRedis) -> None:
    dead = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    web = start_web(
        redis_db_url(redis_server.url, IDLE_DB), env={"DATABASE_URL": dead}, ready_path="/healthz"
    )
    try:
        created = web.client.post("/api/v1/sessions", headers=headers_for("alice"))
        with_session = web.client.post(
            INVOKE, json={"message": "hi", "session_id": "s1"}, headers=headers_for("alice")
        )
        ready = web.client.get("/readyz")
    finally:
        web.stop()

    assert created.status_code == 503
    assert created.json() == {"detail": "database unavailable; nothing was changed"}
    assert with_session.status_code == 503
    assert "nothing was queued" in with_session.json()["detail"]
    assert ready.status_code == 503
    assert ready.json() == {"status": "unavailable", "redis": "ok", "database": "unreachable"}
