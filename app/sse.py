"""Server-Sent Events responses for task streams, and the one sweep per process that tends them.

Each open stream is one coroutine (write what the subscription yields, in one send per batch)
and one task waiting on ``receive()`` for the client to leave. Everything time-driven is done by
a single ``StreamRelay`` sweep, every second at most, over all open streams:

- a stream that wrote nothing for a heartbeat interval is woken to write a ``: ping`` comment;
- a stream whose send has been blocked (the client stopped reading and the socket's buffers are
  full) for ``send_timeout`` is cancelled and its connection closed;
- when the server is shutting down, every stream is ended cleanly, so that clients reconnect (to
  another process) with ``Last-Event-ID`` instead of holding this one up; one still open a
  sweep later (waiting on Redis) is cancelled.

How a stream learns that the server stops, in every way the web runs (``uvicorn``, ``uvicorn
--workers N``, gunicorn with uvicorn's worker class): uvicorn's shutdown asks each open
connection to finish (``shutdown()`` of its protocol), and the HTTP edge's protocol
(``app.http_edge``) calls the stop hook the stream left in its request's scope
(``STOP_HOOK``), at once. Where that protocol is not in use, the sweep also reads the
``should_exit`` of the uvicorn server whose signal handler is installed.

A client that leaves cancels its stream from the ``receive()`` task, wherever it waits.
Cancellation cannot leave a listener behind: a subscription whose close was interrupted closes
when asked again, in the stream's ``finally``.

Why not sse-starlette's ``EventSourceResponse``: it runs each response as a task group of four
tasks (stream, ping, disconnect listener, shutdown watcher) and arms a timeout scope around every
send. With a thousand clients the timers were a quarter of the relay's CPU and the task groups
about half of each client's memory (bench/README.md, "Where the time goes"). The lifecycle is the
same: the first of "stream ended", "client left", "send stalled", "server stopping" ends it.

::

    subscription ─batch─▶ stream coroutine ─one send─▶ client
         ▲                       ▲  ▲
         │ poke (ping, stop)     │  └─ cancel (left) ◀─ receive() task ◀─http.disconnect─ client
         └──────── sweep ────────┘ cancel (send stalled; still open a sweep after stop)
"""

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing, suppress
from types import TracebackType
from typing import Any, Self

from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from streaming.subscription import Listener, Subscription

logger = logging.getLogger("agent_service.sse")

#: The scope key where an application that serves streams after its request handling has
#: returned puts None, and where ``SubscriptionResponse`` then leaves itself (see its
#: ``__call__``).
DEFERRED_STREAM = "agent_service.deferred_stream"
#: The scope key where an open stream leaves the callable that ends it cleanly, for the server's
#: protocol to call when the server shuts down (``app.http_edge``).
STOP_HOOK = "agent_service.stop_stream"
#: The sweep runs at least this often; more often for heartbeats shorter than twice this.
MAX_SWEEP_INTERVAL = 1.0


HEARTBEAT = b": ping\n\n"


def _uvicorn_is_exiting() -> bool:
    """True once uvicorn has been asked to stop (SIGTERM/SIGINT). uvicorn installs its bound
    ``handle_exit`` as the signal handler and sets ``should_exit``; it then waits for open
    responses to finish before the lifespan ends, so an endless stream must notice by itself."""
    server = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    return bool(getattr(server, "should_exit", False))


class _OpenStream:
    """What the sweep needs to know of one open stream."""

    __slots__ = ("closing_since", "cut", "listener", "sending_since", "task", "written_at")

    def __init__(self, listener: Listener, task: "asyncio.Task[Any]", now: float) -> None:
        self.listener = listener
        self.task = task
        self.written_at = now
        #: Loop time at which the pending send started; None while not sending.
        self.sending_since: float | None = None
        #: Since when the server is stopping (the stream ends after its current batch).
        self.closing_since: float | None = None
        #: Why the relay cancelled the stream ("stalled", "left", "stopping"), if it did.
        self.cut: str | None = None

    def close(self, now: float) -> None:
        self.closing_since = now
        self.listener.poke()

    def cancel(self, reason: str) -> None:
        if self.cut is None:
            self.cut = reason
            self.task.cancel()


class StreamRelay:
    """The process's open SSE streams; use as an async context manager (a lifespan) to run the
    sweep. ``response`` builds the response that streams one subscription."""

    def __init__(
        self,
        *,
        heartbeat: float,
        send_timeout: float,
        is_exiting: Callable[[], bool] = _uvicorn_is_exiting,
    ) -> None:
        self.heartbeat = heartbeat
        self.send_timeout = send_timeout
        self.sweep_interval = min(MAX_SWEEP_INTERVAL, heartbeat / 2)
        self._streams: set[_OpenStream] = set()
        #: Events written to clients since the relay started (read by the metrics).
        self.delivered = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._is_exiting = is_exiting

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def __aenter__(self) -> Self:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._sweeper is not None
        self._sweeper.cancel()
        with suppress(asyncio.CancelledError):
            await self._sweeper
        now = asyncio.get_running_loop().time()
        for stream in list(self._streams):
            stream.close(now)

    def response(
        self,
        subscription: Subscription,
        *,
        after: str | None,
        headers: Mapping[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> "SubscriptionResponse":
        """The stream's response; ``on_close`` is awaited once it has ended, however."""
        return SubscriptionResponse(
            self, subscription, after=after, headers=headers, on_close=on_close
        )

    async def _sweep_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep(loop.time())

    def sweep(self, now: float) -> None:
        """One pass over every open stream (see the module docstring)."""
        exiting = self._is_exiting()
        # Woken this much early, a stream still writes within ``heartbeat`` of its last write.
        ping_after = self.heartbeat - self.sweep_interval
        for stream in self._streams:
            sending_since = stream.sending_since
            if sending_since is not None:
                if now - sending_since > self.send_timeout:
                    stream.cancel("stalled")
            elif exiting or stream.closing_since is not None:
                if stream.closing_since is None:
                    stream.close(now)
                elif now - stream.closing_since >= self.sweep_interval:
                    # Still open a sweep later: waiting on something that does not end (a log
                    # read retried while Redis is down). The shutdown must not wait for it.
                    stream.cancel("stopping")
            elif now - stream.written_at >= ping_after:
                stream.written_at = now  # one poke per interval, even if the write is slow
                stream.listener.poke()

    def _opened(self, stream: _OpenStream) -> None:
        self._streams.add(stream)

    def _closed(self, stream: _OpenStream) -> None:
        self._streams.discard(stream)


class SubscriptionResponse(Response):
    """One subscription's events as ``text/event-stream``; the subscription is closed however
    the response ends, even when the client is gone before the first write."""

    media_type = "text/event-stream"

    def __init__(
        self,
        relay: StreamRelay,
        subscription: Subscription,
        *,
        after: str | None,
        headers: Mapping[str, str],
        on_close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        # Like Starlette's StreamingResponse: no ``body``, hence no Content-Length.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-store", **headers, "Connection": "keep-alive"})
        self._relay = relay
        self._subscription = subscription
        self._after = after
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Leave the stream in the scope for the application's outermost layer to serve once
        FastAPI's request handling has returned (``DEFERRED_STREAM``); serve it here when
        there is no such layer.

        A stream served here would keep every frame of the middleware and routing chain alive
        for as long as it is open (a third of an idle client's memory: bench/README.md) and
        resume all of them at each write."""
        if DEFERRED_STREAM in scope and scope[DEFERRED_STREAM] is None:
            scope[DEFERRED_STREAM] = self
        else:
            await self.serve(receive, send, scope=scope)

    async def discard(self) -> None:
        """Give the subscription up without serving it (the request failed after all)."""
        try:
            await self._subscription.close()
        finally:
            await self._closed()

    async def _closed(self) -> None:
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()

    async def serve(self, receive: Receive, send: Send, *, scope: Scope | None = None) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        stream = _OpenStream(self._subscription.listener, task, loop.time())
        watcher = loop.create_task(_cancel_when_client_leaves(receive, stream))
        self._relay._opened(stream)
        if scope is not None:

            def stop() -> None:
                if stream.closing_since is None:
                    stream.close(loop.time())

            scope[STOP_HOOK] = stop
        try:
            start = {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            await _timed_send(send, start, stream, loop)
            await self._relay_batches(send, stream, loop)
            end = {"type": "http.response.body", "body": b"", "more_body": False}
            await _timed_send(send, end, stream, loop)
        except asyncio.CancelledError:
            # The relay's own cancel is swallowed; anyone else's (a forced shutdown) goes on.
            # Returning with the response incomplete makes uvicorn close the connection.
            if stream.cut is None or task.uncancel() > 0:
                raise
            if stream.cut == "stalled":
                logger.warning(
                    "stream closed: the client read nothing for %.0f s", self._relay.send_timeout
                )
        finally:
            if scope is not None:
                scope.pop(STOP_HOOK, None)
            self._relay._closed(stream)
            watcher.cancel()
            try:
                await self._subscription.close()
            finally:
                await self._closed()

    async def _relay_batches(
        self, send: Send, stream: _OpenStream, loop: asyncio.AbstractEventLoop
    ) -> None:
        """Write every batch in one send, until the terminal event or the server stopping."""
        batches = self._subscription.batches(after=self._after)
        async with aclosing(batches):
            async for batch in batches:
                if stream.closing_since is not None:
                    return
                body = b"".join([event.sse for event in batch]) if batch else HEARTBEAT
                message = {"type": "http.response.body", "body": body, "more_body": True}
                await _timed_send(send, message, stream, loop)
                self._relay.delivered += len(batch)


async def _timed_send(
    send: Send, message: Message, stream: _OpenStream, loop: asyncio.AbstractEventLoop
) -> None:
    """``send``, watched by the sweep: one that waits ``send_timeout`` is cut."""
    stream.sending_since = loop.time()
    await send(message)
    stream.sending_since = None
    stream.written_at = loop.time()


async def _cancel_when_client_leaves(receive: Receive, stream: _OpenStream) -> None:
    """Cancel the stream as soon as its client is gone, wherever it waits (a log read retried
    while Redis is down would otherwise hold it); its subscription is closed all the same."""
    while (await receive())["type"] != "http.disconnect":
        pass
    stream.cancel("left")
