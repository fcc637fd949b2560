"""The service's public HTTP API, as the CLI calls it (httpx, and httpx-sse for the stream).

Every call sends the key in ``X-API-Key``. Every failure leaves this module as a ``CliError``
(``cli.errors``): an error status becomes the ``ApiError`` for it, with the server's ``detail``;
a connection that cannot be made, or that drops mid-stream, becomes ``ConnectionLostError``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse

from cli.config import ClientConfig
from cli.errors import (
    ApiError,
    NotFoundError,
    RateLimitedError,
    ServerUnreachableError,
    UnauthorizedError,
    UnavailableError,
)
from cli.events import TaskEvent

#: Seconds to wait for a connection, and for an answer to a plain request.
CONNECT_TIMEOUT = 5.0
REQUEST_TIMEOUT = 30.0
#: Seconds a stream may stay silent: the server sends a heartbeat at least every 15 s.
STREAM_READ_TIMEOUT = 45.0


class ConnectionLostError(ServerUnreachableError):
    """The connection could not be made, or dropped before the stream ended."""


class UnexpectedAnswerError(ApiError):
    """A success status whose body is not the API's answer (another server at the URL, a
    proxy's page): said, with the start of what came, instead of failing on it."""


#: The fields each answer the CLI reads must have, with their types.
_AGENT_LIST = {"agents": list}
_AGENT_ITEMS = ("agents", {"id": str, "description": str})
_ACCEPTED = {"task_id": str}
_STATUS = {"task_id": str, "status": str, "state": str, "progress": int}


def _has(answer: object, fields: Mapping[str, type]) -> bool:
    """``answer`` is a JSON object with ``fields`` of their types (a boolean is no number)."""
    if not isinstance(answer, dict):
        return False
    return all(
        isinstance(answer.get(name), kind) and not isinstance(answer.get(name), bool)
        for name, kind in fields.items()
    )


def _path(*parts: str) -> str:
    return "/".join(quote(part, safe="") for part in parts)


def _detail(response: httpx.Response) -> str:
    """The server's ``detail``: a sentence, or ``field: message`` items for a 4xx on input."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip()[:200] or response.reason_phrase
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        items = []
        for item in detail:
            if not isinstance(item, dict):
                continue
            loc = [str(part) for part in item.get("loc", []) if part != "body"]
            message = str(item.get("msg", ""))
            items.append(f"{'.'.join(loc)}: {message}" if loc else message)
        return "; ".join(items)
    return response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf", "nan", "1e999" are no delay anyone can wait out: as if not said
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    date = response.headers.get("Date")
    now = parsedate_to_datetime(date) if date else None
    return max(0.0, (moment - now).total_seconds()) if now is not None else None


def _later(retry_after: float | None) -> str:
    return f"try again in {retry_after:g} s" if retry_after is not None else "try again shortly"


def error_for(response: httpx.Response) -> ApiError:
    """The ``ApiError`` a refused request stands for, with a message a person can act on."""
    status = response.status_code
    detail = _detail(response)
    if status == 401:
        return UnauthorizedError(
            f"the server refused the API key (401: {detail}); "
            "check AGENT_SERVICE_API_KEY or --api-key",
            status=status,
            detail=detail,
        )
    if status == 404:
        return NotFoundError(f"not found (404): {detail}", status=status, detail=detail)
    if status == 429:
        retry_after = _retry_after(response)
        return RateLimitedError(
            f"too many requests (429): {detail}; {_later(retry_after)}",
            status=status,
            detail=detail,
            retry_after=retry_after,
        )
    if status == 503:
        retry_after = _retry_after(response)
        return UnavailableError(
            f"the service is unavailable (503): {detail}; {_later(retry_after)}",
            status=status,
            detail=detail,
            retry_after=retry_after,
        )
    return ApiError(
        f"the server refused the request ({status}): {detail}", status=status, detail=detail
    )


class ServiceClient:
    """One HTTP connection pool to the service, for the length of a command."""

    def __init__(self, config: ClientConfig, *, transport: httpx.BaseTransport | None = None):
        self.config = config
        self._http = httpx.Client(
            base_url=config.url,
            headers={"X-API-Key": config.api_key, "User-Agent": "agent-service-cli"},
            timeout=httpx.Timeout(REQUEST_TIMEOUT, connect=CONNECT_TIMEOUT),
            transport=transport,
        )

    def __enter__(self) -> ServiceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: httpx.TransportError) -> ConnectionLostError:
        if isinstance(exc, httpx.TimeoutException):
            why = "it did not answer in time"
        elif isinstance(exc, httpx.ConnectError):
            why = f"could not connect ({exc})"
        else:
            why = f"the connection dropped ({type(exc).__name__})"
        return ConnectionLostError(
            f"cannot reach the service at {self.config.url}: {why}. Is it running? "
            "(`make dev` starts one; AGENT_SERVICE_URL or --url says where it is)"
        )

    def _request(
        self,
        method: str,
        path: str,
        *,
        fields: Mapping[str, type],
        items: tuple[str, Mapping[str, type]] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """The answer's JSON object, which has ``fields`` of their types (and, with ``items``,
        whose list under that name holds objects with those fields)."""
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise error_for(response)
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if _has(answer, fields) and (
            items is None or all(_has(item, items[1]) for item in answer[items[0]])
        ):
            checked: dict[str, Any] = answer
            return checked
        shown = response.text.strip()[:200] or "an empty body"
        raise UnexpectedAnswerError(
            f"the server at {self.config.url} did not answer as agent-service does "
            f"({response.status_code}: {shown}); check AGENT_SERVICE_URL or --url",
            status=response.status_code,
            detail=shown,
        )

    def agents(self) -> list[dict[str, str]]:
        answer = self._request("GET", "/api/v1/agents", fields=_AGENT_LIST, items=_AGENT_ITEMS)
        listed: list[dict[str, str]] = answer["agents"]
        return listed

    def invoke(
        self, agent_id: str, message: str, *, session_id: str | None, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"message": message, "stream": stream}
        if session_id is not None:
            body["session_id"] = session_id
        return self._request(
            "POST", f"/api/v1/agents/{_path(agent_id)}/invoke-async", fields=_ACCEPTED, body=body
        )

    def status(self, task_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v1/agents/tasks/{_path(task_id)}", fields=_STATUS)

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._request(
            "POST", f"/api/v1/agents/tasks/{_path(task_id)}/cancel", fields=_STATUS
        )

    def events(self, task_id: str, *, after: str | None) -> Iterator[TaskEvent]:
        """The task's events after the event id ``after`` (from the start without one), until
        the server closes the stream."""
        headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
        if after:
            headers["Last-Event-ID"] = after
        timeout = httpx.Timeout(STREAM_READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        path = f"/api/v1/agents/tasks/{_path(task_id)}/events"
        try:
            with connect_sse(self._http, "GET", path, headers=headers, timeout=timeout) as source:
                if source.response.is_error:
                    source.response.read()
                    raise error_for(source.response)
                for sse in source.iter_sse():
                    if not sse.data:
                        continue  # a heartbeat comment, as httpx-sse hands it over
                    try:
                        data = json.loads(sse.data)
                    except ValueError:
                        continue  # not one of ours: every event of the protocol is JSON
                    yield TaskEvent(id=sse.id, type=sse.event, data=data)
        except SSEError as exc:
            raise ApiError(
                f"the server did not answer with an event stream: {exc}", status=200, detail=""
            ) from exc
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
