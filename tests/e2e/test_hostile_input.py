"""Input the service cannot store, encode or stream is a 422 at the door, on every route.

Each request here was once answered 500, or accepted and then never finished: a lone surrogate
(valid JSON, not valid Unicode), an integer beyond 64 bits, metadata nested past orjson's limit,
a cursor Redis refuses or that is past the log's end. Refusals are sent to ``idle_web`` (no
worker, a Redis database of its own that must stay empty); what needs a task uses ``stack``.
Bodies are sent as raw bytes, as an attacker would: a JSON encoder would refuse to write them.
"""

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from tests.e2e.conftest import Stack
from teststack.polling import poll_until_done, submit
from teststack.sse import events_path, read_stream
from teststack.stack import headers_for

INVOKE = "/api/v1/agents/echo/invoke-async"
JSON = {**headers_for("alice"), "Content-Type": "application/json"}
#: The documented depth limit of metadata (README, "REST API").
MAX_DEPTH = 32


@pytest.fixture
def web(idle_web: Stack, idle_redis: redis.Redis) -> Iterator[httpx.Client]:
    """The idle web process; every test using it must leave its Redis database empty."""
    assert idle_redis.dbsize() == 0
    yield idle_web.web.client
    assert idle_redis.keys("*") == [], "a refused request must not write or queue anything"


def _nested_metadata(levels: int) -> bytes:
    """``{"a": {"a": ... {}}}``: an object ``levels`` deep, itself included."""
    return b'{"a": ' * (levels - 1) + b"{}" + b"}" * (levels - 1)


def _invoke_body(metadata: bytes) -> bytes:
    return b'{"message": "hi", "metadata": ' + metadata + b"}"


def _assert_422(response: httpx.Response, loc: list[Any]) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    items = response.json()["detail"]
    assert loc in [item["loc"] for item in items], items
    found: dict[str, Any] = next(item for item in items if item["loc"] == loc)
    return found


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"message": "hi \\ud800 there"}', ["body", "message"]),
        (b'{"message": "\\udfff"}', ["body", "message"]),
        (_invoke_body(b'{"k": "\\ud800"}'), ["body", "metadata"]),
        (_invoke_body(b'{"\\ud800": 1}'), ["body", "metadata"]),
        (_invoke_body(b'{"a": [{"b": "x\\udbff"}]}'), ["body", "metadata"]),
        (_invoke_body(b'{"n": 18446744073709551616}'), ["body", "metadata"]),
        (_invoke_body(b'{"n": -1451761380546951941980160}'), ["body", "metadata"]),
        (_invoke_body(b'{"n": NaN}'), ["body", "metadata"]),
        (_invoke_body(b'{"n": -Infinity}'), ["body", "metadata"]),
        (_invoke_body(b'{"n": 1e400}'), ["body", "metadata"]),
        (_invoke_body(_nested_metadata(MAX_DEPTH + 1)), ["body", "metadata"]),
        (_invoke_body(_nested_metadata(252)), ["body", "metadata"]),
        (_invoke_body(_nested_metadata(253)), ["body", "metadata"]),
        (_invoke_body(_nested_metadata(900)), ["body", "metadata"]),
        (b'{"message": "hi", "\\ud800": 1}', ["body"]),
        (b'{"message": "hi", "session_id": "s\\ud800"}', ["body", "session_id"]),
    ],
    ids=[
        "surrogate-in-message",
        "low-surrogate-message",
        "surrogate-value",
        "surrogate-key",
        "surrogate-nested",
        "int-2**64",
        "int-below-int64",
        "nan",
        "infinity",
        "float-overflow",
        "depth-33",
        "depth-252",
        "depth-253",
        "depth-900",
        "surrogate-unknown-field",
        "surrogate-session-id",
    ],
)
def test_submit_of_unencodable_input_is_422_naming_the_field(
    web: httpx.Client, body: bytes, loc: list[str]
) -> None:
    _assert_422(web.post(INVOKE, content=body, headers=JSON), loc)


def test_body_the_parser_gives_up_on_is_422_not_500(web: httpx.Client) -> None:
    deep_arrays = b'{"message": "hi", "metadata": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}"
    not_utf8 = b'{"message": "hi \xff\xfe"}'
    huge_integer = b'{"message": "hi", "metadata": {"n": ' + b"9" * 5000 + b"}}"

    for body in (deep_arrays, not_utf8, huge_integer):
        item = _assert_422(web.post(INVOKE, content=body, headers=JSON), ["body"])
        assert item["type"] == "json_invalid"


def test_depth_error_names_the_documented_limit(web: httpx.Client) -> None:
    response = web.post(INVOKE, content=_invoke_body(_nested_metadata(40)), headers=JSON)

    item = _assert_422(response, ["body", "metadata"])
    assert item["type"] == "json_too_deep"
    assert f"{MAX_DEPTH} levels" in item["msg"]


def test_long_agent_id_is_422_without_echoing_it(web: httpx.Client) -> None:
    agent_id = "a" * 8000

    response = web.post(
        f"/api/v1/agents/{agent_id}/invoke-async", json={"message": "hi"}, headers=JSON
    )

    _assert_422(response, ["path", "agent_id"])
    assert len(response.content) < 1000


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/console/" + "a" * 8000, None),
        ("POST", INVOKE, {"message": "hi", "session_id": "a" * 128}),
    ],
    ids=["console-file", "session-at-submit"],
)
def test_404_echoes_at_most_64_characters_of_what_it_did_not_find(
    web: httpx.Client, method: str, path: str, body: dict[str, str] | None
) -> None:
    response = web.request(method, path, json=body, headers=JSON)

    assert response.status_code == 404, response.text[:200]
    assert "a" * 65 not in response.json()["detail"], response.text[:200]


def test_non_ascii_idempotency_key_is_422_naming_the_header(web: httpx.Client) -> None:
    response = web.post(
        INVOKE,
        json={"message": "hi"},
        headers={
            **{name.encode(): value.encode() for name, value in JSON.items()},
            b"Idempotency-Key": b"caf\xe9",
        },
    )

    _assert_422(response, ["header", "Idempotency-Key"])


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("X-API-Key", ["alice-key", "bob-key"]),
        ("X-API-Key", ["alice-key", "alice-key"]),
        ("Authorization", ["Bearer a.b.c", "Bearer d.e.f"]),
        ("Idempotency-Key", ["one", "two"]),
    ],
)
def test_a_credential_or_key_header_sent_twice_is_400_naming_it(
    web: httpx.Client, name: str, values: list[str]
) -> None:
    # Which of two X-API-Key headers counts must not depend on who reads them (the route took
    # the first, a proxy may take the last): the request is refused, and nothing is queued.
    headers = [(k, v) for k, v in JSON.items() if k != name] + [(name, v) for v in values]
    response = web.post(INVOKE, json={"message": "hi"}, headers=headers)

    assert response.status_code == 400, response.text
    assert response.json() == {"detail": f"the {name} header was sent more than once; send it once"}


def test_a_stream_cursor_sent_twice_is_400(web: httpx.Client) -> None:
    response = web.get(
        events_path("any-task"),
        headers=[*headers_for("alice").items(), ("Last-Event-ID", "1-0"), ("Last-Event-ID", "2-0")],
    )

    assert response.status_code == 400, response.text
    assert "Last-Event-ID" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("/api/v1/auth/token", b'{"task_id": "\\ud800"}', ["body", "task_id"]),
        ("/api/v1/auth/token", b'{"ttl_seconds": 1e400}', ["body", "ttl_seconds"]),
        ("/api/v1/auth/revoke", b'{"token": "\\ud800"}', ["body", "token"]),
        ("/api/v1/auth/revoke", b'{"token": "a.b\\udc80.c"}', ["body", "token"]),
    ],
)
def test_auth_bodies_with_unencodable_input_are_422(
    web: httpx.Client, path: str, body: bytes, loc: list[str]
) -> None:
    _assert_422(web.post(path, content=body, headers=JSON), loc)


@pytest.fixture(scope="module")
def finished_task(stack: Stack) -> str:
    task_id = submit(stack.web.client, "echo", "cursor target")
    poll_until_done(stack.web.client, task_id)
    return task_id


@pytest.mark.parametrize(
    ("query", "headers", "loc"),
    [
        ("", {"Last-Event-ID": "18446744073709551615-18446744073709551615"}, "header"),
        ("", {"Last-Event-ID": "99999999999999-0"}, "header"),
        ("?last_event_id=%D9%A1-%D9%A1", {}, "query"),
        ("?last_event_id=1-1%0A", {}, "query"),
        ("?last_event_id=99999999999999-0", {}, "query"),
        ("?last_event_id=18446744073709551616-0", {}, "query"),
    ],
    ids=["max-id", "past-the-end", "arabic-digits", "newline", "query-past-end", "over-64-bits"],
)
def test_stream_cursor_redis_would_refuse_or_past_the_end_is_422_before_the_stream(
    stack: Stack, finished_task: str, query: str, headers: dict[str, str], loc: str
) -> None:
    response = stack.web.client.get(
        events_path(finished_task) + query, headers={**headers_for("alice"), **headers}
    )

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    where = ["header", "Last-Event-ID"] if loc == "header" else ["query", "last_event_id"]
    assert where in [item["loc"] for item in response.json()["detail"]]


def test_stream_resumes_after_any_id_it_sent_up_to_the_last(
    stack: Stack, finished_task: str
) -> None:
    client = stack.web.client
    everything = read_stream(client, events_path(finished_task), headers=headers_for("alice"))

    def after(cursor: str) -> list[Any]:
        headers = {**headers_for("alice"), "Last-Event-ID": cursor}
        return read_stream(client, events_path(finished_task), headers=headers)

    assert after(everything[-2].id) == everything[-1:]
    assert after(everything[-1].id) == []  # a reconnect after the end: the stream just ends
    assert everything[-1].event == "result"


def test_metadata_at_every_limit_is_processed_polled_and_streamed_to_the_end(stack: Stack) -> None:
    nested: Any = {}
    for _ in range(MAX_DEPTH - 2):
        nested = {"a": nested}
    metadata = {
        "deep": nested,
        "ints": [-(2**63), 2**64 - 1],
        "text": "😀 \u2028 é",
        "😀": [1.5, None, True],
    }

    task_id = submit(stack.web.client, "echo", "limits", stream=True, metadata=metadata)
    polled = poll_until_done(stack.web.client, task_id)
    events = read_stream(stack.web.client, events_path(task_id), headers=headers_for("alice"))

    assert polled["status"] == "completed", polled
    assert polled["result"]["metadata"]["request"] == metadata
    assert events[-1].event == "result"
    assert events[-1].data["metadata"]["request"] == metadata
