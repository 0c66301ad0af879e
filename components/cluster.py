"""The environment's ECS cluster.

Children: ``aws:ecs/cluster:Cluster`` (Container Insights on) and
``aws:ecs/clusterCapacityProviders:ClusterCapacityProviders`` (FARGATE and FARGATE_SPOT; the default
strategy is Spot when the preset allows it). Services set their own strategy from the same setting.

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


class Cluster(pulumi.ComponentResource):
    """One ECS cluster per environment, Container Insights on."""

    name: pulumi.Output[str]
    arn: pulumi.Output[str]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:compute:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=args.name,
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
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
