"""A streaming client for any OpenAI-compatible ``POST /chat/completions`` endpoint.

It owns the HTTP details (aiohttp, on the loop's ``aiohttp.ClientSession``: see
``llm_session``), reading the event stream (``sse_decoder``) and the protocol: each text delta
goes to ``on_chunk`` as it arrives; tool-call pieces are assembled into whole calls
(``tool_call_assembler``); the model, finish reason and usage are kept for the end. Every failure
leaves this module as one of ``worker.errors`` (``raise ... from exc``):

- transient (``LLMConnectionError``): no connection within ``connect_timeout``, a silence longer
  than ``read_timeout`` (before the answer or between two chunks), a connection dropped before
  the stream's end, a stream that ends before the completion finished (no ``finish_reason``, no
  ``[DONE]``); (``LLMUnavailableError``): 429 and 5xx, with the seconds of their ``Retry-After``
  (delta-seconds or HTTP-date), and an ``error`` object sent mid-stream;
- permanent: another 4xx (``LLMRequestRejectedError``, quoting an excerpt of the server's
  message), a 2xx that is not ``text/event-stream``, a chunk that is not a JSON object or not the
  protocol's shape, a tool call that cannot be assembled (``LLMProtocolError``).

Error messages never quote the answer (text or tool arguments): they end up in task results and
logs. The client keeps no per-chunk timer of its own: aiohttp's ``sock_read`` is the silence
bound. Proxies named by ``HTTPS_PROXY``/``HTTP_PROXY``/``ALL_PROXY`` (and exempted by
``NO_PROXY``) are used, read once per process.
"""

import email.utils
import functools
import time
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
import orjson

from worker.agents.base import ChatMessage, ChunkSink, ToolCall
from worker.agents.sse_decoder import EventTooLargeError, SSEDecoder
from worker.agents.tool_call_assembler import ToolCallAssembler
from worker.errors import (
    AgentConfigurationError,
    LLMConnectionError,
    LLMProtocolError,
    LLMRequestRejectedError,
    LLMUnavailableError,
)

#: Longest part of an error body quoted back in a task's error message.
_ERROR_EXCERPT = 300
#: Most of an error body read to find its message.
_ERROR_BODY_LIMIT = 64 * 1024
#: Seconds to wait, after ``[DONE]``, for the end of the body, so the connection can be reused.
_DRAIN_SECONDS = 1.0
_NO_DELTA: Mapping[str, Any] = {}


@dataclass(slots=True)
class ChatCompletion:
    """The end of one streamed completion: the text is already delivered chunk by chunk."""

    content: str
    model: str
    finish_reason: str | None
    chunks: int
    usage: dict[str, int] = field(default_factory=dict)
    #: The functions the model asked to call (``finish_reason`` is then ``"tool_calls"``).
    tool_calls: list[ToolCall] = field(default_factory=list)


class OpenAICompatibleClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        base_url: str,
        api_key: str | None,
        model: str,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self._session = session
        self._url = base_url.rstrip("/") + "/chat/completions"
        parts = urllib.parse.urlsplit(self._url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AgentConfigurationError(
                f"LLM_BASE_URL must be an http:// or https:// URL, not {base_url!r}"
            )
        self._headers = {"Accept": "text/event-stream", "Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._model = model
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout, sock_read=read_timeout
        )
        self._proxy = _proxy_from_environment(parts.scheme, parts.hostname)

    async def stream_chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        on_chunk: ChunkSink,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> ChatCompletion:
        """Stream one completion, handing each content delta to ``on_chunk`` as it arrives.

        ``tools`` (OpenAI's function definitions) and ``tool_choice`` are sent as given; the calls
        the model makes come back whole in ``ChatCompletion.tool_calls``.
        """
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [_message(m) for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools is not None:
            body["tools"] = tools
        if tool_choice is not None:
            body["tool_choice"] = tool_choice
        try:
            async with self._session.post(
                self._url,
                data=orjson.dumps(body),
                headers=self._headers,
                timeout=self._timeout,
                proxy=self._proxy,
                allow_redirects=False,
            ) as response:
                if response.status >= 400:
                    raise await _status_error(response)
                if response.content_type != "text/event-stream":
                    raise LLMProtocolError(
                        f"LLM did not answer with an event stream: {response.status} "
                        f"with Content-Type {response.headers.get('Content-Type', 'none')!r}"
                    )
                return await self._read_stream(response.content, on_chunk=on_chunk)
        except aiohttp.ConnectionTimeoutError as exc:
            raise LLMConnectionError(
                f"LLM timed out: no connection within {self._connect_timeout:g} s"
            ) from exc
        except aiohttp.ServerTimeoutError as exc:
            raise LLMConnectionError(
                f"LLM timed out: nothing received for {self._read_timeout:g} s"
            ) from exc
        except aiohttp.ClientError as exc:
            raise LLMConnectionError(
                f"LLM connection failed ({type(exc).__name__}): {exc}"
            ) from exc

    async def _read_stream(
        self, content: aiohttp.StreamReader, *, on_chunk: ChunkSink
    ) -> ChatCompletion:
        decoder = SSEDecoder()
        stream = _StreamState(self._model)
        while piece := await content.readany():
            try:
                events = decoder.feed(piece)
            except EventTooLargeError as exc:
                raise LLMProtocolError(f"LLM sent an oversized event ({exc})") from exc
            for data in events:
                text = stream.take(data)
                if text is not None:
                    await on_chunk(text)
            if stream.done:
                await _drain(content)
                break
        return stream.completion()


class _StreamState:
    """What one stream has said so far."""

    __slots__ = ("done", "finish_reason", "model", "parts", "tool_calls", "usage")

    def __init__(self, model: str) -> None:
        self.done = False  # [DONE] arrived
        self.model = model
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}
        self.tool_calls: ToolCallAssembler | None = None

    def take(self, data: bytes) -> str | None:
        """Take one event's data; its text, if it has some."""
        if self.done or not data:
            return None
        if data == b"[DONE]":
            self.done = True
            return None
        chunk = _decode(data)
        error = chunk.get("error")
        if error is not None:
            raise LLMUnavailableError(f"LLM reported an error mid-stream: {_error_text(error)}")
        model = chunk.get("model")
        if model and isinstance(model, str):
            self.model = model
        usage = chunk.get("usage")
        if usage is not None and isinstance(usage, dict):
            self.usage = {k: v for k, v in usage.items() if isinstance(v, int)}
        choices = chunk.get("choices")
        if not choices:
            return None
        text = None
        try:
            for choice in choices:
                delta = choice.get("delta") or _NO_DELTA
                piece = delta.get("content")
                if piece and isinstance(piece, str):
                    if "\x00" in piece:  # PostgreSQL stores no NUL in text (the session's turn)
                        piece = piece.replace("\x00", "\ufffd")
                    self.parts.append(piece)
                    text = piece if text is None else text + piece
                calls = delta.get("tool_calls")
                if calls:
                    if self.tool_calls is None:
                        self.tool_calls = ToolCallAssembler()
                    self.tool_calls.add(calls)
                reason = choice.get("finish_reason")
                if reason:
                    self.finish_reason = str(reason)
        except (AttributeError, TypeError) as exc:  # choices, a choice or a delta of another kind
            raise LLMProtocolError(f"LLM sent a chunk that is not the protocol's ({exc})") from exc
        return text

    def completion(self) -> ChatCompletion:
        if not self.done and self.finish_reason is None:
            raise LLMConnectionError("LLM stream ended before the completion finished")
        return ChatCompletion(
            content="".join(self.parts),
            model=self.model,
            finish_reason=self.finish_reason,
            chunks=len(self.parts),
            usage=self.usage,
            tool_calls=self.tool_calls.calls() if self.tool_calls is not None else [],
        )


async def _drain(content: aiohttp.StreamReader) -> None:
    """Read what follows ``[DONE]`` (the body's end, normally there already), so the connection
    goes back to the pool; a server that keeps the stream open is not waited for."""
    if content.is_eof():
        return
    with anyio.move_on_after(_DRAIN_SECONDS):
        try:
            while await content.readany():
                pass
        except (aiohttp.ClientError, TimeoutError):
            pass  # the completion is whole; the connection is closed instead of reused


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.tool_calls:
        return {
            "role": message.role,
            "content": message.content or None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ],
        }
    if message.tool_call_id is not None:
        return {
            "role": message.role,
            "content": message.content,
            "tool_call_id": message.tool_call_id,
        }
    return {"role": message.role, "content": message.content}


def _decode(data: bytes) -> dict[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # The chunk's text is not quoted: it may hold the answer, which is never logged.
        raise LLMProtocolError(f"LLM sent a chunk that is not JSON ({len(data)} bytes)") from exc
    if not isinstance(chunk, dict):
        raise LLMProtocolError(f"LLM sent a chunk that is not a JSON object ({len(data)} bytes)")
    return chunk


def _error_text(error: object) -> str:
    """The message of an OpenAI-style ``error`` object (or the object), cut to an excerpt."""
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:_ERROR_EXCERPT]
    return str(error)[:_ERROR_EXCERPT]


async def _status_error(response: aiohttp.ClientResponse) -> Exception:
    status = response.status
    detail = _error_detail(await _error_body(response.content), reason=response.reason)
    if status == 429 or status >= 500:
        return LLMUnavailableError(
            f"LLM answered {status}: {detail}", retry_after=parse_retry_after(response.headers)
        )
    return LLMRequestRejectedError(f"LLM rejected the request with {status}: {detail}")


async def _error_body(content: aiohttp.StreamReader) -> bytes:
    """The start of an error answer's body (what arrives of it: the status is what counts)."""
    body = b""
    try:
        while len(body) < _ERROR_BODY_LIMIT and (piece := await content.readany()):
            body += piece
    except (aiohttp.ClientError, TimeoutError):
        pass
    return body[:_ERROR_BODY_LIMIT]


def _error_detail(body: bytes, *, reason: str | None) -> str:
    try:
        message = orjson.loads(body)["error"]["message"]
        if isinstance(message, str):
            return message[:_ERROR_EXCERPT]
    except (orjson.JSONDecodeError, KeyError, TypeError, IndexError):
        pass
    return body.decode("utf-8", "replace").strip()[:_ERROR_EXCERPT] or reason or ""


@functools.lru_cache(maxsize=16)
def _proxy_from_environment(scheme: str, host: str) -> str | None:
    """The proxy the environment names for ``scheme`` and ``host`` (as httpx and curl read it)."""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(scheme) or proxies.get("all")


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), if any."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
