"""``create_app``: the FastAPI application, built from settings with nothing opened at import.

``uvicorn app.main:create_app --factory`` calls it with no argument (settings from the
environment); tests pass their own. Unsafe settings stop the process here, before it listens.
"""

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI
from starlette.types import Receive, Scope, Send

from app.auth import ApiKeyAuthenticator
from app.body_limit import BodyLimitMiddleware
from app.error_reporting import init_sentry
from app.errors import install_error_handlers
from app.fast_submit import FastSubmit
from app.log_format import use_json_lines
from app.log_redaction import install_token_redaction
from app.metrics import WebMetrics
from app.openapi_document import install_openapi
from app.repeated_headers import refuse_repeated, repeated_header
from app.routes import agents, auth, events, health, metrics, sessions, tasks
from app.routes import console as console_routes
from app.services import open_services
from app.settings import WebSettings, get_settings
from app.sse import DEFERRED_STREAM, SubscriptionResponse
from app.tokens import TokenService


class AgentServiceApp(FastAPI):
    """FastAPI that serves an event stream after its request handling has returned: the
    middleware, routing and dependencies decide (auth, ownership, the cursor), then let go of
    the request, and the stream runs here with the server's own ``send`` (``app.sse``).

    So a middleware sees a stream's request and no part of its response: one that must change
    responses (headers, compression) has to wrap this application, not be added to it. The
    request metrics are counted here for that reason."""

    metrics: WebMetrics | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await refuse_websocket(scope, receive, send)
            return
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        if self.metrics is not None:
            send = self.metrics.wrap_send(scope, send)
        repeated = repeated_header(scope["headers"])
        if repeated is not None:
            await refuse_repeated(repeated, scope, receive, send)
            return
        scope[DEFERRED_STREAM] = None
        try:
            await super().__call__(scope, receive, send)
        except BaseException:
            left: SubscriptionResponse | None = scope.pop(DEFERRED_STREAM, None)
            if left is not None:
                await left.discard()
            raise
        stream: SubscriptionResponse | None = scope.pop(DEFERRED_STREAM, None)
        if stream is not None:
            await stream.serve(receive, send, scope=scope)


WEBSOCKET_REFUSAL = orjson.dumps(
    {
        "detail": "there is no WebSocket endpoint: a task's events are Server-Sent Events "
        "(GET /api/v1/agents/tasks/{task_id}/events)"
    }
)


async def refuse_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    """A WebSocket handshake gets a 404 with a JSON body, as any unknown path does (Starlette's
    answer is a bodiless 403); a server without the ASGI denial-response extension closes it."""
    await receive()  # websocket.connect
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(WEBSOCKET_REFUSAL)).encode()),
    ]
    await send({"type": "websocket.http.response.start", "status": 404, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": WEBSOCKET_REFUSAL})


#: Allocations between two young-generation collections (Python's default: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Fewer, cheaper pauses of the event loop, which every open stream waits out.

    Everything alive after start-up (modules, settings, pools: most of the process's objects)
    is frozen out of the collector's sight, and young collections run every 50,000 allocations
    instead of 700, so that an event's short-lived objects die before one and are not promoted
    towards full collections. With a thousand streams open, full collections were the relay's
    p99 (bench/README.md has the pauses before and after). The process's garbage has almost no
    reference cycles (most collections free nothing)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])


def create_app(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_safe()
    settings.align_celery_environment()  # the producer's broker URL, TLS policy included
    authenticator = ApiKeyAuthenticator.from_setting(settings.api_keys.get_secret_value())
    secret = settings.token_secret.get_secret_value() if settings.token_secret else None
    tokens = TokenService(secret)
    logging.getLogger("agent_service").setLevel(settings.log_level)
    if settings.log_format == "json":
        use_json_lines()
    init_sentry(settings)
    web_metrics = WebMetrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_token_redaction("uvicorn.access", "uvicorn.error")
        async with (
            open_services(settings, authenticator=authenticator, tokens=tokens) as services,
            web_metrics.follow(services),
        ):
            app.state.services = services
            tune_garbage_collector()
            yield

    app = AgentServiceApp(
        title="agent-service",
        version="0.1.0",
        description="Submit agent invocations, poll them, stream their answers.",
        lifespan=lifespan,
        # A redirect to the path without its trailing slash repeats the query string, and with
        # it a stream's token, in a Location header; an unknown path is a 404 instead.
        redirect_slashes=False,
    )
    app.metrics = web_metrics
    app.state.metrics = web_metrics
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    # Outside the body limit (added later is outer): what it leaves to FastAPI meets the limit.
    app.add_middleware(FastSubmit, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(health.router)
    app.include_router(agents.router)
    app.include_router(tasks.router)
    app.include_router(events.router)
    app.include_router(auth.router)
    app.include_router(sessions.router)
    app.include_router(console_routes.router)
    app.include_router(metrics.router)
    return app
