"""The OpenAI chat-completions protocol as the loopback server speaks it: the parts of a request
it acts on (refusing what OpenAI refuses), and the JSON and SSE frames of its answers, whole or
streamed, with text or with tool calls."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse

from teststack.llm.scenarios import Failure, RecordedCall, Scenario

DEFAULT_MODEL = "loopback-model"
JSON = dict[str, Any]

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}


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


def tool_round_of(chat: ChatRequest, scenario: Scenario) -> tuple[JSON, ...] | None:
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


def tool_call_pieces(calls: Sequence[JSON], *, piece_chars: int) -> list[JSON]:
    """The ``delta.tool_calls`` items that stream ``calls``, one per chunk, in OpenAI's order:
    per call its id, type and name first, then its arguments a few characters at a time."""
    pieces: list[JSON] = []
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


def usage_of(chat: ChatRequest, scenario: Scenario) -> JSON:
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


class Completion:
    """Builds the JSON objects of one completion, sharing id, clock and model."""

    def __init__(self, chat: ChatRequest) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = chat.model

    def chunk(self, *, delta: JSON, finish_reason: str | None) -> JSON:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", choices=[choice])

    def usage_chunk(self, usage: JSON) -> JSON:
        return self._envelope("chat.completion.chunk", choices=[], usage=usage)

    def whole(self, content: str, usage: JSON | None, *, tool_calls: Sequence[JSON] = ()) -> JSON:
        message: JSON = {"role": "assistant", "content": content}
        finish_reason = "stop"
        if tool_calls:
            message = {"role": "assistant", "content": None, "tool_calls": list(tool_calls)}
            finish_reason = "tool_calls"
        choice = {"index": 0, "message": message, "finish_reason": finish_reason}
        extra = {"usage": usage} if usage is not None else {}
        return self._envelope("chat.completion", choices=[choice], **extra)

    def _envelope(self, kind: str, **fields: object) -> JSON:
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
    call: RecordedCall,
    failure: Failure | None = None,
) -> AsyncGenerator[bytes, None]:
    """The SSE frames of one streamed completion, pacing tokens (or tool-call pieces) by the
    delay; with a ``failure``, its first ``after_tokens`` tokens and then the error."""
    completion = Completion(chat)
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
            first = {"role": "assistant", "content": None} if index == 0 else {}
            yield _sse(completion.chunk(delta={**first, "tool_calls": [piece]}, finish_reason=None))
        yield _sse(completion.chunk(delta={}, finish_reason="tool_calls"))
    if chat.include_usage and scenario.usage:
        yield _sse(completion.usage_chunk(usage_of(chat, scenario)))
    yield _sse("[DONE]")
    call["completed"] = True
