"""What both compute targets share: ECS (``components/service.py``) and Kubernetes (``components/kubernetes.py``).

Neither target imports the other; both import this module, so either can change alone. Here: the
default user, the revision hash that names a secret revision (an ECS docker label, a Kubernetes Secret
and Job), how many copies a service runs, scratch volume names, and a web service's place behind the
environment's load balancer (:func:`target_group`, :func:`listener_condition`): both targets sit behind
the same ALB, WAF and alarms (``components/alb.py``, ``components/observability.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pulumi
import pulumi_aws as aws

from stacks.config import DeployedService, task_range
from stacks.presets import ComputePreset

from .alb import Alb

DEFAULT_USER = "1000:1000"
"""uid:gid a service runs as when its catalog entry names none."""


def revision_hash(values: Sequence[object]) -> str:
    """16 hex characters that change when any of ``values`` (secret version ids, rotation keys, an image) changes."""
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()[:16]


def task_counts(d: DeployedService, c: ComputePreset) -> tuple[int, int]:
    """(running tasks, autoscaling ceiling). Equal when the service does not autoscale.

    The app's own floor (darwin: three instances) wins over the preset's; a singleton is always 1.
    A held service (an external secret without a value, or waiting for a held service) runs none and
    is not autoscaled: ECS cannot start a task whose secret has no value, and a task that cannot start
    trips the circuit breaker. Once it is released, its scalable target is registered with the real
    minimum, and Application Auto Scaling raises the running count to it ("anytime ...
    RegisterScalableTarget is called ... if [capacity] falls outside of the minimum-maximum range, then
    the capacity is updated", Application Auto Scaling user guide, "concepts").
    """
    if d.held or d.paused:  # paused: an operator stopped it (tools.ops pause); an up keeps it stopped
        return 0, 0
    return task_range(d.spec, c)


def steady_state_timeout(spec: object) -> str:
    """How long ``pulumi up`` waits for a service's rollout (ECS ``wait_for_steady_state``, the Kubernetes
    provider's Deployment await): 30 minutes, or longer for a container health check that may take
    longer to pass (a readiness gate: twinkle's indexer waits for its backfill)."""
    health = getattr(spec, "container_health", None)
    budget = health.budget_seconds if health else 0
    return f"{max(30, -(-budget // 60) + 15)}m"


def volume_name(path: str) -> str:
    return "scratch-" + ("".join(ch if ch.isalnum() else "-" for ch in path.strip("/")) or "root")


def target_group(name: str, d: DeployedService, vpc_id: pulumi.Input[str], opts: pulumi.ResourceOptions) -> aws.lb.TargetGroup:
    """Web service ``d``'s target group ``name``: IP targets on its port, its catalog health check, and the
    app's shutdown time as the deregistration delay (the pods' ``preStop`` sleep and the tasks' stop
    timeout are sized against it). ECS registers its tasks; on Kubernetes the AWS Load Balancer
    Controller registers the pods a ``TargetGroupBinding`` names."""
    spec = d.spec
    assert spec.port is not None and spec.health is not None  # web services have both (catalog rule)
    h = spec.health
    return aws.lb.TargetGroup(
        name,
        vpc_id=vpc_id,
        target_type="ip",
        protocol="HTTP",
        port=spec.port,
        deregistration_delay=spec.shutdown_seconds,
        health_check=aws.lb.TargetGroupHealthCheckArgs(
            enabled=True,
            path=h.path,
            matcher=h.matcher,
            protocol="HTTP",
            port="traffic-port",
            interval=h.interval_seconds,
            timeout=h.timeout_seconds,
            healthy_threshold=h.healthy_threshold,
            unhealthy_threshold=h.unhealthy_threshold,
        ),
        stickiness=aws.lb.TargetGroupStickinessArgs(type="lb_cookie", enabled=True, cookie_duration=86_400) if spec.sticky else None,
        opts=opts,
    )


def listener_condition(alb: Alb, d: DeployedService) -> aws.lb.ListenerRuleConditionArgs:
    """Which requests a web service's listener rule takes: its host, or every path on its own HTTP port."""
    if alb.https:
        return aws.lb.ListenerRuleConditionArgs(host_header=aws.lb.ListenerRuleConditionHostHeaderArgs(values=[d.hostname]))
    return aws.lb.ListenerRuleConditionArgs(path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=["/*"]))
