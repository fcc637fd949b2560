"""Requests generated from ``/openapi.json`` (schemathesis): no 500, and every answer is one the
document declares, with the declared body and content type.

Bounded and derandomized, so that a run is quick and the same every time. Each operation gets a
few valid and invalid requests (wrong types, missing fields, strings the schema refuses...). The
web process has a Redis database and a SQL database of its own and no worker: what the fuzzer
creates (sessions, queued tasks, tokens) touches no other test. `schemathesis run` against a
running service explores much further (README, "Development").
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from scripts.embedded_redis import EmbeddedRedis
from tests.support import redis_databases
from tests.support.databases import copy_sqlite
from teststack.stack import WebServer, headers_for, redis_db_url, start_web

#: A Redis database of this module's own.
FUZZ_DB = redis_databases.FUZZ
EXAMPLES_PER_OPERATION = 10


@pytest.fixture(scope="module")
def fuzzed_web(
    redis_server: EmbeddedRedis, sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebServer]:
    database = copy_sqlite(sqlite_template, tmp_path_factory.mktemp("fuzz") / "fuzz.db")
    web = start_web(redis_db_url(redis_server.url, FUZZ_DB), env={"DATABASE_URL": database})
    try:
        yield web
    finally:
        web.stop()


@pytest.fixture(scope="module")
def api_schema(fuzzed_web: WebServer) -> Any:
    return schemathesis.openapi.from_url(f"{fuzzed_web.base_url}/openapi.json")


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_generated_requests_get_a_declared_answer_never_a_500(
    api_schema: Any, fuzzed_web: WebServer, mode: GenerationMode
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12

    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def call(case: Any) -> None:
            case.call_and_validate(
                base_url=fuzzed_web.base_url,
                headers=headers_for("alice"),
                timeout=30,
                checks=CHECKS,
            )

        try:
            call()
        except Unsatisfiable:
            # Nothing of this operation can be made invalid (no parameter, no body).
            assert mode is GenerationMode.NEGATIVE, operation.label
