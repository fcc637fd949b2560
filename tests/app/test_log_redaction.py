"""Tokens are redacted from log lines, however the request spelled the parameter."""

import logging

import pytest

from app.log_redaction import REDACTED, TokenRedactingFilter, redact_tokens

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
PATH = "/api/v1/agents/tasks/t1/events"


@pytest.mark.parametrize(
    "query",
    [
        f"token={JWT}",
        f"%74oken={JWT}",
        f"%54OKEN={JWT}",
        f"tok%65n={JWT}",
        f"last_event_id=1-0&token={JWT}",
        f"token={JWT}&token={JWT}",
        f"access_token={JWT}",
        f"anything={JWT}",
        "token=%65yJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
        "token=not-even-a-jwt",
    ],
)
def test_token_in_query_is_redacted_whatever_the_spelling(query: str) -> None:
    line = redact_tokens(f'127.0.0.1:5000 - "GET {PATH}?{query} HTTP/1.1" 200')

    assert "eyJ" not in line
    assert "c2lnbmF0dXJl" not in line
    assert "not-even-a-jwt" not in line
    assert REDACTED in line
    assert line.endswith('HTTP/1.1" 200')


def test_other_parameters_are_kept() -> None:
    line = redact_tokens(f"{PATH}?last_event_id=1-0&token={JWT}&x=1")

    assert line == f"{PATH}?last_event_id=1-0&token={REDACTED}&x=1"


def test_jwt_outside_a_query_is_redacted() -> None:
    assert redact_tokens(f"/api/v1/agents/tasks/{JWT}/events") == (
        f"/api/v1/agents/tasks/{REDACTED}/events"
    )


def test_filter_rewrites_the_arguments_uvicorn_logs() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:1", "GET", f"{PATH}?%74oken={JWT}", "1.1", 200),
        None,
    )

    TokenRedactingFilter().filter(record)

    assert JWT not in record.getMessage()
    assert f"%74oken={REDACTED}" in record.getMessage()
