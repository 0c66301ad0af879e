"""Builds one environment from a validated :class:`~stacks.config.PlatformConfig`.

Shared per environment: the network. Per system (later issues): data stores, secrets, services, alarms.
This module only wires components together; each decision about a resource lives in its component.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi

from stacks.config import PlatformConfig, load_platform
from stacks.errors import ConfigError

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


def run_stack(project_dir: Path) -> Platform:
    """The whole program: validate ``Pulumi.<stack>.yaml`` and the catalog, then build.

    A configuration mistake ends the run with ``pulumi.RunError``: one message, no traceback, and no
    resource declared, because validation finishes before the first resource is constructed.
    """
    try:
        config = load_platform(pulumi.get_stack(), project_dir)
    except ConfigError as err:
        raise pulumi.RunError(str(err)) from None
    return build(config)
