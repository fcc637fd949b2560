"""The built-in LLM client as it was on httpx + httpx-sse, kept only as the baseline of
``bench/llm_client.py`` (the worker's client is ``worker/agents/openai_client.py``).

The code is that of commit ``22ac191`` unchanged, but for its name and imports: it returns the
worker's ``ChatCompletion`` and shares ``parse_retry_after``.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import orjson
from httpx_sse import SSEError, aconnect_sse

from worker.agents.base import ChatMessage, ChunkSink
from worker.agents.openai_client import ChatCompletion, parse_retry_after
from worker.errors import (
    LLMConnectionError,
    LLMProtocolError,
    LLMRequestRejectedError,
    LLMUnavailableError,
)

#: Longest part of an error body quoted back in a task's error message.
_ERROR_EXCERPT = 300


class HttpxOpenAIClient:
    def __init__(
        self, http: httpx.AsyncClient, *, base_url: str, api_key: str | None, model: str
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Accept": "text/event-stream"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._model = model

    async def stream_chat(
        self, messages: Sequence[ChatMessage], *, on_chunk: ChunkSink
    ) -> ChatCompletion:
        """Stream one completion, handing each content delta to ``on_chunk`` as it arrives."""
        body = {
            "model": self._model,
            "messages": [{"role": m.role, "content": m.content} for m in messages],
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        try:
            async with aconnect_sse(
                self._http, "POST", self._url, json=body, headers=self._headers
            ) as source:
                response = source.response
                if response.status_code >= 400:
                    await response.aread()
                    raise _status_error(response)
                return await self._read_stream(source.aiter_sse(), on_chunk=on_chunk)
        except SSEError as exc:  # before TransportError: httpx-sse derives it from that
            raise LLMProtocolError(f"LLM did not answer with an event stream: {exc}") from exc
        except httpx.TimeoutException as exc:
            raise LLMConnectionError(f"LLM timed out ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise LLMConnectionError(f"LLM connection failed: {exc!r}") from exc

    async def _read_stream(self, events: Any, *, on_chunk: ChunkSink) -> ChatCompletion:
        parts: list[str] = []
        model = self._model
        finish_reason: str | None = None
        usage: dict[str, int] = {}
        done = False
        async for event in events:
            if event.data == "[DONE]":
                done = True
                break
            if not event.data:
                continue
            chunk = _decode(event.data)
            if "error" in chunk:
                raise LLMUnavailableError(f"LLM reported an error mid-stream: {chunk['error']}")
            model = chunk.get("model") or model
            if isinstance(chunk.get("usage"), dict):
                usage = {k: v for k, v in chunk["usage"].items() if isinstance(v, int)}
            for choice in chunk.get("choices") or ():
                text = (choice.get("delta") or {}).get("content")
                if text:
                    parts.append(text)
                    await on_chunk(text)
                finish_reason = choice.get("finish_reason") or finish_reason
        if not done and finish_reason is None:
            raise LLMConnectionError("LLM stream ended before the completion finished")
        return ChatCompletion(
            content="".join(parts),
            model=model,
            finish_reason=finish_reason,
            chunks=len(parts),
            usage=usage,
        )


def _decode(data: str) -> Mapping[str, Any]:
    try:
        chunk = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        # The chunk's text is not quoted: it may hold the answer, which is never logged.
        raise LLMProtocolError(f"LLM sent a chunk that is not JSON ({len(data)} bytes)") from exc
    if not isinstance(chunk, dict):
        raise LLMProtocolError(f"LLM sent a chunk that is not a JSON object ({len(data)} bytes)")
    return chunk


def _status_error(response: httpx.Response) -> Exception:
    status = response.status_code
    detail = _error_detail(response)
    if status == 429 or status >= 500:
        return LLMUnavailableError(
            f"LLM answered {status}: {detail}", retry_after=parse_retry_after(response.headers)
        )
    return LLMRequestRejectedError(f"LLM rejected the request with {status}: {detail}")


def _error_detail(response: httpx.Response) -> str:
    try:
        payload = response.json()
        message = payload["error"]["message"]
        if isinstance(message, str):
            return message[:_ERROR_EXCERPT]
    except (ValueError, KeyError, TypeError):
        pass
    return response.text[:_ERROR_EXCERPT] or response.reason_phrase


class HttpxOpenAIClientDrained(HttpxOpenAIClient):
    """The same client, but reading the body to its end after ``[DONE]``: the one change that
    lets httpx put the connection back in its pool (the client above stops reading at
    ``[DONE]``, so httpcore closes the connection, and every call opens a new one)."""

    async def _read_stream(self, events: Any, *, on_chunk: ChunkSink) -> ChatCompletion:
        completion = await super()._read_stream(events, on_chunk=on_chunk)
        async for _ in events:
            pass
        return completion
