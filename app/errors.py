"""Domain errors of the web process and how each becomes an HTTP answer.

Every error body is JSON with a ``detail``: a sentence for 401/404/503, or a list of
``{loc, msg, type}`` items naming the field for 413/422, so clients parse one shape. Request
validation errors are re-shaped without echoing the input back (it may be 200 KB of message).
"""

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.idempotency import IdempotencyConflictError


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


class InvalidHeaderError(ValueError):
    """A request header with a value we cannot use: 422 naming the header."""

    def __init__(self, *, header: str, message: str) -> None:
        super().__init__(message)
        self.header = header


class InvalidCursorError(InvalidHeaderError):
    """A ``Last-Event-ID`` (or ``last_event_id``) that is not one of our event ids."""

    def __init__(self, message: str) -> None:
        super().__init__(header="Last-Event-ID", message=message)


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


async def _invalid_header(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidHeaderError)
    item = {"loc": ["header", exc.header], "msg": str(exc), "type": "value_error"}
    return JSONResponse({"detail": [item]}, status_code=422)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": "database unavailable; nothing was changed"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


async def _invalid(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error.get("type")}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": items}, status_code=422)


async def _http(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return JSONResponse(
        {"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers or None
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(PayloadTooLargeError, _too_large)
    app.add_exception_handler(ServiceUnavailableError, _unavailable)
    # A refused connection surfaces as ConnectionError from some drivers (asyncpg), unwrapped.
    for database_error in (OperationalError, InterfaceError, PoolTimeoutError, ConnectionError):
        app.add_exception_handler(database_error, _database_unavailable)
    app.add_exception_handler(InvalidHeaderError, _invalid_header)
    app.add_exception_handler(IdempotencyConflictError, _conflict)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
