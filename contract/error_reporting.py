"""What every process sends to Sentry, and what it never sends.

The web and the workers both report errors to ``SENTRY_DSN`` with these options: no personal
data (``send_default_pii=False``), no local variables of the failing frames (they hold users'
messages, answers, keys), no request bodies, and ``scrub_event`` on every event and breadcrumb
before it leaves: query strings (a stream's ``?token=``), cookies and the credential headers
(``X-API-Key``, ``Authorization``) are removed. What is left is the error's type, its message,
its stack (code only), tags (task id, task name, agent id) and the route.
"""

from collections.abc import Mapping
from typing import Any

#: Request headers that are never sent (compared in lower case).
SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "proxy-authorization"})


def _scrub_request(request: dict[str, Any]) -> None:
    for key in ("query_string", "data", "cookies", "env"):
        request.pop(key, None)
    url = request.get("url")
    if isinstance(url, str) and "?" in url:
        request["url"] = url.split("?", 1)[0]
    headers = request.get("headers")
    if isinstance(headers, Mapping):
        request["headers"] = {
            name: value for name, value in headers.items() if name.lower() not in SECRET_HEADERS
        }


def scrub_event(event: dict[str, Any], _hint: object = None) -> dict[str, Any]:
    """``event`` without what must never leave the process (see the module docstring)."""
    request = event.get("request")
    if isinstance(request, dict):
        _scrub_request(request)
    breadcrumbs = event.get("breadcrumbs")
    values = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else None
    for crumb in values if isinstance(values, list) else []:
        if isinstance(crumb, dict):
            scrub_breadcrumb(crumb)
    return event


def scrub_breadcrumb(crumb: dict[str, Any], _hint: object = None) -> dict[str, Any]:
    """A breadcrumb (an HTTP call, a log line) without its URL's query and its data."""
    data = crumb.get("data")
    if isinstance(data, dict):
        url = data.get("url")
        crumb["data"] = {"url": url.split("?", 1)[0]} if isinstance(url, str) else {}
    return crumb


def sentry_options(*, dsn: str, environment: str) -> dict[str, Any]:
    """The keyword arguments of ``sentry_sdk.init`` both sides share."""
    return {
        "dsn": dsn,
        "environment": environment,
        "send_default_pii": False,
        "include_local_variables": False,
        "max_request_body_size": "never",
        "before_send": scrub_event,
        "before_breadcrumb": scrub_breadcrumb,
        # Only errors: no performance traces, no profiles.
        "traces_sample_rate": None,
    }
