"""The relay's sweep over open streams: heartbeats, stalled sends, server shutdown."""

from typing import Any, cast

from app.sse import StreamRelay, _OpenStream
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
    assert (task.cancels, stream.stalled) == (1, True)
    relay.sweep(41.5)
    assert task.cancels == 1
    assert not stream.listener.poked, "a stream that is sending needs no heartbeat"


def test_server_shutdown_closes_every_stream_but_still_drops_stalled_ones() -> None:
    relay = _relay(exiting=True)
    idle, idle_task = _open(relay, written_at=99.0)
    stalled, stalled_task = _open(relay)
    stalled.sending_since = 0.0

    relay.sweep(100.0)
    assert idle.closing
    assert idle.listener.poked
    assert idle_task.cancels == 0
    assert stalled_task.cancels == 1


def test_closed_streams_are_forgotten() -> None:
    relay = _relay()
    stream, _ = _open(relay)
    assert relay.open_streams == 1
    relay._closed(stream)
    assert relay.open_streams == 0
