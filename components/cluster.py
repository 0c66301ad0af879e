"""The environment's ECS cluster.

Children: ``aws:ecs/cluster:Cluster`` (Container Insights on) and
``aws:ecs/clusterCapacityProviders:ClusterCapacityProviders`` (FARGATE and FARGATE_SPOT; the default
strategy is Spot when the preset allows it). Services set their own strategy from the same setting.
With ECS Exec on (dev), ``aws:cloudwatch/logGroup:LogGroup`` ``/platform/<env>/ecs-exec``: every
command run and its output are logged there (``executeCommandConfiguration.logging: OVERRIDE``),
encrypted with the environment key (``cloudWatchEncryptionEnabled``: the ECS agent refuses to send
session logs to a group without a KMS key; ECS developer guide, "Monitor Amazon ECS containers with
ECS Exec", "Logging and Auditing using ECS Exec"). The task role writes them (components/service.py
``ecs_exec_policy``).

Cost note: the cluster is free; Container Insights bills its metrics (about $0.07 per task per month
at our metric count) and Fargate Spot runs up to 70 % cheaper, with a two-minute interruption notice.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True, kw_only=True)
class ClusterArgs:
    name: str
    """Cluster name (``platform-<env>``). Warning: changing it replaces the cluster and every service."""
    spot: bool
    """Default capacity is Fargate Spot (dev). Default in prod: on-demand Fargate."""
    exec_log: ExecLog | None = None
    """Where ECS Exec sessions are logged; set when the preset enables ECS Exec. Default: none."""


@dataclass(frozen=True, kw_only=True)
class ExecLog:
    name: str
    """Log group name, ``/platform/<env>/ecs-exec``."""
    kms_key_arn: pulumi.Input[str]
    retention_days: int


class Cluster(pulumi.ComponentResource):
    """One ECS cluster per environment, Container Insights on."""

    name: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:compute:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        configuration = None
        self.exec_log_group_arn: pulumi.Output[str] | None = None
        if args.exec_log is not None:
            group = aws.cloudwatch.LogGroup(
                f"{name}-exec-log",
                name=args.exec_log.name,
                retention_in_days=args.exec_log.retention_days,
                kms_key_id=args.exec_log.kms_key_arn,
                opts=child,
            )
            self.exec_log_group_arn = group.arn
            configuration = aws.ecs.ClusterConfigurationArgs(
                execute_command_configuration=aws.ecs.ClusterConfigurationExecuteCommandConfigurationArgs(
                    logging="OVERRIDE",
                    log_configuration=aws.ecs.ClusterConfigurationExecuteCommandConfigurationLogConfigurationArgs(
                        cloud_watch_log_group_name=group.name,
                        cloud_watch_encryption_enabled=True,
                    ),
                )
            )
        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=args.name,
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            configuration=configuration,
            opts=child,
        )
        providers = aws.ecs.ClusterCapacityProviders(
            f"{name}-providers",
            cluster_name=cluster.name,
            capacity_providers=["FARGATE", "FARGATE_SPOT"],
            default_capacity_provider_strategies=[
                aws.ecs.ClusterCapacityProvidersDefaultCapacityProviderStrategyArgs(capacity_provider=capacity_provider(args.spot), weight=1)
            ],
            opts=child,
        )
        # Both outputs carry the providers resource as a dependency, so no service starts before the
        # cluster can place it.
        self.name = providers.cluster_name
        self.arn = pulumi.Output.all(cluster.arn, providers.cluster_name).apply(lambda v: v[0])
        self.register_outputs({"name": self.name, "arn": self.arn})


def capacity_provider(spot: bool) -> str:
    return "FARGATE_SPOT" if spot else "FARGATE"
