"""The worker's metrics port: prometheus_client's WSGI app behind the production scrape rule.

prometheus_client's ``start_http_server`` serves a registry to whoever connects and takes no
credentials; this is the same server (its ``ThreadingWSGIServer`` in a daemon thread, no request
log) with ``contract.metrics_access``'s rule in front, so that in production a worker's port asks
for ``METRICS_TOKEN`` (or an address in ``METRICS_ALLOWED_NETWORKS``) as the web's ``/metrics``
does. The peer address is the connection's: nothing in front of a worker's port rewrites it.
"""

import json
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import CollectorRegistry

from contract.metrics_access import scrape_refusal
from worker.settings import WorkerSettings

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    """No line on stderr per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def guarded(app: WSGIApp, settings: WorkerSettings) -> WSGIApp:
    """``app`` answering only the scrapes the production rule lets through (403 + JSON else)."""
    production = settings.environment == "production"
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    networks = settings.metrics_networks

    def guarded_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        reason = scrape_refusal(
            production=production,
            token=token,
            networks=networks,
            authorization=environ.get("HTTP_AUTHORIZATION", ""),
            direct_address=environ.get("REMOTE_ADDR"),
        )
        if reason is None:
            return app(environ, start_response)
        body = json.dumps({"detail": reason}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response("403 Forbidden", headers)
        return [body]

    return guarded_app


def serve_metrics(registry: CollectorRegistry, settings: WorkerSettings, port: int) -> WSGIServer:
    """Serve ``registry`` on ``WORKER_METRICS_ADDRESS``:``port`` from a daemon thread."""
    # As prometheus_client picks the family and address to bind; "" is every interface.
    family, _, _, _, sockaddr = socket.getaddrinfo(
        settings.worker_metrics_address or None,
        port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )[0]

    class Server(ThreadingWSGIServer):
        address_family = family

    app = guarded(make_wsgi_app(registry), settings)
    server = make_server(str(sockaddr[0]), port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-port", daemon=True).start()
    return server
