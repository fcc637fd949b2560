"""The service's real processes, started and talked to from outside, for tests and benchmarks.

``tests/`` and ``bench/`` both build on it: a child process that is always stopped and waited
on by condition (``processes``), the Celery worker, beat, uvicorn and Flower started from their
environment as production starts them (``stack``, ``web_restart``, ``flower``), a ``redis-server``
a test may crash and bring back (``redis_server``, over TLS with ``tls``), the loopback
OpenAI-compatible LLM server and its control client (``llm``), and a client's view of a task:
submitting and polling it over REST (``polling``), reading its event stream (``sse``); and, for
what the API does not show, its event log read straight from Redis (``task_log``).

It is run from the project's checkout (as ``tests`` and ``bench`` are) and is never shipped: the
service's own packages never import it.
"""
