"""Modeled wall time of a from-scratch ``pulumi up``, from the captured dependency graph.

Each resource starts when every resource it depends on has finished (the engine's rule) and takes
its type's typical creation time from ``tools/data/aws-create-times.json`` (p50 or p90). The
longest chain is the critical path. Pulumi's default parallelism is unbounded, so the model assumes
no queueing.

For each ECS service the model also gives a floor: the VPC, then its own system's slowest data
store, then one steady-state wait per place in the system's start order. A service ready much
later than its floor waits on something it does not need. A service ready before 90 % of its floor
starts before its database exists: it crash-loops on the first deploy and may trip its circuit
breaker.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from components.shared_data import store_names
from stacks.config import PlatformConfig

from .harness import PROJECT_DIR, Capture, Resource

TIMES_FILE = PROJECT_DIR / "tools" / "data" / "aws-create-times.json"  # a copy of shared/data, with its sources
Percentile = Literal["p50", "p90"]

# Resource type -> entry of the times file. Everything unlisted takes SMALL (IAM, secrets, logs, alarms ...).
KIND = {
    "aws:ec2/vpc:Vpc": "vpc_subnets_routes_igw_sg",
    "aws:ec2/natGateway:NatGateway": "nat_gateway",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "vpc_gateway_endpoint",
    "aws:lb/loadBalancer:LoadBalancer": "alb",
    "aws:lb/listener:Listener": "alb_listener_or_target_group",
    "aws:lb/targetGroup:TargetGroup": "alb_listener_or_target_group",
    "aws:lb/listenerRule:ListenerRule": "alb_listener_or_target_group",
    "aws:lb/listenerCertificate:ListenerCertificate": "alb_listener_or_target_group",
    "aws:acm/certificateValidation:CertificateValidation": "acm_certificate_dns_validation",
    "aws:route53/record:Record": "route53_record",
    "aws:ecs/cluster:Cluster": "ecs_cluster_or_task_definition",
    "aws:ecs/taskDefinition:TaskDefinition": "ecs_cluster_or_task_definition",
    "aws:ecs/service:Service": "ecs_service_to_steady_state",
}
SMALL = "secret_iam_loggroup_ecr"
# Within the VPC group the data's 0.5 minutes belong to the VPC itself; subnets, routes and groups
# each take about a second.
SECONDS = 1 / 60
FAST = {"aws:ec2/subnet:Subnet", "aws:ec2/routeTable:RouteTable", "aws:ec2/route:Route", "aws:ec2/routeTableAssociation:RouteTableAssociation",
        "aws:ec2/securityGroup:SecurityGroup", "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule",
        "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule", "aws:ec2/internetGateway:InternetGateway", "aws:ec2/eip:Eip",
        "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"}  # fmt: skip


def load_times(path: Path = TIMES_FILE) -> dict:
    return json.loads(path.read_text())["resources"]


def duration(resource: Resource, pct: Percentile, times: dict) -> float:
    """Minutes to create ``resource``."""
    t = resource.type
    if t == "aws:rds/instance:Instance":
        return times["rds_postgres_multi_az" if resource.inputs.get("multiAz") else "rds_postgres_single_az"][pct]
    if t == "aws:elasticache/replicationGroup:ReplicationGroup":
        multi = resource.inputs.get("multiAzEnabled")
        return times["elasticache_replication_group_multi_az" if multi else "elasticache_replication_group"][pct]
    if t in FAST:
        return SECONDS
    return times[KIND.get(t, SMALL)][pct]


@dataclass(frozen=True)
class Schedule:
    start: dict[str, float]
    finish: dict[str, float]
    by_urn: dict[str, Resource]

    @property
    def total(self) -> float:
        return max(self.finish.values(), default=0.0)

    def critical_path(self) -> list[Resource]:
        """The chain of resources that sets the total, first to last."""

        # ties (subnets of each AZ, the two scaling policies) go to the first URN, so the path is stable
        def latest(urns: list[str]) -> str:
            return min(urns, key=lambda u: (-self.finish[u], u))

        urn = latest(list(self.finish))
        path = [urn]
        while True:
            deps = [d for d in self.by_urn[urn].dependencies if d in self.finish]
            if not deps:
                break
            urn = latest(deps)
            path.append(urn)
        return [self.by_urn[u] for u in reversed(path)]


def schedule(capture: Capture, pct: Percentile = "p50", times: dict | None = None) -> Schedule:
    times = times or load_times()
    custom = {r.urn: r for r in capture.resources if r.custom}
    start: dict[str, float] = {}
    finish: dict[str, float] = {}

    def done(urn: str) -> float:
        if urn not in finish:
            r = custom[urn]
            start[urn] = max((done(d) for d in r.dependencies if d in custom), default=0.0)
            finish[urn] = start[urn] + duration(r, pct, times)
        return finish[urn]

    for urn in custom:
        done(urn)
    return Schedule(start, finish, custom)


@dataclass(frozen=True)
class Readiness:
    service: str
    ready: float
    floor: float

    @property
    def ratio(self) -> float:
        return self.ready / self.floor

    @property
    def within_goal(self) -> bool:
        return 0.9 <= self.ratio <= 1.1


def readiness(plan: Schedule, cfg: PlatformConfig, pct: Percentile = "p50", times: dict | None = None) -> list[Readiness]:
    """Each ECS service's modeled ready time in ``plan`` (scheduled at ``pct``) against its floor."""
    times = times or load_times()
    vpc = times["vpc_subnets_routes_igw_sg"][pct]
    steady = times["ecs_service_to_steady_state"][pct]
    by_name = {r.name: r for r in plan.by_urn.values()}
    out = []
    for system in cfg.systems.values():
        # its own stores, or the environment's shared ones (components/shared_data.py)
        stores = [by_name[n] for n in store_names(cfg, system.name) if n in by_name]
        slowest = max((duration(r, pct, times) for r in stores), default=0.0)
        for name in system.services:
            key = f"{system.name}-{name}"
            floor = vpc + slowest + (system.system.start_rank(name) + 1) * steady
            if f"{key}-service" in by_name:  # a repositories-only plan has no service
                out.append(Readiness(key, plan.finish[by_name[f"{key}-service"].urn], floor))
    return out


TASK_START_MINUTES = 1.0  # Fargate: ENI, image pull of a cached layer set, node start (typical 30-60 s)
ELB_DEFAULTS = {"interval": 30, "healthy_threshold": 5, "deregistration_delay": 300}


def rolling_update_minutes(interval: int, healthy_threshold: int, deregistration_delay: int) -> float:
    """One web service's image bump with full capacity kept (min 100 %, max 200 %): new tasks start,
    pass ``healthy_threshold`` checks, then the old ones drain for the deregistration delay."""
    return TASK_START_MINUTES + (healthy_threshold * interval + deregistration_delay) / 60


def rolling_update(capture: Capture) -> dict[str, tuple[float, float]]:
    """Target group key -> (our modeled minutes, with ELB defaults)."""
    default = rolling_update_minutes(**ELB_DEFAULTS)
    out = {}
    for tg in capture.of_type("aws:lb/targetGroup:TargetGroup"):
        if not tg.name.endswith("-tg"):
            continue  # a traffic-shifting service's second group (``-tg2``) has the same settings
        h = tg.inputs["healthCheck"]
        ours = rolling_update_minutes(int(h["interval"]), int(h["healthyThreshold"]), int(tg.inputs["deregistrationDelay"]))
        out[tg.name.removesuffix("-tg")] = (ours, default)
    return out


@dataclass(frozen=True)
class DeployTime:
    """One web service's modeled image bump under its deploy strategy (minutes)."""

    strategy: str
    rollout: float
    """New tasks start and pass their health checks (the rolling update above, without the drain)."""
    canary: float
    """The canary share runs alone (``CANARY`` only)."""
    bake: float
    """After all traffic moved: the old revision kept (blue/green, canary), or ECS watching its alarms (rolling)."""
    drain: float
    """The old tasks' deregistration delay."""

    @property
    def total(self) -> float:
        return self.rollout + self.canary + self.bake + self.drain


def alarm_bake_minutes(alarm_minutes: int) -> float:
    """The bake ECS adds to a rolling deploy with deployment alarms. ECS derives it from the alarms and
    does not publish the formula ("How CloudWatch alarms detect Amazon ECS deployment failures"); the
    model takes the alarms' evaluation window (periods of 60 s), the least time in which they can fire."""
    return float(alarm_minutes)


def deploy_times(capture: Capture) -> dict[str, DeployTime]:
    """Service key -> its modeled image bump, from the captured target group, ECS service and alarms."""
    by_name = {r.name: r for r in capture.resources}
    out = {}
    for tg in capture.of_type("aws:lb/targetGroup:TargetGroup"):
        if not tg.name.endswith("-tg"):
            continue  # the second group of a traffic-shifting service has the same settings
        key = tg.name.removesuffix("-tg")
        service = by_name[f"{key}-service"].inputs
        h = tg.inputs["healthCheck"]
        config = service.get("deploymentConfiguration") or {}
        strategy = config.get("strategy", "ROLLING")
        rollout = TASK_START_MINUTES + int(h["healthyThreshold"]) * int(h["interval"]) / 60
        alarm = by_name.get(f"{key}-deploy-5xx")
        if strategy == "ROLLING":
            bake = alarm_bake_minutes(int(alarm.inputs["evaluationPeriods"])) if alarm and service.get("alarms") else 0.0
            canary = 0.0
        else:
            bake = float(config.get("bakeTimeInMinutes", 0))
            canary = float((config.get("canaryConfiguration") or {}).get("canaryBakeTimeInMinutes", 0)) if strategy == "CANARY" else 0.0
        out[key] = DeployTime(strategy, rollout, canary, bake, int(tg.inputs["deregistrationDelay"]) / 60)
    return out
