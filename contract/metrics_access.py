"""Who may scrape ``/metrics`` in production: one rule for the web's route and a worker's port.

Outside production every scrape is answered. With ``ENVIRONMENT=production`` a scrape must
present ``METRICS_TOKEN`` as a bearer token, or come straight from an address in
``METRICS_ALLOWED_NETWORKS``; with neither set every scrape is refused, and the refusal says which
to set. A process's counts name its tasks' agents and its load: not for whoever reaches a port.
"""

import hmac
import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(value: str) -> tuple[Network, ...]:
    """``METRICS_ALLOWED_NETWORKS``: comma-separated networks (``10.0.0.0/8,127.0.0.1``)."""
    return tuple(
        ipaddress.ip_network(part.strip(), strict=False)
        for part in value.split(",")
        if part.strip()
    )


def scrape_refusal(
    *,
    production: bool,
    token: str,
    networks: tuple[Network, ...],
    authorization: str,
    direct_address: str | None,
) -> str | None:
    """Why a scrape is refused, or None.

    ``authorization`` is the request's ``Authorization`` header (empty: none);
    ``direct_address`` the connection's peer address, or None where it cannot be trusted (a
    request that names another client in a forwarding header).
    """
    if not production:
        return None
    if not token and not networks:
        return "set METRICS_TOKEN or METRICS_ALLOWED_NETWORKS to scrape /metrics in production"
    if token:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            presented.strip().encode(), token.encode()
        ):
            return None
    if networks and direct_address is not None:
        try:
            address = ipaddress.ip_address(direct_address)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # an IPv4 peer of a socket listening on ::
        if address is not None and any(address in network for network in networks):
            return None
    return "not allowed to scrape /metrics: present METRICS_TOKEN as a bearer token"
