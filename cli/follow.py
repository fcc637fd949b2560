"""Following one task's event stream to its end, across dropped connections.

The server replays a task's events from the start to a client that connects late, and exactly
the events after ``Last-Event-ID`` to one that reconnects. So a follower remembers the id of the
last event it handed over and, when the connection drops (a restarted web process, a network
blip) or the server ends the stream early (it is shutting down), connects again from there:
nothing is missed, nothing repeated. It keeps trying, with a growing pause that honours
``Retry-After``, for ``reconnect_for`` seconds without a new event before it gives the error up:
a server that replays events it was asked to skip, or ends every stream at once, is given up on
like one that does not answer.

The id is kept on the follower, not in the generator, so a caller interrupted mid-stream (Ctrl-C)
can ask ``events()`` again and resume where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from cli.client import ConnectionLostError, ServiceClient
from cli.errors import CliError, RateLimitedError, UnavailableError
from cli.events import TaskEvent

FIRST_PAUSE = 0.25
LONGEST_PAUSE = 5.0

#: Failures worth waiting out: the server is away, restarting or busy.
RETRIED = (ConnectionLostError, UnavailableError, RateLimitedError)


class Follower:
    def __init__(
        self,
        client: ServiceClient,
        task_id: str,
        *,
        reconnect_for: float,
        on_retry: Callable[[CliError, float], None] = lambda error, pause: None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.task_id = task_id
        self.reconnect_for = reconnect_for
        self.on_retry = on_retry
        self.last_event_id: str | None = None
        self.reconnects = 0
        self._sleep = sleep
        self._clock = clock

    def events(self) -> Iterator[TaskEvent]:
        """The task's events after the last one handed over, up to and including its terminal
        event; ``on_retry(error, pause)`` hears of each failed connection before the pause."""
        failing_since: float | None = None
        pause = FIRST_PAUSE
        while True:
            received = False
            try:
                for event in self.client.events(self.task_id, after=self.last_event_id):
                    if _handed_over(event.id, self.last_event_id):
                        continue  # a server that replays what it was asked to skip
                    if event.id:  # progress: only a new event makes the stream worth following
                        received = True
                        failing_since, pause = None, FIRST_PAUSE
                        self.last_event_id = event.id
                    yield event
                    if event.terminal:
                        return
                error: CliError = ConnectionLostError("the server ended the stream before the task")
            except RETRIED as exc:
                error = exc
            now = self._clock()
            failing_since = failing_since if failing_since is not None else now
            if now - failing_since >= self.reconnect_for:
                raise error
            wait = 0.0 if received else pause
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                wait = max(wait, retry_after)
            wait = min(wait, max(0.0, failing_since + self.reconnect_for - now))
            if not received:
                pause = min(pause * 2, LONGEST_PAUSE)
            self.reconnects += 1
            self.on_retry(error, wait)
            self._sleep(wait)


def _handed_over(event_id: str, last_id: str | None) -> bool:
    """Whether ``event_id`` is at or before ``last_id``: both are stream ids (``ms-seq``); an
    id of another shape is never taken for one handed over."""
    if not event_id or last_id is None:
        return False
    try:
        return _stream_id(event_id) <= _stream_id(last_id)
    except ValueError:
        return False


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)
