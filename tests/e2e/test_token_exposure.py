"""A token in a URL never reaches a log line or a redirect, however the client spelled it.

The application reads ``?%74oken=`` as ``?token=``: the stream opens, so the access log must not
print it either. An access token put in the URL by mistake is refused (401) and still not logged.
"""

import httpx
import pytest

from tests.e2e.conftest import Stack
from teststack.polling import accept
from teststack.processes import wait_for
from teststack.sse import events_path
from teststack.stack import headers_for


def _stream_token(client: httpx.Client) -> tuple[str, str]:
    accepted = accept(client, "echo", "hi")
    return accepted.task_id, accepted.stream_token


def _access_token(client: httpx.Client) -> str:
    response = client.post("/api/v1/auth/token", headers=headers_for("alice"))
    assert response.status_code == 200
    token: str = response.json()["access_token"]
    return token


def _logged_after(stack: Stack, marker: str) -> str:
    """The web's log from its access line for ``marker`` (a unique path) on."""
    wait_for(lambda: marker in stack.web.process.output(tail=10**7), timeout=10)
    log = stack.web.process.output(tail=10**7)
    return log[log.index(marker) :]


@pytest.mark.parametrize("name", ["%74oken", "%74%6f%6b%65%6e", "tok%65n"])
def test_percent_encoded_token_parameter_opens_the_stream_and_is_not_logged(
    stack: Stack, name: str
) -> None:
    client = stack.web.client
    task_id, token = _stream_token(client)
    url = f"{events_path(task_id)}?{name}={token}"

    with client.stream("GET", url) as response:
        response.read()

    assert response.status_code == 200
    line = _logged_after(stack, events_path(task_id))
    assert f"{name}=[redacted]" in line.splitlines()[0]
    assert token not in stack.web.process.output(tail=10**7)


def test_access_token_in_the_url_is_401_and_not_logged(stack: Stack) -> None:
    client = stack.web.client
    task_id, _ = _stream_token(client)
    token = _access_token(client)

    response = client.get(f"{events_path(task_id)}?%74oken={token}")

    assert response.status_code == 401
    _logged_after(stack, events_path(task_id))
    assert token not in stack.web.process.output(tail=10**7)


def test_trailing_slash_is_404_without_a_redirect_carrying_the_token(stack: Stack) -> None:
    client = stack.web.client
    task_id, token = _stream_token(client)

    response = client.get(f"{events_path(task_id)}/?token={token}")

    assert response.status_code == 404
    assert "location" not in response.headers
    assert token not in response.text
