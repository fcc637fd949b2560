"""Requests that name a credential or a request key twice are refused, not guessed at.

Starlette hands a route the first of two ``X-API-Key`` headers, and a proxy in front may act on
the last one: two parts of the path would then disagree on who is calling, or which submit a
retry repeats. A header that must appear once (RFC 9110 §5.3) and appears more often gets a 400
naming it, before any route runs, so nothing is changed.
"""

from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

#: Headers that carry one value (lower-case, as ASGI gives them, to the name a client knows):
#: credentials, the submit's retry key, a stream's resume cursor.
SINGLE_VALUED = {
    b"x-api-key": "X-API-Key",
    b"authorization": "Authorization",
    b"idempotency-key": "Idempotency-Key",
    b"last-event-id": "Last-Event-ID",
}


def repeated_header(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The name of the first single-valued header sent more than once, if any."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in SINGLE_VALUED:
            if name in seen:
                return SINGLE_VALUED[name]
            seen.add(name)
    return None


async def refuse_repeated(name: str, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        {"detail": f"the {name} header was sent more than once; send it once"}, status_code=400
    )
    await response(scope, receive, send)
