"""The input types that refuse what the service could not store, encode or stream.

Each refused value is one the service really met: it passed Python's JSON parser, then failed
in orjson, Redis or the worker. Each accepted value at a limit is checked to encode with orjson
as the worker nests it (``result.metadata.request``, inside polling's ``result``).
"""

import json
from typing import Any

import orjson
import pytest
from pydantic import BaseModel, ValidationError

from app.storable import MAX_INT, MAX_JSON_DEPTH, MIN_INT, JsonObject, StorableStr, printable


class Body(BaseModel):
    text: StorableStr = "ok"
    metadata: JsonObject | None = None


def _nested(levels: int) -> dict[str, Any]:
    """An object ``levels`` deep, itself included."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


def _error(body: str) -> dict[str, Any]:
    with pytest.raises(ValidationError) as caught:
        Body.model_validate(json.loads(body))
    (error,) = caught.value.errors()
    return dict(error)


@pytest.mark.parametrize(
    ("body", "field", "kind"),
    [
        ('{"text": "hi \\ud800 there"}', "text", "string_unicode"),
        ('{"text": "\\udfff"}', "text", "string_unicode"),
        ('{"metadata": {"k": "\\ud800"}}', "metadata", "string_unicode"),
        ('{"metadata": {"\\ud800": 1}}', "metadata", "string_unicode"),
        ('{"metadata": {"a": [{"\\udc00x": 1}]}}', "metadata", "string_unicode"),
        ('{"metadata": {"n": 18446744073709551616}}', "metadata", "number_out_of_range"),
        ('{"metadata": {"n": -1451761380546951941980160}}', "metadata", "number_out_of_range"),
        ('{"metadata": {"n": -9223372036854775809}}', "metadata", "number_out_of_range"),
        ('{"metadata": {"n": 1e20}}', "metadata", "number_out_of_range"),
        ('{"metadata": {"n": -1e19}}', "metadata", "number_out_of_range"),
        ('{"metadata": {"n": NaN}}', "metadata", "finite_number"),
        ('{"metadata": {"n": [Infinity]}}', "metadata", "finite_number"),
        ('{"metadata": {"n": -Infinity}}', "metadata", "finite_number"),
    ],
)
def test_value_that_cannot_be_encoded_is_refused_naming_the_field(
    body: str, field: str, kind: str
) -> None:
    error = _error(body)

    assert error["loc"] == (field,)
    assert error["type"] == kind


def test_metadata_deeper_than_the_limit_is_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        Body(metadata=_nested(MAX_JSON_DEPTH + 1))

    (error,) = caught.value.errors()
    assert error["type"] == "json_too_deep"
    assert f"{MAX_JSON_DEPTH} levels" in error["msg"]


@pytest.mark.parametrize("levels", [253, 900, 100_000])
def test_hostile_depth_is_refused_without_recursion(levels: int) -> None:
    with pytest.raises(ValidationError, match="deeper than"):
        Body(metadata=_nested(levels))


def test_arrays_count_towards_the_depth() -> None:
    value: Any = []
    for _ in range(MAX_JSON_DEPTH - 1):
        value = [value]

    with pytest.raises(ValidationError, match="deeper than"):
        Body(metadata={"a": value})
    Body(metadata={"a": value[0]})


def test_metadata_at_every_limit_is_accepted_and_encodes_as_the_worker_nests_it() -> None:
    metadata = {
        "deep": _nested(MAX_JSON_DEPTH - 1),
        "ints": [MIN_INT, MAX_INT, 0, -1],
        "floats": [1.5e19, -9.2e18, 1e-300, -0.0],
        "text": "😀 é \u2028 \x01",
        "😀": None,
        "flags": [True, False],
    }

    accepted = Body(metadata=metadata).metadata
    # The worker's result, inside Celery's meta, inside polling's answer: four levels more.
    polled = {"meta": {"result": {"content": "", "metadata": {"request": accepted}}}}

    assert accepted == metadata
    assert orjson.loads(orjson.dumps(polled))["meta"]["result"]["metadata"]["request"] == metadata


def test_valid_surrogate_pair_is_accepted() -> None:
    body = Body.model_validate(
        json.loads('{"text": "\\ud83d\\ude00", "metadata": {"k": "\\ud83d\\ude00"}}')
    )

    assert body.text == "😀"


def test_printable_escapes_lone_surrogates_and_cuts_long_text() -> None:
    assert printable("a\ud800b") == "a\\ud800b"
    assert printable("x" * 500, limit=10) == "x" * 9 + "…"
    assert printable("fine") == "fine"
