"""Where the CLI finds the service and the key."""

import pytest

from cli.config import DEFAULT_URL, ClientConfig
from cli.errors import ConfigurationError, ExitCode


def test_config_defaults_to_the_local_development_server() -> None:
    config = ClientConfig.resolve(url=None, api_key=" dev-key ")

    assert config == ClientConfig(url=DEFAULT_URL, api_key="dev-key")


def test_config_refuses_to_go_on_without_a_key() -> None:
    with pytest.raises(ConfigurationError, match="AGENT_SERVICE_API_KEY") as raised:
        ClientConfig.resolve(url=None, api_key="")

    assert raised.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://example.com", "http://"])
def test_config_refuses_a_url_that_is_not_http(url: str) -> None:
    with pytest.raises(ConfigurationError, match="http"):
        ClientConfig.resolve(url=url, api_key="k")


@pytest.mark.parametrize("url", ["http://[::1", "http://127.0.0.1:99999", "http://host:port"])
def test_config_refuses_a_url_it_cannot_parse(url: str) -> None:
    with pytest.raises(ConfigurationError, match="http") as raised:
        ClientConfig.resolve(url=url, api_key="k")

    assert raised.value.exit_code == ExitCode.USAGE


@pytest.mark.parametrize("key", ["clé", "key\nX-Other: 1", "key\x00"])
def test_config_refuses_a_key_that_cannot_travel_in_a_header(key: str) -> None:
    with pytest.raises(ConfigurationError, match="printable ASCII") as raised:
        ClientConfig.resolve(url=None, api_key=key)

    assert raised.value.exit_code == ExitCode.USAGE
