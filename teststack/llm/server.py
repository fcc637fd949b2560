"""The loopback LLM server's application: the chat-completions endpoints, the control API
(``/_scenarios``), and a streamed answer that notices a client leaving early.

Run it by hand with ``python -m teststack.llm.server --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Sequence

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from teststack.llm.completions import (
    ChatRequest,
    Completion,
    error_response,
    parse_chat_request,
    stream_events,
    tool_round_of,
    usage_of,
)
from teststack.llm.scenarios import RecordedCall, Scenario, ScenarioStore, parse_scenario


def _mark_disconnected(call: RecordedCall) -> None:
    if not call["completed"] and not call["disconnected"]:
        call["disconnected"] = True
        call["disconnected_at"] = time.monotonic()


class RecordingEventStream(StreamingResponse):
    """An SSE response that notices, and records, a client leaving early.

    A task listens for ``http.disconnect`` while the frames are produced, so
    a dropped connection is seen at once even while the stream is idle
    between tokens; the frame generator is then cancelled and closed.
    """

    def __init__(self, frames: AsyncGenerator[bytes, None], *, call: RecordedCall) -> None:
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


def _store(request: Request) -> ScenarioStore:
    store: ScenarioStore = request.app.state.store
    return store


def _new_call(chat: ChatRequest, *, status: int) -> RecordedCall:
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
    chat: ChatRequest, scenario: Scenario, *, call: RecordedCall
) -> Response:
    if scenario.delay:
        await asyncio.sleep(scenario.delay * len(scenario.tokens))
    usage = usage_of(chat, scenario) if scenario.usage else None
    call["completed"] = True
    calls = tool_round_of(chat, scenario) or ()
    return JSONResponse(Completion(chat).whole("".join(scenario.tokens), usage, tool_calls=calls))


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
        prog="python -m teststack.llm.server",
        description="Loopback OpenAI-compatible streaming chat-completions server for tests.",
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    serve(port=args.port, host=args.host)


if __name__ == "__main__":
    main()
