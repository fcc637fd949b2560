"""The OpenAPI document (``/openapi.json``, ``/docs``), as the API really answers.

Routes declare their error answers with ``app.errors.error_responses``. FastAPI adds a 422 of its
own to every route with a parameter, even one that nothing can make invalid (a path's ``str``,
an optional header): that one is removed. FastAPI also files a declared error body under the
route's media type, ``text/event-stream`` for the event stream, whose refusals are JSON like
every other: they are filed under ``application/json``, and the stream's own answer describes
each event (``itemSchema``), not a string. An optional header or query parameter is declared as
a string that may be left out, not as "string or null": a header cannot be null, and a fuzzer
sends the text ``null`` for it. The ``JsonValue`` component that metadata's values refer to is
added (``app.storable``). So a client generator or a schema-driven fuzzer reads only
statuses a route can answer, each with the body it really has, for requests it can really send.
The answers of the HTTP edge (431, 408, a 503 past the connection limit) are not a route's: the
description says them.
"""

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.storable import JSON_VALUE_NAME, JSON_VALUE_SCHEMA

#: FastAPI's own validation error schema, which our 422 answers do not use.
_FASTAPI_422 = "#/components/schemas/HTTPValidationError"

EDGE_ANSWERS = (
    "Any request may also be refused by the HTTP edge before it reaches a route: 431 for a "
    "request head over the limit, 408 (or a closed connection) for a head or body that does not "
    "arrive in time, 503 when the process holds its maximum of connections. Error bodies are "
    'JSON: `{"detail": "a sentence"}`, or `{"detail": [{"loc", "msg", "type"}]}` naming the '
    "fields."
)


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without the ``null`` FastAPI offers in place of an absent parameter."""
    options = schema.get("anyOf")
    if not isinstance(options, list):
        return schema
    kept = [option for option in options if option != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(options):
        return schema
    rest = {key: value for key, value in schema.items() if key != "anyOf"}
    return {**kept[0], **rest}


def _correct(document: dict[str, Any]) -> None:
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if not parameter.get("required") and "schema" in parameter:
                    parameter["schema"] = _not_null(parameter["schema"])
            responses = operation.get("responses", {})
            for status, answer in list(responses.items()):
                content = answer.get("content", {})
                if status[0] == "2":
                    stream = content.get("text/event-stream", {})
                    if "itemSchema" in stream:
                        stream.pop("schema", None)
                    continue
                schema = next((media.get("schema") for media in content.values()), None)
                if status == "422" and (schema or {}).get("$ref") == _FASTAPI_422:
                    del responses[status]
                elif schema is not None:
                    answer["content"] = {"application/json": {"schema": schema}}
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas[JSON_VALUE_NAME] = JSON_VALUE_SCHEMA


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
