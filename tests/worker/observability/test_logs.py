"""``log_event``: one ``event key=value`` line per event."""

import logging

import pytest

from worker.observability.logs import log_event

LOGGER_NAME = "tests.worker.logs"


@pytest.fixture
def logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    caplog.set_level(logging.INFO, logger=LOGGER_NAME)
    return logging.getLogger(LOGGER_NAME)


def messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == LOGGER_NAME]


def test_log_event_writes_event_then_pairs_in_order(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log_event(logger, logging.INFO, "task_succeeded", task_id="abc-123", task="invoke", retries=0)

    assert messages(caplog) == ["task_succeeded task_id=abc-123 task=invoke retries=0"]


def test_log_event_logs_at_requested_level(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log_event(logger, logging.WARNING, "task_retrying", retries=2)

    (record,) = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert record.levelno == logging.WARNING


@pytest.mark.parametrize(
    ("value", "rendered"),
    [
        ("LLM answered 503", 'reason="LLM answered 503"'),
        ("tab\there", 'reason="tab\there"'),
        ('say "hi"', 'reason="say \\"hi\\""'),
        ("a=b", 'reason="a=b"'),
        ("", 'reason=""'),
        ('back\\slash "q"', 'reason="back\\\\slash \\"q\\""'),
        ("plain", "reason=plain"),
        (42, "reason=42"),
        (1.5, "reason=1.5"),
        (False, "reason=False"),
    ],
)
def test_log_event_quotes_value_when_it_has_spaces_quotes_or_equals(
    value: object, rendered: str, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log_event(logger, logging.INFO, "task_failed", reason=value)

    assert messages(caplog) == [f"task_failed {rendered}"]


def test_log_event_leaves_out_fields_when_value_is_none(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log_event(logger, logging.INFO, "task_succeeded", task_id="t1", agent_id=None, retries=1)

    assert messages(caplog) == ["task_succeeded task_id=t1 retries=1"]


def test_log_event_writes_nothing_when_level_is_disabled(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log_event(logger, logging.DEBUG, "noisy", detail="x")

    assert messages(caplog) == []


def test_log_event_stays_on_one_line_when_value_has_newline(
    logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    log_event(logger, logging.ERROR, "task_failed", reason="boom\ntask_succeeded task_id=forged")

    (message,) = messages(caplog)
    assert message.splitlines() == [message]
