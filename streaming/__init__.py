"""The framework-free side of agent-service: Redis key names, connection settings and (soon) the
per-task event log.

Nothing here imports FastAPI, Celery, ``app`` or ``worker``: both processes build on it, so it must
stay small enough to be imported anywhere without side effects.
"""
