"""Subnet math: pure functions, tested without Pulumi.

Three tiers per AZ: ``public`` (ALB and NAT only), ``private`` (tasks, egress through NAT) and
``isolated`` (databases and caches, no route out). Private subnets get the most room because every
Fargate task takes an IP: each is 1/8 of the VPC, public and isolated 1/64 each.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network

TIERS = ("public", "private", "isolated")
_EXTRA_BITS = {"private": 3, "public": 6, "isolated": 6}
MIN_SUBNET_PREFIX = 28  # AWS: subnets are /16 to /28


@dataclass(frozen=True)
class SubnetPlan:
    public: tuple[IPv4Network, ...]
    private: tuple[IPv4Network, ...]
    isolated: tuple[IPv4Network, ...]

    def tier(self, name: str) -> tuple[IPv4Network, ...]:
        return getattr(self, name)


def plan_subnets(vpc: IPv4Network, az_count: int) -> SubnetPlan:
    """Carve ``vpc`` into per-AZ subnets, private first (largest), aligned and non-overlapping.

    Raises ``ValueError`` when the VPC is too small for ``az_count`` AZs.
    """
    if vpc.prefixlen + max(_EXTRA_BITS.values()) > MIN_SUBNET_PREFIX:
        raise ValueError(
            f"{vpc} is too small: the smallest tier would be /{vpc.prefixlen + 6}, and AWS subnets stop at "
            f"/{MIN_SUBNET_PREFIX}; use a /{MIN_SUBNET_PREFIX - 6} or larger, or list the subnets explicitly"
        )
    cursor = int(vpc.network_address)
    end = int(vpc.broadcast_address) + 1
    out: dict[str, list[IPv4Network]] = {}
    for tier in ("private", "public", "isolated"):
        prefix = vpc.prefixlen + _EXTRA_BITS[tier]
        size = 1 << (32 - prefix)
        cursor = -(-cursor // size) * size  # align up
        nets = []
        for _ in range(az_count):
            if cursor + size > end:
                raise ValueError(f"{vpc} has no room for {az_count} {tier} subnets of /{prefix}")
            nets.append(IPv4Network((cursor, prefix)))
            cursor += size
        out[tier] = nets
    return SubnetPlan(**{t: tuple(v) for t, v in out.items()})


def check_explicit(vpc: IPv4Network, tiers: dict[str, list[IPv4Network]], az_count: int) -> list[tuple[str, str]]:
    """Problems with user-given subnets: (key suffix, message). Empty when they fit."""
    problems: list[tuple[str, str]] = []
    seen: list[tuple[str, IPv4Network]] = []
    for tier in TIERS:
        nets = tiers.get(tier, [])
        if len(nets) != az_count:
            problems.append((tier, f"needs exactly {az_count} subnets, one per availability zone (got {len(nets)})"))
        for i, net in enumerate(nets):
            key = f"{tier}[{i}]"
            if not net.subnet_of(vpc):
                problems.append((key, f"{net} does not fit the VPC {vpc}"))
            elif net.prefixlen > MIN_SUBNET_PREFIX:
                problems.append((key, f"{net} is smaller than /{MIN_SUBNET_PREFIX}, the smallest AWS subnet"))
            for other_key, other in seen:
                if net.overlaps(other):
                    problems.append((key, f"{net} overlaps {other_key} ({other})"))
            seen.append((key, net))
    return problems
