"""``LOG_FORMAT=json`` in the web process: uvicorn's lines and ours as JSON lines.

uvicorn configures its loggers (``uvicorn``, ``uvicorn.error``, ``uvicorn.access``) before it
calls ``create_app``, which then gives their handlers the JSON formatter of
``contract.log_format``; the service's own loggers (``agent_service.*``), which uvicorn leaves
without a handler, get one on stderr. The access log's tokens are redacted before any handler
formats the line (``app.log_redaction``). Text, uvicorn's own format, stays the default.
"""

import logging

from contract.log_format import JsonLineFormatter, format_as_json_lines

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
SERVICE_LOGGER = "agent_service"


def use_json_lines() -> None:
    format_as_json_lines(*(logging.getLogger(name) for name in UVICORN_LOGGERS))
    service = logging.getLogger(SERVICE_LOGGER)
    if not service.handlers and not logging.getLogger().handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JsonLineFormatter())
        service.addHandler(handler)
    format_as_json_lines(service, logging.getLogger())
