"""Pure functions for the load balancer: stable rule priorities, listener ports, certificate names, and
who may reach it (a domain or an explicit acknowledgement of plain HTTP, and ``ingress_cidrs``).

A listener rule's priority and a service's listener port must not move when another service is added
or removed: a moved priority is an update of every rule after it, and a moved port breaks every client
that bookmarked it. So each slot comes from a hash of the service's stable key (``<system>-<service>``),
not from its position in a list. Two keys that hash to the same slot are resolved by probing in sorted
key order; that is the only case where one key's slot depends on another's.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Protocol

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


# ---------------------------------------------------------------- who may reach the load balancer

WORLD_IPV4 = "0.0.0.0/0"
# Narrowest prefix a range of ``ingress_cidrs`` may have besides the whole internet: a /8 is already 16
# million addresses; anything wider is the internet in all but name.
WIDEST_INGRESS_PREFIX = 8
# Inbound rules per security group (Amazon VPC quotas, default 60 per direction and IP version): one
# rule per open port and admitted range on the load balancer's group.
SECURITY_GROUP_INBOUND_RULES = 60
ACKNOWLEDGE_PLAIN_HTTP = "platform:overrides.edge.acknowledge_plain_http"
INGRESS_CIDRS = "platform:overrides.edge.ingress_cidrs"


class ExposureSettings(Protocol):
    """What :func:`exposure_problems` reads of the preset's ``edge`` section (``stacks.presets.EdgePreset``)."""

    @property
    def acknowledge_plain_http(self) -> bool: ...
    @property
    def ingress_cidrs(self) -> Sequence[str] | None: ...


def ingress_cidr(value: str) -> str:
    """One range of ``edge.ingress_cidrs``, normalised (``198.51.100.7`` -> ``198.51.100.7/32``); raises
    ``ValueError`` saying what is allowed."""
    example = "e.g. '198.51.100.0/24' for an office, '198.51.100.7/32' for one VPN exit address"
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"'{value}' is not an IPv4 range in CIDR notation ({example})") from None
    if net.version != 4:
        raise ValueError(
            f"'{value}' is an IPv6 range; the load balancer has IPv4 addresses only (no dualstack), so it would never match. "
            "List the IPv4 ranges your office or VPN connects from"
        )
    if str(net.network_address) != str(value).split("/")[0]:
        raise ValueError(f"'{value}' has host bits set: the range it names is '{net}'; write that")
    if 0 < net.prefixlen < WIDEST_INGRESS_PREFIX:
        raise ValueError(
            f"'{value}' is {net.num_addresses:,} addresses, the internet in all but name; list the office or VPN ranges "
            f"(/{WIDEST_INGRESS_PREFIX} or narrower), or remove 'ingress_cidrs' to admit the internet"
        )
    return str(net)


def ingress_cidrs(values: Sequence[str]) -> list[str]:
    """Rules across the (normalised) ranges: not empty, the whole internet alone, no range twice or
    inside another. Raises ``ValueError``."""
    if not values:
        raise ValueError("an empty list admits nobody; list the ranges to admit, or remove the key to admit the internet")
    if WORLD_IPV4 in values and len(values) > 1:
        raise ValueError(f"'{WORLD_IPV4}' admits the whole internet, so the other ranges restrict nothing; keep either '{WORLD_IPV4}' or the ranges")
    nets = [ipaddress.IPv4Network(v) for v in values]
    for i, net in enumerate(nets):
        for j, other in enumerate(nets):
            if i == j:
                continue
            if net == other and i < j:
                raise ValueError(f"'{net}' is listed twice")
            if net != other and net.subnet_of(other):
                raise ValueError(f"'{net}' lies inside '{other}', which already admits it; remove one")
    return list(values)


def admitted(settings: ExposureSettings) -> list[str]:
    """The IPv4 ranges the load balancer's open ports admit: ``ingress_cidrs``, or the internet."""
    return list(settings.ingress_cidrs or [WORLD_IPV4])


def exposure_problems(*, domain: str | None, web_services: int, compute: str, settings: ExposureSettings) -> list[tuple[str, str]]:
    """``(key, message)`` for each way the stack's edge is refused, checked by the loader before any
    resource is declared:

    - web services without a domain are plain HTTP on the internet (ALB listeners, or an Ingress):
      refused unless the preset's ``edge.acknowledge_plain_http`` (dev's default) or the stack file's
      ``overrides.edge.acknowledge_plain_http: true`` says it is meant;
    - ``ingress_cidrs`` with ``compute: kubernetes``, where the AWS Load Balancer Controller owns the
      load balancer's security group and this program does not apply them;
    - more inbound rules (open ports times ranges) than one security group takes.
    """
    problems = []
    if web_services and not domain and not settings.acknowledge_plain_http:
        problems.append(
            (
                "platform:domain",
                f"required in this environment: without a domain the {web_services} web service(s) are served over plain HTTP on the "
                "internet (no TLS: passwords, session cookies and API keys travel readable). Set 'platform:domain' with "
                "'platform:hosted_zone_id' (a certificate is requested and DNS-validated) or 'platform:certificate_arn'; or, if plain "
                f"HTTP is meant (a short-lived test stack), acknowledge it in this file: '{ACKNOWLEDGE_PLAIN_HTTP}: true'",
            )
        )
    cidrs = settings.ingress_cidrs
    if cidrs and compute == "kubernetes":
        problems.append(
            (
                INGRESS_CIDRS,
                "not applied with 'compute: kubernetes': the cluster's AWS Load Balancer Controller makes that load balancer and its "
                "security group (its Ingress annotation 'alb.ingress.kubernetes.io/inbound-cidrs' restricts the sources). Remove this key",
            )
        )
    elif cidrs:
        ports = 2 if domain else web_services
        if (rules := ports * len(cidrs)) > SECURITY_GROUP_INBOUND_RULES:
            what = "443 and 80" if domain else f"one HTTP port for each of the {web_services} web services"
            problems.append(
                (
                    INGRESS_CIDRS,
                    f"{len(cidrs)} ranges on {ports} open ports ({what}) make {rules} inbound rules on the load balancer's security "
                    f"group; a security group takes {SECURITY_GROUP_INBOUND_RULES} (AWS default quota). List fewer, wider ranges, or "
                    "set a domain (two open ports)",
                )
            )
    return problems
