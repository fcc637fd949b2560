"""The Celery side of agent-service: the app, its tasks, the agents and their async runtime.

Importing this package has no side effects; ``worker.celery_app`` builds the Celery app.
"""
