"""The OpenAPI document (``/openapi.json``, ``/docs``), as the API really answers.

Routes declare their error answers with ``app.errors.error_responses``. FastAPI adds a 422 of its
own to every route with a parameter, even one that nothing can make invalid (a path's ``str``,
an optional header): that one is removed. FastAPI also files a declared error body under the
route's media type, ``text/event-stream`` for the event stream, whose refusals are JSON like
every other: they are filed under ``application/json``. So a client generator or a
schema-driven fuzzer reads only statuses a route can answer, each with the body it really has.
The answers of the HTTP edge (431, 408, a 503 past the connection limit) are not a route's: the
description says them.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

#: FastAPI's own validation error schema, which our 422 answers do not use.
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"

EDGE_ANSWERS = (
    "Any request may also be refused by the HTTP edge before it reaches a route: 431 for a "
    "request head over the limit, 408 (or a closed connection) for a head or body that does not "
    "arrive in time, 503 when the process holds its maximum of connections. Error bodies are "
    'JSON: `{"detail": "a sentence"}`, or `{"detail": [{"loc", "msg", "type"}]}` naming the '
    "fields."
)


def _correct(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            responses = operation.get("responses", {})
            for status, answer in list(responses.items()):
                if status[0] not in "45":
                    continue
                content = answer.get("content", {})
                schema = next((media.get("schema") for media in content.values()), None)
                if status == "422" and (schema or {}).get("$ref") == _FASTAPI_422:
                    del responses[status]
                elif schema is not None:
                    answer["content"] = {"application/json": {"schema": schema}}
    schemas = document.get("components", {}).get("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)


def install_openapi(app: FastAPI) -> None:
    """Serve the document built once, on first request, as described above."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                description=f"{app.description}\n\n{EDGE_ANSWERS}",
                routes=app.routes,
            )
            _correct(document)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
