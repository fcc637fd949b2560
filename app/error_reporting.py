"""Error reporting of the web process: a request that ends in a 500 is sent to Sentry when
``SENTRY_DSN`` is set (``create_app`` starts the client; nothing happens at import).

Only unhandled errors are reported: the refusals (4xx) and the 503s of an unreachable Redis or
database are answers, not bugs, and a Redis outage would otherwise send one event per request.
Error log lines are not events either (the Starlette integration reports the exception itself).
What an event may carry is ``contract.error_reporting``'s: never a message, an answer, a key or a
token.
"""

import sentry_sdk
from sentry_sdk.integrations.fastapi import FastApiIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.starlette import StarletteIntegration

from app.settings import WebSettings
from contract.error_reporting import sentry_options

#: The statuses of a handled error that are reported (an unhandled one is a 500 anyway).
REPORTED_STATUSES = {500}


def init_sentry(settings: WebSettings) -> bool:
    """Start the Sentry client if a DSN is configured; True when it is."""
    dsn = settings.sentry_dsn.get_secret_value() if settings.sentry_dsn else ""
    if not dsn:
        return False
    sentry_sdk.init(
        **sentry_options(dsn=dsn, environment=settings.environment),
        auto_enabling_integrations=False,
        integrations=[
            StarletteIntegration(failed_request_status_codes=REPORTED_STATUSES),
            FastApiIntegration(failed_request_status_codes=REPORTED_STATUSES),
            LoggingIntegration(event_level=None),
        ],
    )
    return True
