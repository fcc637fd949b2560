"""The clients the web process holds for its lifetime, opened in the lifespan and closed after.

- ``redis``: owner records, the ``queued`` event, polling, readiness, the agents workers
  published (``catalog``) (at most
  ``REQUEST_CONNECTIONS`` connections, requests beyond wait for one);
- ``backend``: Celery's result backend (the same client when both URLs agree);
- ``relay``: the open SSE responses and the sweep that sends their heartbeats and drops stalled
  clients;
- ``hub``: the stream fan-out, on a client of its own whose pool is capped, so however many SSE
  clients are open the process holds at most ``STREAM_CONNECTIONS`` Redis connections for them
  (one pub/sub connection, the rest for reading logs);
- ``acceptance``: accepting a task in one round trip (``app.acceptance``), with the producer-only
  Celery app for a broker that is not this Redis;
- ``database``: the SQL engine behind ``sessions`` and ``audit``;
- ``tokens``: the token signer, checking the revocation list in Redis.

Nothing is opened at import time.
"""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import RedisError

from app.acceptance import Acceptance
from app.agent_catalog import AgentCatalog
from app.audit import AuditTrail
from app.auth import ApiKeyAuthenticator
from app.caps import CapLimits, UserCaps
from app.idempotency import IdempotencyStore
from app.settings import WebSettings
from app.sse import StreamRelay
from app.submission import TaskSubmitter, create_producer
from app.task_records import TaskRecordStore
from app.tokens import TokenService
from storage.audit import AuditLog
from storage.database import Database
from storage.revocations import RevocationList
from storage.sessions import SessionStore
from streaming.hub import EventHub
from streaming.memory_policy import eviction_risk
from streaming.redis_retry import reconnect_retry

CLIENT_NAME = "agent-service:web"
STREAM_CLIENT_NAME = "agent-service:web:stream"
STREAM_CONNECTIONS = 3
REQUEST_CONNECTIONS = 32
logger = logging.getLogger("agent_service.web")
#: Seconds the start-up look at Redis's memory policy may take (a Redis away does not hold the
#: web's start up: ``/readyz`` says so).
STARTUP_CHECK_SECONDS = 2.0
#: Seconds a request's Redis command waits for its reply (each of its tries): a Redis that stops
#: answering without closing its connections (frozen, a network partition) is a 503 within a
#: few tries of this, not a request that hangs. The streams' client has none (it waits on reads).
REQUEST_TIMEOUT = 5.0
AUDIT_BATCH_WINDOW = 0.01


@dataclass(frozen=True, slots=True)
class Services:
    settings: WebSettings
    catalog: AgentCatalog
    caps: UserCaps
    authenticator: ApiKeyAuthenticator
    tokens: TokenService
    redis: "Redis"
    backend: "Redis"
    records: TaskRecordStore
    idempotency: IdempotencyStore
    acceptance: Acceptance
    hub: EventHub
    relay: StreamRelay
    database: Database
    sessions: SessionStore
    audit: AuditTrail


def _redis(
    url: str, *, name: str, connections: int, socket_timeout: float | None = None
) -> "Redis":
    """A client whose pool holds at most ``connections``; a request beyond them waits for one
    (a burst of a thousand stream connects queues for a few ms instead of failing)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=10,
        client_name=name,
        socket_connect_timeout=5,
        socket_timeout=socket_timeout,
        health_check_interval=30,
        # Connections pooled before a Redis restart are dead; a client that times out gives up.
        retry=reconnect_retry(on_timeout=socket_timeout is None),
    )
    return Redis(connection_pool=pool)


async def _warn_if_redis_evicts(redis: Redis) -> None:
    """Say once, at start, if Redis would delete keys when its memory is full
    (``streaming.memory_policy``); a Redis that does not answer is ``/readyz``'s to report."""
    risk = None
    with anyio.move_on_after(STARTUP_CHECK_SECONDS):
        try:
            risk = eviction_risk(await redis.info("memory"))
        except (RedisError, OSError):
            return
    if risk is not None:
        logger.warning("redis_evicts_keys: %s", risk)


@asynccontextmanager
async def open_services(
    settings: WebSettings,
    *,
    authenticator: ApiKeyAuthenticator,
    tokens: TokenService,
) -> AsyncIterator[Services]:
    redis_url = settings.redis_url_normalised
    redis = _redis(
        redis_url, name=CLIENT_NAME, connections=REQUEST_CONNECTIONS, socket_timeout=REQUEST_TIMEOUT
    )
    backend = redis
    if settings.result_backend_url != redis_url:
        backend = _redis(
            settings.result_backend_url,
            name=CLIENT_NAME,
            connections=REQUEST_CONNECTIONS,
            socket_timeout=REQUEST_TIMEOUT,
        )
    stream_redis = _redis(redis_url, name=STREAM_CLIENT_NAME, connections=STREAM_CONNECTIONS)
    producer = create_producer(broker_url=settings.broker_url)
    broker_url = settings.broker_url
    broker_is_redis = broker_url.startswith(("redis://", "rediss://"))
    broker_redis = None
    if broker_is_redis and broker_url != redis_url:
        # A send that stalls fails well within the workers' grace for unsent tasks.
        broker_redis = _redis(
            broker_url,
            name=CLIENT_NAME,
            connections=REQUEST_CONNECTIONS,
            socket_timeout=REQUEST_TIMEOUT,
        )
    database = Database(settings.database_url_async, pool_size=settings.database_pool_size)
    try:
        caps = UserCaps(
            redis,
            limits=CapLimits(
                active_tasks=settings.max_active_tasks_per_user,
                urgent_tasks=settings.max_urgent_tasks_per_user,
                streams=settings.max_streams_per_user,
                token_mints_per_minute=settings.max_token_mints_per_minute,
            ),
        )
        async with (
            EventHub(stream_redis, release_after=settings.stream_release_after) as hub,
            StreamRelay(
                heartbeat=settings.sse_heartbeat_seconds, send_timeout=settings.sse_send_timeout
            ) as relay,
            anyio.create_task_group() as background,
        ):
            background.start_soon(caps.renew_streams_forever)
            services = Services(
                settings=settings,
                catalog=AgentCatalog(redis),
                caps=caps,
                authenticator=authenticator,
                tokens=tokens.bind(RevocationList(redis)),
                redis=redis,
                backend=backend,
                records=TaskRecordStore(redis),
                idempotency=IdempotencyStore(redis),
                acceptance=Acceptance(
                    redis=redis,
                    limits=caps.limits,
                    ttl=settings.task_data_ttl,
                    maxlen=settings.event_log_maxlen,
                    producer=producer,
                    broker_is_here=broker_is_redis and broker_url == redis_url,
                    broker_redis=broker_redis,
                    submitter=TaskSubmitter(producer),
                ),
                hub=hub,
                relay=relay,
                database=database,
                sessions=SessionStore(database),
                # Submits arriving within 10 ms of each other share one audit transaction (a
                # transaction per request was the web's largest cost under load: bench/README.md).
                audit=AuditTrail(AuditLog(database, batch_window=AUDIT_BATCH_WINDOW)),
            )
            await _warn_if_redis_evicts(redis)
            try:
                yield services
            finally:
                background.cancel_scope.cancel()
    finally:
        await database.aclose()
        await anyio.to_thread.run_sync(producer.close)
        await stream_redis.aclose()
        if broker_redis is not None:
            await broker_redis.aclose()
        if backend is not redis:
            await backend.aclose()
        await redis.aclose()
