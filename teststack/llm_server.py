"""A loopback OpenAI-compatible chat-completions server that tests can script.

This module owns the fake LLM provider used by the test suite. It is a real
HTTP server (Starlette on uvicorn, one process, 127.0.0.1) speaking the
OpenAI chat-completions protocol, streaming and non-streaming, so that code
under test exercises its genuine HTTP client, SSE parsing, retries, timeouts
and cancellation paths instead of a mock.

Behaviour is chosen per call by a *scenario key*: the content of the last
message with role ``user``. Tests register scenarios through a small control
API (``PUT /_scenarios/{key}``) to script tokens, per-token delays, failures
to answer before streaming (status, ``Retry-After``) or in the middle of a stream (after
some tokens, an OpenAI-style error object, then the stream ends) and whether usage is
reported. Unscripted keys are echoed back as ``"echo:"`` followed by
``" word"`` for each word of the key. Every call is recorded, including
whether and when (server monotonic clock) the client dropped the stream
before it finished, and can be read back with ``GET /_scenarios/{key}/calls``.

A scenario is a JSON object (``LLMControl.script`` builds it)::

    {
      "tokens": ["Hel", "lo"],        # the text answer, one streamed chunk per token
      "delay": 0.02,                  # seconds before each chunk (default 0)
      "failures": [                   # answered, in order, before any completion (default none)
        {"status": 503, "retry_after": 2, "body": "busy"}
      ],                              # a failure may also say "after_tokens": n (sent mid-stream)
                                      # and "at_round": n (only the call at that tool round)
      "usage": true,                  # report usage when the client asks for it (default true)
      "tool_rounds": [                # tool calls answered before the text (default none)
        [{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}", "id": "call_1"}],
        [{"name": "a", "arguments": "{}"}, {"name": "b", "arguments": "{}"}]
      ],
      "piece_chars": 8                # tool arguments are streamed this many characters a piece
    }

With ``tool_rounds``, the answer depends on how far the conversation got: a request holding
``n`` assistant messages with ``tool_calls`` is answered with round ``n`` (its calls streamed in
pieces as OpenAI does: per call, a first delta with ``index``, ``id``, ``type`` and the
function's ``name``, then deltas of ``arguments``; ``finish_reason`` ``tool_calls``), and once
every round is answered, with the ``tokens``. A call without ``id`` gets
``call_<round>_<index>``. As OpenAI does, a request whose ``tool`` messages do not answer the
calls of the assistant message before them (each ``tool_call_id`` once, none missing) is refused
with 400.

``LLMServerProcess`` runs the server as a child process for fixtures and
``LLMControl`` is a small synchronous client for the control API.
Run it by hand with ``python -m teststack.llm_server --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import anyio
import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from scripts.embedded_redis import free_port
from teststack.processes import ManagedProcess, python_module

DEFAULT_MODEL = "loopback-model"
_JSON = dict[str, Any]
_CallRecord = dict[str, object]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}


# --------------------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Failure:
    """One scripted error answer given instead of a completion; with ``after_tokens``, a
    streamed call sends that many of the scenario's tokens first, then the error in the stream
    (status 200, an ``{"error": ...}`` chunk, no ``[DONE]``)."""

    status: int
    retry_after: str | None = None
    message: str | None = None
    after_tokens: int | None = None
    #: Only a request at this tool round (0: the first call) takes it; others pass it by.
    at_round: int | None = None


@dataclass(frozen=True)
class ScriptedToolCall:
    """One function call the server answers with."""

    name: str
    arguments: str
    id: str | None = None


@dataclass(frozen=True)
class Scenario:
    """What the server answers for one scenario key."""

    tokens: tuple[str, ...]
    delay: float = 0.0
    failures: tuple[Failure, ...] = ()
    usage: bool = True
    tool_rounds: tuple[tuple[ScriptedToolCall, ...], ...] = ()
    piece_chars: int = 8


def echo_scenario(key: str) -> Scenario:
    """The scenario used for keys nobody scripted: echo the words of the key."""
    return Scenario(tokens=("echo:", *(" " + word for word in key.split())))


def parse_scenario(body: object) -> Scenario:
    """Validate a control-API scenario body; raise ValueError when malformed."""
    if not isinstance(body, dict):
        raise ValueError("scenario must be a JSON object")
    tokens = body.get("tokens")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError("'tokens' must be a list of strings")
    delay = body.get("delay", 0.0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        raise ValueError("'delay' must be a non-negative number")
    usage = body.get("usage", True)
    if not isinstance(usage, bool):
        raise ValueError("'usage' must be a boolean")
    failures = body.get("failures", [])
    if not isinstance(failures, list):
        raise ValueError("'failures' must be a list")
    rounds = body.get("tool_rounds", [])
    if not isinstance(rounds, list) or not all(isinstance(r, list) and r for r in rounds):
        raise ValueError("'tool_rounds' must be a list of non-empty lists of calls")
    piece_chars = body.get("piece_chars", 8)
    if not isinstance(piece_chars, int) or isinstance(piece_chars, bool) or piece_chars < 1:
        raise ValueError("'piece_chars' must be a positive integer")
    return Scenario(
        tokens=tuple(tokens),
        delay=float(delay),
        failures=tuple(_parse_failure(item) for item in failures),
        usage=usage,
        tool_rounds=tuple(tuple(_parse_tool_call(call) for call in r) for r in rounds),
        piece_chars=piece_chars,
    )


def _parse_tool_call(item: object) -> ScriptedToolCall:
    if not isinstance(item, dict):
        raise ValueError("each tool call must be a JSON object")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("tool call 'name' must be a non-empty string")
    arguments = item.get("arguments", "{}")
    if not isinstance(arguments, str):
        raise ValueError("tool call 'arguments' must be a string (the JSON text)")
    call_id = item.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise ValueError("tool call 'id' must be a string")
    return ScriptedToolCall(name=name, arguments=arguments, id=call_id)


def _parse_failure(item: object) -> Failure:
    if not isinstance(item, dict):
        raise ValueError("each failure must be a JSON object")
    status = item.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 400 <= status <= 599:
        raise ValueError("failure 'status' must be an HTTP error status")
    retry_after = item.get("retry_after")
    if retry_after is not None and not isinstance(retry_after, int | float | str):
        raise ValueError("failure 'retry_after' must be a number or a string")
    message = item.get("body")
    if message is not None and not isinstance(message, str):
        raise ValueError("failure 'body' must be a string")
    after_tokens = item.get("after_tokens")
    if after_tokens is not None and (
        not isinstance(after_tokens, int) or isinstance(after_tokens, bool) or after_tokens < 0
    ):
        raise ValueError("failure 'after_tokens' must be a non-negative integer")
    at_round = item.get("at_round")
    if at_round is not None and (
        not isinstance(at_round, int) or isinstance(at_round, bool) or at_round < 0
    ):
        raise ValueError("failure 'at_round' must be a non-negative integer")
    return Failure(
        status=status,
        retry_after=None if retry_after is None else str(retry_after),
        message=message,
        after_tokens=after_tokens,
        at_round=at_round,
    )


@dataclass
class ScenarioStore:
    """Scripted scenarios, how many failures each has used, and the call log."""

    scenarios: dict[str, Scenario] = field(default_factory=dict)
    failures_used: dict[str, int] = field(default_factory=dict)
    calls: dict[str, list[_CallRecord]] = field(default_factory=dict)

    def put(self, key: str, scenario: Scenario) -> None:
        self.scenarios[key] = scenario
        self.failures_used[key] = 0

    def clear(self) -> None:
        self.scenarios.clear()
        self.failures_used.clear()
        self.calls.clear()

    def scenario_for(self, key: str) -> Scenario:
        return self.scenarios.get(key) or echo_scenario(key)

    def take_failure(self, key: str, *, at_round: int = 0) -> Failure | None:
        """Consume and return the next scripted failure for ``key``, if any (one that names a
        tool round waits for a request at that round)."""
        scenario = self.scenario_for(key)
        used = self.failures_used.get(key, 0)
        if used >= len(scenario.failures):
            return None
        failure = scenario.failures[used]
        if failure.at_round is not None and failure.at_round != at_round:
            return None
        self.failures_used[key] = used + 1
        return failure

    def record(self, key: str, call: _CallRecord) -> _CallRecord:
        self.calls.setdefault(key, []).append(call)
        return call


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class ChatRequest:
    """The parts of an OpenAI chat-completions request the server acts on."""

    key: str
    model: str
    messages: list[Any]
    stream: bool
    include_usage: bool
    authorization: str | None
    tools: object = None
    tool_choice: object = None

    @property
    def tool_rounds_done(self) -> int:
        """How many rounds of tool calls the conversation has been through."""
        return sum(1 for m in self.messages if m.get("role") == "assistant" and m.get("tool_calls"))


def _text_of(content: object) -> str:
    """Plain text of a message ``content`` (a string or a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def parse_chat_request(body: object, *, authorization: str | None) -> ChatRequest:
    """Validate a chat-completions body; raise ValueError when unusable."""
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("'messages' must be a list of message objects")
    user_messages = [m for m in messages if m.get("role") == "user"]
    if not user_messages:
        raise ValueError("'messages' must contain a message with role 'user'")
    _check_tool_turns(messages)
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    model = body.get("model")
    return ChatRequest(
        key=_text_of(user_messages[-1].get("content")),
        model=model if isinstance(model, str) else DEFAULT_MODEL,
        messages=messages,
        stream=body.get("stream") is True,
        include_usage=include_usage,
        authorization=authorization,
        tools=body.get("tools"),
        tool_choice=body.get("tool_choice"),
    )


def _check_tool_turns(messages: list[dict[str, Any]]) -> None:
    """Refuse, as OpenAI does, ``tool`` messages that do not answer exactly the calls of the
    assistant message before them."""
    expected: list[str] = []  # ids of the calls still unanswered
    for message in messages:
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in expected:
                raise ValueError(
                    "messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls' (no open call {call_id!r})"
                )
            expected.remove(call_id)
            continue
        if expected:
            raise ValueError(
                "an assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; missing: {', '.join(expected)}"
            )
        calls = message.get("tool_calls") if role == "assistant" else None
        if calls:
            if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
                raise ValueError("'tool_calls' must be a list of objects")
            expected = [str(call.get("id")) for call in calls]
    if expected:
        raise ValueError(
            "an assistant message with 'tool_calls' must be followed by tool messages "
            f"responding to each 'tool_call_id'; missing: {', '.join(expected)}"
        )


def prompt_token_count(messages: Sequence[Mapping[str, Any]]) -> int:
    """Whitespace-split words over the content of all messages."""
    return sum(len(_text_of(m.get("content")).split()) for m in messages)


def tool_round_of(chat: ChatRequest, scenario: Scenario) -> tuple[_JSON, ...] | None:
    """The calls this request is answered with (OpenAI's shape, ids filled in), or None when
    its answer is the text."""
    done = chat.tool_rounds_done
    if done >= len(scenario.tool_rounds):
        return None
    return tuple(
        {
            "id": call.id or f"call_{done}_{index}",
            "type": "function",
            "function": {"name": call.name, "arguments": call.arguments},
        }
        for index, call in enumerate(scenario.tool_rounds[done])
    )


def tool_call_pieces(calls: Sequence[_JSON], *, piece_chars: int) -> list[_JSON]:
    """The ``delta.tool_calls`` items that stream ``calls``, one per chunk, in OpenAI's order:
    per call its id, type and name first, then its arguments a few characters at a time."""
    pieces: list[_JSON] = []
    for index, call in enumerate(calls):
        function = call["function"]
        pieces.append(
            {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": ""},
            }
        )
        arguments = function["arguments"]
        for start in range(0, len(arguments), piece_chars):
            piece = arguments[start : start + piece_chars]
            pieces.append({"index": index, "function": {"arguments": piece}})
    return pieces


def usage_of(chat: ChatRequest, scenario: Scenario) -> _JSON:
    prompt = prompt_token_count(chat.messages)
    calls = tool_round_of(chat, scenario)
    if calls is None:
        completion = len(scenario.tokens)
    else:
        completion = len(tool_call_pieces(calls, piece_chars=scenario.piece_chars))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def error_response(status: int, message: str, *, retry_after: str | None = None) -> JSONResponse:
    """An OpenAI-style error answer."""
    error_type = _ERROR_TYPES.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    headers = {"Retry-After": retry_after} if retry_after is not None else None
    body = {"error": {"message": message, "type": error_type, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(payload: object) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


class _Completion:
    """Builds the JSON objects of one completion, sharing id, clock and model."""

    def __init__(self, chat: ChatRequest) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = chat.model

    def chunk(self, *, delta: _JSON, finish_reason: str | None) -> _JSON:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", choices=[choice])

    def usage_chunk(self, usage: _JSON) -> _JSON:
        return self._envelope("chat.completion.chunk", choices=[], usage=usage)

    def whole(
        self, content: str, usage: _JSON | None, *, tool_calls: Sequence[_JSON] = ()
    ) -> _JSON:
        message: _JSON = {"role": "assistant", "content": content}
        finish_reason = "stop"
        if tool_calls:
            message = {"role": "assistant", "content": None, "tool_calls": list(tool_calls)}
            finish_reason = "tool_calls"
        choice = {"index": 0, "message": message, "finish_reason": finish_reason}
        extra = {"usage": usage} if usage is not None else {}
        return self._envelope("chat.completion", choices=[choice], **extra)

    def _envelope(self, kind: str, **fields: object) -> _JSON:
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            **fields,
        }


async def stream_events(
    chat: ChatRequest,
    scenario: Scenario,
    *,
    call: _CallRecord,
    failure: Failure | None = None,
) -> AsyncGenerator[bytes, None]:
    """The SSE frames of one streamed completion, pacing tokens (or tool-call pieces) by the
    delay; with a ``failure``, its first ``after_tokens`` tokens and then the error."""
    completion = _Completion(chat)
    calls = tool_round_of(chat, scenario)
    if calls is None:
        tokens = scenario.tokens
        if failure is not None:
            tokens = tokens[: failure.after_tokens]
        for index, token in enumerate(tokens):
            if scenario.delay:
                await asyncio.sleep(scenario.delay)
            delta = {"role": "assistant", "content": token} if index == 0 else {"content": token}
            yield _sse(completion.chunk(delta=delta, finish_reason=None))
        if failure is not None:
            message = failure.message or f"scripted failure with status {failure.status}"
            error = {"message": message, "type": "server_error", "code": failure.status}
            yield _sse({"error": error})
            call["completed"] = True
            return
        yield _sse(completion.chunk(delta={}, finish_reason="stop"))
    else:
        pieces = tool_call_pieces(calls, piece_chars=scenario.piece_chars)
        for index, piece in enumerate(pieces):
            if scenario.delay:
                await asyncio.sleep(scenario.delay)
            delta: _JSON = {"tool_calls": [piece]}
            if index == 0:
                delta = {"role": "assistant", "content": None, **delta}
            yield _sse(completion.chunk(delta=delta, finish_reason=None))
        yield _sse(completion.chunk(delta={}, finish_reason="tool_calls"))
    if chat.include_usage and scenario.usage:
        yield _sse(completion.usage_chunk(usage_of(chat, scenario)))
    yield _sse("[DONE]")
    call["completed"] = True


def _mark_disconnected(call: _CallRecord) -> None:
    if not call["completed"] and not call["disconnected"]:
        call["disconnected"] = True
        call["disconnected_at"] = time.monotonic()


class RecordingEventStream(StreamingResponse):
    """An SSE response that notices, and records, a client leaving early.

    A task listens for ``http.disconnect`` while the frames are produced, so
    a dropped connection is seen at once even while the stream is idle
    between tokens; the frame generator is then cancelled and closed.
    """

    def __init__(self, frames: AsyncGenerator[bytes, None], *, call: _CallRecord) -> None:
        headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        super().__init__(frames, media_type="text/event-stream", headers=headers)
        self._frames = frames
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._watch_disconnect, receive, group.cancel_scope)
            try:
                await self._send_frames(send)
            except OSError:
                _mark_disconnected(self._call)
            finally:
                group.cancel_scope.cancel()

    async def _watch_disconnect(self, receive: Receive, scope: anyio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        _mark_disconnected(self._call)
        scope.cancel()

    async def _send_frames(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async with contextlib.aclosing(self._frames) as frames:
            async for frame in frames:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# --------------------------------------------------------------------------- endpoints


def _store(request: Request) -> ScenarioStore:
    store: ScenarioStore = request.app.state.store
    return store


def _new_call(chat: ChatRequest, *, status: int) -> _CallRecord:
    return {
        "messages": chat.messages,
        "model": chat.model,
        "headers": {"authorization": chat.authorization},
        "status": status,
        "stream": chat.stream,
        "tools": chat.tools,
        "tool_choice": chat.tool_choice,
        "started_at": time.monotonic(),
        "completed": False,
        "disconnected": False,
        "disconnected_at": None,
    }


async def _read_json(request: Request) -> object:
    try:
        return await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from exc


async def chat_completions(request: Request) -> Response:
    try:
        body = await _read_json(request)
        chat = parse_chat_request(body, authorization=request.headers.get("authorization"))
    except ValueError as exc:
        return error_response(400, str(exc))
    store = _store(request)
    failure = store.take_failure(chat.key, at_round=chat.tool_rounds_done)
    if failure is not None and failure.after_tokens is not None and chat.stream:
        scenario = store.scenario_for(chat.key)
        call = store.record(chat.key, _new_call(chat, status=200))
        frames = stream_events(chat, scenario, call=call, failure=failure)
        return RecordingEventStream(frames, call=call)
    if failure is not None:
        call = store.record(chat.key, _new_call(chat, status=failure.status))
        call["completed"] = True
        message = failure.message or f"scripted failure with status {failure.status}"
        return error_response(failure.status, message, retry_after=failure.retry_after)
    scenario = store.scenario_for(chat.key)
    call = store.record(chat.key, _new_call(chat, status=200))
    if chat.stream:
        return RecordingEventStream(stream_events(chat, scenario, call=call), call=call)
    return await _whole_completion(chat, scenario, call=call)


async def _whole_completion(
    chat: ChatRequest, scenario: Scenario, *, call: _CallRecord
) -> Response:
    if scenario.delay:
        await asyncio.sleep(scenario.delay * len(scenario.tokens))
    usage = usage_of(chat, scenario) if scenario.usage else None
    call["completed"] = True
    calls = tool_round_of(chat, scenario) or ()
    return JSONResponse(_Completion(chat).whole("".join(scenario.tokens), usage, tool_calls=calls))


async def put_scenario(request: Request) -> Response:
    try:
        scenario = parse_scenario(await _read_json(request))
    except ValueError as exc:
        return error_response(400, str(exc))
    _store(request).put(request.path_params["key"], scenario)
    return Response(status_code=204)


async def get_calls(request: Request) -> Response:
    calls = _store(request).calls.get(request.path_params["key"], [])
    return JSONResponse({"calls": calls})


async def clear_scenarios(request: Request) -> Response:
    _store(request).clear()
    return Response(status_code=204)


async def health(request: Request) -> Response:
    return JSONResponse({"ok": True})


def create_app() -> Starlette:
    """A fresh server application with an empty scenario store."""
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/chat/completions", chat_completions, methods=["POST"]),
            Route("/_scenarios/{key:path}/calls", get_calls, methods=["GET"]),
            Route("/_scenarios/{key:path}", put_scenario, methods=["PUT"]),
            Route("/_scenarios", clear_scenarios, methods=["DELETE"]),
            Route("/_health", health, methods=["GET"]),
        ]
    )
    app.state.store = ScenarioStore()
    return app


# --------------------------------------------------------------------------- running it


def serve(*, port: int, host: str = "127.0.0.1") -> None:
    """Serve a fresh application until interrupted."""
    uvicorn.run(
        create_app(), host=host, port=port, log_level="warning", timeout_graceful_shutdown=1
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m teststack.llm_server",
        description="Loopback OpenAI-compatible streaming chat-completions server for tests.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(port=args.port, host=args.host)


class LLMServerProcess:
    """The loopback LLM server running as a child process of the test run."""

    def __init__(self, *, port: int | None = None, startup_timeout: float = 15.0) -> None:
        self.port = port if port is not None else free_port()
        self._startup_timeout = startup_timeout
        self._process = ManagedProcess(
            "llm-server", python_module("teststack.llm_server", "--port", str(self.port))
        )

    @property
    def root_url(self) -> str:
        """Where the control API lives."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        """The base URL to give an OpenAI-compatible client."""
        return f"{self.root_url}/v1"

    def start(self) -> None:
        """Start the server and wait until ``/_health`` answers."""
        self._process.start()
        try:
            self._process.wait_until(
                self._healthy, timeout=self._startup_timeout, what="/_health to answer"
            )
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.root_url}/_health", timeout=0.5).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        """What the server process printed so far."""
        return self._process.output()

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s); idempotent."""
        self._process.stop(grace=5.0)

    def __enter__(self) -> LLMServerProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LLMControl:
    """Synchronous client for the server's control API."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        self._client = httpx.Client(base_url=f"{parts.scheme}://{parts.netloc}", timeout=10.0)

    def script(
        self,
        key: str,
        *,
        tokens: Sequence[str],
        delay: float = 0.0,
        failures: Sequence[Mapping[str, object]] = (),
        usage: bool = True,
        tool_rounds: Sequence[Sequence[Mapping[str, str]]] = (),
        piece_chars: int = 8,
    ) -> None:
        """Register (or replace) the scenario answered for ``key`` (the module's docstring
        describes the fields)."""
        body = {
            "tokens": list(tokens),
            "delay": delay,
            "failures": [dict(f) for f in failures],
            "usage": usage,
            "tool_rounds": [[dict(call) for call in calls] for calls in tool_rounds],
            "piece_chars": piece_chars,
        }
        self._client.put(self._path(key), json=body).raise_for_status()

    def calls(self, key: str) -> list[dict[str, object]]:
        """The calls recorded for ``key``, oldest first."""
        response = self._client.get(f"{self._path(key)}/calls")
        response.raise_for_status()
        calls: list[dict[str, object]] = response.json()["calls"]
        return calls

    def reset(self) -> None:
        """Forget all scenarios and recorded calls."""
        self._client.delete("/_scenarios").raise_for_status()

    def close(self) -> None:
        self._client.close()

    @staticmethod
    def _path(key: str) -> str:
        return f"/_scenarios/{quote(key, safe='')}"


if __name__ == "__main__":
    main()
