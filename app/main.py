"""``create_app``: the FastAPI application, built from settings with nothing opened at import.

``uvicorn app.main:create_app --factory`` calls it with no argument (settings from the
environment); tests pass their own. Unsafe settings stop the process here, before it listens.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from app.auth import ApiKeyAuthenticator
from app.body_limit import BodyLimitMiddleware
from app.errors import install_error_handlers
from app.log_redaction import install_token_redaction
from app.routes import agents, auth, events, health, sessions, tasks
from app.services import open_services
from app.settings import WebSettings, get_settings
from app.tokens import TokenService
from worker.agents.plugins import agent_catalog


def create_app(settings: WebSettings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.check_safe()
    authenticator = ApiKeyAuthenticator.from_setting(settings.api_keys.get_secret_value())
    secret = settings.token_secret.get_secret_value() if settings.token_secret else None
    tokens = TokenService(secret)
    catalog = agent_catalog(settings.agent_modules)  # a bad AGENT_MODULES stops us here
    logging.getLogger("agent_service").setLevel(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        install_token_redaction("uvicorn.access", "uvicorn.error")
        async with open_services(
            settings, catalog=catalog, authenticator=authenticator, tokens=tokens
        ) as services:
            app.state.services = services
            yield

    app = FastAPI(
        title="agent-service",
        version="0.1.0",
        description="Submit agent invocations, poll them, stream their answers.",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(agents.router)
    app.include_router(tasks.router)
    app.include_router(events.router)
    app.include_router(auth.router)
    app.include_router(sessions.router)
    return app
