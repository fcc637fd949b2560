"""Benchmarks of agent-service, run by hand (``python -m bench.<name>``), never by the test suite.

Each benchmark starts its own Redis, loopback LLM server and service processes (the helpers of
``teststack``) on loopback addresses, and stops them all however it ends. See README.md.
"""
