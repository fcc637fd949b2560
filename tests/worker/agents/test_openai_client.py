"""The OpenAI-compatible streaming client against a real HTTP server on loopback (aiohttp's
``RawTestServer``, in process, each test scripting the answer byte by byte), and
``parse_retry_after``."""

import asyncio
import email.utils
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson
import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import RawTestServer
from multidict import CIMultiDict, CIMultiDictProxy

from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from worker.agents.base import ChatMessage, ToolCall
from worker.agents.llm_session import open_llm_session
from worker.agents.openai_client import (
    ChatCompletion,
    OpenAICompatibleClient,
    _proxy_from_environment,
    parse_retry_after,
)
from worker.errors import (
    AgentConfigurationError,
    LLMConnectionError,
    LLMProtocolError,
    LLMRequestRejectedError,
    LLMUnavailableError,
    PermanentAgentError,
    TransientAgentError,
)

pytestmark = pytest.mark.anyio

MESSAGES = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Say hello"),
]
SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8"}
JSON_HEADERS = {"Content-Type": "application/json"}
#: 2023-11-14T22:13:20Z, a whole second so HTTP-dates (second precision) compare exactly.
NOW = 1_700_000_000.0
#: Generous for a busy machine: the tests that need a timeout to fire pass a short one.
READ_TIMEOUT = 10.0

Script = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- the fake LLM


@dataclass(frozen=True)
class Seen:
    """One request as the server received it."""

    method: str
    path: str
    headers: CIMultiDictProxy[str]
    body: bytes
    peer_port: int


class FakeLLM:
    """A real HTTP server on 127.0.0.1 whose answer each test scripts (``answer``)."""

    def __init__(self) -> None:
        self.answer: Script = stream_of(*[])
        self.requests: list[Seen] = []
        self.base_url = ""

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            Seen(
                request.method,
                request.path,
                request.headers,
                await request.read(),
                peer[1] if peer else -1,
            )
        )
        return await self.answer(request)


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLM]:
    fake = FakeLLM()
    async with RawTestServer(fake.handle) as server:
        fake.base_url = str(server.make_url("/v1/"))
        yield fake


@pytest.fixture(scope="module")
def tls() -> ssl.SSLContext:
    """The process's TLS context, as the worker builds it once."""
    return ssl.create_default_context()


@pytest.fixture
async def session(tls: ssl.SSLContext) -> AsyncIterator[aiohttp.ClientSession]:
    async with open_llm_session(tls=tls, keepalive=15) as session:
        yield session


class Recorder:
    """An in-memory ``ChunkSink``."""

    def __init__(self) -> None:
        self.chunks: list[str] = []
        self.first = anyio.Event()

    async def __call__(self, text: str, /) -> None:
        self.chunks.append(text)
        self.first.set()


def client_for(
    session: aiohttp.ClientSession,
    base_url: str,
    *,
    api_key: str | None = "sk-test",
    read_timeout: float = READ_TIMEOUT,
) -> OpenAICompatibleClient:
    return OpenAICompatibleClient(
        session,
        base_url=base_url,
        api_key=api_key,
        model="gpt-test",
        connect_timeout=READ_TIMEOUT,
        read_timeout=read_timeout,
    )


async def run(
    llm: FakeLLM,
    session: aiohttp.ClientSession,
    *,
    api_key: str | None = "sk-test",
    sink: Recorder | None = None,
    read_timeout: float = READ_TIMEOUT,
    messages: list[ChatMessage] = MESSAGES,
    **options: Any,
) -> ChatCompletion:
    client = client_for(session, llm.base_url, api_key=api_key, read_timeout=read_timeout)
    return await client.stream_chat(messages, on_chunk=sink or Recorder(), **options)


def frame(event: object, *, newline: str = "\n") -> bytes:
    """One ``data:`` event (dicts as JSON, strings as they are)."""
    data = event if isinstance(event, str) else orjson.dumps(event).decode()
    return f"data: {data}{newline}{newline}".encode()


def raw_stream(*writes: bytes, end: str = "eof") -> Script:
    """An event stream written as these pieces, one write each, then ended cleanly
    (``end="eof"``) or by closing the connection mid-body (``end="drop"``)."""

    async def script(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for piece in writes:
            await response.write(piece)
        if end == "drop":
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write_eof()
        return response

    return script


def stream_of(*events: object, newline: str = "\n") -> Script:
    return raw_stream(*(frame(event, newline=newline) for event in events))


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Script:
    async def script(request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return script


def chunk(
    content: str | None = None,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    tool_calls: list[dict[str, Any]] | None = None,
    model: str = "gpt-test-2024-01-01",
) -> dict[str, Any]:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if content is not None:
        delta["content"] = content
    if tool_calls is not None:
        delta["tool_calls"] = tool_calls
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

NORMAL_STREAM = (
    chunk("", role="assistant"),
    chunk("Hello"),
    chunk(","),
    chunk(" world"),
    chunk(finish_reason="stop"),
    USAGE_CHUNK,
    "[DONE]",
)
NORMAL_COMPLETION = ChatCompletion(
    content="Hello, world",
    model="gpt-test-2024-01-01",
    finish_reason="stop",
    chunks=3,
    usage={"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
)


# --------------------------------------------------------------------------- a normal stream


async def test_stream_chat_delivers_chunks_in_order_when_stream_is_normal(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(*NORMAL_STREAM)
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello", ",", " world"]
    assert completion == NORMAL_COMPLETION
    assert completion.tool_calls == []


async def test_stream_chat_posts_openai_request_when_called(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(*NORMAL_STREAM)

    await run(llm, session)

    (request,) = llm.requests
    assert request.method == "POST"
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers.getall("content-type") == ["application/json"]
    assert "cookie" not in request.headers
    assert orjson.loads(request.body) == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Say hello"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_stream_chat_sends_no_authorization_when_api_key_is_none(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(*NORMAL_STREAM)

    await run(llm, session, api_key=None)

    assert "authorization" not in llm.requests[0].headers


async def test_stream_chat_succeeds_when_finish_reason_arrives_without_done(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(chunk("Hi"), chunk(finish_reason="length"))
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hi"]
    assert completion == ChatCompletion(
        content="Hi", model="gpt-test-2024-01-01", finish_reason="length", chunks=1, usage={}
    )


async def test_stream_chat_reuses_connection_when_calls_follow_each_other(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(*NORMAL_STREAM)

    for _ in range(3):
        assert await run(llm, session) == NORMAL_COMPLETION

    assert len({request.peer_port for request in llm.requests}) == 1


async def test_stream_chat_ignores_events_when_they_follow_done(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(chunk("Hi"), "[DONE]", chunk(" again"), "not json")
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hi"]
    assert completion.content == "Hi"


# --------------------------------------------------------------------------- the SSE format


async def test_stream_chat_reads_events_when_lines_end_with_crlf(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(*NORMAL_STREAM, newline="\r\n")
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello", ",", " world"]
    assert completion == NORMAL_COMPLETION


async def test_stream_chat_reads_events_when_lines_end_with_cr_split_from_lf_across_reads(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    body = b"".join(frame(event, newline="\r\n") for event in NORMAL_STREAM)
    # One write per line ending's CR, so CR and LF arrive in different reads.
    pieces = [piece + b"\r" for piece in body.split(b"\r")[:-1]] + [body.split(b"\r")[-1]]
    llm.answer = raw_stream(*pieces)
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello", ",", " world"]
    assert completion == NORMAL_COMPLETION


async def test_stream_chat_skips_comments_and_other_fields_when_stream_has_them(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = raw_stream(
        b": OPENROUTER PROCESSING\n\n",
        b"id: 1\nevent: message\nretry: 1000\n" + frame(chunk("Hello")),
        b": ping\n" + frame(chunk(" world", finish_reason="stop")),
        frame("[DONE]"),
    )
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello", " world"]
    assert completion.finish_reason == "stop"


async def test_stream_chat_joins_data_lines_when_event_spans_several(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    text = orjson.dumps(chunk("Hello", finish_reason="stop")).decode()
    head, tail = text.split('"choices"')
    llm.answer = raw_stream(f'data: {head}\ndata:"choices"{tail}\n\n'.encode(), frame("[DONE]"))
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello"]
    assert completion.finish_reason == "stop"


async def test_stream_chat_reads_events_when_split_anywhere_across_writes(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    body = b"".join(frame(event) for event in NORMAL_STREAM)
    llm.answer = raw_stream(*(body[i : i + 7] for i in range(0, len(body), 7)))
    sink = Recorder()

    completion = await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello", ",", " world"]
    assert completion == NORMAL_COMPLETION


# --------------------------------------------------------------------------- answers that fail


async def test_stream_chat_raises_unavailable_with_retry_after_when_status_is_503(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    body = orjson.dumps({"error": {"message": "The engine is overloaded", "type": "server"}})
    llm.answer = answer(503, body, {**JSON_HEADERS, "Retry-After": "7"})

    with pytest.raises(LLMUnavailableError) as caught:
        await run(llm, session)

    assert caught.value.retry_after == 7.0
    assert "503" in str(caught.value)
    assert "The engine is overloaded" in str(caught.value)
    assert isinstance(caught.value, TransientAgentError)


async def test_stream_chat_reads_retry_after_when_it_is_an_http_date(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    date = email.utils.formatdate(time.time() + 120, usegmt=True)
    llm.answer = answer(502, b"bad gateway", {"Retry-After": date})

    with pytest.raises(LLMUnavailableError, match="502: bad gateway") as caught:
        await run(llm, session)

    assert caught.value.retry_after is not None
    assert 60 < caught.value.retry_after <= 120


async def test_stream_chat_raises_unavailable_when_status_is_429(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    body = orjson.dumps({"error": {"message": "Rate limit reached for gpt-test"}})
    llm.answer = answer(429, body, JSON_HEADERS)

    with pytest.raises(LLMUnavailableError, match="429: Rate limit reached for gpt-test") as caught:
        await run(llm, session)

    assert caught.value.retry_after is None


async def test_stream_chat_raises_rejected_with_server_message_when_status_is_400(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    body = orjson.dumps(
        {
            "error": {
                "message": "The model `gpt-nope` does not exist",
                "type": "invalid_request_error",
                "code": "model_not_found",
            }
        }
    )
    llm.answer = answer(400, body, JSON_HEADERS)

    with pytest.raises(LLMRequestRejectedError) as caught:
        await run(llm, session)

    assert "The model `gpt-nope` does not exist" in str(caught.value)
    assert "400" in str(caught.value)
    assert isinstance(caught.value, PermanentAgentError)


async def test_stream_chat_quotes_plain_body_when_4xx_body_is_not_json(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = answer(401, b"invalid api key", {"Content-Type": "text/plain"})

    with pytest.raises(LLMRequestRejectedError, match="401: invalid api key"):
        await run(llm, session)


async def test_stream_chat_quotes_bounded_excerpt_when_4xx_body_is_huge(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    message = "x" * 10_000
    llm.answer = answer(400, orjson.dumps({"error": {"message": message}}), JSON_HEADERS)

    with pytest.raises(LLMRequestRejectedError) as caught:
        await run(llm, session)

    assert "x" * 300 in str(caught.value)
    assert len(str(caught.value)) < 400


async def test_stream_chat_raises_protocol_error_when_200_is_not_an_event_stream(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    body = orjson.dumps({"choices": [{"message": {"content": "Hello"}}]})
    llm.answer = answer(200, body, JSON_HEADERS)

    with pytest.raises(LLMProtocolError, match="event stream") as caught:
        await run(llm, session)

    assert "Hello" not in str(caught.value), "the LLM's output is never quoted"


async def test_stream_chat_raises_protocol_error_when_chunk_is_not_json(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    sink = Recorder()
    llm.answer = stream_of(chunk("Hel"), "this is not json", chunk(finish_reason="stop"), "[DONE]")

    with pytest.raises(LLMProtocolError, match=r"not JSON \(16 bytes\)") as caught:
        await run(llm, session, sink=sink)

    assert sink.chunks == ["Hel"]
    assert "this is not json" not in str(caught.value), "the LLM's output is never quoted"


async def test_stream_chat_raises_protocol_error_when_chunk_is_not_an_object(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of("[1, 2, 3]", "[DONE]")

    with pytest.raises(LLMProtocolError, match="not a JSON object"):
        await run(llm, session)


async def test_stream_chat_raises_protocol_error_when_choices_are_not_the_protocols(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of({"choices": ["Hello"]}, "[DONE]")

    with pytest.raises(LLMProtocolError, match="not the protocol's"):
        await run(llm, session)


async def test_stream_chat_raises_unavailable_when_error_chunk_arrives_mid_stream(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    sink = Recorder()
    error = {"error": {"message": "upstream model crashed", "type": "server_error"}}
    llm.answer = stream_of(chunk("Hello"), error, chunk(finish_reason="stop"), "[DONE]")

    with pytest.raises(LLMUnavailableError, match="upstream model crashed"):
        await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello"]


async def test_client_refuses_base_url_when_it_is_not_http() -> None:
    async with open_llm_session(tls=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), keepalive=1) as s:
        with pytest.raises(AgentConfigurationError, match="LLM_BASE_URL"):
            client_for(s, "ftp://llm.test/v1")


# --------------------------------------------------------------------------- the connection


async def test_stream_chat_raises_connection_error_when_stream_ends_early(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    sink = Recorder()
    llm.answer = stream_of(chunk("", role="assistant"), chunk("Hello"), chunk(" wor"))

    with pytest.raises(LLMConnectionError, match="ended before the completion finished"):
        await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello", " wor"]


async def test_stream_chat_raises_connection_error_when_connection_drops_mid_stream(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    sink = Recorder()
    llm.answer = raw_stream(frame(chunk("Hello")), frame(chunk(" wor")), end="drop")

    with pytest.raises(LLMConnectionError, match="connection failed") as caught:
        await run(llm, session, sink=sink)

    assert sink.chunks == ["Hello", " wor"]
    assert isinstance(caught.value.__cause__, aiohttp.ClientPayloadError)


async def test_stream_chat_raises_connection_error_when_server_closes_before_answering(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    async def hang_up(request: web.BaseRequest) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.close()
        return web.Response()

    llm.answer = hang_up

    with pytest.raises(LLMConnectionError, match="connection failed"):
        await run(llm, session)


async def test_stream_chat_raises_connection_error_when_transport_cannot_connect(
    session: aiohttp.ClientSession,
) -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    client = client_for(session, f"http://127.0.0.1:{port}/v1")

    with pytest.raises(LLMConnectionError, match="Cannot connect to host") as caught:
        await client.stream_chat(MESSAGES, on_chunk=Recorder())

    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    assert caught.value.retry_after is None


def silent_after(*writes: bytes, silence: anyio.Event) -> Script:
    """Write these pieces, then say nothing until ``silence`` is set (or the client leaves)."""

    async def script(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for piece in writes:
            await response.write(piece)
        await silence.wait()
        await response.write_eof()
        return response

    return script


async def test_stream_chat_raises_connection_error_when_silence_between_chunks_exceeds_read_timeout(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    sink = Recorder()
    silence = anyio.Event()
    llm.answer = silent_after(frame(chunk("Hello")), silence=silence)

    started = time.monotonic()
    try:
        with pytest.raises(LLMConnectionError, match=r"LLM timed out: nothing received for 0.5 s"):
            await run(llm, session, sink=sink, read_timeout=0.5)
    finally:
        silence.set()

    assert sink.chunks == ["Hello"]
    assert time.monotonic() - started < READ_TIMEOUT
    print(f"timed out after {time.monotonic() - started:.2f} s")


async def test_stream_chat_raises_connection_error_when_server_is_silent_before_answering(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    silence = anyio.Event()

    async def no_answer(request: web.BaseRequest) -> web.StreamResponse:
        await silence.wait()
        return web.Response()

    llm.answer = no_answer

    try:
        with pytest.raises(LLMConnectionError, match="LLM timed out"):
            await run(llm, session, read_timeout=0.5)
    finally:
        silence.set()


async def test_stream_chat_succeeds_when_steady_stream_lasts_longer_than_read_timeout(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    async def slow(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        for word in ["one", " two", " three", " four", " five", " six"]:
            await response.write(frame(chunk(word)))
            await asyncio.sleep(0.25)  # the pace of the stream, well inside the read timeout
        await response.write(frame(chunk(finish_reason="stop")))
        await response.write_eof()
        return response

    llm.answer = slow
    started = time.monotonic()

    completion = await run(llm, session, read_timeout=1.0)

    assert completion.content == "one two three four five six"
    assert time.monotonic() - started > 1.0  # longer in all than one read timeout


async def test_stream_chat_closes_stream_when_call_is_cancelled(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    left = anyio.Event()

    async def endless(request: web.BaseRequest) -> web.StreamResponse:
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        try:
            while True:
                await response.write(frame(chunk("more")))
                await asyncio.sleep(0.01)
        finally:  # cancelled by the server, or a failed write, once the client is gone
            left.set()

    llm.answer = endless
    sink = Recorder()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: run(llm, session, sink=sink))
            await sink.first.wait()
            group.cancel_scope.cancel()
        await left.wait()

    assert sink.chunks[0] == "more"


# --------------------------------------------------------------------------- TLS and proxies


@pytest.fixture
def certificate_authority() -> trustme.CA:
    return trustme.CA()


def spy_on_ca_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every CA-bundle load of any SSL context from now on (a default context does one)."""
    loads: list[str] = []
    for name in ("load_verify_locations", "load_default_certs", "set_default_verify_paths"):
        original = getattr(ssl.SSLContext, name)

        def spy(self: ssl.SSLContext, *args: Any, _name: str = name, _o: Any = original) -> Any:
            loads.append(_name)
            return _o(self, *args)

        monkeypatch.setattr(ssl.SSLContext, name, spy)
    return loads


async def test_llm_session_uses_given_tls_context_and_loads_no_ca_bundle(
    certificate_authority: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(server_context)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # trusts our test CA only
    certificate_authority.configure_trust(tls)
    fake = FakeLLM()
    fake.answer = stream_of(*NORMAL_STREAM)
    server = RawTestServer(fake.handle)
    await server.start_server(ssl=server_context)
    base_url = str(server.make_url("/v1"))
    loads = spy_on_ca_loads(monkeypatch)
    try:
        for _ in range(2):
            async with open_llm_session(tls=tls, keepalive=15) as session:
                client = client_for(session, base_url)
                completion = await client.stream_chat(MESSAGES, on_chunk=Recorder())
                assert completion == NORMAL_COMPLETION
    finally:
        await server.close()

    assert base_url.startswith("https://")
    assert loads == [], "a session must not load CA certificates: it shares the process's"
    assert len(fake.requests) == 2


async def test_stream_chat_fails_when_server_certificate_is_not_trusted_by_given_context(
    certificate_authority: trustme.CA, tls: ssl.SSLContext
) -> None:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    certificate_authority.issue_cert("127.0.0.1").configure_cert(server_context)
    fake = FakeLLM()
    server = RawTestServer(fake.handle)
    await server.start_server(ssl=server_context)
    try:
        async with open_llm_session(tls=tls, keepalive=15) as session:
            client = client_for(session, str(server.make_url("/v1")))
            with pytest.raises(LLMConnectionError, match="certificate"):
                await client.stream_chat(MESSAGES, on_chunk=Recorder())
    finally:
        await server.close()

    assert fake.requests == []


@pytest.fixture
def proxy_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The environment's proxy settings, read afresh (the client reads them once per process)."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    _proxy_from_environment.cache_clear()
    yield monkeypatch
    _proxy_from_environment.cache_clear()


async def test_stream_chat_goes_through_proxy_when_environment_names_one(
    llm: FakeLLM, session: aiohttp.ClientSession, proxy_environment: pytest.MonkeyPatch
) -> None:
    proxy_environment.setenv("HTTP_PROXY", llm.base_url.removesuffix("/v1/"))
    llm.answer = stream_of(*NORMAL_STREAM)
    client = client_for(session, "http://llm.invalid/v1")

    completion = await client.stream_chat(MESSAGES, on_chunk=Recorder())

    assert completion == NORMAL_COMPLETION
    (request,) = llm.requests
    assert request.headers["host"] == "llm.invalid"


async def test_stream_chat_connects_directly_when_no_proxy_exempts_host(
    llm: FakeLLM, session: aiohttp.ClientSession, proxy_environment: pytest.MonkeyPatch
) -> None:
    with socket.socket() as placeholder:  # a proxy nobody runs
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    proxy_environment.setenv("HTTP_PROXY", f"http://127.0.0.1:{port}")
    proxy_environment.setenv("NO_PROXY", "127.0.0.1")
    llm.answer = stream_of(*NORMAL_STREAM)

    assert await run(llm, session) == NORMAL_COMPLETION


# --------------------------------------------------------------------------- tool calls


def tool_piece(
    index: int | None,
    *,
    id: str | None = None,
    name: str | None = None,
    arguments: str | None = None,
) -> dict[str, Any]:
    piece: dict[str, Any] = {}
    if index is not None:
        piece["index"] = index
    if id is not None:
        piece["id"] = id
        piece["type"] = "function"
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    if function:
        piece["function"] = function
    return piece


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def test_stream_chat_assembles_parallel_tool_calls_when_pieces_interleave(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(
        chunk(role="assistant", content="Checking both."),
        chunk(tool_calls=[tool_piece(0, id="call_a", name="get_weather", arguments="")]),
        chunk(tool_calls=[tool_piece(1, id="call_b", name="get_", arguments='{"ci')]),
        chunk(tool_calls=[tool_piece(0, arguments='{"city": "Pa')]),
        chunk(tool_calls=[tool_piece(1, name="weather", arguments='ty": "Oslo"}')]),
        chunk(tool_calls=[tool_piece(0, arguments='ris"}')]),
        chunk(finish_reason="tool_calls"),
        USAGE_CHUNK,
        "[DONE]",
    )
    sink = Recorder()

    completion = await run(llm, session, sink=sink, tools=[WEATHER_TOOL], tool_choice="auto")

    assert sink.chunks == ["Checking both."]
    assert completion.finish_reason == "tool_calls"
    assert completion.content == "Checking both."
    assert completion.tool_calls == [
        ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}'),
        ToolCall(id="call_b", name="get_weather", arguments='{"city": "Oslo"}'),
    ]
    body = orjson.loads(llm.requests[0].body)
    assert body["tools"] == [WEATHER_TOOL]
    assert body["tool_choice"] == "auto"


async def test_stream_chat_sends_tool_turns_when_messages_carry_them(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(*NORMAL_STREAM)
    call = ToolCall(id="call_a", name="get_weather", arguments='{"city": "Paris"}')
    messages = [
        *MESSAGES,
        ChatMessage(role="assistant", content="", tool_calls=(call,)),
        ChatMessage(role="tool", content='{"celsius": 21}', tool_call_id="call_a"),
    ]

    await run(llm, session, messages=messages)

    body = orjson.loads(llm.requests[0].body)
    assert body["messages"][2:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": '{"celsius": 21}', "tool_call_id": "call_a"},
    ]
    assert "tools" not in body
    assert "tool_choice" not in body


async def test_stream_chat_keeps_raw_arguments_when_they_never_close(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(
        chunk(tool_calls=[tool_piece(0, id="call_a", name="get_weather", arguments='{"ci')]),
        chunk(finish_reason="length"),
        "[DONE]",
    )

    completion = await run(llm, session, tools=[WEATHER_TOOL])

    assert completion.finish_reason == "length"
    assert completion.tool_calls == [ToolCall(id="call_a", name="get_weather", arguments='{"ci')]


async def test_stream_chat_names_call_by_index_when_server_sends_no_id(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(
        chunk(tool_calls=[tool_piece(0, name="get_weather", arguments="{}")]),
        chunk(finish_reason="tool_calls"),
        "[DONE]",
    )

    completion = await run(llm, session, tools=[WEATHER_TOOL])

    assert completion.tool_calls == [ToolCall(id="call_0", name="get_weather", arguments="{}")]


async def test_stream_chat_raises_protocol_error_when_tool_call_piece_has_no_index(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(
        chunk(tool_calls=[tool_piece(None, id="call_a", name="get_weather", arguments="{}")]),
        chunk(finish_reason="tool_calls"),
        "[DONE]",
    )

    with pytest.raises(LLMProtocolError, match="without an index"):
        await run(llm, session, tools=[WEATHER_TOOL])


async def test_stream_chat_raises_protocol_error_when_tool_call_ends_without_name(
    llm: FakeLLM, session: aiohttp.ClientSession
) -> None:
    llm.answer = stream_of(
        chunk(tool_calls=[tool_piece(0, id="call_a", name="get_weather", arguments="{}")]),
        chunk(tool_calls=[tool_piece(1, id="call_b", arguments='{"secret": 1}')]),
        chunk(finish_reason="tool_calls"),
        "[DONE]",
    )

    with pytest.raises(LLMProtocolError, match="tool call 1 without naming") as caught:
        await run(llm, session, tools=[WEATHER_TOOL])

    assert "secret" not in str(caught.value), "the model's arguments are never quoted"


@pytest.fixture(scope="module")
def loopback_llm() -> Iterator[LLMServerProcess]:
    with LLMServerProcess() as server:
        yield server


async def test_stream_chat_completes_tool_conversation_when_loopback_llm_calls_tools(
    loopback_llm: LLMServerProcess, session: aiohttp.ClientSession
) -> None:
    control = LLMControl(loopback_llm.base_url)
    arguments = '{"city": "Paris", "unit": "celsius"}'
    control.script(
        "Weather in Paris?",
        tokens=["Sunny, ", "21 C."],
        tool_rounds=[[{"name": "get_weather", "arguments": arguments}]],
        piece_chars=5,
    )
    client = client_for(session, loopback_llm.base_url)
    messages = [ChatMessage(role="user", content="Weather in Paris?")]
    sink = Recorder()

    asked = await client.stream_chat(messages, on_chunk=sink, tools=[WEATHER_TOOL])
    messages += [
        ChatMessage(role="assistant", content=asked.content, tool_calls=tuple(asked.tool_calls)),
        ChatMessage(role="tool", content="21 C, sunny", tool_call_id=asked.tool_calls[0].id),
    ]
    answered = await client.stream_chat(messages, on_chunk=sink, tools=[WEATHER_TOOL])
    control.close()

    assert asked.finish_reason == "tool_calls"
    assert asked.tool_calls == [ToolCall(id="call_0_0", name="get_weather", arguments=arguments)]
    assert asked.usage["completion_tokens"] > 2, "the arguments came in pieces"
    assert answered.finish_reason == "stop"
    assert answered.tool_calls == []
    assert sink.chunks == ["Sunny, ", "21 C."]


def test_chat_message_refuses_tool_fields_when_role_does_not_take_them() -> None:
    call = ToolCall(id="call_a", name="f", arguments="{}")

    with pytest.raises(ValueError, match="only an assistant message"):
        ChatMessage(role="user", content="hi", tool_calls=(call,))
    with pytest.raises(ValueError, match="tool_call_id"):
        ChatMessage(role="tool", content="result")
    with pytest.raises(ValueError, match="tool_call_id"):
        ChatMessage(role="user", content="hi", tool_call_id="call_a")


def test_chat_message_keeps_positional_fields_when_built_as_before() -> None:
    message = ChatMessage("user", "hi")

    assert (message.role, message.content, message.tool_calls, message.tool_call_id) == (
        "user",
        "hi",
        (),
        None,
    )


# --------------------------------------------------------------------------- Retry-After


def headers(values: dict[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(values))


def test_parse_retry_after_reads_delta_seconds() -> None:
    assert parse_retry_after(headers({"Retry-After": "120"})) == 120.0


def test_parse_retry_after_is_zero_when_delta_is_negative() -> None:
    assert parse_retry_after(headers({"Retry-After": "-5"})) == 0.0


def test_parse_retry_after_counts_seconds_until_http_date_in_future() -> None:
    date = email.utils.formatdate(NOW + 90, usegmt=True)

    assert parse_retry_after(headers({"Retry-After": date}), now=NOW) == 90.0


def test_parse_retry_after_is_zero_when_http_date_is_past() -> None:
    date = email.utils.formatdate(NOW - 3600, usegmt=True)

    assert parse_retry_after(headers({"Retry-After": date}), now=NOW) == 0.0


@pytest.mark.parametrize("value", ["soon", "in a minute", "12 seconds", "Wed, 99 Foo 2023"])
def test_parse_retry_after_is_none_when_value_is_garbage(value: str) -> None:
    assert parse_retry_after(headers({"Retry-After": value}), now=NOW) is None


@pytest.mark.parametrize("values", [{}, {"Retry-After": ""}, {"Content-Type": "text/plain"}])
def test_parse_retry_after_is_none_when_header_is_missing(values: dict[str, str]) -> None:
    assert parse_retry_after(headers(values)) is None
