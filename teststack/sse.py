"""Reading a task's event stream the way a client library does (httpx + httpx-sse)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
from httpx_sse import ServerSentEvent, connect_sse

TERMINAL = {"result", "error", "cancelled"}


@dataclass(frozen=True)
class Received:
    id: str
    event: str
    data: Any

    @classmethod
    def of(cls, sse: ServerSentEvent) -> Received:
        return cls(id=sse.id, event=sse.event, data=orjson.loads(sse.data))


def is_heartbeat(sse: ServerSentEvent) -> bool:
    """httpx-sse (0.4) turns a heartbeat comment into an event without data once an id was seen;
    a browser's EventSource dispatches nothing for it. Every event of ours has data."""
    return sse.data == ""


def events_path(task_id: str) -> str:
    return f"/api/v1/agents/tasks/{task_id}/events"


def read_stream(
    client: httpx.Client,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    stop: Callable[[list[Received]], bool] | None = None,
    timeout: float = 30.0,
) -> list[Received]:
    """Every event until the server closes the stream (or ``stop`` says so)."""
    received: list[Received] = []
    with connect_sse(client, "GET", url, headers=dict(headers or {}), timeout=timeout) as source:
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for sse in source.iter_sse():
            if is_heartbeat(sse):
                continue
            received.append(Received.of(sse))
            if stop is not None and stop(received):
                break
    return received


def content_of(events: list[Received]) -> str:
    """The answer as a client rebuilds it: chunk texts, restarted at each reset."""
    text = ""
    for event in events:
        if event.event == "reset":
            text = event.data["content"]
        elif event.event == "chunk":
            text += event.data["text"]
    return text
