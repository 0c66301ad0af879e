"""Builds one environment from a validated :class:`~stacks.config.PlatformConfig`.

Shared per environment: the KMS key and the network. Per system: its Postgres and Redis where the
catalog asks for them, and its secrets. This module only wires components together; each decision
about a resource lives in its component.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from stacks.config import PROJECT, DeployedSystem, PlatformConfig, load_platform
from stacks.errors import ConfigError

from .kms import EnvironmentKey, EnvironmentKeyArgs
from .network import Network, NetworkArgs
from .postgres import Postgres, PostgresArgs
from .redis import Redis, RedisArgs
from .secrets import SystemSecrets, SystemSecretsArgs


@dataclass
class SystemData:
    postgres: Postgres | None
    redis: Redis | None
    secrets: SystemSecrets


@dataclass
class Platform:
    key: EnvironmentKey
    network: Network
    systems: dict[str, SystemData] = field(default_factory=dict)


def _lookup(tree: pulumi.Output[Any], path: str) -> pulumi.Output[str]:
    """One value out of the encrypted ``platform:secrets`` object, still a secret Output."""
    parts = path.split(".")[1:]  # drop the leading "secrets"

    def dig(node: Any) -> str:
        for part in parts:
            node = node[part]
        return str(node)

    return pulumi.Output.secret(tree.apply(dig))


def build(cfg: PlatformConfig, external_secrets: pulumi.Output[Any] | None = None) -> Platform:
    """Declare every resource of the environment and export what users look for."""
    preset = cfg.preset
    account_id = aws.get_caller_identity_output().account_id
    key = EnvironmentKey(
        "key",
        EnvironmentKeyArgs(
            account_id=account_id, region=cfg.region, alias=f"platform-{cfg.env}", deletion_window_days=preset.security.kms_deletion_window_days
        ),
    )
    network = Network(
        "network",
        NetworkArgs(
            region=cfg.region,
            availability_zones=cfg.availability_zones,
            cidr=str(cfg.network.cidr),
            subnets=cfg.subnet_plan,
            nat=preset.network.nat,
            flow_log_traffic=preset.network.flow_log_traffic,
            log_retention_days=preset.logs.retention_days,
            kms_key_arn=key.arn,
            existing=cfg.network.existing,
        ),
    )
    platform = Platform(key=key, network=network)
    for system in cfg.systems.values():
        platform.systems[system.name] = _data_tier(cfg, system, key, network, external_secrets)

    pulumi.export("environment", cfg.env)
    pulumi.export("vpc_id", network.vpc_id)
    pulumi.export("private_subnet_ids", network.private_subnet_ids)
    pulumi.export("images", {svc.key: str(svc.image) for svc in cfg.services()})
    pulumi.export("databases", {n: d.postgres.address for n, d in platform.systems.items() if d.postgres})
    return platform


def _data_tier(cfg: PlatformConfig, deployed: DeployedSystem, key: EnvironmentKey, network: Network, external: pulumi.Output[Any] | None) -> SystemData:
    system = deployed.system
    physical = f"{system.name}-{cfg.env}"
    derived: dict[str, pulumi.Output[str]] = {}
    postgres = redis = None
    if system.postgres:
        postgres = Postgres(
            f"{system.name}-db",
            PostgresArgs(
                identifier=physical,
                database=system.postgres.database,
                vpc_id=network.vpc_id,
                subnet_ids=network.isolated_subnet_ids,
                kms_key_arn=key.arn,
                settings=cfg.preset.postgres,
                max_storage_gb=max(cfg.preset.postgres.max_allocated_storage_gb, system.postgres.storage_gb or 0),
                rotation=deployed.rotate.get("DATABASE_URL", 0),
            ),
        )
        derived["DATABASE_URL"] = postgres.database_url
    if system.redis:
        redis = Redis(
            f"{system.name}-cache",
            RedisArgs(
                replication_group_id=physical,
                vpc_id=network.vpc_id,
                subnet_ids=network.isolated_subnet_ids,
                kms_key_arn=key.arn,
                settings=cfg.preset.redis,
                maxmemory_policy=system.redis.maxmemory_policy,
                rotation=deployed.rotate.get("REDIS_URL", 0),
            ),
        )
        derived["REDIS_URL"] = redis.redis_url
    paths = [p for ps in deployed.external_secrets.values() for p in ps]
    secrets = SystemSecrets(
        f"{system.name}-secrets",
        SystemSecretsArgs(
            env=cfg.env,
            system=system,
            kms_key_arn=key.arn,
            recovery_window_days=cfg.preset.security.secret_recovery_days,
            external_values={p: _lookup(external, p) for p in paths} if external is not None else {},
            derived_values=derived,
            rotation=deployed.rotate,
        ),
    )
    return SystemData(postgres=postgres, redis=redis, secrets=secrets)


def run_stack(project_dir: Path) -> Platform:
    """The whole program: validate ``Pulumi.<stack>.yaml`` and the catalog, then build.

    A configuration mistake ends the run with ``pulumi.RunError``: one message, no traceback, and no
    resource declared, because validation finishes before the first resource is constructed.
    """
    try:
        config = load_platform(pulumi.get_stack(), project_dir)
    except ConfigError as err:
        raise pulumi.RunError(str(err)) from None
    external = pulumi.Config(PROJECT).get_secret_object("secrets")
    return build(config, external)


__all__ = ["Platform", "build", "run_stack"]
