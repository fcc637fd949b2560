"""The HTTP edge of the web process: uvicorn's httptools protocol with the limits it lacks.

uvicorn bounds idle keep-alive connections (``--timeout-keep-alive``), the number of connections
(``--limit-concurrency``, answered 503) and the accept queue (``--backlog``); the Procfile sets
all three. It does not bound a request head: with httptools (what it runs when installed) a 64 MB
header is read into memory and answered, and a socket that sends nothing, or one byte now and
then, is held forever (the keep-alive timer only starts after a first response). h11 bounds the
head's size but not its time, and is several times slower. This protocol adds, per connection:

- a head-size limit (``HTTP_MAX_HEADER_BYTES``): a request line plus headers over it is answered
  431 and the connection closed, having buffered at most the limit and one read (256 KiB);
- a head deadline (``HTTP_HEADER_TIMEOUT``) from the first byte of a request, or from the
  connection's opening for its first request: a head that has not arrived is answered 408 (a
  socket that sent nothing is just closed);
- a body deadline (``HTTP_BODY_TIMEOUT``) from the end of the head: a body still arriving then is
  answered 408 if nothing was answered yet, and the connection closed;
- a request httptools cannot parse is answered 400 with a JSON body (uvicorn's is plain text).

Nothing is timed once a request has been read: a response, however long (an event stream sends
heartbeats for hours), is never cut by these limits. After a refusal the connection reads and
drops what the client still sends for ``LINGER_SECONDS`` (so that it gets the answer rather than
a reset), then closes.

When the server shuts down, a connection whose response is an event stream has that stream
ended cleanly at once (``app.sse.STOP_HOOK``): uvicorn would otherwise wait for it to end by
itself, however the server was run (``uvicorn --workers``, gunicorn's uvicorn worker class).

Use it with ``uvicorn --http app.http_edge:GuardedHttpToolsProtocol`` (gunicorn:
``-k app.gunicorn_worker.AgentServiceWorker``); it reads its limits from the web's settings on
the first connection.
"""

import asyncio
import logging
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.settings import get_settings
from app.sse import STOP_HOOK

logger = logging.getLogger("agent_service.http_edge")

#: Seconds a refused connection keeps reading (and dropping) before it closes.
LINGER_SECONDS = 2.0
_REASONS = {
    400: b"Bad Request",
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
}


@dataclass(frozen=True, slots=True)
class EdgeLimits:
    max_header_bytes: int
    header_timeout: float
    body_timeout: float


@lru_cache
def edge_limits() -> EdgeLimits:
    settings = get_settings()
    return EdgeLimits(
        max_header_bytes=settings.http_max_header_bytes,
        header_timeout=settings.http_header_timeout,
        body_timeout=settings.http_body_timeout,
    )


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the head-size limit and the read deadlines above."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._limits = edge_limits()
        #: Reading a request head (or waiting for one): bytes received count towards its limit.
        self._in_head = True
        self._head_bytes = 0
        #: A request ended during the read being handled.
        self._message_ended = False
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    # Connection events.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self._limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def shutdown(self) -> None:
        """The server stops: an event stream on this connection ends now, cleanly."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            stop = cycle.scope.get(STOP_HOOK)
            if callable(stop):
                stop()
        super().shutdown()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering: the answer is on its way, the rest is dropped
        self._message_ended = False
        super().data_received(data)
        if self._refused or self.transport.is_closing():
            return
        if not self._in_head or self._message_ended:
            # Part of this read was a request's body or end: the next head's bytes in it are
            # not counted (at most one read's worth), its deadline runs from its first byte.
            return
        if self._deadline is None:  # bytes before a head (blank lines) also start the clock
            self._arm(self._limits.header_timeout, self._head_timed_out)
        self._head_bytes += len(data)
        if self._head_bytes > self._limits.max_header_bytes:
            self._refuse(431, "the request head is larger than the limit")

    # Parser callbacks.

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm(self._limits.header_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        size = len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self._limits.max_header_bytes:
            self._refuse(431, "the request head is larger than the limit")
            return
        self._in_head = False
        self._head_bytes = 0
        self._arm(self._limits.body_timeout, self._body_timed_out)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._disarm()
        self._in_head = True
        self._head_bytes = 0
        self._message_ended = True
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """A request httptools cannot parse (an unknown method, a control character in a
        header, a malformed chunk): answered in JSON like every other refusal, not uvicorn's
        plain text, and with the same lingering close."""
        self._refuse(400, "the request is not valid HTTP (its request line, a header or its body)")

    # Deadlines and refusals.

    def _arm(self, delay: float, callback: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self._head_bytes == 0 and self.cycle is None:
            self.transport.close()  # a socket that never sent a byte: nobody to answer
        else:
            self._refuse(408, "the request head did not arrive in time")

    def _body_timed_out(self) -> None:
        self._deadline = None
        self._refuse(408, "the request body did not arrive in time")

    def _refuse(self, status: int, detail: str) -> None:
        """Answer ``status`` with a JSON body, stop reading requests, close after lingering."""
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self._disarm()
        logger.warning("refused a request with %d: %s", status, detail)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The application sees the client leave, and whatever it sends is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            if cycle.response_started:  # in the middle of an answer: no room for another
                self.transport.close()
                return
        body = orjson.dumps({"detail": detail})
        head = [
            b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status]),
            *(b"%s: %s\r\n" % header for header in self.server_state.default_headers),
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()
        self.loop.call_later(LINGER_SECONDS, self.transport.close)
