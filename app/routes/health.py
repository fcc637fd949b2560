"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: Redis and the
database answer, each within a couple of seconds, and the database's schema is the one this code
was written for: a web process started before the release's migration is not ready until it ran).
"""

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import ServicesDep
from app.schemas import Health
from app.services import Services
from storage.schema import SchemaStatus, schema_status

router = APIRouter(tags=["health"])

#: Seconds a dependency may take to answer a readiness probe.
PROBE_TIMEOUT = 2.0


@router.get("/healthz", response_model_exclude_none=True)
async def healthz() -> Health:
    return Health(status="ok")


async def _redis_ok(services: Services) -> bool:
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            await services.redis.ping()
            if services.backend is not services.redis:
                await services.backend.ping()
    except Exception:
        return False
    return True


async def _database_schema(services: Services) -> SchemaStatus | None:
    """The schema's status; None when the database does not answer."""
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            async with services.database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            return await schema_status(services.database.engine)
    except Exception:
        return None


@router.get(
    "/readyz",
    response_model=Health,
    response_model_exclude_none=True,
    responses={
        503: {
            "model": Health,
            "description": "Redis or the database did not answer, or the database's schema is "
            "behind the code (detail says which revision to migrate to).",
        }
    },
)
async def readyz(services: ServicesDep) -> JSONResponse:
    redis_ok = await _redis_ok(services)
    schema = await _database_schema(services)
    schema_ok = schema is not None and schema.up_to_date
    body = Health(
        status="ok" if redis_ok and schema_ok else "unavailable",
        redis="ok" if redis_ok else "unreachable",
        database="ok" if schema is not None else "unreachable",
        database_schema=None if schema is None else "ok" if schema.up_to_date else "behind",
        detail=None if schema is None or schema.up_to_date else f"database {schema.describe()}",
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=200 if body.status == "ok" else 503
    )
