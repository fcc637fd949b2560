"""Access tokens, task tokens and revocation through the real web process, and the audit rows
that submits, cancels, token issues and task outcomes leave behind."""

from datetime import datetime

import httpx
import jwt
import pytest

from scripts.embedded_redis import EmbeddedRedis
from tests.conftest import ServiceEnvironment
from tests.e2e.conftest import IDLE_DB, Stack
from tests.support.audit import audit_rows
from teststack.llm.control import LLMControl
from teststack.polling import accept, invoke, poll_until_done, submit
from teststack.processes import wait_for
from teststack.stack import headers_for, redis_db_url, start_web

TOKEN = "/api/v1/auth/token"
REVOKE = "/api/v1/auth/revoke"


def _token(client: httpx.Client, user: str = "alice", **body: object) -> dict[str, object]:
    response = client.post(TOKEN, json=body or None, headers=headers_for(user))
    assert response.status_code == 200, response.text
    issued: dict[str, object] = response.json()
    return issued


def _bearer(token: object) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_access_token_works_until_revoked_then_is_refused_everywhere(stack: Stack) -> None:
    client = stack.web.client
    issued = _token(client)
    assert issued["token_type"] == "bearer"
    assert issued["scope"] == "api"
    assert issued["expires_in"] == 900
    bearer = _bearer(issued["access_token"])
    submitted = invoke(client, "echo", "by token", headers=bearer)
    assert submitted.status_code == 202
    task_id = submitted.json()["task_id"]
    assert client.get(f"/api/v1/agents/tasks/{task_id}", headers=bearer).status_code == 200

    revoked = client.post(REVOKE, json={"token": issued["access_token"]}, headers=bearer)

    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    assert revoked.json()["jti"] == issued["jti"]
    for method, path in [
        ("GET", "/api/v1/agents"),
        ("GET", f"/api/v1/agents/tasks/{task_id}"),
        ("GET", f"/api/v1/agents/tasks/{task_id}/events"),
        ("POST", f"/api/v1/agents/tasks/{task_id}/cancel"),
        ("POST", "/api/v1/sessions"),
    ]:
        response = client.request(method, path, headers=bearer)
        assert response.status_code == 401, (method, path)
        assert response.json() == {"detail": "invalid, expired or revoked token"}
    # The task itself is the owner's still, by key.
    assert poll_until_done(client, task_id)["result"]["content"] == "by token"


def test_revoked_stream_token_no_longer_opens_the_stream(stack: Stack) -> None:
    client = stack.web.client
    accepted = accept(client, "echo", "watch me")
    stream_url = accepted.stream_url
    token = accepted.stream_token
    poll_until_done(client, accepted.task_id)
    assert client.get(stream_url).status_code == 200

    revoked = client.post(REVOKE, json={"token": token}, headers=headers_for("alice"))

    assert revoked.status_code == 200
    response = client.get(stream_url)
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid, expired or revoked token"}


def test_task_token_opens_its_stream_and_nothing_else(stack: Stack) -> None:
    client = stack.web.client
    task_id = submit(client, "echo", "scoped")
    other = submit(client, "echo", "other task")
    issued = _token(client, task_id=task_id, ttl_seconds=120)
    assert issued["scope"] == "task:events"
    assert issued["task_id"] == task_id
    assert issued["expires_in"] == 120
    poll_until_done(client, task_id)
    poll_until_done(client, other)

    own = client.get(f"/api/v1/agents/tasks/{task_id}/events?token={issued['access_token']}")
    by_header = client.get(
        f"/api/v1/agents/tasks/{task_id}/events", headers=_bearer(issued["access_token"])
    )
    other_stream = client.get(f"/api/v1/agents/tasks/{other}/events?token={issued['access_token']}")
    status = client.get(f"/api/v1/agents/tasks/{task_id}", headers=_bearer(issued["access_token"]))

    assert own.status_code == 200
    assert "event: result" in own.text
    assert by_header.status_code == 200
    assert other_stream.status_code == 404
    assert status.status_code == 401
    assert status.json()["detail"] == "this token only opens the event stream of its task"


def test_access_token_is_refused_in_a_stream_url(stack: Stack) -> None:
    client = stack.web.client
    task_id = submit(client, "echo", "no tokens in urls")
    issued = _token(client)

    response = client.get(f"/api/v1/agents/tasks/{task_id}/events?token={issued['access_token']}")

    assert response.status_code == 401
    assert "Authorization header" in response.json()["detail"]


def test_token_for_another_users_task_is_404(stack: Stack) -> None:
    task_id = submit(stack.web.client, "echo", "alice's", user="alice")

    response = stack.web.client.post(TOKEN, json={"task_id": task_id}, headers=headers_for("bob"))

    assert response.status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"ttl_seconds": 10}, "ttl_seconds"),
        ({"ttl_seconds": 10**9}, "ttl_seconds"),
        ({"ttl_seconds": "60"}, "ttl_seconds"),
        ({"task_id": 7}, "task_id"),
        ({"scope": "admin"}, "scope"),
    ],
)
def test_token_request_with_bad_fields_is_422(
    stack: Stack, body: dict[str, object], field: str
) -> None:
    response = stack.web.client.post(TOKEN, json=body, headers=headers_for("alice"))

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == field


def test_token_needs_the_api_key_itself(stack: Stack) -> None:
    client = stack.web.client
    issued = _token(client)

    by_token = client.post(TOKEN, headers=_bearer(issued["access_token"]))
    by_nothing = client.post(TOKEN)
    by_wrong_key = client.post(TOKEN, headers={"X-API-Key": "nope"})

    assert by_token.status_code == 401
    assert by_nothing.status_code == 401
    assert by_wrong_key.status_code == 401


@pytest.mark.parametrize("token", ["junk", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30.x"])
def test_revoking_a_token_we_did_not_issue_is_400(stack: Stack, token: str) -> None:
    response = stack.web.client.post(REVOKE, json={"token": token}, headers=headers_for("alice"))

    assert response.status_code == 400
    assert "not issued by this service" in response.json()["detail"]


def test_revoking_another_users_token_is_404_and_leaves_it_working(stack: Stack) -> None:
    client = stack.web.client
    alices = _token(client, "alice")

    response = client.post(
        REVOKE, json={"token": alices["access_token"]}, headers=headers_for("bob")
    )

    assert response.status_code == 404
    assert client.get("/api/v1/agents", headers=_bearer(alices["access_token"])).status_code == 200


def test_audit_rows_for_a_task_and_its_tokens(
    stack: Stack, llm: LLMControl, service_environment: ServiceEnvironment
) -> None:
    client = stack.web.client
    completed = submit(client, "echo", "audited")
    poll_until_done(client, completed)
    llm.script("audited failure", tokens=[], failures=[{"status": 400, "message": "bad"}])
    failed = submit(client, "simple_llm_agent", "audited failure")
    poll_until_done(client, failed)
    client.post(f"/api/v1/agents/tasks/{completed}/cancel", headers=headers_for("alice"))
    issued = _token(client)
    client.post(REVOKE, json={"token": issued["access_token"]}, headers=headers_for("alice"))
    url = service_environment.database_url

    def summary(resource_id: str) -> list[tuple[object, ...]]:
        return [
            (r["action"], r["user_id"], r["resource_type"], r["outcome"])
            for r in audit_rows(url, resource_id=resource_id)
        ]

    # The worker writes a task's outcome row just after storing the outcome itself.
    wait_for(lambda: len(summary(failed)) == 2 and len(summary(completed)) == 3, timeout=10)
    assert summary(completed) == [
        ("task.submit", "alice", "task", "success"),
        ("task.complete", "alice", "task", "success"),
        ("task.cancel", "alice", "task", "success"),
    ]
    assert summary(failed) == [
        ("task.submit", "alice", "task", "success"),
        ("task.fail", "alice", "task", "failure"),
    ]
    assert summary(str(issued["jti"])) == [
        ("token.issue", "alice", "token", "success"),
        ("token.revoke", "alice", "token", "success"),
    ]
    [cancel] = [r for r in audit_rows(url, resource_id=completed) if r["action"] == "task.cancel"]
    assert cancel["details"] == {"requested": False, "status": "completed"}
    [fail] = [r for r in audit_rows(url, resource_id=failed) if r["action"] == "task.fail"]
    assert fail["details"]["error"] == "LLMRequestRejectedError"


def test_stream_token_of_a_submit_by_access_token_expires_with_it(stack: Stack) -> None:
    client = stack.web.client
    issued = _token(client, ttl_seconds=60)

    accepted = accept(client, "echo", "short-lived", headers=_bearer(issued["access_token"]))

    stream_token = accepted.stream_token
    claims = jwt.decode(stream_token, options={"verify_signature": False})
    assert claims["exp"] <= issued_expiry(issued)


def issued_expiry(issued: dict[str, object]) -> int:
    return int(datetime.fromisoformat(str(issued["expires_at"])).timestamp())


def test_tokens_of_a_user_whose_key_was_removed_are_refused(redis_server: EmbeddedRedis) -> None:
    secret = "t" * 40
    url = redis_db_url(redis_server.url, IDLE_DB)
    before = start_web(url, env={"TOKEN_SECRET": secret})
    after = start_web(url, env={"TOKEN_SECRET": secret, "API_KEYS": "alice-key:alice"})
    try:
        bobs = _token(before.client, "bob")
        alices = _token(before.client, "alice")

        refused = after.client.get("/api/v1/agents", headers=_bearer(bobs["access_token"]))
        accepted = after.client.get("/api/v1/agents", headers=_bearer(alices["access_token"]))
    finally:
        before.stop()
        after.stop()

    assert refused.status_code == 401
    assert accepted.status_code == 200


def test_audit_rows_of_a_task_in_the_prefork_pool(
    bare_stack: Stack, service_environment: ServiceEnvironment
) -> None:
    """The per-task loop of a prefork child writes the outcome row too."""
    client = bare_stack.web.client
    task_id = submit(client, "echo", "prefork audited")
    poll_until_done(client, task_id)

    def actions() -> list[object]:
        rows = audit_rows(service_environment.database_url, resource_id=task_id)
        return [row["action"] for row in rows]

    wait_for(lambda: len(actions()) == 2, timeout=10)
    assert actions() == ["task.submit", "task.complete"]
