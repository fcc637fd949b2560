"""The submit route's well-formed requests, served below FastAPI's request handling.

``POST /api/v1/agents/{agent_id}/invoke-async`` is the busiest route of a service under load, and
FastAPI's routing, dependency solving, validation and middleware layers took more of the web's
CPU than the submit itself (bench/README.md, "A submit below FastAPI"). A request whose every part
is well-formed (a JSON body within the limit, a credential that is good, a valid
``Idempotency-Key``) is served here: the same checks, the same route function, the same
exception handlers. Anything else goes to FastAPI as it came, its body replayed, so every refusal
of a malformed request is FastAPI's own answer, and a request served here is answered as FastAPI
answers it (the same status, headers and body, the same records and metrics; compared request by
request against FastAPI's path). It is the application's outermost middleware: Starlette's error
middleware (a 500) and Sentry's still wrap it.
"""

import inspect
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.routing import APIRoute
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.deps import current_user
from app.idempotency import MAX_KEY_LENGTH
from app.routes import agents
from app.routes.agents import MAX_AGENT_ID_LENGTH, invoke_async
from app.schemas import InvokeRequest

PREFIX = "/api/v1/agents/"
SUFFIX = "/invoke-async"
_IDEMPOTENCY_KEY = re.compile(r"[ -~]+")
_JSON = (b"application/json", b"application/json; charset=utf-8")

ErrorHandler = Callable[[Request, Any], Response | Awaitable[Response]]


class FastSubmit:
    """An ASGI middleware: serves the submits it can, passes everything else on."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self._max_body = max_body_bytes
        #: The route FastAPI would have matched (the metrics label a request with its path).
        self._route = next(
            route
            for route in agents.router.routes
            if isinstance(route, APIRoute) and route.endpoint is agents.invoke_async
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            left = await self._serve(scope, receive, send)
            if left is None:
                return
            receive = left
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """Serve the request and return None; or leave it to FastAPI, returning the ``receive``
        it must read the request from (the original one when nothing was read)."""
        agent_id = self._agent_id(scope)
        if agent_id is None:
            return receive
        headers = _headers(scope, max_body=self._max_body)
        if headers is None:
            return receive
        read, whole = await _read_body(receive, limit=self._max_body)
        replay = _replaying(read, receive)
        request = _invoke_request(read) if whole else None
        if request is None:
            return replay
        application: FastAPI = scope["app"]
        services = getattr(application.state, "services", None)
        if services is None:  # not started (its lifespan has not run): FastAPI says so
            return replay
        scope["route"] = self._route  # what the metrics label the request with
        scope["endpoint"] = self._route.endpoint
        scope["path_params"] = {"agent_id": agent_id}
        try:
            # The credential is checked as FastAPI checks it, and a refusal answered by the
            # same handler (the body being valid, FastAPI would answer nothing else).
            user = await current_user(
                services, headers.get(b"x-api-key"), headers.get(b"authorization")
            )
            response = await invoke_async(
                agent_id=agent_id,
                body=request,
                user=user,
                services=services,
                idempotency_key=headers.get(b"idempotency-key"),
            )
        except Exception as exc:
            handler = _handler(application, exc)
            if handler is None:  # a 500: Starlette's error middleware answers it, Sentry sees it
                raise
            answer = handler(Request(scope, replay), exc)
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, replay, send)
        return None

    def _agent_id(self, scope: Scope) -> str | None:
        if scope["method"] != "POST" or scope.get("root_path"):
            return None
        path: str = scope["path"]
        if not (path.startswith(PREFIX) and path.endswith(SUFFIX)):
            return None
        agent_id = path[len(PREFIX) : -len(SUFFIX)]
        if not 1 <= len(agent_id) <= MAX_AGENT_ID_LENGTH or "/" in agent_id:
            return None
        return agent_id


def _handler(application: FastAPI, exc: Exception) -> ErrorHandler | None:
    """The handler FastAPI's exception middleware would call for ``exc`` (Starlette's lookup
    order); None for what is left to the error middleware."""
    handlers: dict[Any, ErrorHandler] = application.exception_handlers
    if isinstance(exc, HTTPException) and exc.status_code in handlers:
        return handlers[exc.status_code]
    for kind in type(exc).__mro__:
        if kind is Exception:
            return None
        if kind in handlers:
            return handlers[kind]
    return None


def _headers(scope: Scope, *, max_body: int) -> dict[bytes, str] | None:
    """The headers the route reads, when the request is one it would accept as far as they
    tell (one JSON body of a declared length within the limit, a valid ``Idempotency-Key``);
    None otherwise. A header the route reads that comes twice is left to FastAPI, which reads
    the first (the credentials' and the key's are refused before this)."""
    wanted: dict[bytes, str] = {}
    content_types: list[bytes] = []
    lengths: list[bytes] = []
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_types.append(value.lower())
        elif name == b"content-length":
            lengths.append(value)
        elif name in (b"x-api-key", b"authorization", b"idempotency-key"):
            wanted[name] = value.decode("latin-1")  # as Starlette reads headers
    if len(content_types) != 1 or content_types[0] not in _JSON or len(lengths) != 1:
        return None
    if not lengths[0].isdigit() or int(lengths[0]) > max_body:
        return None
    key = wanted.get(b"idempotency-key")
    if key is not None and not (
        len(key) <= MAX_KEY_LENGTH and _IDEMPOTENCY_KEY.fullmatch(key) is not None
    ):
        return None
    return wanted


async def _read_body(receive: Receive, *, limit: int) -> tuple[list[Message], bool]:
    """The messages read, and whether they hold the whole body (not when it grew past
    ``limit`` or the client left)."""
    read: list[Message] = []
    size = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] != "http.request":
            return read, False
        size += len(message.get("body", b""))
        if size > limit:
            return read, False
        if not message.get("more_body", False):
            return read, True


def _replaying(read: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives the messages read so far again, then reads on."""
    pending = list(read)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _invoke_request(read: list[Message]) -> InvokeRequest | None:
    """The body as FastAPI validates it (parsed by the standard library's ``json``, as
    Starlette parses it: orjson reads some integers past 64 bits as floats, which the model
    would then take), or None when FastAPI would refuse it."""
    try:
        value = json.loads(b"".join(message.get("body", b"") for message in read))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser
        return None
    if not isinstance(value, dict):
        return None
    try:
        return InvokeRequest.model_validate(value)
    except ValidationError:
        return None
