"""Which database of the session's Redis each group of tests uses, in one place.

Stacks with different settings must not take each other's tasks, so each has a database of its
own, and two test modules never share one (a task one leaves queued would be taken by the other's
worker). The session's Redis is started with ``DATABASES`` of them.
"""

DATABASES = 64

MAIN, BARE, IDLE, RAW = 0, 1, 2, 3
QUEUED = 4
CRASH, SHUTDOWN = 5, 6
#: The framework-free tests' database (tests/conftest.py).
UNIT = 7
LOST, RECOVERER, SAME_NAME = 8, 9, 10
SCHEMA = 11
CAPPED_DOCUMENT = 12
CAPS, FAIRNESS = 13, 14
#: Plays Celery's result backend of another database (tests/streaming/test_event_writer.py).
OTHER_BACKEND = 15
BEAT = 16
EDGE = 17
FUZZ = 18
SHARED, CROWD = 19, 20
RATE_LIMIT, PRIORITY = 21, 22
MESSAGE_FORMAT = 23
GREEN = 24
#: Streams, results and caps of the stack whose broker is RabbitMQ.
RABBITMQ_STREAMS = 25
#: The operator's view: Flower, metrics, Sentry and JSON logs (tests/e2e/conftest.py ops_stack).
OPS = 26
PREFORK_METRICS = 27
WEB_PROCESSES = 28
#: A worker started with ENVIRONMENT=production, for its metrics port's access rule.
PRODUCTION_WORKER = 29
