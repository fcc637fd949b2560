"""How fast a cancel stops the work: cancel request -> LLM stream closed, and -> the client's
``cancelled`` event, over many concurrent tasks.

How: one private Redis, the loopback LLM server (its own process), one worker (threads pool,
shared loop) and one web process. ``--tasks`` streaming invocations of ``simple_llm_agent``, each
with its own scripted answer (long enough never to finish by itself), are submitted and each is
watched by an SSE client. Once every client has received ``--after`` chunks, all tasks are
cancelled at once (concurrent ``POST /cancel``). Per task:

- *answered*: when the client had the cancel's ``202``;
- *worker stopped*: the LLM server's record of when the call's connection closed, minus the
  moment the cancel request was sent (both ``CLOCK_MONOTONIC``, which every process shares);
- *client sees cancelled*: when the SSE client received ``cancelled``, minus the same moment.

    .venv/bin/python -m bench.cancel_latency --tasks 40
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import httpx
import orjson
import redis
from httpx_sse import aconnect_sse

from bench._common import (
    command_line,
    embedded_redis,
    llm_server,
    machine_summary,
    percentile,
    stop_on_sigterm,
    table,
)
from teststack.llm.scenarios import RecordedCall
from teststack.stack import headers_for, redis_db_url, start_web, start_worker

ALICE = headers_for("alice")


async def _watch(
    client: httpx.AsyncClient, task_id: str, *, after: int, ready: asyncio.Event
) -> float:
    """Read the task's stream; signal ``ready`` after ``after`` chunks; when ``cancelled`` came."""
    chunks = 0
    url = f"/api/v1/agents/tasks/{task_id}/events"
    async with aconnect_sse(client, "GET", url, headers=dict(ALICE)) as source:
        async for sse in source.aiter_sse():
            if sse.event == "chunk":
                chunks += 1
                if chunks == after:
                    ready.set()
            elif sse.event == "cancelled":
                return time.monotonic()
            elif sse.data and orjson.loads(sse.data) and sse.event in ("result", "error"):
                raise RuntimeError(f"task {task_id} ended with {sse.event}, not cancelled")
    raise RuntimeError(f"stream of {task_id} closed without a terminal event")


async def _run(
    base_url: str, keys: list[str], *, after: int
) -> tuple[float, list[float], list[float]]:
    """Submit, watch, cancel all at once: when the cancels were sent, when each was answered,
    and when each client saw ``cancelled``, on the shared monotonic clock."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        task_ids = []
        for key in keys:
            response = await client.post(
                "/api/v1/agents/simple_llm_agent/invoke-async",
                json={"message": key, "stream": True},
                headers=ALICE,
            )
            response.raise_for_status()
            task_ids.append(response.json()["task_id"])
        readies = [asyncio.Event() for _ in task_ids]
        watchers = [
            asyncio.create_task(_watch(client, t, after=after, ready=r))
            for t, r in zip(task_ids, readies, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), timeout=120)
        cancelled_at = time.monotonic()

        async def cancel(task_id: str) -> httpx.Response:
            response = await client.post(f"/api/v1/agents/tasks/{task_id}/cancel", headers=ALICE)
            answered.append(time.monotonic())
            return response

        answered: list[float] = []
        responses = await asyncio.gather(*(cancel(t) for t in task_ids))
        if any(r.status_code != 202 for r in responses):
            raise RuntimeError("a cancel was refused")
        seen = await asyncio.wait_for(asyncio.gather(*watchers), timeout=60)
    return cancelled_at, answered, list(seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--after", type=int, default=5, help="chunks every client sees first")
    args = parser.parse_args()
    stop_on_sigterm()
    print(command_line("bench.cancel_latency"))
    with embedded_redis() as redis_server, llm_server() as (llm, control):
        url = redis_db_url(redis_server.url, 0)
        admin = redis.Redis.from_url(url)
        print(machine_summary(admin))
        admin.close()
        keys = [f"cancel me, task {i}" for i in range(args.tasks)]
        for key in keys:
            control.script(key, tokens=[f" t{i}" for i in range(2000)], delay=0.05)
        worker = start_worker(
            url,
            env={
                "LLM_BASE_URL": llm.base_url,
                "AGENT_TASK_RATE_LIMIT": "",
                "STREAMING_TASK_RATE_LIMIT": "",
            },
        )
        web = start_web(url)
        try:
            cancelled_at, answered, seen = asyncio.run(_run(web.base_url, keys, after=args.after))
            closed = [_closed_at(control.calls(key), key) for key in keys]
        finally:
            web.stop()
            worker.stop()
    stopped = sorted(1000 * (t - cancelled_at) for t in closed)
    delivered = sorted(1000 * (t - cancelled_at) for t in seen)
    rows = [
        [
            "cancel -> its 202 received",
            *_stats(sorted(1000 * (t - cancelled_at) for t in answered)),
        ],
        ["cancel -> LLM stream closed (worker stopped)", *_stats(stopped)],
        ["cancel -> client received `cancelled`", *_stats(delivered)],
    ]
    print(f"{args.tasks} concurrent streaming tasks, each cancelled after {args.after} chunks")
    print(table(["ms", "p50", "p90", "max"], rows))


def _closed_at(calls: list[RecordedCall], key: str) -> float:
    (call,) = calls
    closed_at = call["disconnected_at"]
    if not call["disconnected"] or closed_at is None:
        raise RuntimeError(f"the LLM call of {key!r} was never closed")
    return closed_at


def _stats(sorted_ms: list[float]) -> list[float]:
    return [statistics.median(sorted_ms), percentile(sorted_ms, 0.9), sorted_ms[-1]]


if __name__ == "__main__":
    main()
