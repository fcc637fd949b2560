"""An ASGI middleware that refuses request bodies over a size limit with 413, before parsing.

A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted as it
arrives and reading stops as soon as it crosses the limit, so a client cannot make the process
buffer more than the limit. FastAPI turns any error while reading a body into its own 400, so the
response the application starts after an overflow is replaced by the 413.
"""

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import too_large_body

_BODILESS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})


class _BodyTooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _BODILESS:
            # Nothing to count, and nothing added to every send of a long response (a stream).
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(send)
            return

        received = 0
        overflow = False
        answered = False

        async def counting_receive() -> Message:
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    overflow = True
                    raise _BodyTooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if overflow:
                if not answered:
                    answered = True
                    await self._refuse(send)
                return
            answered = answered or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except _BodyTooLargeError:
            if not answered:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = orjson.dumps(too_large_body(loc=("body",), limit=self.max_bytes))
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
