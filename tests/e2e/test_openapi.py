"""The OpenAPI document is served, and it is truthful: every status a route answers is declared
on it, with the body it has, and every declared status is one the route really answers.

One test causes every answer of every route for real (a wrong key, an unknown id, an
idempotency conflict, a body over the limit, a per-user cap reached, a Redis and a database that
do not answer) through
a client that records ``(method, route template, status)``, then compares with
``/openapi.json``. A new route, or a new refusal, that the document does not declare fails it.
"""

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from scripts.embedded_redis import EmbeddedRedis, free_port
from tests.e2e.conftest import IDLE_DB, Stack
from tests.support import redis_databases
from teststack.polling import submit
from teststack.stack import headers_for, redis_db_url, start_web

CAPPED_DB = redis_databases.CAPPED_DOCUMENT

ALICE = headers_for("alice")
BOB = headers_for("bob")
INVOKE = "/api/v1/agents/echo/invoke-async"
#: Statuses declared that the test does not cause (none).
DECLARED_AHEAD: set[int] = set()
#: Caps of one, so that a second request of each kind reaches them.
CAPS_OF_ONE = {
    "MAX_ACTIVE_TASKS_PER_USER": "1",
    "MAX_STREAMS_PER_USER": "1",
    "MAX_TOKEN_MINTS_PER_MINUTE": "1",
    "MAX_SESSIONS_PER_USER": "1",
}
TOO_LARGE = b"x" * 300_000
JSON = {"Content-Type": "application/json"}


@dataclass
class Recorder:
    """Every answer a recording client received, by operation of the OpenAPI document."""

    templates: list[tuple[re.Pattern[str], str]]
    seen: dict[tuple[str, str], set[int]] = field(default_factory=dict)

    @classmethod
    def of(cls, document: dict[str, Any]) -> "Recorder":
        templates = [
            (re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", path) + "$"), path)
            for path in document["paths"]
        ]
        return cls(templates)

    def record(self, response: httpx.Response) -> None:
        path = response.request.url.path
        template = next((t for pattern, t in self.templates if pattern.match(path)), None)
        assert template is not None, f"{path} answered {response.status_code}: not in the doc"
        key = (response.request.method.lower(), template)
        self.seen.setdefault(key, set()).add(response.status_code)

    def client(self, base_url: str) -> httpx.Client:
        return httpx.Client(
            base_url=base_url, timeout=30.0, event_hooks={"response": [self.record]}
        )


@pytest.fixture(scope="module")
def document(stack: Stack) -> dict[str, Any]:
    response = stack.web.client.get("/openapi.json")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_openapi_document_and_docs_page_are_served(stack: Stack, document: dict[str, Any]) -> None:
    docs = stack.web.client.get("/docs")

    assert document["openapi"].startswith("3.")
    assert "/api/v1/agents/tasks/{task_id}/events" in document["paths"]
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text


def _declared(document: dict[str, Any]) -> dict[tuple[str, str], set[int]]:
    return {
        (method, path): {int(status) for status in operation["responses"]}
        for path, operations in document["paths"].items()
        for method, operation in operations.items()
    }


def _cause_every_answer_of_a_working_service(client: httpx.Client) -> None:
    client.get("/healthz")
    client.get("/readyz")
    client.get("/api/v1/agents", headers=ALICE)
    client.get("/api/v1/agents")

    client.post(INVOKE, json={"message": "hi"})
    client.post("/api/v1/agents/nope/invoke-async", json={"message": "hi"}, headers=ALICE)
    client.post(INVOKE, json={"message": ""}, headers=ALICE)
    client.post(INVOKE, json={"message": "x" * 40_000}, headers=ALICE)
    keyed = {**ALICE, "Idempotency-Key": "openapi-conflict"}
    client.post(INVOKE, json={"message": "one"}, headers=keyed)
    client.post(INVOKE, json={"message": "two"}, headers=keyed)
    task_id = submit(client, "echo", "for the document")

    task = f"/api/v1/agents/tasks/{task_id}"
    for headers in (ALICE, BOB, {}):
        client.get(task, headers=headers)
        client.post(f"{task}/cancel", headers=headers)
    client.post(f"{task}/cancel", content=TOO_LARGE, headers={**ALICE, **JSON})
    for headers in (ALICE, BOB, {}, {**ALICE, "Last-Event-ID": "1-x"}):
        with client.stream("GET", f"{task}/events", headers=headers) as response:
            response.read()

    token = "/api/v1/auth/token"
    access = client.post(token, headers=ALICE).json()["access_token"]
    client.post(token)
    client.post(token, json={"task_id": task_id}, headers=BOB)
    client.post(token, json={"ttl_seconds": 1}, headers=ALICE)
    client.post(token, content=TOO_LARGE, headers={**ALICE, **JSON})
    revoke = "/api/v1/auth/revoke"
    client.post(revoke, json={"token": "not.a.token"}, headers=ALICE)
    client.post(revoke, json={"token": access}, headers=BOB)
    client.post(revoke, json={"token": access})
    client.post(revoke, json={"token": 1}, headers=ALICE)
    client.post(revoke, content=TOO_LARGE, headers={**ALICE, **JSON})
    client.post(revoke, json={"token": access}, headers=ALICE)

    sessions = "/api/v1/sessions"
    session = f"{sessions}/{client.post(sessions, headers=ALICE).json()['session_id']}"
    client.post(sessions)
    client.post(sessions, content=TOO_LARGE, headers={**ALICE, **JSON})
    for headers in (ALICE, BOB, {}):
        client.get(session, headers=headers)
    for headers in (BOB, {}, ALICE):
        client.delete(session, headers=headers)


def _cause_every_answer_of_a_dead_redis(client: httpx.Client) -> None:
    access = client.post("/api/v1/auth/token", headers=ALICE).json()["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    task = "/api/v1/agents/tasks/00000000-0000-0000-0000-000000000000"
    client.get("/readyz")
    client.get("/api/v1/agents", headers=bearer)
    client.post(INVOKE, json={"message": "hi"}, headers=ALICE)
    client.get(task, headers=ALICE)
    client.post(f"{task}/cancel", headers=ALICE)
    client.get(f"{task}/events", headers=ALICE)
    client.post("/api/v1/auth/token", json={"task_id": "t-1"}, headers=ALICE)
    client.post("/api/v1/auth/revoke", json={"token": access}, headers=ALICE)


def _cause_every_answer_of_caps_reached(client: httpx.Client) -> None:
    """A web with caps of one and no worker behind it: the first task stays queued."""
    task_id = submit(client, "echo", "holds the only slot")
    client.post(INVOKE, json={"message": "one too many"}, headers=ALICE)
    client.post("/api/v1/auth/token", headers=ALICE)
    client.post("/api/v1/auth/token", headers=ALICE)
    client.post("/api/v1/sessions", headers=ALICE)
    client.post("/api/v1/sessions", headers=ALICE)
    events = f"/api/v1/agents/tasks/{task_id}/events"
    with client.stream("GET", events, headers=ALICE) as held:
        assert held.status_code == 200
        client.get(events, headers=ALICE)


def _cause_every_answer_of_a_dead_database(client: httpx.Client) -> None:
    client.post("/api/v1/sessions", headers=ALICE)
    client.get("/api/v1/sessions/s-1", headers=ALICE)
    client.delete("/api/v1/sessions/s-1", headers=ALICE)


@pytest.fixture
def dead_redis_web() -> Iterator[str]:
    web = start_web(f"redis://127.0.0.1:{free_port()}/0", ready_path="/healthz")
    try:
        yield web.base_url
    finally:
        web.stop()


@pytest.fixture
def capped_web(redis_server: EmbeddedRedis) -> Iterator[str]:
    web = start_web(redis_db_url(redis_server.url, CAPPED_DB), env=CAPS_OF_ONE)
    try:
        yield web.base_url
    finally:
        web.stop()


@pytest.fixture
def dead_database_web(redis_server: EmbeddedRedis) -> Iterator[str]:
    dead = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/none"
    web = start_web(
        redis_db_url(redis_server.url, IDLE_DB), env={"DATABASE_URL": dead}, ready_path="/healthz"
    )
    try:
        yield web.base_url
    finally:
        web.stop()


def test_every_answer_of_every_route_is_declared_and_every_declared_one_is_answered(
    stack: Stack,
    document: dict[str, Any],
    capped_web: str,
    dead_redis_web: str,
    dead_database_web: str,
) -> None:
    recorder = Recorder.of(document)
    for base_url, cause in [
        (stack.web.base_url, _cause_every_answer_of_a_working_service),
        (capped_web, _cause_every_answer_of_caps_reached),
        (dead_redis_web, _cause_every_answer_of_a_dead_redis),
        (dead_database_web, _cause_every_answer_of_a_dead_database),
    ]:
        with recorder.client(base_url) as client:
            cause(client)

    declared = _declared(document)
    undeclared = {
        operation: sorted(statuses - declared[operation])
        for operation, statuses in recorder.seen.items()
        if statuses - declared[operation]
    }
    never_answered = {
        operation: sorted(statuses - recorder.seen.get(operation, set()) - DECLARED_AHEAD)
        for operation, statuses in declared.items()
        if statuses - recorder.seen.get(operation, set()) - DECLARED_AHEAD
    }
    assert undeclared == {}, "answered, not declared in /openapi.json"
    assert never_answered == {}, "declared in /openapi.json, never answered"
    assert 500 not in set().union(*recorder.seen.values())


def test_every_error_answer_declares_its_body(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if int(status) < 400:
                    continue
                schema = answer["content"]["application/json"]["schema"]
                name = schema["$ref"].rsplit("/", 1)[1]
                assert name in {"ErrorMessage", "ValidationErrors", "Health", "CapReached"}, (
                    method,
                    path,
                )
                assert "detail" in schemas[name]["properties"] or name == "Health"


def test_optional_parameters_are_strings_that_may_be_left_out(document: dict[str, Any]) -> None:
    """A header or query parameter cannot be null: "string or null" makes a fuzzer send 'null'."""
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                assert "anyOf" not in schema, (method, path, parameter["name"])
                assert schema["type"] == "string", (method, path, parameter["name"])


def test_event_stream_describes_each_event(document: dict[str, Any]) -> None:
    answer = document["paths"]["/api/v1/agents/tasks/{task_id}/events"]["get"]["responses"]["200"]

    assert list(answer["content"]) == ["text/event-stream"]
    item = answer["content"]["text/event-stream"]["itemSchema"]
    assert item["required"] == ["id", "event", "data"]


def test_metadata_values_are_described_as_values_the_service_can_carry(
    document: dict[str, Any],
) -> None:
    schemas = document["components"]["schemas"]
    metadata = schemas["InvokeRequest"]["properties"]["metadata"]["anyOf"][0]
    number = next(s for s in schemas["JsonValue"]["anyOf"] if s.get("type") == "number")

    assert metadata["additionalProperties"] == {"$ref": "#/components/schemas/JsonValue"}
    assert "32 levels" in metadata["description"]
    assert (number["minimum"], number["maximum"]) == (-(2**63), 2**64 - 1)


def test_wrong_method_is_405_naming_every_method_of_the_path(stack: Stack) -> None:
    session = stack.web.client.post("/api/v1/sessions", headers=ALICE).json()["session_id"]

    response = stack.web.client.put(f"/api/v1/sessions/{session}", headers=ALICE)

    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"DELETE", "GET"}


def test_every_method_a_405_allows_is_served(stack: Stack) -> None:
    """A client that believes the Allow header must not get 405 again (HEAD was named there
    and refused)."""
    client = stack.web.client
    for path in ("/api/v1/agents", "/healthz", "/readyz", "/api/v1/sessions/no-such-session"):
        refused = client.put(path, headers=ALICE)
        assert refused.status_code == 405

        for method in refused.headers["allow"].split(", "):
            assert client.request(method, path, headers=ALICE).status_code != 405, (method, path)
