"""Celery tasks under the names existing producers send: the agent tasks (each delivery run by an
``attempt``, its end written by ``outcome``) and the maintenance tasks."""
