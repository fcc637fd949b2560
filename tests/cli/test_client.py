"""How the client turns the server's refusals into errors a person can act on (and the exit
status each stands for), over an in-memory transport."""

from collections.abc import Callable

import httpx
import pytest

from cli.client import ConnectionLostError, ServiceClient
from cli.config import ClientConfig
from cli.errors import (
    ApiError,
    ExitCode,
    NotFoundError,
    RateLimitedError,
    UnauthorizedError,
    UnavailableError,
)

CONFIG = ClientConfig(url="http://service.test", api_key="the-secret-key")


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> ServiceClient:
    return ServiceClient(CONFIG, transport=httpx.MockTransport(handler))


def _answer(status: int, body: object, headers: dict[str, str] | None = None) -> ServiceClient:
    return _client(lambda request: httpx.Response(status, json=body, headers=headers))


def test_client_sends_the_key_in_a_header_and_quotes_ids_into_the_path() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status = {"task_id": "a/b", "status": "queued", "state": "PENDING", "progress": 0}
        return httpx.Response(200, json=status)

    with _client(handler) as client:
        client.status("a/b?c")

    assert seen[0].headers["X-API-Key"] == "the-secret-key"
    assert seen[0].url.raw_path == b"/api/v1/agents/tasks/a%2Fb%3Fc"
    assert "the-secret-key" not in str(seen[0].url)


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (401, UnauthorizedError, ExitCode.UNAUTHORIZED),
        (404, NotFoundError, ExitCode.NOT_FOUND),
        (429, RateLimitedError, ExitCode.RATE_LIMITED),
        (503, UnavailableError, ExitCode.UNAVAILABLE),
        (500, ApiError, ExitCode.REFUSED),
    ],
)
def test_client_maps_each_refusal_to_its_error_and_exit_status(
    status: int, error: type[ApiError], code: ExitCode
) -> None:
    with (
        _answer(status, {"detail": "the server's words"}) as client,
        pytest.raises(error) as raised,
    ):
        client.agents()

    assert type(raised.value) is error
    assert raised.value.exit_code == code
    assert "the server's words" in str(raised.value)
    assert f"{status}" in str(raised.value)


def test_client_says_when_to_try_again_after_a_429() -> None:
    client = _answer(429, {"detail": "too many active tasks"}, {"Retry-After": "7"})

    with client, pytest.raises(RateLimitedError) as raised:
        client.invoke("echo", "hi", session_id=None, stream=True)

    assert raised.value.retry_after == 7
    assert str(raised.value) == "too many requests (429): too many active tasks; try again in 7 s"


@pytest.mark.parametrize("value", ["inf", "1e999", "nan"])
def test_a_retry_after_no_one_can_wait_out_is_as_if_not_said(value: str) -> None:
    client = _answer(429, {"detail": "too many active tasks"}, {"Retry-After": value})

    with client, pytest.raises(RateLimitedError) as raised:
        client.invoke("echo", "hi", session_id=None, stream=True)

    assert raised.value.retry_after is None
    assert str(raised.value).endswith("; try again shortly")


def test_client_names_the_fields_of_a_422() -> None:
    detail = [{"loc": ["body", "message"], "msg": "message must not be empty", "type": "x"}]

    with _answer(422, {"detail": detail}) as client, pytest.raises(ApiError) as raised:
        client.invoke("echo", " ", session_id=None, stream=True)

    assert str(raised.value) == (
        "the server refused the request (422): message: message must not be empty"
    )


def test_client_reports_a_server_that_does_not_answer() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    with _client(refuse) as client, pytest.raises(ConnectionLostError) as raised:
        client.agents()

    assert raised.value.exit_code == ExitCode.UNREACHABLE
    assert "cannot reach the service at http://service.test" in str(raised.value)


def test_client_reads_events_and_skips_heartbeats() -> None:
    body = (
        b'id: 1-0\nevent: chunk\ndata: {"text": "a", "index": 0}\n\n'
        b": ping\n\n"
        b"id: 1-1\nevent: step\ndata: not json\n\n"
        b'id: 1-2\nevent: result\ndata: {"content": "a"}\n\n'
    )

    def stream(request: httpx.Request) -> httpx.Response:
        assert request.headers["Last-Event-ID"] == "0-9"
        return httpx.Response(200, content=body, headers={"Content-Type": "text/event-stream"})

    with _client(stream) as client:
        events = list(client.events("t", after="0-9"))

    assert [(event.id, event.type) for event in events] == [("1-0", "chunk"), ("1-2", "result")]
