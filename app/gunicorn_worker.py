"""The web under gunicorn: uvicorn's worker class with the HTTP edge's protocol.

``gunicorn app.main:create_app()`` would drop what the Procfile's ``uvicorn`` line sets up: the
HTTP edge's head-size limit and read deadlines (``app.http_edge``), and with them the clean end
of open event streams when the server stops. This worker class keeps them:

    gunicorn 'app.main:create_app()' -k app.gunicorn_worker.AgentServiceWorker -w 4

Install gunicorn and uvicorn-worker beside the service (``pip install 'agent-service[gunicorn]'``).
"""

from typing import Any, ClassVar

from uvicorn_worker import UvicornWorker


class AgentServiceWorker(UvicornWorker):  # type: ignore[misc]
    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        "loop": "auto",
        "http": "app.http_edge:GuardedHttpToolsProtocol",
    }
