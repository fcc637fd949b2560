"""Where the service is and which key to use: flags first, then the environment.

``AGENT_SERVICE_URL`` (default ``http://127.0.0.1:8000``, where ``make dev`` listens) and
``AGENT_SERVICE_API_KEY``. The key is never given a default: a command that needs one and has
none says how to set it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from cli.errors import ConfigurationError

URL_VARIABLE = "AGENT_SERVICE_URL"
KEY_VARIABLE = "AGENT_SERVICE_API_KEY"
DEFAULT_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str

    @classmethod
    def resolve(cls, *, url: str | None, api_key: str | None) -> ClientConfig:
        """The configuration from the flags (which typer fills from the environment too)."""
        url = (url or DEFAULT_URL).strip().rstrip("/")
        try:
            parts = urlsplit(url)
            valid = parts.scheme in {"http", "https"} and bool(parts.netloc)
            parts.port  # noqa: B018 (raises on a port that is not a number in range)
        except ValueError:  # an unclosed IPv6 bracket, a port out of range
            valid = False
        if not valid:
            raise ConfigurationError(
                f"{URL_VARIABLE} / --url must be an http(s) URL such as {DEFAULT_URL}, not {url!r}"
            )
        if not api_key or not api_key.strip():
            raise ConfigurationError(
                f"no API key: set {KEY_VARIABLE} (for `make dev`: "
                f"export {KEY_VARIABLE}=dev-key) or pass --api-key"
            )
        api_key = api_key.strip()
        if not (api_key.isascii() and api_key.isprintable()):
            raise ConfigurationError(
                f"the API key ({KEY_VARIABLE} / --api-key) must be printable ASCII characters: "
                "it travels in the X-API-Key header"
            )
        return cls(url=url, api_key=api_key)
