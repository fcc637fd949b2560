"""``BodyLimitMiddleware`` driven as a plain ASGI app around a tiny inner app."""

from typing import Any

import orjson
import pytest
from starlette.types import Message, Receive, Scope, Send

from app.body_limit import BodyLimitMiddleware

pytestmark = pytest.mark.anyio

LIMIT = 10


class ReadAllApp:
    """Reads the whole body through ``receive``, then answers 200 with its length."""

    def __init__(self) -> None:
        self.calls = 0
        self.body: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.calls += 1
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.body = body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"read %d bytes" % len(body)})


class Client:
    """Feeds request messages to the app and records what it sends back."""

    def __init__(self, messages: list[Message]) -> None:
        self._messages = list(messages)
        self.received = 0
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        self.received += 1
        if self._messages:
            return self._messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])

    @property
    def json(self) -> Any:
        return orjson.loads(b"".join(m.get("body", b"") for m in self.sent[1:]))


def http_scope(headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/v1/agents/echo/invoke",
        "raw_path": b"/api/v1/agents/echo/invoke",
        "query_string": b"",
        "headers": headers or [(b"content-type", b"application/json")],
    }


def chunks(*parts: bytes) -> list[Message]:
    return [
        {"type": "http.request", "body": part, "more_body": index < len(parts) - 1}
        for index, part in enumerate(parts)
    ]


def assert_refused_with_413(client: Client) -> None:
    assert client.status == 413
    assert (b"content-type", b"application/json") in client.sent[0]["headers"]
    detail = client.json["detail"]
    assert detail[0]["loc"] == ["body"]
    assert detail[0]["type"] == "too_large"
    assert detail[0]["ctx"] == {"limit": LIMIT}


async def test_refuses_413_without_calling_app_when_content_length_is_over_limit() -> None:
    inner = ReadAllApp()
    client = Client(chunks(b"x" * 11))
    scope = http_scope([(b"content-length", b"11"), (b"content-type", b"application/json")])

    await BodyLimitMiddleware(inner, max_bytes=LIMIT)(scope, client.receive, client.send)

    assert_refused_with_413(client)
    assert inner.calls == 0
    assert client.received == 0
    assert len(client.sent) == 2


async def test_refuses_413_when_chunked_body_crosses_limit() -> None:
    inner = ReadAllApp()
    client = Client(chunks(b"12345", b"67890", b"X", b"never read"))

    await BodyLimitMiddleware(inner, max_bytes=LIMIT)(http_scope(), client.receive, client.send)

    assert_refused_with_413(client)
    assert inner.body is None
    # Reading stopped at the message that crossed the limit.
    assert client.received == 3
    assert len(client.sent) == 2


async def test_refuses_413_when_declared_length_lies_and_body_is_larger() -> None:
    inner = ReadAllApp()
    client = Client(chunks(b"123456", b"789012"))
    scope = http_scope([(b"content-length", b"4")])

    await BodyLimitMiddleware(inner, max_bytes=LIMIT)(scope, client.receive, client.send)

    assert_refused_with_413(client)
    assert inner.body is None


async def test_passes_inner_200_when_chunked_body_is_under_limit() -> None:
    inner = ReadAllApp()
    client = Client(chunks(b"123", b"456", b"7"))

    await BodyLimitMiddleware(inner, max_bytes=LIMIT)(http_scope(), client.receive, client.send)

    assert client.status == 200
    assert client.sent[1]["body"] == b"read 7 bytes"
    assert inner.body == b"1234567"


async def test_passes_inner_200_when_body_is_exactly_at_limit() -> None:
    inner = ReadAllApp()
    client = Client(chunks(b"x" * LIMIT))
    scope = http_scope([(b"content-length", str(LIMIT).encode())])

    await BodyLimitMiddleware(inner, max_bytes=LIMIT)(scope, client.receive, client.send)

    assert client.status == 200
    assert inner.body == b"x" * LIMIT


async def test_replaces_app_error_response_with_413_when_app_swallows_overflow() -> None:
    async def swallowing_app(scope: Scope, receive: Receive, send: Send) -> None:
        try:
            while (await receive()).get("more_body", False):
                pass
        except Exception:
            await send({"type": "http.response.start", "status": 400, "headers": []})
            await send({"type": "http.response.body", "body": b'{"detail":"bad body"}'})

    client = Client(chunks(b"12345", b"67890", b"X"))

    await BodyLimitMiddleware(swallowing_app, max_bytes=LIMIT)(
        http_scope(), client.receive, client.send
    )

    assert_refused_with_413(client)
    assert len(client.sent) == 2


async def test_passes_through_when_scope_is_not_http() -> None:
    seen: list[str] = []

    async def lifespan_app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])

    client = Client([])

    await BodyLimitMiddleware(lifespan_app, max_bytes=LIMIT)(
        {"type": "lifespan"}, client.receive, client.send
    )

    assert seen == ["lifespan"]
    assert client.sent == []
