"""What the web process, the workers and any foreign Celery producer agree on, as plain data.

The task names and queues, the kwargs of an agent task, the agents a client may call, the event
types of a task's stream, Celery's result-backend record, and every Redis key. Both ``app`` and
``worker`` import this package; it imports neither of them, nor any framework, so a change to the
contract is a change in one place that both sides see.
"""
