"""Structured log lines: an event name followed by ``key=value`` pairs.

One line per event, greppable and parseable by any log pipeline, with the task id on every line
about a task. Never log a user's message or an LLM's answer: only their sizes.
"""

import logging
import threading
import time

from contract.tasks import AGENT_TASK_PREFIX

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"})


def _format_value(value: object) -> str:
    """The value as one token: quoted and escaped (newlines too) when it has to be."""
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.translate(_ESCAPES) + '"'
    return text


def log_event(logger: logging.Logger, level: int, event: str, **fields: object) -> None:
    """Log ``event key=value ...``; ``None`` values are left out."""
    if not logger.isEnabledFor(level):
        return
    pairs = [f"{k}={_format_value(v)}" for k, v in fields.items() if v is not None]
    logger.log(level, "%s", " ".join([event, *pairs]))


class AnswerRedactionFilter(logging.Filter):
    """Replaces the return value in Celery's "Task … succeeded" line of agent tasks with its size
    (installed on ``celery.app.trace`` when the worker starts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if (
            isinstance(args, dict)
            and "return_value" in args
            and str(args.get("name", "")).startswith(AGENT_TASK_PREFIX)
        ):
            size = len(str(args["return_value"]))
            record.args = {**args, "return_value": f"<answer not logged: {size} characters>"}
        return True


ANSWER_REDACTION = AnswerRedactionFilter()


def install_answer_redaction() -> None:
    logging.getLogger("celery.app.trace").addFilter(ANSWER_REDACTION)


#: Celery's loggers that write a line for every task received and every task that succeeded.
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def quiet_celery_task_lines() -> None:
    """Leave per-task lines to ours (one structured line per outcome): Celery's "received" and
    "succeeded" lines cost a formatted, locked write each for every task. Its warnings and
    errors (a retry, a failure) still show."""
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class ThrottledLog:
    """Logs an event at most once per ``interval`` seconds per key, with how many were left
    out since: a cause that fails every task (a database not migrated, a Redis outage) is
    said once a minute, not once per task."""

    def __init__(self, logger: logging.Logger, *, interval: float = 60.0) -> None:
        self._logger = logger
        self._interval = interval
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def log(self, level: int, event: str, *, key: str, **fields: object) -> None:
        now = time.monotonic()
        with self._lock:
            logged_at, left_out = self._last.get(key, (float("-inf"), 0))
            if now - logged_at < self._interval:
                self._last[key] = (logged_at, left_out + 1)
                return
            self._last[key] = (now, 0)
        log_event(self._logger, level, event, **fields, left_out=left_out or None)
