"""The submit served below FastAPI (``app.fast_submit``): which requests it serves, and that
every other one reaches FastAPI exactly as the client sent it.

The route function and the credential check are doubles here; the e2e suite submits through the
real path (tests/e2e/test_api.py, test_idempotency.py, test_metrics.py, test_sentry.py)."""

from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send

from app import fast_submit
from app.auth import Principal
from app.errors import NotFoundError, install_error_handlers
from app.fast_submit import FastSubmit

pytestmark = pytest.mark.anyio

PATH = "/api/v1/agents/echo/invoke-async"
LIMIT = 10_000
GOOD_BODY = b'{"message": "hello", "priority": 5}'


class Inner:
    """The application behind the middleware: records what reached it."""

    def __init__(self) -> None:
        self.calls: list[list[Message]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        messages = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        self.calls.append(messages)
        await JSONResponse({"from": "fastapi"}, status_code=418)(scope, receive, send)


class Served:
    """Doubles of the credential check and the route function."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.submits: list[dict[str, Any]] = []
        self.error: Exception | None = None
        self.credentials_checked = 0

        async def current_user(_services: object, api_key: str | None, _auth: object) -> Any:
            self.credentials_checked += 1
            if api_key != "good":
                raise HTTPException(401, "nope")
            return Principal(user_id="alice")

        async def invoke_async(**kwargs: Any) -> Response:
            self.submits.append(kwargs)
            if self.error is not None:
                raise self.error
            return JSONResponse({"task_id": "t"}, status_code=202)

        monkeypatch.setattr(fast_submit, "current_user", current_user)
        monkeypatch.setattr(fast_submit, "invoke_async", invoke_async)


def _application(*, started: bool = True) -> FastAPI:
    application = FastAPI()
    install_error_handlers(application)
    if started:
        application.state.services = object()
    return application


async def _send_request(
    middleware: FastSubmit,
    *,
    parts: list[bytes],
    headers: dict[str, str] | None = None,
    repeated: tuple[tuple[str, str], ...] = (),
    path: str = PATH,
    method: str = "POST",
    application: FastAPI | None = None,
) -> tuple[int, bytes, Scope]:
    body = b"".join(parts)
    sent_headers = {
        "content-type": "application/json",
        "content-length": str(len(body)),
        "x-api-key": "good",
        **(headers or {}),
    }
    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [
            (k.encode(), v.encode()) for k, v in [*sent_headers.items(), *repeated] if v != "-"
        ],
        "app": application or _application(),
    }
    incoming: list[Message] = [
        {"type": "http.request", "body": part, "more_body": i < len(parts) - 1}
        for i, part in enumerate(parts)
    ]
    answer: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        answer.append(message)

    await middleware(scope, receive, send)
    status = answer[0]["status"]
    return status, b"".join(m.get("body", b"") for m in answer[1:]), scope


async def test_a_well_formed_submit_is_served_without_fastapi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = Served(monkeypatch)
    inner = Inner()

    status, body, scope = await _send_request(
        FastSubmit(inner, max_body_bytes=LIMIT),
        parts=[b'{"message": "hel', b'lo", "priority": 5}'],
        headers={"idempotency-key": "key-1"},
    )

    assert (status, body) == (202, b'{"task_id":"t"}')
    assert inner.calls == []
    (submit,) = served.submits
    assert submit["agent_id"] == "echo"
    assert submit["user"] == Principal(user_id="alice")
    assert (submit["body"].message, submit["body"].priority) == ("hello", 5)
    assert submit["idempotency_key"] == "key-1"
    assert scope["route"].path == "/api/v1/agents/{agent_id}/invoke-async"  # the metrics' label


async def test_a_repeated_content_type_is_left_to_fastapi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Starlette reads the first of two: the fast path must not read the last."""
    served = Served(monkeypatch)
    inner = Inner()

    status, _, _ = await _send_request(
        FastSubmit(inner, max_body_bytes=LIMIT),
        parts=[GOOD_BODY],
        headers={"content-type": "text/plain"},
        repeated=(("content-type", "application/json"),),
    )

    assert status == 418
    assert served.submits == []


async def test_a_refused_credential_is_answered_by_the_applications_handler_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = Served(monkeypatch)
    inner = Inner()

    status, body, _ = await _send_request(
        FastSubmit(inner, max_body_bytes=LIMIT), parts=[GOOD_BODY], headers={"x-api-key": "bad"}
    )

    assert (status, body) == (401, b'{"detail":"nope"}')
    assert served.credentials_checked == 1
    assert served.submits == []
    assert inner.calls == []


@pytest.mark.parametrize(
    ("case", "parts", "headers"),
    [
        ("not JSON", [b'{"message": '], {}),
        ("not an object", [b'["hello"]'], {}),
        ("a field the model refuses", [b'{"message": "hi", "priority": 10}'], {}),
        ("an unknown field", [b'{"message": "hi", "colour": "red"}'], {}),
        ("another content type", [GOOD_BODY], {"content-type": "text/plain"}),
        ("no content type", [GOOD_BODY], {"content-type": "-"}),
        ("no declared length", [GOOD_BODY], {"content-length": "-"}),
        ("a declared length over the limit", [GOOD_BODY], {"content-length": str(LIMIT + 1)}),
        ("a body past the limit", [GOOD_BODY, b" " * LIMIT], {"content-length": "10"}),
        ("a bad idempotency key", [GOOD_BODY], {"idempotency-key": "caf\u00e9"}),
        ("a long idempotency key", [GOOD_BODY], {"idempotency-key": "k" * 300}),
        (  # orjson reads it as the float -2**63, which the model would take
            "an integer past 64 bits",
            [b'{"message": "hi", "metadata": {"n": %d}}' % -(2**63 + 1)],
            {},
        ),
        ("nesting the parser gives up on", [b'{"message": "hi", "m": ' + b"[" * 3000], {}),
        ("a body in three parts", [b'{"message": ', b'"hi", "priority": ', b"99}"], {}),
    ],
)
async def test_what_it_does_not_serve_reaches_fastapi_as_sent(
    monkeypatch: pytest.MonkeyPatch, case: str, parts: list[bytes], headers: dict[str, str]
) -> None:
    served = Served(monkeypatch)
    inner = Inner()

    status, body, _ = await _send_request(
        FastSubmit(inner, max_body_bytes=LIMIT), parts=parts, headers=headers
    )

    assert (status, body) == (418, b'{"from":"fastapi"}'), case
    assert served.submits == []
    (received,) = inner.calls
    assert b"".join(m["body"] for m in received) == b"".join(parts)
    assert [m.get("more_body", False) for m in received] == [
        i < len(parts) - 1 for i in range(len(parts))
    ]


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/v1/agents/echo/invoke-async", "PUT"),
        ("/api/v1/agents/a/b/invoke-async", "POST"),
        ("/api/v1/agents//invoke-async", "POST"),
        (f"/api/v1/agents/{'x' * 129}/invoke-async", "POST"),
        ("/api/v1/agents/tasks/t/cancel", "POST"),
    ],
)
async def test_other_routes_are_not_read(
    monkeypatch: pytest.MonkeyPatch, path: str, method: str
) -> None:
    Served(monkeypatch)
    inner = Inner()

    status, _, _ = await _send_request(
        FastSubmit(inner, max_body_bytes=LIMIT), parts=[GOOD_BODY], path=path, method=method
    )

    assert status == 418
    assert inner.calls == [[{"type": "http.request", "body": GOOD_BODY, "more_body": False}]]


async def test_an_application_not_started_is_left_to_fastapi(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = Served(monkeypatch)
    inner = Inner()

    status, _, _ = await _send_request(
        FastSubmit(inner, max_body_bytes=LIMIT),
        parts=[GOOD_BODY],
        application=_application(started=False),
    )

    assert status == 418
    assert served.submits == []


async def test_a_refusal_of_the_route_is_answered_by_the_applications_handler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = Served(monkeypatch)
    served.error = NotFoundError("unknown agent 'echo'")
    inner = Inner()

    status, body, _ = await _send_request(
        FastSubmit(inner, max_body_bytes=LIMIT), parts=[GOOD_BODY]
    )

    assert status == 404
    assert b"unknown agent 'echo'" in body
    assert inner.calls == []


async def test_an_unexpected_error_is_raised_to_the_error_middleware(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    served = Served(monkeypatch)
    served.error = RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        await _send_request(FastSubmit(Inner(), max_body_bytes=LIMIT), parts=[GOOD_BODY])
