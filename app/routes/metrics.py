"""``GET /metrics``: the web process's counts in Prometheus's text format (``app.metrics``).

Open outside production. With ``ENVIRONMENT=production`` a scrape must present
``METRICS_TOKEN`` (``Authorization: Bearer <token>``, Prometheus's ``authorization`` setting) or
come from an address in ``METRICS_ALLOWED_NETWORKS``; with neither set, every scrape is refused
with a 403 that says which to set. Only a direct connection is judged by its address: a request
that carries a forwarding header (``X-Forwarded-For``, which uvicorn believes from 127.0.0.1)
needs the token. Behind a proxy, use the token.
"""

import hmac
import ipaddress

import anyio
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from app.metrics import WebMetrics
from app.settings import WebSettings

router = APIRouter(include_in_schema=False)


#: Headers by which a proxy (or a client posing as one) names another client address.
FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def _forwarded(request: Request) -> bool:
    return any(name in request.headers for name in FORWARDING_HEADERS)


def refusal(settings: WebSettings, request: Request) -> str | None:
    """Why this scrape is refused, or None."""
    if settings.environment != "production":
        return None
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    networks = settings.metrics_networks
    if not token and not networks:
        return "set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS to scrape /metrics in production"
    if token:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            return None
    # An address uvicorn took from X-Forwarded-For (it trusts the header from 127.0.0.1 by
    # default) is what the client said: only a direct connection is judged by its address.
    if networks and request.client is not None and not _forwarded(request):
        try:
            address = ipaddress.ip_address(request.client.host)
        except ValueError:
            address = None
        if address is not None and any(address in network for network in networks):
            return None
    return "not allowed to scrape /metrics: present METRICS_TOKEN as a bearer token"


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
