"""The peer: the plain Celery recipe this product replaces, as a worker of its own.

One synchronous task streams the LLM's answer with httpx, collects the chunks and returns the
answer, which Celery stores in the result backend. Nothing is relayed: a client polls for the
result. It runs under whichever pool the command line names, e.g. Celery's default
(``--pool prefork --concurrency 4``) or its advice for I/O-bound work
(``--pool gevent --concurrency 100``):

    SEED_REDIS_URL=redis://127.0.0.1:PORT/1 SEED_LLM_BASE_URL=http://127.0.0.1:PORT/v1 \\
        celery -A bench.seed_recipe worker -Q seed --pool prefork --concurrency 4

Celery's defaults otherwise (prefetch 4, early acknowledgement), JSON only. Configured from the
environment only, as a worker is; the benchmark starts and stops it (``bench.throughput``).
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
from celery import Celery

TASK_NAME = "seed.invoke_agent"
QUEUE = "seed"

app = Celery(
    "seed_recipe",
    broker=os.environ.get("SEED_REDIS_URL"),
    backend=os.environ.get("SEED_REDIS_URL"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue=QUEUE,
    broker_connection_retry_on_startup=True,
)

_client: httpx.Client | None = None


def _http() -> httpx.Client:
    """One client per worker process (its pool is shared by the greenlets of gevent)."""
    global _client
    if _client is None:
        _client = httpx.Client(
            base_url=os.environ["SEED_LLM_BASE_URL"],
            headers={"Authorization": "Bearer test-llm-key"},
            timeout=httpx.Timeout(60.0, connect=10.0),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=200),
        )
    return _client


@app.task(name=TASK_NAME)
def invoke_agent(message: str) -> dict[str, Any]:
    """Stream one chat completion, collect its text, return it (stored as the task's result)."""
    body = {
        "model": "loopback-model",
        "messages": [{"role": "user", "content": message}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    parts: list[str] = []
    usage: dict[str, Any] = {}
    with _http().stream("POST", "/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices", []):
                parts.append(choice.get("delta", {}).get("content") or "")
            usage = chunk.get("usage") or usage
    return {"content": "".join(parts), "metadata": {"recipe": "seed"}, "usage": usage}
