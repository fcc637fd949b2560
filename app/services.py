"""The clients the web process holds for its lifetime, opened in the lifespan and closed after.

One Redis client for owner records and readiness, the result backend's (the same client when both
URLs agree), and the producer-only Celery app. Nothing is opened at import time.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread
from redis.asyncio import Redis

from app.auth import ApiKeyAuthenticator
from app.settings import WebSettings
from app.submission import TaskSubmitter, create_producer
from app.task_records import TaskRecordStore
from streaming.redis_settings import normalise_redis_url

CLIENT_NAME = "agent-service:web"


@dataclass(frozen=True, slots=True)
class Services:
    settings: WebSettings
    authenticator: ApiKeyAuthenticator
    redis: "Redis"
    backend: "Redis"
    records: TaskRecordStore
    submitter: TaskSubmitter


def _redis(url: str) -> "Redis":
    return Redis.from_url(
        url, client_name=CLIENT_NAME, socket_connect_timeout=5, health_check_interval=30
    )


@asynccontextmanager
async def open_services(
    settings: WebSettings, *, authenticator: ApiKeyAuthenticator
) -> AsyncIterator[Services]:
    redis_url = normalise_redis_url(settings.redis_url)
    redis = _redis(redis_url)
    backend = (
        redis if settings.result_backend_url == redis_url else _redis(settings.result_backend_url)
    )
    producer = create_producer(
        broker_url=settings.broker_url, result_backend_url=settings.result_backend_url
    )
    try:
        yield Services(
            settings=settings,
            authenticator=authenticator,
            redis=redis,
            backend=backend,
            records=TaskRecordStore(redis, result_expires=settings.celery_result_expires),
            submitter=TaskSubmitter(producer),
        )
    finally:
        await anyio.to_thread.run_sync(producer.close)
        if backend is not redis:
            await backend.aclose()
        await redis.aclose()
