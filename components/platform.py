"""Builds one environment from a validated :class:`~stacks.config.PlatformConfig`.

Shared per environment: the network. Per system (later issues): data stores, secrets, services, alarms.
This module only wires components together; each decision about a resource lives in its component.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from stacks.config import PlatformConfig

from .network import Network, NetworkArgs


@dataclass(frozen=True)
class Platform:
    network: Network


def build(cfg: PlatformConfig) -> Platform:
    """Declare every resource of the environment and export what users look for."""
    preset = cfg.preset
    plan = cfg.subnet_plan
    network = Network(
        "network",
        NetworkArgs(
            region=cfg.region,
            availability_zones=cfg.availability_zones,
            cidr=str(cfg.network.cidr),
            subnets=plan,
            nat=preset.network.nat,
            flow_log_traffic=preset.network.flow_log_traffic,
            log_retention_days=preset.logs.retention_days,
            existing=cfg.network.existing,
        ),
    )
    pulumi.export("environment", cfg.env)
    pulumi.export("vpc_id", network.vpc_id)
    pulumi.export("private_subnet_ids", network.private_subnet_ids)
    pulumi.export("images", {svc.key: str(svc.image) for svc in cfg.services()})
    return Platform(network=network)
