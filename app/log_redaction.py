"""Keeps stream tokens out of log lines.

Uvicorn's access log prints the request path with its query string, which for a stream URL holds
``token=``: a credential for that stream. This filter rewrites the logged path before any handler
sees it.
"""

import logging
import re

_TOKEN = re.compile(r"(?<=[?&])token=[^&\s]*")
REDACTED = "token=[redacted]"


def redact_tokens(text: str) -> str:
    return _TOKEN.sub(REDACTED, text)


class TokenRedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                redact_tokens(arg) if isinstance(arg, str) else arg for arg in record.args
            )
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        return True


def install_token_redaction(*logger_names: str) -> None:
    """Attach the filter to each named logger once (idempotent across app factories)."""
    for name in logger_names:
        target = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactingFilter) for f in target.filters):
            target.addFilter(TokenRedactingFilter())
