"""``GET /metrics``: the web process's counts in Prometheus's text format (``app.metrics``).

Who may scrape is ``contract.metrics_access``'s rule, which a worker's port shares: in
production, ``METRICS_TOKEN`` as a bearer token or an address in ``METRICS_ALLOWED_NETWORKS``;
a refusal is a 403 that says what to set. Only a direct connection is judged by its address:
a request that carries a forwarding header (``X-Forwarded-For``, which uvicorn believes from
127.0.0.1) needs the token. Behind a proxy, use the token.
"""

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.metrics import WebMetrics
from app.settings import WebSettings
from contract.metrics_access import scrape_refusal

router = APIRouter(include_in_schema=False)


#: Headers by which a proxy (or a client posing as one) names another client address.
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _forwarded(request: Request) -> bool:
    return any(name in request.headers for name in FORWARDING_HEADERS)


def refusal(settings: WebSettings, request: Request) -> str | None:
    """Why this scrape is refused, or None."""
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    # An address uvicorn took from X-Forwarded-For (it trusts the header from 127.0.0.1 by
    # default) is what the client said: only a direct connection is judged by its address.
    direct = None if request.client is None or _forwarded(request) else request.client.host
    return scrape_refusal(
        production=settings.environment == "production",
        token=token,
        networks=settings.metrics_networks,
        authorization=request.headers.get("authorization", ""),
        direct_address=direct,
    )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    settings: WebSettings = request.app.state.settings
    reason = refusal(settings, request)
    if reason is not None:
        return JSONResponse({"detail": reason}, status_code=403)
    web_metrics: WebMetrics = request.app.state.metrics
    # With several web processes the exposition reads every process's files: not on the loop.
    exposition = await anyio.to_thread.run_sync(web_metrics.exposition)
    return Response(exposition, media_type=CONTENT_TYPE_LATEST)
