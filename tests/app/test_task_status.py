"""``status_from_meta``: Celery's backend entry as the API's task status."""

from typing import Any

import orjson
import pytest

from app.schemas import TaskError, TaskStatus
from app.task_status import status_from_meta
from contract.celery_meta import TaskMeta, decode_meta

TASK_ID = "5f0c7a7e-7a0b-4b8e-9d7e-1d2c3b4a5f60"


def meta(status: str, result: Any = None) -> TaskMeta:
    """A backend entry in Celery's JSON layout, as the web reads it."""
    raw = orjson.dumps(
        {
            "status": status,
            "result": result,
            "traceback": None,
            "children": [],
            "date_done": None,
            "task_id": TASK_ID,
        }
    )
    decoded = decode_meta(raw)
    assert decoded is not None
    return decoded


def test_status_is_queued_when_nothing_is_stored() -> None:
    assert status_from_meta(TASK_ID, None) == TaskStatus(
        task_id=TASK_ID, state="PENDING", status="queued", progress=0
    )


@pytest.mark.parametrize("state", ["PENDING", "RECEIVED"])
def test_status_is_queued_when_state_is_waiting(state: str) -> None:
    assert status_from_meta(TASK_ID, meta(state)) == TaskStatus(
        task_id=TASK_ID, state=state, status="queued", progress=0, stage="queued"
    )


def test_status_is_running_at_zero_when_started() -> None:
    started = meta("STARTED", {"pid": 4242, "hostname": "celery@worker-1"})

    assert status_from_meta(TASK_ID, started) == TaskStatus(
        task_id=TASK_ID, state="STARTED", status="running", progress=0, stage="running"
    )


def test_status_carries_progress_and_stage_when_state_is_progress() -> None:
    progress = meta("PROGRESS", {"progress": 42, "stage": "generating"})

    assert status_from_meta(TASK_ID, progress) == TaskStatus(
        task_id=TASK_ID, state="PROGRESS", status="running", progress=42, stage="generating"
    )


@pytest.mark.parametrize(("raw", "shown"), [(150, 100), (-3, 0), ("42", 0), (None, 0)])
def test_status_clamps_progress_when_meta_is_out_of_range(raw: object, shown: int) -> None:
    progress = meta("PROGRESS", {"progress": raw, "stage": "starting"})

    result = status_from_meta(TASK_ID, progress)

    assert result.progress == shown
    assert result.stage == "starting"


def test_status_is_retrying_with_error_when_state_is_retry() -> None:
    retry = meta(
        "RETRY",
        {
            "exc_type": "LLMUnavailableError",
            "exc_message": ["LLM answered 503: overloaded"],
            "exc_module": "worker.errors",
        },
    )

    assert status_from_meta(TASK_ID, retry) == TaskStatus(
        task_id=TASK_ID,
        state="RETRY",
        status="retrying",
        progress=0,
        stage="retrying",
        error=TaskError(type="LLMUnavailableError", message="LLM answered 503: overloaded"),
    )


def test_status_is_completed_with_result_when_state_is_success() -> None:
    value = {
        "content": "one two three",
        "metadata": {"agent_id": "echo", "chunks": 3},
        "usage": {"total_tokens": 6},
    }

    assert status_from_meta(TASK_ID, meta("SUCCESS", value)) == TaskStatus(
        task_id=TASK_ID,
        state="SUCCESS",
        status="completed",
        progress=100,
        stage="completed",
        result=value,
    )


def test_status_wraps_result_as_content_when_success_value_is_not_an_object() -> None:
    result = status_from_meta(TASK_ID, meta("SUCCESS", "plain text"))

    assert result.result == {"content": "plain text"}
    assert result.progress == 100


def test_status_is_failed_with_error_when_state_is_failure() -> None:
    failure = meta(
        "FAILURE",
        {
            "exc_type": "LLMRequestRejectedError",
            "exc_message": ["LLM rejected the request with 400:", "model not found"],
            "exc_module": "worker.errors",
        },
    )

    assert status_from_meta(TASK_ID, failure) == TaskStatus(
        task_id=TASK_ID,
        state="FAILURE",
        status="failed",
        progress=0,
        stage="failed",
        error=TaskError(
            type="LLMRequestRejectedError",
            message="LLM rejected the request with 400: model not found",
        ),
    )


def test_status_keeps_string_message_when_exc_message_is_not_a_list() -> None:
    failure = meta("FAILURE", {"exc_type": "TimeLimitExceeded", "exc_message": "600"})

    assert status_from_meta(TASK_ID, failure).error == TaskError(
        type="TimeLimitExceeded", message="600"
    )


def test_status_uses_generic_error_when_failure_value_is_not_an_object() -> None:
    assert status_from_meta(TASK_ID, meta("FAILURE", "worker lost")).error == TaskError(
        type="Error", message="worker lost"
    )


def test_status_is_cancelled_when_state_is_revoked() -> None:
    revoked = meta(
        "REVOKED",
        {"exc_type": "TaskRevokedError", "exc_message": ["revoked"], "exc_module": "celery"},
    )

    assert status_from_meta(TASK_ID, revoked) == TaskStatus(
        task_id=TASK_ID, state="REVOKED", status="cancelled", progress=0, stage="cancelled"
    )


def test_status_is_running_when_state_is_unknown() -> None:
    assert status_from_meta(TASK_ID, meta("CUSTOM")) == TaskStatus(
        task_id=TASK_ID, state="CUSTOM", status="running", progress=0, stage="running"
    )


def test_status_carries_an_agents_stage_detail() -> None:
    stage = meta("PROGRESS", {"progress": 40, "stage": "searching", "detail": "three sources"})

    status = status_from_meta(TASK_ID, stage)

    assert (status.progress, status.stage, status.detail) == (40, "searching", "three sources")
