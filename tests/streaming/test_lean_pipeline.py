"""``lean_pipeline.execute`` against a real Redis: the callers of one loop iteration share a round
trip, and each still gets its own replies, its own errors, and its own cancellation."""

import gc
import uuid
import weakref
from typing import Any

import anyio
import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from scripts.embedded_redis import EmbeddedRedis
from streaming import lean_pipeline

pytestmark = pytest.mark.anyio


def _count_round_trips(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of commands of each round trip sent from now on."""
    real = lean_pipeline._execute_once
    sizes: list[int] = []

    async def counted(redis: Redis, packed: bytes, count: int, **kwargs: Any) -> list[object]:
        sizes.append(count)
        return await real(redis, packed, count, **kwargs)

    monkeypatch.setattr(lean_pipeline, "_execute_once", counted)
    return sizes


async def test_callers_of_one_iteration_share_one_round_trip(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _count_round_trips(monkeypatch)
    prefix = f"lean:{uuid.uuid4().hex}"
    replies: dict[int, list[object]] = {}

    async def caller(n: int) -> None:
        key = f"{prefix}:{n}"
        replies[n] = await lean_pipeline.execute(
            redis, [("SET", key, n), ("INCRBY", key, n), ("GET", key)]
        )

    async with anyio.create_task_group() as tg:
        for n in range(20):
            tg.start_soon(caller, n)

    assert sizes == [60]  # 20 callers x 3 commands, one write
    assert replies == {n: [b"OK", 2 * n, str(2 * n).encode()] for n in range(20)}


async def test_a_caller_after_the_round_trip_left_gets_its_own(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _count_round_trips(monkeypatch)

    assert await lean_pipeline.execute(redis, [("PING",)]) == [b"PONG"]
    assert await lean_pipeline.execute(redis, [("PING",), ("PING",)]) == [b"PONG", b"PONG"]

    assert sizes == [1, 2]


async def test_an_error_reply_is_only_its_callers(redis: Redis) -> None:
    key = f"lean:{uuid.uuid4().hex}"
    await redis.hset(key, "field", "value")
    replies: dict[str, list[object]] = {}

    async def caller(name: str, command: tuple[str, ...]) -> None:
        replies[name] = await lean_pipeline.execute(redis, [command, ("PING",)])

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, "wrong type", ("INCR", key))
        tg.start_soon(caller, "fine", ("HGET", key, "field"))

    wrong, after = replies["wrong type"]
    assert isinstance(wrong, ResponseError)
    assert "WRONGTYPE" in str(wrong)
    assert after == b"PONG"
    assert replies["fine"] == [b"value", b"PONG"]


async def test_a_cancelled_caller_leaves_the_others_their_replies(redis: Redis) -> None:
    key = f"lean:{uuid.uuid4().hex}"
    replies: list[list[object]] = []

    async def caller() -> None:
        replies.append(await lean_pipeline.execute(redis, [("INCR", key)]))

    async def doomed_caller(scope: anyio.CancelScope) -> None:
        with scope:
            await lean_pipeline.execute(redis, [("INCR", key)])

    doomed = anyio.CancelScope()
    async with anyio.create_task_group() as tg:
        tg.start_soon(doomed_caller, doomed)
        tg.start_soon(caller)
        tg.start_soon(caller)
        await anyio.sleep(0)  # every caller has joined the round trip
        doomed.cancel()

    assert doomed.cancelled_caught
    assert sorted(int(str(reply)) for (reply,) in replies) == [1, 2]
    # The cancelled caller's INCR was left out of the round trip (it had not gone yet).
    (count,) = await lean_pipeline.execute(redis, [("INCR", key)])
    assert count == 3


async def test_a_failed_round_trip_fails_every_caller_in_it(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def cut(*_: object, **__: object) -> list[object]:
        await anyio.sleep(0)
        raise RedisConnectionError("connection cut")

    monkeypatch.setattr(lean_pipeline, "_execute_once", cut)
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await lean_pipeline.execute(redis, [("PING",)])
        except RedisConnectionError as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(caller)

    assert len(errors) == 3
    assert len({id(error) for error in errors}) == 3  # each its own, with its own traceback


async def test_a_client_let_go_of_is_not_kept(redis_server: EmbeddedRedis) -> None:
    """A loop per task (prefork) makes a client per task: none may outlive its task."""
    client = Redis.from_url(redis_server.url)
    assert await lean_pipeline.execute(client, [("PING",)]) == [b"PONG"]
    gone = weakref.ref(client)

    await client.aclose()
    del client
    gc.collect()

    assert gone() is None


async def test_a_command_that_cannot_be_packed_fails_only_its_caller(redis: Redis) -> None:
    key = f"lean:{uuid.uuid4().hex}"
    outcomes: dict[str, object] = {}

    async def caller(name: str, command: tuple[Any, ...]) -> None:
        try:
            outcomes[name] = await lean_pipeline.execute(redis, [command])
        except Exception as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, "unpackable", ("SET", key, object()))
        tg.start_soon(caller, "fine", ("INCR", key))

    assert isinstance(outcomes["unpackable"], TypeError)
    assert outcomes["fine"] == [1]


async def test_callers_whose_replies_came_before_a_cut_keep_them(
    redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = lean_pipeline._execute_once

    async def cut_after_the_first_reply(
        redis: Redis, packed: bytes, count: int, *, replies: list[object], **kwargs: Any
    ) -> list[object]:
        await real(redis, packed, count, replies=replies, **kwargs)
        del replies[1:]
        raise RedisConnectionError("connection cut after one reply")

    monkeypatch.setattr(lean_pipeline, "_execute_once", cut_after_the_first_reply)
    key = f"lean:{uuid.uuid4().hex}"
    outcomes: dict[str, object] = {}

    async def caller(name: str) -> None:
        try:
            outcomes[name] = await lean_pipeline.execute(redis, [("INCR", key)])
        except RedisConnectionError as exc:
            outcomes[name] = exc

    async with anyio.create_task_group() as tg:
        tg.start_soon(caller, "first")  # joins first: its command goes first
        tg.start_soon(caller, "second")

    assert outcomes["first"] == [1]  # its reply came: what it carried is not reported failed
    assert isinstance(outcomes["second"], RedisConnectionError)
