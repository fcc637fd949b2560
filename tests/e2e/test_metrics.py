"""The workers' and the web's Prometheus metrics, scraped before and after tasks that ran for
real: every counter moves by exactly what ran."""

import uuid
from collections.abc import Iterator

import httpx
import pytest
from celery import Celery

from contract.tasks import INVOKE_AGENT_ASYNC, INVOKE_AGENT_WITH_STREAMING
from scripts.embedded_redis import EmbeddedRedis, free_port
from tests.e2e.conftest import IDLE_DB, OpsStack
from tests.support import redis_databases
from tests.support.metrics import Scrape, scrape
from teststack.llm.control import LLMControl
from teststack.polling import submit
from teststack.processes import wait_for
from teststack.sse import events_path, read_stream
from teststack.stack import WebServer, headers_for, redis_db_url, start_web, start_worker

ALICE = headers_for("alice")
PREFORK_DB = redis_databases.PREFORK_METRICS
PRODUCTION_WORKER_DB = redis_databases.PRODUCTION_WORKER
STREAMING = {"task": INVOKE_AGENT_WITH_STREAMING}
SUBMIT_ROUTE = "/api/v1/agents/{agent_id}/invoke-async"
EVENTS_ROUTE = "/api/v1/agents/tasks/{task_id}/events"


def _delta(after: Scrape, before: Scrape, name: str, **labels: str) -> float:
    return after.value(name, labels) - before.value(name, labels)


def test_metrics_move_by_exactly_what_ran(ops_stack: OpsStack, llm: LLMControl) -> None:
    web_metrics = f"{ops_stack.web.base_url}/metrics"
    worker_before, web_before = scrape(ops_stack.metrics_url), scrape(web_metrics)
    run = uuid.uuid4().hex
    tokens = ["one ", "two ", "three ", "four ", "five"]
    failures: dict[str, list[dict[str, object]]] = {
        f"ok-a-{run}": [],
        f"ok-b-{run}": [],
        f"retried-{run}": [{"status": 503, "body": "busy"}],
        f"rejected-{run}": [{"status": 400, "body": "no"}],
    }
    task_ids = []
    for key, failing in failures.items():
        llm.script(key, tokens=tokens, failures=failing)
        task_ids.append(submit(ops_stack.web.client, "simple_llm_agent", key, stream=True))
    delivered = 0
    for task_id in task_ids:
        events = read_stream(ops_stack.web.client, events_path(task_id), headers=ALICE)
        delivered += len(events)
    assert [e for e in events if e.event in ("result", "error")][-1].event == "error"

    after = scrape(ops_stack.metrics_url)
    assert (
        _delta(after, worker_before, "agent_service_tasks_total", **STREAMING, outcome="completed")
        == 3
    )
    assert (
        _delta(after, worker_before, "agent_service_tasks_total", **STREAMING, outcome="retrying")
        == 1
    )
    assert (
        _delta(after, worker_before, "agent_service_tasks_total", **STREAMING, outcome="failed")
        == 1
    )
    assert _delta(after, worker_before, "agent_service_tokens_streamed_total", **STREAMING) == 15
    assert (
        _delta(after, worker_before, "agent_service_llm_errors_total", error="LLMUnavailableError")
        == 1
    )
    assert (
        _delta(
            after, worker_before, "agent_service_llm_errors_total", error="LLMRequestRejectedError"
        )
        == 1
    )
    assert (
        _delta(
            after,
            worker_before,
            "agent_service_task_retries_total",
            **STREAMING,
            error="LLMUnavailableError",
        )
        == 1
    )
    # Four first deliveries and one retry waited in the queue; five deliveries ran.
    assert _delta(after, worker_before, "agent_service_task_queued_seconds_count", **STREAMING) == 5
    assert (
        _delta(after, worker_before, "agent_service_task_duration_seconds_count", **STREAMING) == 5
    )
    assert after.value("agent_service_queue_depth", {"queue": "agent-tasks"}) == 0
    assert after.has("agent_service_unacknowledged_deliveries")
    assert after.has("agent_service_event_loop_lag_seconds")

    # The web: four submits, four streams, every event the clients read; no stream left open.
    def web_caught_up() -> bool:
        now = scrape(web_metrics)
        return (
            _delta(now, web_before, "agent_service_sse_events_delivered_total") == delivered
            and now.value("agent_service_sse_open_streams") == 0
        )

    wait_for(web_caught_up, timeout=10, message=lambda: scrape(web_metrics).text)
    web_after = scrape(web_metrics)
    submits = {"route": SUBMIT_ROUTE, "method": "POST", "status": "202"}
    streams = {"route": EVENTS_ROUTE, "method": "GET", "status": "200"}
    assert _delta(web_after, web_before, "agent_service_http_requests_total", **submits) == 4
    assert _delta(web_after, web_before, "agent_service_http_requests_total", **streams) == 4
    assert (
        _delta(
            web_after,
            web_before,
            "agent_service_http_request_duration_seconds_count",
            route=SUBMIT_ROUTE,
            method="POST",
        )
        == 4
    )
    assert web_after.has("agent_service_stream_redis_connections")
    assert web_after.has("agent_service_hub_subscriptions")


@pytest.fixture
def prefork_worker_metrics(redis_server: EmbeddedRedis) -> Iterator[tuple[str, str]]:
    """A prefork worker whose children each run one task before they are replaced."""
    url = redis_db_url(redis_server.url, PREFORK_DB)
    port = free_port()
    worker = start_worker(
        url,
        pool="prefork",
        concurrency=2,
        env={
            "WORKER_METRICS_PORT": str(port),
            "CELERY_WORKER_MAX_TASKS_PER_CHILD": "1",
            "ECHO_WORD_DELAY": "0",
        },
    )
    try:
        yield url, f"http://127.0.0.1:{port}/metrics"
    finally:
        worker.stop()


def test_prefork_children_are_counted_when_they_are_replaced(
    prefork_worker_metrics: tuple[str, str],
) -> None:
    url, metrics_url = prefork_worker_metrics
    producer = Celery(broker=url, backend=url)
    try:
        results = [
            producer.send_task(
                INVOKE_AGENT_ASYNC,
                kwargs={"agent_id": "echo", "message": "one two three", "user_id": "ops"},
                queue="agent-tasks",
            )
            for _ in range(4)
        ]
        for result in results:
            assert result.get(timeout=60)["content"] == "one two three"
    finally:
        producer.close()

    metrics = scrape(metrics_url)
    task = {"task": INVOKE_AGENT_ASYNC}
    assert metrics.value("agent_service_tasks_total", {**task, "outcome": "completed"}) == 4
    assert metrics.value("agent_service_tokens_streamed_total", task) == 12


@pytest.fixture(scope="module")
def production_web(redis_server: EmbeddedRedis) -> Iterator[WebServer]:
    web = start_web(
        redis_db_url(redis_server.url, IDLE_DB),
        env={
            "ENVIRONMENT": "production",
            "TOKEN_SECRET": "s" * 48,
            "METRICS_TOKEN": "scrape-secret",
            "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8",
            "MAX_TOKEN_MINTS_PER_MINUTE": "1",
        },
    )
    try:
        yield web
    finally:
        web.stop()


def test_metrics_need_the_token_in_production(production_web: WebServer) -> None:
    client = production_web.client

    refused = client.get("/metrics")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer guess"})
    allowed = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})

    assert refused.status_code == 403
    assert "METRICS_TOKEN" in refused.json()["detail"]
    assert wrong.status_code == 403
    assert allowed.status_code == 200
    assert "agent_service_http_requests_total" in allowed.text


@pytest.mark.parametrize(
    "forwarded_for", ["10.0.0.5", "203.0.113.9, 10.0.0.5", "10.0.0.5, 10.0.0.6"]
)
def test_a_forwarded_address_does_not_open_the_metrics(
    production_web: WebServer, forwarded_for: str
) -> None:
    """uvicorn takes the client's address from X-Forwarded-For when the peer is 127.0.0.1 (its
    default): anyone behind a local proxy that passes the header on, or on the machine, could
    name an allowed network."""
    response = production_web.client.get("/metrics", headers={"X-Forwarded-For": forwarded_for})

    assert response.status_code == 403
    assert "METRICS_TOKEN" in response.json()["detail"]


def test_a_direct_scrape_from_an_allowed_network_needs_no_token(
    redis_server: EmbeddedRedis,
) -> None:
    web = start_web(
        redis_db_url(redis_server.url, IDLE_DB),
        env={
            "ENVIRONMENT": "production",
            "TOKEN_SECRET": "s" * 48,
            "METRICS_ALLOWED_NETWORKS": "127.0.0.0/8",
        },
    )
    try:
        direct = web.client.get("/metrics")
        forwarded = web.client.get("/metrics", headers={"X-Forwarded-For": "127.0.0.2"})
    finally:
        web.stop()

    assert direct.status_code == 200
    assert forwarded.status_code == 403


def test_refusals_are_counted_by_the_cap_that_refused(production_web: WebServer) -> None:
    client = production_web.client
    scrape_headers = {"Authorization": "Bearer scrape-secret"}
    before = scrape(f"{production_web.base_url}/metrics", headers=scrape_headers)

    minted = client.post("/api/v1/auth/token", headers=headers_for("alice"))
    refused = client.post("/api/v1/auth/token", headers=headers_for("alice"))

    assert (minted.status_code, refused.status_code) == (200, 429)
    after = scrape(f"{production_web.base_url}/metrics", headers=scrape_headers)
    assert _delta(after, before, "agent_service_http_refused_by_cap_total", cap="token_mints") == 1
    assert (
        _delta(
            after,
            before,
            "agent_service_http_requests_total",
            route="/api/v1/auth/token",
            method="POST",
            status="429",
        )
        == 1
    )


@pytest.mark.parametrize(
    ("access", "token_needed"),
    [
        ({"METRICS_TOKEN": "scrape-secret", "METRICS_ALLOWED_NETWORKS": "10.0.0.0/8"}, True),
        ({"METRICS_ALLOWED_NETWORKS": "127.0.0.0/8"}, False),
    ],
    ids=["token", "network"],
)
def test_a_production_workers_port_follows_the_webs_scrape_rule(
    redis_server: EmbeddedRedis, access: dict[str, str], token_needed: bool
) -> None:
    port = free_port()
    worker = start_worker(
        redis_db_url(redis_server.url, PRODUCTION_WORKER_DB),
        concurrency=2,
        env={"ENVIRONMENT": "production", "WORKER_METRICS_PORT": str(port), **access},
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        bare = httpx.get(url, timeout=10)
        wrong = httpx.get(url, headers={"Authorization": "Bearer guess"}, timeout=10)
        bearer = httpx.get(url, headers={"Authorization": "Bearer scrape-secret"}, timeout=10)
    finally:
        worker.stop()

    if token_needed:
        assert bare.status_code == wrong.status_code == 403
        assert "METRICS_TOKEN" in bare.json()["detail"]
        assert "agent_service" not in bare.text
        answered = bearer
    else:
        assert bare.status_code == 200
        answered = bare
    assert answered.status_code == 200
    assert "agent_service_tasks_total" in answered.text
