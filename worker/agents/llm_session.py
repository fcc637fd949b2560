"""The aiohttp session the built-in LLM client streams over, one per event loop, opened lazily.

The built-in OpenAI-compatible client (``openai_client``) runs on aiohttp rather than on the
loop's ``httpx.AsyncClient``: reading a stream costs it a fraction of the CPU (bench/README.md).
Plugin agents still get the httpx client; this session is for the built-in agents only.

A session belongs to the loop that opened it. ``LazyLLMSession`` is what a loop holds: it opens
the session the first time an agent needs it (a loop that only runs the echo agent never opens
one) and closes it with the loop's other clients. Every session of a process shares the
process's TLS context: loading the CA bundle per session would cost more CPU than a short call.
"""

import ssl

import aiohttp

#: Seconds an idle connection is kept for the next call: aiohttp's default, and below the idle
#: timeout of common load balancers (60 s), so a kept connection is rarely one the server closed.
KEEPALIVE_SECONDS = 15


def open_llm_session(*, tls: ssl.SSLContext, keepalive: int) -> aiohttp.ClientSession:
    """A session for LLM calls on the running loop; the caller closes it in the same loop.

    No bound on connections (each call streams on its own; the task concurrency bounds them),
    idle connections kept ``keepalive`` seconds, no cookie jar (an API needs none, and a jar
    costs work on every response), no environment proxies, and timeouts set per call.
    """
    connector = aiohttp.TCPConnector(
        ssl=tls, limit=0, limit_per_host=0, keepalive_timeout=keepalive
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
    )


class LazyLLMSession:
    """The LLM session of one event loop, opened by the first call of ``get``."""

    def __init__(self, *, tls: ssl.SSLContext, keepalive: int = KEEPALIVE_SECONDS) -> None:
        self._tls = tls
        self._keepalive = keepalive
        self._session: aiohttp.ClientSession | None = None

    @property
    def opened(self) -> bool:
        return self._session is not None

    def get(self) -> aiohttp.ClientSession:
        """The loop's session, opened now if this is the first use (call it inside the loop)."""
        if self._session is None or self._session.closed:
            self._session = open_llm_session(tls=self._tls, keepalive=self._keepalive)
        return self._session

    async def aclose(self) -> None:
        """Close the session, if one was opened (its connections with it)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()
