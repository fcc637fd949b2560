"""A platform's ``rediss://`` URL as it hands it out (no query to edit), and the certificate
policy given by the settings instead: ``REDIS_SSL_CA_CERTS`` (the platform's CA) or
``REDIS_SSL_CERT_REQS=none``. Every Redis client of every process follows it: the broker and
the result backend (also named by ``CELERY_BROKER_URL`` and ``CELERY_RESULT_BACKEND``, which
Celery reads before its configuration), the stream, the cancel channel, the lease and beat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import _llm_worker_env
from teststack.llm.control import LLMControl
from teststack.llm.process import LLMServerProcess
from teststack.polling import submit
from teststack.processes import wait_for
from teststack.redis_server import RedisServer
from teststack.sse import content_of, events_path, read_stream
from teststack.stack import headers_for, start_beat, start_web, start_worker
from teststack.tls import generate_tls

ALICE = headers_for("alice")


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[RedisServer]:
    tls = generate_tls(tmp_path / "tls")
    with RedisServer(tmp_path / "redis", persistence="none", tls=tls) as server:
        yield server


@pytest.mark.parametrize("policy", ["ca-bundle", "none"])
def test_the_tls_settings_apply_to_every_client_of_a_platform_url(
    policy: str,
    tls_redis: RedisServer,
    llm_server: LLMServerProcess,
    llm: LLMControl,
    tmp_path: Path,
) -> None:
    url = tls_redis.url(ca_certs=False)
    assert "?" not in url  # the URL as the platform hands it out
    assert tls_redis.tls is not None
    if policy == "ca-bundle":
        settings = {"REDIS_SSL_CA_CERTS": str(tls_redis.tls.ca_cert)}
    else:
        settings = {"REDIS_SSL_CERT_REQS": "none"}
    done, slow = f"tls settings {policy}", f"tls settings {policy} cancelled"
    tokens = [f" t{i}" for i in range(6)]
    llm.script(done, tokens=tokens)
    llm.script(slow, tokens=[f" s{i}" for i in range(200)], delay=0.1)

    worker = start_worker(url, env={**_llm_worker_env(llm_server), **settings}, concurrency=4)
    beat = web = None
    try:
        web = start_web(url, env=settings)
        beat = start_beat(
            url,
            schedule_file=str(tmp_path / "beat-schedule"),
            env={**settings, "SCHEDULE_CLEANUP_TOKEN_BLACKLIST": "1"},
        )
        task_id = submit(web.client, "simple_llm_agent", done, stream=True)
        events = read_stream(web.client, events_path(task_id), headers=ALICE)
        # The cancel request crosses the control channel to the running task.
        cancelled_id = submit(web.client, "simple_llm_agent", slow, stream=True)
        wait_for(lambda: bool(llm.calls(slow)), timeout=30, message="the LLM was never called")
        cancel = web.client.post(f"/api/v1/agents/tasks/{cancelled_id}/cancel", headers=ALICE)
        cancelled = read_stream(web.client, events_path(cancelled_id), headers=ALICE)
        beat.wait_for_output("Sending due task cleanup-token-blacklist", timeout=30)
        ready = web.client.get("/readyz").json()
    finally:
        for process in (beat, web, worker):
            if process is not None:
                process.stop()

    assert content_of(events) == "".join(tokens)
    assert events[-1].event == "result"
    assert cancel.status_code == 202
    assert cancelled[-1].event == "cancelled"
    assert ready["redis"] == "ok"
