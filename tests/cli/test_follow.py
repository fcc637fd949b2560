"""``Follower``: one task's stream to its end, resumed after the last event at each drop."""

from collections.abc import Iterator
from typing import Any, cast

import pytest

from cli.client import ConnectionLostError, ServiceClient
from cli.errors import CliError, NotFoundError, UnavailableError
from cli.events import TaskEvent
from cli.follow import Follower


def _chunk(n: int) -> TaskEvent:
    return TaskEvent(id=f"{n}-0", type="chunk", data={"text": f"{n} ", "index": n})


RESULT = TaskEvent(id="99-0", type="result", data={"content": "done"})


class ScriptedStreams:
    """Stands in for ``ServiceClient.events``: each connection yields its events, then ends
    the way the script says (an error raised, or the stream closed)."""

    def __init__(self, *connections: tuple[list[TaskEvent], CliError | None]) -> None:
        self.connections = list(connections)
        self.cursors: list[str | None] = []

    def events(self, task_id: str, *, after: str | None) -> Iterator[TaskEvent]:
        self.cursors.append(after)
        events, ending = self.connections.pop(0)
        yield from events
        if ending is not None:
            raise ending


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _follower(
    streams: ScriptedStreams, clock: FakeClock, *, reconnect_for: float = 10
) -> tuple[Follower, list[tuple[str, float]]]:
    retries: list[tuple[str, float]] = []
    follower = Follower(
        cast(ServiceClient, streams),
        "task",
        reconnect_for=reconnect_for,
        on_retry=lambda error, pause: retries.append((type(error).__name__, pause)),
        sleep=clock.sleep,
        clock=lambda: clock.now,
    )
    return follower, retries


def test_follower_resumes_after_the_last_event_when_the_connection_drops() -> None:
    lost = ConnectionLostError("dropped")
    streams = ScriptedStreams(
        ([_chunk(1), _chunk(2)], lost), ([], lost), ([_chunk(3), RESULT], None)
    )
    clock = FakeClock()
    follower, retries = _follower(streams, clock)

    received = list(follower.events())

    assert received == [_chunk(1), _chunk(2), _chunk(3), RESULT]
    assert streams.cursors == [None, "2-0", "2-0"]
    # At once after a connection that delivered, after a pause when one delivered nothing.
    assert retries == [("ConnectionLostError", 0.0), ("ConnectionLostError", 0.25)]


def test_follower_reconnects_when_the_server_ends_the_stream_early() -> None:
    streams = ScriptedStreams(([_chunk(1)], None), ([RESULT], None))
    follower, _ = _follower(streams, FakeClock())

    assert list(follower.events()) == [_chunk(1), RESULT]
    assert streams.cursors == [None, "1-0"]


def test_follower_waits_as_long_as_retry_after_says() -> None:
    busy = UnavailableError("busy", status=503, detail="", retry_after=3)
    streams = ScriptedStreams(([], busy), ([RESULT], None))
    clock = FakeClock()
    follower, _ = _follower(streams, clock)

    assert list(follower.events()) == [RESULT]
    assert clock.slept == [3]


def test_follower_gives_up_after_reconnecting_for_the_time_allowed() -> None:
    lost = ConnectionLostError("nobody listens")
    streams = ScriptedStreams(*[([], lost)] * 20)
    clock = FakeClock()
    follower, _ = _follower(streams, clock, reconnect_for=5)

    with pytest.raises(ConnectionLostError, match="nobody listens"):
        list(follower.events())
    assert clock.now == pytest.approx(5)


def test_follower_stops_at_once_on_a_refusal() -> None:
    streams = ScriptedStreams(([], NotFoundError("gone", status=404, detail="")))
    follower, retries = _follower(streams, FakeClock())

    with pytest.raises(NotFoundError):
        list(follower.events())
    assert retries == []


def test_follower_resumes_where_an_interrupted_reader_stopped() -> None:
    streams = ScriptedStreams(
        ([_chunk(1), _chunk(2), _chunk(3)], None), ([_chunk(3), RESULT], None)
    )
    follower, _ = _follower(streams, FakeClock())
    first: list[Any] = []

    for event in follower.events():
        first.append(event)
        if event == _chunk(2):
            break  # as Ctrl-C leaves the loop
    rest = list(follower.events())

    assert first == [_chunk(1), _chunk(2)]
    assert streams.cursors == [None, "2-0"]
    assert rest == [_chunk(3), RESULT]


def test_follower_gives_up_on_a_server_that_replays_the_same_events_forever() -> None:
    # A broken server: it ignores Last-Event-ID and ends every stream after the same events.
    streams = ScriptedStreams(*[([_chunk(1), _chunk(2)], None)] * 100)
    clock = FakeClock()
    follower, retries = _follower(streams, clock, reconnect_for=5)

    received: list[TaskEvent] = []
    with pytest.raises(ConnectionLostError, match="ended the stream"):
        received.extend(follower.events())

    assert received == [_chunk(1), _chunk(2)]  # handed over once, not once per connection
    assert clock.now == pytest.approx(5)
    assert len(retries) < 20  # paused between attempts, not a busy loop
