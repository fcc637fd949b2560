"""Polling a task over REST the way a client without a stream would."""

from __future__ import annotations

import time
from typing import Any

import httpx

from teststack.stack import headers_for

TERMINAL = {"completed", "failed", "cancelled"}


def submit(
    client: httpx.Client,
    agent_id: str,
    message: str,
    *,
    user: str = "alice",
    stream: bool = False,
    **extra: Any,
) -> str:
    response = client.post(
        f"/api/v1/agents/{agent_id}/invoke-async",
        json={"message": message, "stream": stream, **extra},
        headers=headers_for(user),
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    task_id: str = body["task_id"]
    return task_id


def poll_until_done(
    client: httpx.Client,
    task_id: str,
    *,
    user: str = "alice",
    timeout: float = 30.0,
    interval: float = 0.05,
    seen: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The task's final status; every status polled on the way is appended to ``seen``."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1/agents/tasks/{task_id}", headers=headers_for(user))
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if seen is not None:
            seen.append(status)
        if status["status"] in TERMINAL:
            return status
        if time.monotonic() >= deadline:
            raise TimeoutError(f"task {task_id} still {status['status']} after {timeout} s")
        time.sleep(interval)
