"""Pure functions for the load balancer: stable rule priorities, listener ports and certificate names.

A listener rule's priority and a service's listener port must not move when another service is added
or removed: a moved priority is an update of every rule after it, and a moved port breaks every client
that bookmarked it. So each slot comes from a hash of the service's stable key (``<system>-<service>``),
not from its position in a list. Two keys that hash to the same slot are resolved by probing in sorted
key order; that is the only case where one key's slot depends on another's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

# Listener rule priorities are 1-50000. Ports for HTTP listeners without a domain: 8000-8999
# (outside every well-known port, and few enough to read in a URL).
PRIORITIES = range(1, 50_001)
HTTP_PORTS = range(8000, 9000)

# ALB idle timeout: ELB's default, or long when a service holds connections open (offerhub's SSE,
# aurum's WebSocket; clients and servers send heartbeats well inside it; the ALB allows up to 4000 s).
DEFAULT_IDLE_TIMEOUT_SECONDS = 60
LONG_IDLE_TIMEOUT_SECONDS = 3600
# An app must keep idle connections open longer than the load balancer does, or the ALB reuses a
# connection the app has just closed and answers 502 ("configure the idle timeout of your application to
# be larger than the idle timeout configured for the load balancer", ELB user guide, "Connection idle
# timeout"). Node's default keepAliveTimeout is 5 s.
KEEP_ALIVE_MARGIN_SECONDS = 5


def idle_timeout_seconds(long_lived_connections: bool) -> int:
    """The one load balancer's idle timeout: long as soon as one web service needs long-lived connections."""
    return LONG_IDLE_TIMEOUT_SECONDS if long_lived_connections else DEFAULT_IDLE_TIMEOUT_SECONDS


def keep_alive_ms(idle_timeout: int) -> int:
    """The apps' HTTP keep-alive timeout (milliseconds, Node's unit) for a load balancer idle timeout."""
    return (idle_timeout + KEEP_ALIVE_MARGIN_SECONDS) * 1000


def stable_slots(keys: Iterable[str], slots: range) -> dict[str, int]:
    """One distinct slot per key, from the key's hash; probing on collisions in sorted key order."""
    keys = sorted(set(keys))
    if len(keys) > len(slots):
        raise ValueError(f"{len(keys)} keys do not fit {len(slots)} slots")
    taken: set[int] = set()
    out: dict[str, int] = {}
    for key in keys:
        index = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % len(slots)
        while slots[index] in taken:
            index = (index + 1) % len(slots)
        out[key] = slots[index]
        taken.add(slots[index])
    return out


def certificate_scopes(domain: str, hostnames: Iterable[str]) -> list[str]:
    """Wildcard scopes beyond the domain's own certificate, one certificate each.

    The listener's default certificate covers ``<domain>`` and ``*.<domain>`` and never changes. Every
    other parent of a host (``api.twinkle.example.com`` -> ``*.twinkle.example.com``; a wildcard covers
    one label) gets its own certificate, attached to the listener by SNI. A new system adds one
    certificate and changes none: a certificate's names cannot change without replacing it.
    """
    scopes = set()
    for host in hostnames:
        if host == domain:
            continue  # the apex: the default certificate names it exactly
        if not is_under(host, domain):
            raise ValueError(f"{host} is not a name under {domain}")
        parent = host.split(".", 1)[1]
        if parent != domain:
            scopes.add(f"*.{parent}")
    return sorted(scopes)


def is_under(host: str, domain: str) -> bool:
    """``host`` is ``domain`` or a name below it, on a label boundary (``myexample.com`` is not under
    ``example.com``)."""
    return host == domain or host.endswith(f".{domain}")


def default_certificate_covers(host: str, domain: str) -> bool:
    """The listener's default certificate names ``<domain>`` and ``*.<domain>``; a wildcard covers exactly
    one label (RFC 6125 6.4.3; ACM, "wildcard names")."""
    return host == domain or (is_under(host, domain) and "." not in host.removesuffix(f".{domain}"))
