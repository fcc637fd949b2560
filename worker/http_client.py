"""The HTTP client an agent call uses, built cheaply inside the loop that runs the call.

A default ``httpx.AsyncClient()`` loads the CA bundle into a fresh SSL context: about 48 ms of CPU,
more than a whole short LLM call costs us. The context is built once per process and shared by
every client, which is safe: ``ssl.SSLContext`` is thread-safe once configured. Clients themselves
are bound to the loop that opened them, so each loop opens and closes its own.
"""

import ssl
import threading

import httpx

from worker.settings import WorkerSettings

_ssl_context: ssl.SSLContext | None = None
_ssl_context_lock = threading.Lock()


def shared_ssl_context() -> ssl.SSLContext:
    """The process-wide TLS context with the system's (or certifi's) trust store.

    Built under a lock: a hundred pool threads starting their first task at once would otherwise
    each load the CA bundle.
    """
    global _ssl_context
    if _ssl_context is None:
        with _ssl_context_lock:
            if _ssl_context is None:
                _ssl_context = httpx.create_ssl_context()
    return _ssl_context


def open_http_client(settings: WorkerSettings, *, shared: bool = False) -> httpx.AsyncClient:
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
    return httpx.AsyncClient(verify=shared_ssl_context(), timeout=timeout, limits=limits)
