"""The four maintenance tasks in a real cleanup worker (solo pool, ``cleanup-tasks``), sent by
name as beat sends them, against seeded data; and two beats that send each job once per period."""

import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult
from sqlalchemy import update

from contract.keys import ARCHIVE_LOCK, REVOKED_TOKENS
from contract.tasks import CLEANUP_TASK_PREFIX
from scripts.embedded_redis import EmbeddedRedis
from storage.archive import ArchiveStore
from storage.models import AuditLogEntry, ConversationSession, utcnow
from tests.conftest import ServiceEnvironment
from tests.e2e.conftest import Stack
from tests.support import redis_databases
from tests.support.audit import audit_rows, run_sql
from teststack.processes import ManagedProcess, wait_for
from teststack.stack import headers_for, redis_db_url, start_beat, start_worker

CLEANUP = CLEANUP_TASK_PREFIX
BEAT_DB = redis_databases.BEAT


@pytest.fixture(scope="module")
def cleanup_worker(stack: Stack) -> Iterator[ManagedProcess]:
    worker = start_worker(stack.redis_url, queues="cleanup-tasks", pool="solo", concurrency=1)
    try:
        yield worker
    finally:
        worker.stop()


@pytest.fixture(scope="module")
def producer(stack: Stack) -> Iterator[Celery]:
    app = Celery(broker=stack.redis_url, backend=stack.redis_url)
    try:
        yield app
    finally:
        app.close()


def _run(producer: Celery, name: str, **kwargs: Any) -> AsyncResult[Any]:
    result = producer.send_task(CLEANUP + name, kwargs=kwargs, queue="cleanup-tasks")
    result.get(timeout=60, propagate=False)
    return result


def _summary(result: AsyncResult[Any]) -> dict[str, Any]:
    """What a maintenance task that succeeded returned."""
    assert result.state == "SUCCESS", result.result
    summary = result.result
    assert isinstance(summary, dict), summary
    return summary


def test_cleanup_expired_sessions_deletes_exactly_the_idle_ones(
    stack: Stack,
    cleanup_worker: ManagedProcess,
    producer: Celery,
    service_environment: ServiceEnvironment,
) -> None:
    client = stack.web.client
    ids = [
        client.post("/api/v1/sessions", headers=headers_for("alice")).json()["session_id"]
        for _ in range(4)
    ]
    idle, fresh = ids[:3], ids[3:]
    run_sql(
        service_environment.database_url,
        update(ConversationSession)
        .where(ConversationSession.id.in_(idle))
        .values(last_activity_at=utcnow() - timedelta(hours=30)),
    )

    summary = _summary(_run(producer, "cleanup_expired_sessions"))

    assert summary["deleted_sessions"] == 3
    for session_id in idle:
        gone = client.get(f"/api/v1/sessions/{session_id}", headers=headers_for("alice"))
        assert gone.status_code == 404
    for session_id in fresh:
        kept = client.get(f"/api/v1/sessions/{session_id}", headers=headers_for("alice"))
        assert kept.status_code == 200
    assert _summary(_run(producer, "cleanup_expired_sessions"))["deleted_sessions"] == 0


def _audit_row(resource_id: str, *, days_old: float) -> AuditLogEntry:
    return AuditLogEntry(
        occurred_at=utcnow() - timedelta(days=days_old),
        user_id="alice",
        action="task.submit",
        resource_type="task",
        resource_id=resource_id,
        outcome="success",
        details={},
    )


def test_archive_old_audit_logs_moves_exactly_the_old_rows(
    stack: Stack,
    cleanup_worker: ManagedProcess,
    producer: Celery,
    service_environment: ServiceEnvironment,
) -> None:
    marker = uuid.uuid4().hex
    old = [f"{marker}-old-{i}" for i in range(5)]
    recent = f"{marker}-recent"
    rows = [_audit_row(resource, days_old=91) for resource in old]
    rows.append(_audit_row(recent, days_old=89))
    run_sql(service_environment.database_url, rows)

    summary = _summary(_run(producer, "archive_old_audit_logs"))

    assert summary["archived_rows"] == 5
    assert summary["deleted_rows"] == 5
    url = service_environment.database_url
    assert all(audit_rows(url, resource_id=resource) == [] for resource in old)
    assert len(audit_rows(url, resource_id=recent)) == 1
    store = ArchiveStore(str(service_environment.archive_dir))
    archived = {record["resource_id"] for path in store.list() for record in store.read(path)}
    assert set(old) <= archived
    assert recent not in archived


def test_cleanup_token_blacklist_forgets_only_expired_tokens(
    stack: Stack, cleanup_worker: ManagedProcess, producer: Celery
) -> None:
    client = stack.web.client
    live = client.post("/api/v1/auth/token", headers=headers_for("alice")).json()
    client.post(
        "/api/v1/auth/revoke", json={"token": live["access_token"]}, headers=headers_for("alice")
    )
    store = redis.Redis.from_url(stack.redis_url)
    try:
        store.zadd(REVOKED_TOKENS, {"expired-a": time.time() - 600, "expired-b": 1})

        summary = _summary(_run(producer, "cleanup_token_blacklist"))

        assert summary["removed"] == 2
        assert store.zscore(REVOKED_TOKENS, live["jti"]) is not None
        assert store.zscore(REVOKED_TOKENS, "expired-a") is None
    finally:
        store.close()
    refused = client.get(
        "/api/v1/agents", headers={"Authorization": f"Bearer {live['access_token']}"}
    )
    assert refused.status_code == 401


def _aged(path: Path, *, hours: float, content: bytes = b"data") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    when = time.time() - hours * 3600
    os.utime(path, (when, when))
    return path


def test_cleanup_temp_files_deletes_old_files_under_the_root_only(
    cleanup_worker: ManagedProcess,
    producer: Celery,
    service_environment: ServiceEnvironment,
    tmp_path: Path,
) -> None:
    root = service_environment.temp_dir / uuid.uuid4().hex
    old = _aged(root / "job-1" / "old.bin", hours=30)
    fresh = _aged(root / "job-2" / "fresh.bin", hours=1)
    outside = _aged(tmp_path / "outside" / "keep.txt", hours=100)
    (root / "link-out").symlink_to(outside.parent, target_is_directory=True)

    summary = _summary(_run(producer, "cleanup_temp_files", temp_dir=root.name, max_age_hours=24))

    assert summary["deleted_files"] == 1
    assert summary["errors"] == 0
    assert not old.exists()
    assert fresh.exists()
    assert outside.exists()


@pytest.mark.parametrize("temp_dir", ["/", "../..", "/etc", "link-out"])
def test_cleanup_temp_files_refuses_a_directory_outside_the_root(
    cleanup_worker: ManagedProcess,
    producer: Celery,
    service_environment: ServiceEnvironment,
    tmp_path: Path,
    temp_dir: str,
) -> None:
    outside = _aged(tmp_path / "outside" / "keep.txt", hours=100)
    link = service_environment.temp_dir / "link-out"
    if not link.is_symlink():
        link.symlink_to(outside.parent, target_is_directory=True)

    result = _run(producer, "cleanup_temp_files", temp_dir=temp_dir, max_age_hours=1)

    assert result.state == "FAILURE"
    assert type(result.result).__name__ == "TempDirOutsideRootError"
    assert "only directories under TEMP_DIR may be cleaned" in str(result.result)
    assert outside.exists()


def test_two_beats_send_each_job_once_per_period(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    redis_url = redis_db_url(redis_server.url, BEAT_DB)
    period = 2.0
    env = {
        "SCHEDULE_CLEANUP_TOKEN_BLACKLIST": str(period),
        "SCHEDULE_CLEANUP_EXPIRED_SESSIONS": "",
        "SCHEDULE_ARCHIVE_OLD_AUDIT_LOGS": "",
        "SCHEDULE_CLEANUP_TEMP_FILES": "",
    }
    worker = start_worker(redis_url, queues="cleanup-tasks", pool="solo", concurrency=1)
    beats: list[ManagedProcess] = []
    try:
        beats = [
            start_beat(redis_url, schedule_file=str(tmp_path / f"beat-{i}"), env=env)
            for i in range(2)
        ]
        started = time.monotonic()

        def logs(process: ManagedProcess, text: str) -> int:
            return process.output(tail=10**7).count(text)

        wait_for(lambda: time.monotonic() - started > 4 * period, timeout=30)
        for beat in beats:  # stopped (not yet reaped: their logs are read below)
            beat.signal(signal.SIGTERM)
            assert beat.process is not None
            beat.process.wait(timeout=10)
        elapsed = time.monotonic() - started
        sent = sum(logs(beat, "Sending due task") for beat in beats)
        skipped = sum(logs(beat, "reason=sent_by_another_beat") for beat in beats)

        def succeeded() -> int:
            return sum(
                "task_succeeded" in line and "cleanup_token_blacklist" in line
                for line in worker.output(tail=10**7).splitlines()
            )

        wait_for(lambda: succeeded() >= sent, timeout=10)
        runs = succeeded()
    finally:
        for beat in beats:
            beat.stop()
        worker.stop()

    # One beat alone sends about elapsed / period times; two without the lock, twice that.
    assert 2 <= sent <= elapsed / period + 1
    assert skipped >= 2
    assert runs == sent


def test_archive_runs_one_at_a_time(
    stack: Stack,
    cleanup_worker: ManagedProcess,
    producer: Celery,
    service_environment: ServiceEnvironment,
) -> None:
    marker = f"{uuid.uuid4().hex}-waiting"
    run_sql(
        service_environment.database_url,
        [_audit_row(marker, days_old=91)],
    )
    store = redis.Redis.from_url(stack.redis_url)
    try:
        store.set(ARCHIVE_LOCK, "another run", ex=60)  # as a run in progress elsewhere holds it
        blocked = _run(producer, "archive_old_audit_logs")
        store.delete(ARCHIVE_LOCK)
        free = _run(producer, "archive_old_audit_logs")
    finally:
        store.close()

    assert _summary(blocked)["skipped"] == "another archive run is in progress"
    assert "archived_rows" not in _summary(blocked)
    assert _summary(free)["archived_rows"] == 1
    assert audit_rows(service_environment.database_url, resource_id=marker) == []
