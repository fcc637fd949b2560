"""The logic of the maintenance tasks, without Celery (``worker.tasks.cleanup_tasks`` wraps it)."""
