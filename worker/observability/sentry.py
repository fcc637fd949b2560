"""Error reporting: Sentry when ``SENTRY_DSN`` is set, nothing otherwise.

Sentry's automatic Celery integration is left off: ``BaseTask.on_failure`` reports each failure
once, with the task's id and name as tags, so the integration would report it twice.
"""

from typing import Any

import sentry_sdk

from worker.settings import WorkerSettings


def init_sentry(settings: WorkerSettings) -> bool:
    """Start the Sentry client if a DSN is configured; True when it is."""
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value():
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment,
        auto_enabling_integrations=False,
        send_default_pii=False,
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
