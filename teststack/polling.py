"""Submitting a task and polling it over REST, the way a client without a stream would.

``invoke`` is the one request every test and benchmark submits with; ``accept`` and ``submit``
add the check that it was accepted (202, queued) and give its answer or only its task id.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict, Unpack

import httpx

from teststack.stack import headers_for

TERMINAL = {"completed", "failed", "cancelled"}


def invoke_path(agent_id: str) -> str:
    return f"/api/v1/agents/{agent_id}/invoke-async"


class InvokeOptions(TypedDict, total=False):
    """What a submission may say besides its agent and message (the API's defaults otherwise)."""

    #: Whose API key it is sent with (``"alice"`` unless said).
    user: str
    #: Sent instead of ``user``'s API key: a bearer token, say.
    headers: Mapping[str, str]
    stream: bool
    priority: int
    session_id: str
    metadata: Mapping[str, object]
    idempotency_key: str


def invoke(
    client: httpx.Client, agent_id: str, message: str, **options: Unpack[InvokeOptions]
) -> httpx.Response:
    """``POST invoke-async``, whatever it answers (tests of a refusal read the answer)."""
    unknown = options.keys() - InvokeOptions.__annotations__.keys()
    if unknown:  # what mypy refuses, refused at run time too rather than left out
        raise TypeError(f"invoke() got unknown options {sorted(unknown)}")
    body: dict[str, object] = {"message": message, "stream": options.get("stream", False)}
    if "priority" in options:
        body["priority"] = options["priority"]
    if "session_id" in options:
        body["session_id"] = options["session_id"]
    if "metadata" in options:
        body["metadata"] = options["metadata"]
    if "headers" in options:
        headers = dict(options["headers"])
    else:
        headers = headers_for(options.get("user", "alice"))
    if "idempotency_key" in options:
        headers["Idempotency-Key"] = options["idempotency_key"]
    return client.post(invoke_path(agent_id), json=body, headers=headers)


@dataclass(frozen=True)
class Accepted:
    """The 202 answer to a submission."""

    task_id: str
    status_url: str
    stream_url: str

    @property
    def stream_token(self) -> str:
        """The stream token the answer's ``stream_url`` carries."""
        return self.stream_url.split("token=", 1)[1]


def accept(
    client: httpx.Client, agent_id: str, message: str, **options: Unpack[InvokeOptions]
) -> Accepted:
    """Submit, and check that the task was accepted and queued."""
    response = invoke(client, agent_id, message, **options)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    return Accepted(
        task_id=body["task_id"], status_url=body["status_url"], stream_url=body["stream_url"]
    )


def submit(
    client: httpx.Client, agent_id: str, message: str, **options: Unpack[InvokeOptions]
) -> str:
    """Submit, check that the task was accepted, and give its id."""
    return accept(client, agent_id, message, **options).task_id


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
