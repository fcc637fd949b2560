"""Tests for the servers teststack starts: the loopback LLM server, and EmbeddedRedis.

The LLM server is exercised over real HTTP, as the code under test will use
it, so these tests pin down the wire protocol other tests rely on.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from httpx_sse import connect_sse

from scripts.embedded_redis import EmbeddedRedis, free_port, is_reachable
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess


@pytest.fixture(scope="module")
def llm_server() -> Iterator[LLMServerProcess]:
    with LLMServerProcess() as server:
        yield server


@pytest.fixture
def control(llm_server: LLMServerProcess) -> Iterator[LLMControl]:
    control = LLMControl(llm_server.base_url)
    control.reset()
    yield control
    control.close()


@pytest.fixture
def client(llm_server: LLMServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=llm_server.base_url, timeout=10.0) as client:
        yield client


def _body(prompt: str, *, stream: bool = True, include_usage: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": prompt},
        ],
        "stream": stream,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def _stream_chunks(client: httpx.Client, body: dict[str, Any]) -> list[Any]:
    """Every SSE data payload of one streamed call, decoded; ``[DONE]`` kept as a string."""
    with connect_sse(client, "POST", "/chat/completions", json=body) as source:
        source.response.raise_for_status()
        return [
            event.data if event.data == "[DONE]" else event.json() for event in source.iter_sse()
        ]


def _content(chunks: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for chunk in chunks
        if isinstance(chunk, dict)
        for choice in chunk["choices"]
    )


def _wait_for(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.02)


def test_stream_echoes_prompt_when_no_scenario(client: httpx.Client, control: LLMControl) -> None:
    chunks = _stream_chunks(client, _body("hello there world"))

    assert _content(chunks) == "echo: hello there world"
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["model"] == "test-model"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop"}
    assert chunks[-1] == "[DONE]"
    assert len({chunk["id"] for chunk in chunks[:-1]}) == 1


def test_stream_answers_after_scripted_failures_when_failures_registered(
    client: httpx.Client, control: LLMControl
) -> None:
    control.script(
        "flaky",
        tokens=["a", "b", "c"],
        failures=[
            {"status": 503, "retry_after": 2},
            {"status": 503, "retry_after": "1", "body": "busy"},
        ],
    )

    first = client.post("/chat/completions", json=_body("flaky"))
    second = client.post("/chat/completions", json=_body("flaky"))
    chunks = _stream_chunks(client, _body("flaky"))

    assert (first.status_code, first.headers["retry-after"]) == (503, "2")
    assert (second.status_code, second.headers["retry-after"]) == (503, "1")
    assert second.json()["error"]["message"] == "busy"
    assert first.json()["error"]["type"] == "server_error"
    assert _content(chunks) == "abc"


def test_stream_fails_midway_then_answers_when_a_failure_has_after_tokens(
    client: httpx.Client, control: LLMControl
) -> None:
    control.script(
        "cut short",
        tokens=["a", "b", "c", "d"],
        failures=[{"status": 503, "after_tokens": 2, "body": "overloaded"}],
    )

    first = _stream_chunks(client, _body("cut short"))
    second = _stream_chunks(client, _body("cut short"))

    assert _content(first[:-1]) == "ab"
    assert first[-1] == {"error": {"message": "overloaded", "type": "server_error", "code": 503}}
    assert "[DONE]" not in first
    assert _content(second) == "abcd"
    assert [call["status"] for call in control.calls("cut short")] == [200, 200]


def test_stream_reports_usage_when_include_usage(client: httpx.Client, control: LLMControl) -> None:
    control.script("count me", tokens=["x", "y"])

    chunks = _stream_chunks(client, _body("count me", include_usage=True))

    usage_chunk = chunks[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}


def test_stream_omits_usage_when_not_requested(client: httpx.Client, control: LLMControl) -> None:
    chunks = _stream_chunks(client, _body("no usage please"))

    assert not any("usage" in chunk for chunk in chunks if isinstance(chunk, dict))


def test_completion_returns_whole_message_when_not_streaming(
    client: httpx.Client, control: LLMControl
) -> None:
    response = client.post("/chat/completions", json=_body("say hi", stream=False))

    payload = response.json()
    assert payload["object"] == "chat.completion"
    assert payload["choices"][0]["message"] == {"role": "assistant", "content": "echo: say hi"}
    assert payload["usage"]["completion_tokens"] == 3


def test_request_rejected_when_no_user_message(client: httpx.Client, control: LLMControl) -> None:
    body = {"model": "m", "messages": [{"role": "system", "content": "alone"}], "stream": True}

    response = client.post("/chat/completions", json=body)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_request_rejected_when_body_not_json(client: httpx.Client, control: LLMControl) -> None:
    response = client.post("/chat/completions", content=b"{not json")

    assert response.status_code == 400
    assert "message" in response.json()["error"]


def test_calls_recorded_when_requests_made(
    llm_server: LLMServerProcess, client: httpx.Client, control: LLMControl
) -> None:
    control.script("log/me?", tokens=["ok"], failures=[{"status": 429}])
    headers = {"Authorization": "Bearer sk-test"}

    client.post("/chat/completions", json=_body("log/me?"), headers=headers)
    _stream_chunks(client, _body("log/me?"))

    calls = control.calls("log/me?")
    assert [call["status"] for call in calls] == [429, 200]
    assert calls[0]["headers"] == {"authorization": "Bearer sk-test"}
    assert calls[1]["model"] == "test-model"
    assert calls[1]["messages"] == _body("log/me?")["messages"]
    assert [call["disconnected"] for call in calls] == [False, False]
    assert control.calls("never called") == []


def test_call_marked_disconnected_when_client_closes_stream_early(
    client: httpx.Client, control: LLMControl
) -> None:
    control.script("slow", tokens=[f" t{i}" for i in range(100)], delay=0.05)

    with connect_sse(client, "POST", "/chat/completions", json=_body("slow")) as source:
        first = next(source.iter_sse())
        closed_at = time.monotonic()
    assert json.loads(first.data)["choices"][0]["delta"]["content"] == " t0"

    _wait_for(lambda: bool(control.calls("slow")[0]["disconnected"]))
    call = control.calls("slow")[0]
    assert isinstance(call["disconnected_at"], float)
    assert closed_at - 0.5 < call["disconnected_at"] < closed_at + 1.0
    assert call["completed"] is False


def test_server_serves_many_streams_when_concurrent(
    llm_server: LLMServerProcess, control: LLMControl
) -> None:
    control.script("busy", tokens=["t"] * 50, delay=0.02)

    async def one(client: httpx.AsyncClient) -> str:
        async with client.stream("POST", "/chat/completions", json=_body("busy")) as response:
            return "".join([line async for line in response.aiter_lines()])

    async def many() -> list[str]:
        limits = httpx.Limits(max_connections=150)
        async with httpx.AsyncClient(
            base_url=llm_server.base_url, limits=limits, timeout=30.0
        ) as client:
            return await asyncio.gather(*(one(client) for _ in range(120)))

    started = time.monotonic()
    bodies = asyncio.run(many())

    assert all(body.endswith("data: [DONE]") for body in bodies)
    assert time.monotonic() - started < 10.0
    assert len(control.calls("busy")) == 120


def test_embedded_redis_answers_ping_until_stopped() -> None:
    server = EmbeddedRedis(port=free_port())
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping() is True
        client.close()
    finally:
        server.stop()

    assert not is_reachable(server.url)
    server.stop()  # idempotent


def _tool_calls_of(chunks: list[Any]) -> tuple[list[dict[str, Any]], int]:
    """The streamed tool calls joined by index (id, name, arguments), and how many pieces."""
    calls: dict[int, dict[str, Any]] = {}
    pieces = 0
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        for choice in chunk["choices"]:
            for piece in choice["delta"].get("tool_calls") or ():
                pieces += 1
                call = calls.setdefault(piece["index"], {"id": "", "name": "", "arguments": ""})
                call["id"] = piece.get("id") or call["id"]
                call["name"] += piece.get("function", {}).get("name") or ""
                call["arguments"] += piece.get("function", {}).get("arguments") or ""
    return [calls[i] for i in sorted(calls)], pieces


WEATHER_ROUND = [
    {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}', "id": "call_p"},
    {"name": "get_time", "arguments": '{"zone": "Europe/Oslo"}'},
]


def test_stream_answers_tool_calls_in_pieces_then_text_when_tool_rounds_scripted(
    client: httpx.Client, control: LLMControl
) -> None:
    control.script("weather?", tokens=["It is ", "sunny."], tool_rounds=[WEATHER_ROUND])
    first = _body("weather?", include_usage=True)
    first["tools"] = [{"type": "function", "function": {"name": "get_weather"}}]

    chunks = _stream_chunks(client, first)

    calls, pieces = _tool_calls_of(chunks)
    assert calls == [
        {"id": "call_p", "name": "get_weather", "arguments": WEATHER_ROUND[0]["arguments"]},
        {"id": "call_0_1", "name": "get_time", "arguments": WEATHER_ROUND[1]["arguments"]},
    ]
    assert pieces > 2 * len(calls), "arguments come in several pieces"
    assert chunks[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-2]["usage"]["completion_tokens"] == pieces
    assert _content(chunks) == ""

    second = _body("weather?")
    second["messages"] += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c["id"],
                    "type": "function",
                    "function": {"name": c["name"], "arguments": c["arguments"]},
                }
                for c in calls
            ],
        },
        {"role": "tool", "tool_call_id": "call_p", "content": "21 C"},
        {"role": "tool", "tool_call_id": "call_0_1", "content": "14:00"},
    ]
    chunks = _stream_chunks(client, second)

    assert _content(chunks) == "It is sunny."
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert _tool_calls_of(chunks) == ([], 0)
    recorded = control.calls("weather?")
    assert recorded[0]["tools"] == first["tools"]
    assert recorded[1]["messages"] == second["messages"]


def test_completion_returns_tool_calls_whole_when_not_streaming(
    client: httpx.Client, control: LLMControl
) -> None:
    control.script("weather?", tokens=["sunny"], tool_rounds=[WEATHER_ROUND[:1]])

    response = client.post("/chat/completions", json=_body("weather?", stream=False))

    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {
            "id": "call_p",
            "type": "function",
            "function": {"name": "get_weather", "arguments": WEATHER_ROUND[0]["arguments"]},
        }
    ]


@pytest.mark.parametrize(
    "extra",
    [
        [{"role": "tool", "tool_call_id": "call_x", "content": "orphan"}],
        [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "f"}}],
            },
            {"role": "user", "content": "and the result?"},
        ],
    ],
    ids=["tool-without-call", "call-without-result"],
)
def test_request_rejected_when_tool_messages_do_not_answer_calls(
    client: httpx.Client, control: LLMControl, extra: list[dict[str, Any]]
) -> None:
    body = _body("hi")
    body["messages"] = [body["messages"][0], *extra, body["messages"][1]]

    response = client.post("/chat/completions", json=body)

    assert response.status_code == 400
    assert "tool" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "scenario",
    [
        {"tokens": [], "tool_rounds": [[]]},
        {"tokens": [], "tool_rounds": [[{"arguments": "{}"}]]},
        {"tokens": [], "tool_rounds": [[{"name": "f", "arguments": {"a": 1}}]]},
        {"tokens": [], "piece_chars": 0},
    ],
)
def test_scenario_rejected_when_tool_rounds_malformed(
    llm_server: LLMServerProcess, control: LLMControl, scenario: dict[str, Any]
) -> None:
    response = httpx.put(f"{llm_server.root_url}/_scenarios/bad", json=scenario, timeout=10.0)

    assert response.status_code == 400
