"""Client CPU of the event writer's batches of script calls: ``streaming/lean_pipeline.py`` (the
hot path's way: every command packed by hiredis into one buffer, one write, the replies read in
order) against redis-py's asyncio ``Pipeline`` (``transaction=False``) sending the same
``EVALSHA`` batch, in one process, on one event loop, A/B alternating.

Each batch is what ``streaming/event_writer.py`` sends for ``--batch`` tasks at once: per task
one ``EVALSHA`` of its ``WRITE_SCRIPT`` with the same keys and arguments as the writer builds
(one chunk event each, resync on, so every call is applied and answers ``ok`` and the event's
id). The script runs on a private Redis (a free loopback port, its own process, never the
machine's 6379) that the benchmark starts and stops.

Per batch size and round: this process's CPU (``time.process_time``) over ``--batches``
batches sent one after another, for each way in turn (the order reversed every round, after one
unmeasured warm-up round), divided by the script calls sent: microseconds of client CPU per
script call. Wall time per batch beside it. The medians over ``--rounds`` rounds are shown,
with the range. Every reply is checked. The client has redis-py's default ``socket_timeout``
(5 s), as the worker's pool does, so each write runs in ``asyncio.wait_for``;
``--socket-timeout 0`` shows what writing in place would save.

    .venv/bin/python -m bench.pipeline
    .venv/bin/python -m bench.pipeline --sizes 1,8,32 --batches 500 --rounds 3
    .venv/bin/python -m bench.pipeline --socket-timeout 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import anyio
import redis
from redis.asyncio import Redis

from bench._common import (
    command_line,
    load_average,
    machine_summary,
    stop_on_sigterm,
    table,
)
from contract import keys
from contract.events import EventType
from scripts.embedded_redis import EmbeddedRedis
from streaming import lean_pipeline
from streaming.event_log import event_args, log_keys
from streaming.event_writer import WRITE_SCRIPT

MAXLEN = 100  # the log's length cap: the benchmark's logs stay small whatever it sends
TTL = 60

Command = tuple[bytes | str | int, ...]
Send = Callable[[Redis, Sequence[Command]], Awaitable[list[object]]]


@dataclass
class Sample:
    way: str
    size: int
    calls: int
    cpu: float
    wall: float

    @property
    def cpu_per_call_us(self) -> float:
        return 1e6 * self.cpu / self.calls

    @property
    def wall_per_batch_us(self) -> float:
        return 1e6 * self.wall * self.size / self.calls


def batch(sha: str, size: int, number: int) -> list[Command]:
    """``size`` script calls as the event writer builds them: one task each, one chunk event."""
    commands: list[Command] = []
    for i in range(size):
        task_id = f"bench-pipeline-{i}"
        task_keys = [*log_keys(task_id), keys.task_written(task_id)]
        args: list[bytes | str | int] = [keys.task_channel(task_id), MAXLEN, TTL]
        args += ["1", "run-1", number, "1", "", 0]
        args += event_args([(EventType.CHUNK, {"text": f" tok{number}", "index": number})])
        commands.append(("EVALSHA", sha, len(task_keys), *task_keys, *args))
    return commands


async def lean(client: Redis, commands: Sequence[Command]) -> list[object]:
    return await lean_pipeline.execute(client, commands)


async def redis_py(client: Redis, commands: Sequence[Command]) -> list[object]:
    async with client.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)


WAYS: dict[str, Send] = {"lean_pipeline": lean, "redis-py Pipeline": redis_py}


async def run_way(
    client: Redis, way: str, sha: str, size: int, batches: int, *, measured: bool
) -> Sample | None:
    send = WAYS[way]
    prepared = [batch(sha, size, number) for number in range(1, batches + 1)]
    cpu, wall = time.process_time(), time.perf_counter()
    for commands in prepared:
        replies = await send(client, commands)
        if len(replies) != size or not all(
            isinstance(reply, list) and reply[0] == b"ok" for reply in replies
        ):
            raise RuntimeError(f"{way}: unexpected replies {replies[:2]!r}")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return Sample(way, size, size * batches, cpu, wall) if measured else None


async def measure(args: argparse.Namespace, url: str) -> list[Sample]:
    # redis-py's default socket_timeout (5 s), as the worker's pool has it: each write then runs
    # in asyncio.wait_for. 0: none, the write made in place.
    client = Redis.from_url(url, socket_timeout=args.socket_timeout or None)
    try:
        sha = await client.script_load(WRITE_SCRIPT)
        samples: list[Sample] = []
        ways = list(WAYS)
        for round_number in range(args.rounds + 1):
            measured = round_number > 0
            for size in args.sizes:
                for way in ways if round_number % 2 else reversed(ways):
                    sample = await run_way(client, way, sha, size, args.batches, measured=measured)
                    if sample is not None:
                        samples.append(sample)
        return samples
    finally:
        await client.aclose()


def report(samples: Sequence[Sample], sizes: Sequence[int]) -> str:
    headers = [
        "batch size", "way", "client CPU/call us", "range us", "x lean_pipeline",
        "wall/batch us", "calls",
    ]  # fmt: skip
    rows: list[list[object]] = []
    for size in sizes:
        medians = {
            way: statistics.median(
                s.cpu_per_call_us for s in samples if s.size == size and s.way == way
            )
            for way in WAYS
        }
        for way in WAYS:
            mine = [s for s in samples if s.size == size and s.way == way]
            per_call = [s.cpu_per_call_us for s in mine]
            rows.append(
                [
                    size, way, f"{medians[way]:.1f}", f"{min(per_call):.1f}-{max(per_call):.1f}",
                    f"{medians[way] / medians['lean_pipeline']:.2f}x",
                    f"{statistics.median(s.wall_per_batch_us for s in mine):.0f}",
                    sum(s.calls for s in mine),
                ]
            )  # fmt: skip
    return table(headers, rows)


def size_list(text: str) -> list[int]:
    values = [int(item) for item in text.split(",") if item.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description="Client CPU per script call: lean_pipeline against redis-py's Pipeline.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--sizes", type=size_list, default=[1, 8, 32], help="script calls a batch")
    parser.add_argument("--batches", type=int, default=1000, help="batches per way, size, round")
    parser.add_argument("--rounds", type=int, default=5, help="measured rounds (after a warm-up)")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's own event loop")
    parser.add_argument(
        "--socket-timeout",
        type=float,
        default=5.0,
        help="the client's socket_timeout (redis-py's default); 0 for none",
    )
    args = parser.parse_args()
    return args


def main() -> None:
    args = parse_args()
    stop_on_sigterm()
    print(f"$ {command_line('bench.pipeline')}")
    server = EmbeddedRedis()
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        loop = "asyncio" if args.no_uvloop else f"uvloop {version('uvloop')}"
        print(
            f"# {machine_summary(admin)}; {loop}, redis-py {version('redis')}, "
            f"hiredis {version('hiredis')}; socket_timeout {args.socket_timeout or None}"
        )
        admin.close()
        samples = anyio.run(
            measure, args, server.url, backend_options={"use_uvloop": not args.no_uvloop}
        )
    finally:
        server.stop()
    print(f"# finished; {load_average()}")
    print(
        f"# {args.batches} batches per way, size and round, {args.rounds} rounds alternating; "
        "this process's CPU per script call, medians over the rounds"
    )
    print(report(samples, args.sizes))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: the Redis this benchmark started has been stopped")
