"""What only the tests use: the agents and tools they plug in through ``AGENT_MODULES``, which
Redis database each group of tests owns, the run's SQL databases and a RabbitMQ vhost, the
loopback Sentry receiver, and readers of metrics, audit rows and the console's page.

Starting the service's processes and talking to them is ``teststack``'s, shared with ``bench``.
"""
