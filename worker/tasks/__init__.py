"""Celery task bodies, registered under the names existing producers already send."""
