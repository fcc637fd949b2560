"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: Redis answers)."""

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.deps import ServicesDep
from app.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model_exclude_none=True)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health)
async def readyz(services: ServicesDep) -> JSONResponse:
    try:
        await services.redis.ping()
        if services.backend is not services.redis:
            await services.backend.ping()
    except Exception:
        body = Health(status="unavailable", redis="unreachable")
        return JSONResponse(body.model_dump(), status_code=503)
    return JSONResponse(Health(status="ok", redis="ok").model_dump())
