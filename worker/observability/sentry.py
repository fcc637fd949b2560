"""Error reporting: Sentry when ``SENTRY_DSN`` is set, nothing otherwise.

Sentry's automatic Celery integration is left off: ``BaseTask.on_failure`` reports each failure
once, with the task's id, name and agent as tags, so the integration would report it twice; so
are error log lines (the same failure is logged as ``task_failed`` and by Celery). A transient
error that is retried is not a failure: it is reported only if the last attempt fails. What an
event may carry is ``contract.error_reporting``'s: never a message, an answer, a key or a token.
"""

from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

from contract.error_reporting import sentry_options
from worker.settings import WorkerSettings


def init_sentry(settings: WorkerSettings) -> bool:
    """Start the Sentry client if a DSN is configured; True when it is."""
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value():
        return False
    sentry_sdk.init(
        **sentry_options(
            dsn=settings.sentry_dsn.get_secret_value(), environment=settings.environment
        ),
        auto_enabling_integrations=False,
        integrations=[LoggingIntegration(event_level=None)],
    )
    return True


def report_exception(exc: BaseException, **tags: Any) -> None:
    """Send ``exc`` to Sentry with ``tags`` when a client is active; a no-op otherwise."""
    if not sentry_sdk.is_initialized():
        return
    with sentry_sdk.new_scope() as scope:
        for key, value in tags.items():
            scope.set_tag(key, value)
        sentry_sdk.capture_exception(exc)
