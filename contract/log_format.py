"""The JSON log line every process writes with ``LOG_FORMAT=json``: one object per line.

``{"time", "level", "logger", "message"}``, then, where the line is about a task, its
``task_id``, ``agent_id`` and ``user_id`` and the other fields of the event (the worker's
structured lines pass their fields as ``extra={EVENT_FIELDS: {...}}``), and ``exc_info`` for an
exception's traceback. Nothing else a record carries is copied: a library's ``extra`` (Celery's
carries a task's arguments) never reaches the line, and no field ever holds a user's message,
an answer or a token (the callers log ids and sizes only; the web's access log is redacted before
it is formatted).
"""

import logging
from datetime import UTC, datetime
from typing import Any

from pythonjsonlogger.json import JsonFormatter

#: The ``extra`` key under which a structured line passes its fields.
EVENT_FIELDS = "agent_service_fields"
#: The fields a line keeps from the record, renamed.
_RECORD_FIELDS = {"asctime": "time", "levelname": "level", "name": "logger"}


class JsonLineFormatter(JsonFormatter):
    def __init__(self) -> None:
        super().__init__(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields=_RECORD_FIELDS,
            json_default=str,
            json_ensure_ascii=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")

    def add_fields(
        self, log_record: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_record, record, message_dict)
        kept = {"time", "level", "logger", "message", "exc_info", "stack_info"}
        for key in list(log_record):
            if key not in kept:
                del log_record[key]
        fields = getattr(record, EVENT_FIELDS, None)
        if isinstance(fields, dict):
            for key, value in fields.items():
                log_record.setdefault(key, value)


def format_as_json_lines(*loggers: logging.Logger) -> None:
    """Format every handler of ``loggers`` as JSON lines."""
    formatter = JsonLineFormatter()
    for logger in loggers:
        for handler in logger.handlers:
            handler.setFormatter(formatter)
