"""The HTTP client an agent call uses, built cheaply inside the loop that runs the call.

A default ``httpx.AsyncClient()`` loads the CA bundle into a fresh SSL context: more CPU than a
whole short LLM call costs us. The context is built once per process (``WorkerProcess``) and
shared by every client, which is safe: ``ssl.SSLContext`` is thread-safe once configured. Clients
themselves are bound to the loop that opened them, so each loop opens and closes its own.
"""

import ssl

import httpx

from worker.settings import WorkerSettings


def create_tls_context() -> ssl.SSLContext:
    """A TLS context with the system's (or certifi's) trust store, for every client of a
    process."""
    return httpx.create_ssl_context()


def open_http_client(
    settings: WorkerSettings, *, shared: bool, tls: ssl.SSLContext
) -> httpx.AsyncClient:
    """A client for LLM calls; the caller closes it (``async with``) in the same loop.

    A client shared by every task of a process keeps as many idle connections as tasks may run.
    """
    timeout = httpx.Timeout(
        connect=settings.llm_connect_timeout,
        read=settings.llm_read_timeout,
        write=settings.llm_connect_timeout,
        pool=settings.llm_connect_timeout,
    )
    keepalive = settings.worker_concurrency if shared else 20
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=keepalive)
    return httpx.AsyncClient(verify=tls, timeout=timeout, limits=limits)
