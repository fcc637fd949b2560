"""Keeps tokens out of log lines.

Uvicorn's access log prints the request path with its query string, which for a stream URL holds
``token=``: a credential for that stream. This filter rewrites the logged text before any handler
sees it. A query parameter is redacted when its name, once percent-decoded, is one that carries a
credential (``%74oken=`` is read as ``token=`` by the application, so it is logged as one), or
when its decoded value holds a JWT; a JWT anywhere else in the line (a path segment) is redacted
too. Over-redacting a line costs nothing; a token in a log is a credential for whoever reads it.
"""

import logging
import re
from urllib.parse import unquote_plus

REDACTED = "[redacted]"
#: Query parameter names (decoded, compared without case) whose value is a credential.
SECRET_PARAMETERS = frozenset({"token", "access_token", "api_key", "x-api-key"})
#: A query string in a log line: from a ``?`` to the next blank or quote.
_QUERY = re.compile(r"\?([^\s\"']*)")
#: A JWT: base64url of ``{"`` then two more dot-separated base64url segments.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def _redact_pair(pair: str) -> str:
    name, _, value = pair.partition("=")
    if unquote_plus(name).strip().lower() in SECRET_PARAMETERS or _JWT.search(unquote_plus(value)):
        return f"{name}={REDACTED}"
    return pair


def _redact_query(match: re.Match[str]) -> str:
    return "?" + "&".join(_redact_pair(pair) for pair in match[1].split("&"))


def redact_tokens(text: str) -> str:
    """``text`` with every credential in a query string, and every JWT, replaced."""
    if "?" in text:
        text = _QUERY.sub(_redact_query, text)
    return _JWT.sub(REDACTED, text)


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
