"""The relay's sweep over open streams: heartbeats, stalled sends, server shutdown."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import anyio
import pytest
from starlette.types import Message

from app.sse import StreamRelay, SubscriptionResponse, _OpenStream
from streaming.events import Event
from streaming.subscription import Listener


class _Task:
    def __init__(self) -> None:
        self.cancels = 0

    def cancel(self) -> bool:
        self.cancels += 1
        return True


def _relay(*, exiting: bool = False) -> StreamRelay:
    return StreamRelay(heartbeat=15.0, send_timeout=30.0, is_exiting=lambda: exiting)


def _open(relay: StreamRelay, *, written_at: float = 0.0) -> tuple[_OpenStream, _Task]:
    task = _Task()
    stream = _OpenStream(Listener(8), cast(Any, task), written_at)
    relay._opened(stream)
    return stream, task


def test_an_idle_stream_is_poked_once_per_heartbeat_interval_never_later() -> None:
    relay = _relay()
    assert relay.sweep_interval == 1.0
    stream, _ = _open(relay, written_at=100.0)

    relay.sweep(113.9)
    assert not stream.listener.poked
    relay.sweep(114.0)  # the next sweep (115.0) would be too late for a 15 s heartbeat
    assert stream.listener.poked
    stream.listener.poked = False
    relay.sweep(114.9)
    assert not stream.listener.poked, "poked twice in one interval"


def test_a_short_heartbeat_sweeps_more_often() -> None:
    assert StreamRelay(heartbeat=0.5, send_timeout=30.0).sweep_interval == 0.25


def test_a_send_blocked_past_the_timeout_cancels_its_stream_once() -> None:
    relay = _relay()
    stream, task = _open(relay)
    stream.sending_since = 10.0

    relay.sweep(40.0)
    assert task.cancels == 0
    relay.sweep(40.5)
    assert (task.cancels, stream.cut) == (1, "stalled")
    relay.sweep(41.5)
    assert task.cancels == 1
    assert not stream.listener.poked, "a stream that is sending needs no heartbeat"


def test_server_shutdown_ends_every_stream_then_cancels_those_still_open() -> None:
    relay = _relay(exiting=True)
    idle, idle_task = _open(relay, written_at=99.0)
    stalled, stalled_task = _open(relay)
    stalled.sending_since = 0.0

    relay.sweep(100.0)
    assert idle.closing_since == 100.0
    assert idle.listener.poked
    assert idle_task.cancels == 0
    assert stalled_task.cancels == 1

    relay.sweep(100.5)
    assert idle_task.cancels == 0, "cancelled before a sweep interval"
    relay.sweep(101.0)  # still open: waiting on something else than its client
    assert (idle_task.cancels, idle.cut) == (1, "stopping")


def test_a_stream_is_cancelled_once_whatever_asks() -> None:
    relay = _relay()
    stream, task = _open(relay)
    stream.cancel("left")
    stream.sending_since = 0.0
    relay.sweep(100.0)
    assert (task.cancels, stream.cut) == (1, "left")


class _StuckSubscription:
    """A subscription whose log read never returns (Redis down, retried forever), deaf to
    pokes; records whether it was closed."""

    def __init__(self) -> None:
        self.listener = Listener(8)
        self.closed = 0

    async def batches(self, *, after: str | None = None) -> AsyncIterator[list[Event]]:
        await anyio.sleep_forever()
        yield []

    async def close(self) -> None:
        self.closed += 1


async def _serve(
    relay: StreamRelay, subscription: _StuckSubscription, receive: Any
) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    response = SubscriptionResponse(relay, cast(Any, subscription), after=None, headers={})
    with anyio.fail_after(5):
        await response.serve(receive, send)
    return sent


@pytest.mark.anyio
async def test_a_client_that_leaves_ends_a_stream_stuck_in_a_log_read() -> None:
    subscription = _StuckSubscription()
    messages: list[Message] = [
        {"type": "http.request", "body": b"", "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        await asyncio.sleep(0.05)
        return messages.pop(0)

    async with StreamRelay(heartbeat=15.0, send_timeout=30.0) as relay:
        sent = await _serve(relay, subscription, receive)
        assert relay.open_streams == 0
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert subscription.closed == 1


@pytest.mark.anyio
async def test_a_stopping_server_cuts_a_stream_that_does_not_end_by_itself() -> None:
    subscription = _StuckSubscription()
    exiting = False

    async def receive() -> Message:
        await anyio.sleep_forever()
        raise AssertionError

    async def stop_soon() -> None:
        nonlocal exiting
        await anyio.sleep(0.1)
        exiting = True

    async with (
        StreamRelay(heartbeat=0.2, send_timeout=30.0, is_exiting=lambda: exiting) as relay,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(stop_soon)
        sent = await _serve(relay, subscription, receive)
    assert [m["type"] for m in sent] == ["http.response.start"]
    assert subscription.closed == 1
