"""The OpenAI-compatible streaming client, against httpx's in-memory ``MockTransport``, and
``parse_retry_after``."""

import email.utils
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from worker.agents.base import ChatMessage
from worker.agents.openai_client import (
    ChatCompletion,
    OpenAICompatibleClient,
    parse_retry_after,
)
from worker.errors import (
    LLMConnectionError,
    LLMProtocolError,
    LLMRequestRejectedError,
    LLMUnavailableError,
    PermanentAgentError,
    TransientAgentError,
)

pytestmark = pytest.mark.anyio

BASE_URL = "https://llm.test/v1/"
MESSAGES = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Say hello"),
]
SSE_HEADERS = {"content-type": "text/event-stream; charset=utf-8"}
#: 2023-11-14T22:13:20Z, a whole second so HTTP-dates (second precision) compare exactly.
NOW = 1_700_000_000.0

Handler = Callable[[httpx.Request], httpx.Response]


def sse(*events: object) -> bytes:
    """An SSE body: one ``data:`` event per item (dicts as JSON, strings as they are)."""
    lines = []
    for event in events:
        data = event if isinstance(event, str) else orjson.dumps(event).decode()
        lines.append(f"data: {data}\n\n")
    return "".join(lines).encode()


def chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    model: str = "gpt-test-2024-01-01",
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


USAGE_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "model": "gpt-test-2024-01-01",
    "choices": [],
    "usage": {
        "prompt_tokens": 12,
        "completion_tokens": 3,
        "total_tokens": 15,
        "prompt_tokens_details": {"cached_tokens": 0},
    },
}


class Recorder:
    """An in-memory ``ChunkSink``."""

    def __init__(self) -> None:
        self.chunks: list[str] = []

    async def __call__(self, text: str, /) -> None:
        self.chunks.append(text)


async def run(
    handler: Handler, *, api_key: str | None = "sk-test", sink: Recorder | None = None
) -> ChatCompletion:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        client = OpenAICompatibleClient(http, base_url=BASE_URL, api_key=api_key, model="gpt-test")
        return await client.stream_chat(MESSAGES, on_chunk=sink or Recorder())


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    return handler


def stream_of(*events: object) -> Handler:
    return answer(200, sse(*events), SSE_HEADERS)


NORMAL_STREAM = (
    chunk("", role="assistant"),
    chunk("Hello"),
    chunk(","),
    chunk(" world"),
    chunk(finish_reason="stop"),
    USAGE_CHUNK,
    "[DONE]",
)


async def test_stream_chat_delivers_chunks_in_order_when_stream_is_normal() -> None:
    sink = Recorder()

    completion = await run(stream_of(*NORMAL_STREAM), sink=sink)

    assert sink.chunks == ["Hello", ",", " world"]
    assert completion == ChatCompletion(
        content="Hello, world",
        model="gpt-test-2024-01-01",
        finish_reason="stop",
        chunks=3,
        usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    )


async def test_stream_chat_posts_openai_request_when_called() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers=SSE_HEADERS, content=sse(*NORMAL_STREAM))

    await run(handler)

    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == "https://llm.test/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["accept"] == "text/event-stream"
    assert orjson.loads(request.content) == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_stream_chat_sends_no_authorization_when_api_key_is_none() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers=SSE_HEADERS, content=sse(*NORMAL_STREAM))

    await run(handler, api_key=None)

    assert "authorization" not in seen[0].headers


async def test_stream_chat_succeeds_when_finish_reason_arrives_without_done() -> None:
    sink = Recorder()

    completion = await run(stream_of(chunk("Hi"), chunk(finish_reason="length")), sink=sink)

    assert sink.chunks == ["Hi"]
    assert completion == ChatCompletion(
        content="Hi", model="gpt-test-2024-01-01", finish_reason="length", chunks=1, usage={}
    )


async def test_stream_chat_raises_unavailable_with_retry_after_when_status_is_503() -> None:
    body = orjson.dumps({"error": {"message": "The engine is overloaded", "type": "server"}})
    handler = answer(503, body, {"content-type": "application/json", "retry-after": "7"})

    with pytest.raises(LLMUnavailableError) as caught:
        await run(handler)

    assert caught.value.retry_after == 7.0
    assert "503" in str(caught.value)
    assert "The engine is overloaded" in str(caught.value)
    assert isinstance(caught.value, TransientAgentError)


async def test_stream_chat_raises_unavailable_when_status_is_429() -> None:
    body = orjson.dumps({"error": {"message": "Rate limit reached for gpt-test"}})
    handler = answer(429, body, {"content-type": "application/json"})

    with pytest.raises(LLMUnavailableError, match="429: Rate limit reached for gpt-test") as caught:
        await run(handler)

    assert caught.value.retry_after is None


async def test_stream_chat_raises_rejected_with_server_message_when_status_is_400() -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "The model `gpt-nope` does not exist",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        }
    )
    handler = answer(400, body, {"content-type": "application/json"})

    with pytest.raises(LLMRequestRejectedError) as caught:
        await run(handler)

    assert "The model `gpt-nope` does not exist" in str(caught.value)
    assert "400" in str(caught.value)
    assert isinstance(caught.value, PermanentAgentError)


async def test_stream_chat_quotes_plain_body_when_4xx_body_is_not_json() -> None:
    handler = answer(401, b"invalid api key", {"content-type": "text/plain"})

    with pytest.raises(LLMRequestRejectedError, match="401: invalid api key"):
        await run(handler)


async def test_stream_chat_raises_protocol_error_when_200_is_not_an_event_stream() -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "Hello"}}]})
    handler = answer(200, body, {"content-type": "application/json"})

    with pytest.raises(LLMProtocolError, match="event stream"):
        await run(handler)


async def test_stream_chat_raises_protocol_error_when_chunk_is_not_json() -> None:
    sink = Recorder()
    handler = stream_of(chunk("Hel"), "this is not json", chunk(finish_reason="stop"), "[DONE]")

    with pytest.raises(LLMProtocolError, match=r"not JSON \(16 bytes\)") as caught:
        await run(handler, sink=sink)

    assert sink.chunks == ["Hel"]
    assert "this is not json" not in str(caught.value), "the LLM's output is never quoted"


async def test_stream_chat_raises_protocol_error_when_chunk_is_not_an_object() -> None:
    handler = stream_of("[1, 2, 3]", "[DONE]")

    with pytest.raises(LLMProtocolError, match="not a JSON object"):
        await run(handler)


async def test_stream_chat_raises_connection_error_when_stream_ends_early() -> None:
    sink = Recorder()
    handler = stream_of(chunk("", role="assistant"), chunk("Hello"), chunk(" wor"))

    with pytest.raises(LLMConnectionError, match="ended before the completion finished"):
        await run(handler, sink=sink)

    assert sink.chunks == ["Hello", " wor"]


async def test_stream_chat_raises_connection_error_when_transport_cannot_connect() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(LLMConnectionError, match="connection refused") as caught:
        await run(handler)

    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert caught.value.retry_after is None


async def test_stream_chat_raises_connection_error_when_read_times_out() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(LLMConnectionError, match="LLM timed out \\(ReadTimeout\\)"):
        await run(handler)


async def test_stream_chat_raises_connection_error_when_connection_drops_mid_stream() -> None:
    sink = Recorder()

    async def body() -> AsyncIterator[bytes]:
        yield sse(chunk("Hello"))
        raise httpx.ReadError("peer closed connection")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=SSE_HEADERS, content=body())

    with pytest.raises(LLMConnectionError, match="peer closed connection"):
        await run(handler, sink=sink)

    assert sink.chunks == ["Hello"]


async def test_stream_chat_raises_unavailable_when_error_chunk_arrives_mid_stream() -> None:
    sink = Recorder()
    error = {"error": {"message": "upstream model crashed", "type": "server_error"}}
    handler = stream_of(chunk("Hello"), error, chunk(finish_reason="stop"), "[DONE]")

    with pytest.raises(LLMUnavailableError, match="upstream model crashed"):
        await run(handler, sink=sink)

    assert sink.chunks == ["Hello"]


def test_parse_retry_after_reads_delta_seconds() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "120"})) == 120.0


def test_parse_retry_after_is_zero_when_delta_is_negative() -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": "-5"})) == 0.0


def test_parse_retry_after_counts_seconds_until_http_date_in_future() -> None:
    date = email.utils.formatdate(NOW + 90, usegmt=True)

    assert parse_retry_after(httpx.Headers({"Retry-After": date}), now=NOW) == 90.0


def test_parse_retry_after_is_zero_when_http_date_is_past() -> None:
    date = email.utils.formatdate(NOW - 3600, usegmt=True)

    assert parse_retry_after(httpx.Headers({"Retry-After": date}), now=NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "in a minute", "12 seconds", "Wed, 99 Foo 2023"])
def test_parse_retry_after_is_none_when_value_is_garbage(value: str) -> None:
    assert parse_retry_after(httpx.Headers({"Retry-After": value}), now=NOW) is None


@pytest.mark.parametrize("headers", [{}, {"Retry-After": ""}, {"Content-Type": "text/plain"}])
def test_parse_retry_after_is_none_when_header_is_missing(headers: dict[str, str]) -> None:
    assert parse_retry_after(httpx.Headers(headers)) is None
