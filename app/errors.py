"""Domain errors of the web process and how each becomes an HTTP answer.

Every error body is JSON with a ``detail``: a sentence for 400/401/404/409/429/503, or a list of
``{loc, msg, type}`` items naming the field for 413/422, so clients parse one shape. Request
validation errors are re-shaped without echoing the input back (it may be 200 KB of message),
and what they do name (a key of the caller's metadata) is made printable and short first: a lone
surrogate in a key must not turn a 422 into a 500. A body the JSON parser gives up on (nested
past its stack, invalid UTF-8, an integer of thousands of digits) is a 422 ``json_invalid`` like
any malformed JSON.

``error_responses`` declares these answers on the routes, so the OpenAPI document lists every
status a route can answer, with its body.
"""

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.caps import CapReachedError
from app.idempotency import IdempotencyConflictError
from app.schemas import CapReached, ErrorMessage, ValidationErrors
from app.storable import printable


class NotFoundError(Exception):
    """Unknown id, or an id the caller may not see: always the same 404."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class PayloadTooLargeError(Exception):
    """A field, or the whole body, is over its limit."""

    def __init__(self, *, loc: tuple[str, ...], limit: int) -> None:
        super().__init__(f"{'.'.join(loc)} is larger than {limit} bytes")
        self.loc = loc
        self.limit = limit


class InvalidParameterError(ValueError):
    """A header or query parameter with a value we cannot use: 422 naming it."""

    def __init__(self, message: str, *, loc: tuple[str, str]) -> None:
        super().__init__(message)
        self.loc = loc


class InvalidCursorError(InvalidParameterError):
    """A ``Last-Event-ID`` (or ``last_event_id``) that is not an event of the task's log."""

    def __init__(self, message: str, *, in_query: bool) -> None:
        loc = ("query", "last_event_id") if in_query else ("header", "Last-Event-ID")
        super().__init__(message, loc=loc)


class ServiceUnavailableError(Exception):
    """A dependency (Redis, the broker) did not answer; nothing was changed."""


def too_large_body(*, loc: tuple[str, ...], limit: int) -> dict[str, Any]:
    return {
        "detail": [
            {
                "loc": list(loc),
                "msg": f"{loc[-1]} is larger than the limit of {limit} bytes",
                "type": "too_large",
                "ctx": {"limit": limit},
            }
        ]
    }


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFoundError)
    return JSONResponse({"detail": exc.detail}, status_code=404)


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PayloadTooLargeError)
    return JSONResponse(too_large_body(loc=exc.loc, limit=exc.limit), status_code=413)


async def _invalid_parameter(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidParameterError)
    item = {"loc": list(exc.loc), "msg": str(exc), "type": "value_error"}
    return JSONResponse({"detail": [item]}, status_code=422)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _cap_reached(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CapReachedError)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.refused(exc.cap)  # agent_service_http_refused_by_cap_total (app.metrics)
    return JSONResponse(
        {"detail": exc.detail, "cap": exc.cap, "limit": exc.limit},
        status_code=429,
        headers={"Retry-After": str(exc.retry_after)},
    )


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": "database unavailable; nothing was changed"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


def _loc_part(part: object) -> str | int:
    return part if isinstance(part, int) else printable(str(part), limit=64)


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        {
            "loc": [_loc_part(part) for part in error.get("loc", ())],
            "msg": printable(str(error.get("msg", "")), limit=300),
            "type": str(error.get("type", "value_error")),
        }
        for error in exc.errors()
    ]
    return JSONResponse({"detail": items}, status_code=422)


def _unparsable_body(exc: StarletteHTTPException) -> bool:
    """FastAPI's 400 for a body its JSON parser raised on with something other than a syntax
    error (RecursionError for deep nesting, UnicodeDecodeError, ValueError for a huge integer)."""
    return (
        exc.status_code == 400
        and exc.detail == "There was an error parsing the body"
        and isinstance(exc.__cause__, ValueError | RecursionError)
    )


def _allowed_methods(request: Request) -> str:
    """Every method the OpenAPI document declares at the request's path. Starlette's 405 names
    those of the first route whose path matched, and a path served by two routes (GET and DELETE
    of a session) has two. HEAD is not named: the API's routes do not serve it (a HEAD of an
    event stream would hold the connection, without a body, until the task ends)."""
    methods: set[str] = set()
    for template, operations in request.app.openapi()["paths"].items():
        parts = re.split(r"\{[^/]+\}", template)
        if re.fullmatch("[^/]+".join(re.escape(part) for part in parts), request.url.path):
            methods |= {method.upper() for method in operations}
    return ", ".join(sorted(methods))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 405:
        # Paths outside the document (/docs) keep Starlette's answer.
        headers = dict(exc.headers or {})
        headers["Allow"] = _allowed_methods(request) or headers.get("Allow", "")
        return JSONResponse({"detail": exc.detail}, status_code=405, headers=headers)
    if _unparsable_body(exc):
        item = {
            "loc": ["body"],
            "msg": "the body is not JSON this service can read (nested too deeply, not UTF-8, "
            "or a number too long)",
            "type": "json_invalid",
        }
        return JSONResponse({"detail": [item]}, status_code=422)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers or None
    )


_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before trying again.",
        "schema": {"type": "integer"},
    }
}
_RESPONSES: dict[int, dict[str, Any]] = {
    400: {
        "model": ErrorMessage,
        "description": "The request cannot be used (a sentence says why).",
    },
    401: {
        "model": ErrorMessage,
        "description": "No valid credential: a missing or wrong API key, or a bad, expired or "
        "revoked token.",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    404: {
        "model": ErrorMessage,
        "description": "Unknown, or not the caller's (the two are not told apart).",
    },
    409: {"model": ErrorMessage, "description": "The Idempotency-Key conflicts with a request."},
    413: {"model": ValidationErrors, "description": "A field, or the body, is over its limit."},
    422: {
        "model": ValidationErrors,
        "description": "A field, header or parameter is invalid; each item names it in loc.",
    },
    429: {
        "model": CapReached,
        "description": "Over a per-user cap (named in cap); retry after Retry-After seconds.",
        "headers": _RETRY_AFTER,
    },
    503: {
        "model": ErrorMessage,
        "description": "A dependency (Redis, the broker, the database) did not answer; nothing "
        "was changed.",
        "headers": _RETRY_AFTER,
    },
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route's error answers, with their bodies and headers."""
    return {status: _RESPONSES[status] for status in statuses}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(PayloadTooLargeError, _too_large)
    app.add_exception_handler(ServiceUnavailableError, _unavailable)
    # A refused connection surfaces as ConnectionError from some drivers (asyncpg), unwrapped.
    for database_error in (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError):
        app.add_exception_handler(database_error, _database_unavailable)
    app.add_exception_handler(InvalidParameterError, _invalid_parameter)
    app.add_exception_handler(IdempotencyConflictError, _conflict)
    app.add_exception_handler(CapReachedError, _cap_reached)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
