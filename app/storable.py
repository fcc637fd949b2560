"""Input the whole service can store, encode and stream, as pydantic types the schemas reuse.

Python's JSON parser accepts more than the rest of the service can carry: a lone surrogate
(``"\\ud800"``, valid JSON, not valid Unicode: Redis, orjson, PostgreSQL and every client refuse
it), integers of any size (orjson, which encodes events and results, stops at 64 bits), ``NaN``
and ``Infinity`` (not JSON at all), and nesting as deep as the parser's stack (orjson refuses past
255 levels; the worker nests the caller's metadata three levels deeper in the result, and polling
a fourth). Each such value is refused here, as a 422 naming the field, before anything is
written: what is accepted can then be queued, stored, encoded by the worker and streamed to every
client.

- ``StorableStr``: a string that is valid Unicode (no lone surrogate);
- ``JsonObject``: a JSON object of such strings (keys too), numbers within the 64-bit integer
  range [-2**63, 2**64 - 1] (finite; integers and fractions alike, as JSON Schema does not tell
  ``1e20`` from ``100000000000000000000``), nested at most ``MAX_JSON_DEPTH`` levels (the object
  itself is level 1).

The walk is iterative, so a hostile depth costs a loop, not the interpreter's stack. The OpenAPI
document describes the same values (``JSON_VALUE_SCHEMA``), all but the depth, which JSON Schema
cannot say.
"""

import math
from typing import Annotated, Any

from pydantic import AfterValidator, StrictStr, WithJsonSchema
from pydantic_core import PydanticCustomError

#: Levels of objects and arrays a JSON object may nest, itself included.
MAX_JSON_DEPTH = 32
#: orjson encodes integers in [-2**63, 2**64 - 1] (int64 and uint64).
MIN_INT = -(2**63)
MAX_INT = 2**64 - 1
#: Characters of a key path shown in an error message.
MAX_PATH_SHOWN = 120


def is_valid_unicode(text: str) -> bool:
    """False when ``text`` holds a lone surrogate, which no UTF-8 encoder accepts."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str, *, limit: int = MAX_PATH_SHOWN) -> str:
    """``text`` safe to put in a JSON answer or a log line: lone surrogates escaped, cut to
    ``limit`` characters."""
    if not is_valid_unicode(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _path(path: tuple[str | int, ...]) -> str:
    shown = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return printable(shown.lstrip(".") or "the top level")


def _check_text(text: str) -> str:
    if not is_valid_unicode(text):
        raise PydanticCustomError(
            "string_unicode",
            "the string contains a lone surrogate (an escape such as \\ud800 without its pair), "
            "which is not valid Unicode",
        )
    return text


def check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    """``value`` if every part of it can be stored, encoded and streamed; else a 422 naming the
    first part (depth-first) that cannot."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise PydanticCustomError(
                    "json_too_deep",
                    "objects and arrays nest deeper than {max_depth} levels (at {path})",
                    {"max_depth": MAX_JSON_DEPTH, "path": _path(path)},
                )
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str) or not is_valid_unicode(key):
                        raise PydanticCustomError(
                            "string_unicode",
                            "a key at {path} contains a lone surrogate, which is not valid Unicode",
                            {"path": _path(path)},
                        )
                    stack.append((child, depth + 1, (*path, key)))
            else:
                stack.extend((child, depth + 1, (*path, i)) for i, child in enumerate(item))
        elif isinstance(item, str):
            if not is_valid_unicode(item):
                raise PydanticCustomError(
                    "string_unicode",
                    "the string at {path} contains a lone surrogate, which is not valid Unicode",
                    {"path": _path(path)},
                )
        elif item is None or isinstance(item, bool):
            continue
        elif isinstance(item, float) and not math.isfinite(item):
            raise PydanticCustomError(
                "finite_number",
                "the number at {path} is NaN or infinite, which JSON cannot carry",
                {"path": _path(path)},
            )
        elif isinstance(item, int | float):
            if not MIN_INT <= item <= MAX_INT:
                raise PydanticCustomError(
                    "number_out_of_range",
                    "the number at {path} is outside the 64-bit range [-2**63, 2**64 - 1]",
                    {"path": _path(path)},
                )
        else:
            raise PydanticCustomError(
                "json_type", "the value at {path} is not JSON", {"path": _path(path)}
            )
    return value


#: Valid Unicode: no surrogate but in a pair (ECMAScript reads strings as UTF-16 code units,
#: Python as code points where a pair is one character: the pattern holds for both).
UNICODE_PATTERN = r"^(?:[^\ud800-\udfff]|[\ud800-\udbff][\udc00-\udfff])*$"
JSON_VALUE_NAME = "JsonValue"
_JSON_VALUE_REF = {"$ref": f"#/components/schemas/{JSON_VALUE_NAME}"}
_JSON_OBJECT: dict[str, Any] = {
    "type": "object",
    "propertyNames": {"pattern": UNICODE_PATTERN},
    "additionalProperties": _JSON_VALUE_REF,
}
#: The OpenAPI component every JsonObject's values refer to.
JSON_VALUE_SCHEMA: dict[str, Any] = {
    "description": "A JSON value the service can store, encode and stream: strings and keys "
    "valid Unicode, numbers finite and within [-2**63, 2**64 - 1].",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number", "minimum": MIN_INT, "maximum": MAX_INT},
        {"type": "string", "pattern": UNICODE_PATTERN},
        {"type": "array", "items": _JSON_VALUE_REF},
        _JSON_OBJECT,
    ],
}

StorableStr = Annotated[StrictStr, AfterValidator(_check_text)]
JsonObject = Annotated[
    dict[str, Any],
    AfterValidator(check_json_object),
    WithJsonSchema(
        {
            **_JSON_OBJECT,
            "description": f"At most {MAX_JSON_DEPTH} levels of objects and arrays, itself "
            "included.",
        }
    ),
]
