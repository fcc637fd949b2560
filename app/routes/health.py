"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: Redis and the
database answer, each within a couple of seconds)."""

import anyio
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import ServicesDep
from app.schemas import Health
from app.services import Services

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


async def _database_ok(services: Services) -> bool:
    try:
        with anyio.fail_after(PROBE_TIMEOUT):
            async with services.database.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


@router.get(
    "/readyz",
    response_model=Health,
    responses={503: {"model": Health, "description": "Redis or the database did not answer."}},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    redis_ok = await _redis_ok(services)
    database_ok = await _database_ok(services)
    body = Health(
        status="ok" if redis_ok and database_ok else "unavailable",
        redis="ok" if redis_ok else "unreachable",
        database="ok" if database_ok else "unreachable",
    )
    return JSONResponse(body.model_dump(), status_code=200 if body.status == "ok" else 503)
