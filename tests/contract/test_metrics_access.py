"""The production scrape rule the web's /metrics and a worker's port share."""

import pytest

from contract.metrics_access import parse_networks, scrape_refusal

LOCAL = parse_networks("127.0.0.0/8, ::1")


def _refusal(**overrides: object) -> str | None:
    request: dict[str, object] = {
        "production": True,
        "token": "scrape-secret",
        "networks": (),
        "authorization": "",
        "direct_address": "127.0.0.1",
    }
    request.update(overrides)
    return scrape_refusal(**request)  # type: ignore[arg-type]


def test_outside_production_every_scrape_is_answered() -> None:
    assert _refusal(production=False, token="", authorization="") is None


def test_production_with_neither_setting_refuses_and_says_what_to_set() -> None:
    reason = _refusal(token="", networks=LOCAL)
    assert reason is None  # a network alone is enough
    reason = _refusal(token="", networks=())
    assert reason is not None
    assert "METRICS_TOKEN" in reason
    assert "METRICS_ALLOWED_NETWORKS" in reason


@pytest.mark.parametrize(
    "authorization",
    ["", "Bearer guess", "Basic scrape-secret", "Bearer scrape-secre", "scrape-secret"],
)
def test_a_missing_or_wrong_token_is_refused(authorization: str) -> None:
    reason = _refusal(authorization=authorization)
    assert reason is not None
    assert "METRICS_TOKEN" in reason


@pytest.mark.parametrize("authorization", ["Bearer scrape-secret", "bearer  scrape-secret "])
def test_the_token_as_a_bearer_is_answered(authorization: str) -> None:
    assert _refusal(authorization=authorization) is None


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("127.0.0.1", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),  # an IPv4 peer of a socket listening on ::
        ("::ffff:10.0.0.1", True),
        ("10.0.0.1", True),
        (None, True),
        ("nonsense", True),
    ],
)
def test_an_address_is_judged_only_when_direct_and_allowed(
    address: str | None, refused: bool
) -> None:
    reason = _refusal(networks=LOCAL, direct_address=address)
    assert (reason is not None) is refused


def test_networks_parse_hosts_and_reject_nonsense() -> None:
    assert [str(n) for n in parse_networks(" 10.0.0.0/8 ,,127.0.0.1")] == [
        "10.0.0.0/8",
        "127.0.0.1/32",
    ]
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        parse_networks("10.0.0.0/33")
