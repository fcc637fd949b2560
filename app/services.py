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
- the producer-only Celery app behind ``submitter``;
- ``database``: the SQL engine behind ``sessions`` and ``audit``;
- ``tokens``: the token signer, checking the revocation list in Redis.

Nothing is opened at import time.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio.to_thread
from redis.asyncio import BlockingConnectionPool, Redis

from app.agent_catalog import AgentCatalog
from app.audit import AuditTrail
from app.auth import ApiKeyAuthenticator
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
from streaming.event_log import EventLog
from streaming.hub import EventHub
from streaming.redis_retry import reconnect_retry

CLIENT_NAME = "agent-service:web"
STREAM_CLIENT_NAME = "agent-service:web:stream"
STREAM_CONNECTIONS = 3
REQUEST_CONNECTIONS = 32
AUDIT_BATCH_WINDOW = 0.01


@dataclass(frozen=True, slots=True)
class Services:
    settings: WebSettings
    catalog: AgentCatalog
    authenticator: ApiKeyAuthenticator
    tokens: TokenService
    redis: "Redis"
    backend: "Redis"
    records: TaskRecordStore
    idempotency: IdempotencyStore
    events: EventLog
    hub: EventHub
    relay: StreamRelay
    submitter: TaskSubmitter
    database: Database
    sessions: SessionStore
    audit: AuditTrail


def _redis(url: str, *, name: str, connections: int) -> "Redis":
    """A client whose pool holds at most ``connections``; a request beyond them waits for one
    (a burst of a thousand stream connects queues for a few ms instead of failing)."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=connections,
        timeout=10,
        client_name=name,
        socket_connect_timeout=5,
        health_check_interval=30,
        retry=reconnect_retry(),  # connections pooled before a Redis restart are dead
    )
    return Redis(connection_pool=pool)


@asynccontextmanager
async def open_services(
    settings: WebSettings,
    *,
    authenticator: ApiKeyAuthenticator,
    tokens: TokenService,
) -> AsyncIterator[Services]:
    redis_url = settings.redis_url_normalised
    redis = _redis(redis_url, name=CLIENT_NAME, connections=REQUEST_CONNECTIONS)
    backend = redis
    if settings.result_backend_url != redis_url:
        backend = _redis(
            settings.result_backend_url, name=CLIENT_NAME, connections=REQUEST_CONNECTIONS
        )
    stream_redis = _redis(redis_url, name=STREAM_CLIENT_NAME, connections=STREAM_CONNECTIONS)
    producer = create_producer(broker_url=settings.broker_url)
    database = Database(settings.database_url_async, pool_size=settings.database_pool_size)
    try:
        async with (
            EventHub(stream_redis, release_after=settings.stream_release_after) as hub,
            StreamRelay(
                heartbeat=settings.sse_heartbeat_seconds, send_timeout=settings.sse_send_timeout
            ) as relay,
        ):
            yield Services(
                settings=settings,
                catalog=AgentCatalog(redis),
                authenticator=authenticator,
                tokens=tokens.bind(RevocationList(redis)),
                redis=redis,
                backend=backend,
                records=TaskRecordStore(redis, ttl=settings.task_data_ttl),
                idempotency=IdempotencyStore(redis),
                events=EventLog(
                    redis, maxlen=settings.event_log_maxlen, ttl=settings.task_data_ttl
                ),
                hub=hub,
                relay=relay,
                submitter=TaskSubmitter(producer),
                database=database,
                sessions=SessionStore(database),
                # Submits arriving within 10 ms of each other share one audit transaction:
                # a transaction per request took a third of the web's CPU under load.
                audit=AuditTrail(AuditLog(database, batch_window=AUDIT_BATCH_WINDOW)),
            )
    finally:
        await database.aclose()
        await anyio.to_thread.run_sync(producer.close)
        await stream_redis.aclose()
        if backend is not redis:
            await backend.aclose()
        await redis.aclose()
