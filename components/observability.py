"""Alarms and dashboards: one encrypted SNS topic per environment, alarms and a dashboard per system.

Children of :class:`AlarmTopic`: ``aws:sns/topic:Topic`` (encrypted with the environment key) and an
``aws:sns/topicSubscription:TopicSubscription`` per address in ``alarm_emails`` (each must confirm
the email AWS sends).

Children of :class:`SystemMonitoring`: ``aws:cloudwatch/metricAlarm:MetricAlarm`` per signal below,
and ``aws:cloudwatch/dashboard:Dashboard`` ``<env>-<system>``. Every alarm notifies the topic when it
fires and when it recovers.

=================  ===========================================================================
web service        no healthy targets; a target failing its health check 3 minutes running;
                   5xx above ``error_rate_percent`` of requests; p95 above ``latency_p95_seconds``
                   (offerhub's alert table, applied to every web service)
database           CPU; free storage under ``db_free_storage_percent`` of allocated; connections
                   above ``db_connections_percent`` of the class's ``max_connections``
cache (per node)   engine CPU; memory above ``cache_memory_percent``, or the lower
                   ``cache_memory_noeviction_percent`` for ``noeviction`` caches, whose writes fail
                   when full (they never evict, so an evictions alarm would stay silent)
singleton          fewer than one running task (Container Insights)
=================  ===========================================================================

Cost note: $0.10 per alarm per month ($0.30 for the metric-math 5xx alarm), $3 per dashboard.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from stacks.presets import ObservabilityPreset

GIB = 1024**3


@dataclass(frozen=True, kw_only=True)
class AlarmTopicArgs:
    kms_key_arn: pulumi.Input[str]
    emails: Sequence[str] = ()


class AlarmTopic(pulumi.ComponentResource):
    """Where every alarm of the environment goes."""

    arn: pulumi.Output[str]

    def __init__(self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:observability:AlarmTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        topic = aws.sns.Topic(f"{name}-topic", kms_master_key_id=args.kms_key_arn, opts=child)
        for email in args.emails:
            slug = re.sub(r"[^a-z0-9]+", "-", email.lower()).strip("-")
            aws.sns.TopicSubscription(f"{name}-{slug}", topic=topic.arn, protocol="email", endpoint=email, opts=child)
        self.arn = topic.arn
        self.register_outputs({"arn": self.arn})


class TelemetryCredential(pulumi.ComponentResource):
    """The external OTLP endpoint's credential: a secret created empty, filled by an operator.

    Child: ``aws:secretsmanager/secret:Secret`` ``<env>/platform/OTLP_AUTH``. Pulumi never writes a value,
    so one put there with ``aws secretsmanager put-secret-value`` is never overwritten.
    """

    arn: pulumi.Output[str]

    def __init__(self, name: str, env: str, kms_key_arn: pulumi.Input[str], recovery_window_days: int, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:observability:TelemetryCredential", name, None, opts)
        secret = aws.secretsmanager.Secret(
            f"{name}-secret",
            name=f"{env}/platform/OTLP_AUTH",
            description="value of the auth header the OTEL collectors send to the external OTLP endpoint",
            kms_key_id=kms_key_arn,
            recovery_window_in_days=recovery_window_days,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.arn = secret.arn
        self.register_outputs({"arn": self.arn})


@dataclass(frozen=True)
class WebTarget:
    key: str
    target_group: pulumi.Input[str]
    """Target group ARN suffix (``targetgroup/...``)."""
    load_balancer: pulumi.Input[str]
    """Load balancer ARN suffix (``app/...``)."""


@dataclass(frozen=True)
class EcsService:
    key: str
    service_name: pulumi.Input[str]
    singleton: bool


@dataclass(frozen=True)
class Database:
    identifier: str
    instance_class: str
    allocated_storage_gb: int


@dataclass(frozen=True)
class Cache:
    replication_group_id: str
    nodes: int
    noeviction: bool


@dataclass(frozen=True, kw_only=True)
class SystemMonitoringArgs:
    env: str
    system: str
    region: str
    topic_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    settings: ObservabilityPreset
    web: Sequence[WebTarget] = ()
    services: Sequence[EcsService] = ()
    database: Database | None = None
    cache: Cache | None = None


class SystemMonitoring(pulumi.ComponentResource):
    """One system's alarms and dashboard."""

    def __init__(self, name: str, args: SystemMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:observability:SystemMonitoring", name, None, opts)
        self._args = args
        s = args.settings
        minutes = s.evaluation_minutes
        for web in args.web:
            dims = {"TargetGroup": web.target_group, "LoadBalancer": web.load_balancer}
            self._alarm(f"{web.key}-no-healthy-targets", f"{web.key} is down: no healthy targets", "AWS/ApplicationELB", "HealthyHostCount",
                        dims, "Minimum", "LessThanThreshold", 1, periods=1, missing="breaching")  # fmt: skip
            self._alarm(f"{web.key}-failing-health-checks", f"{web.key}: a target has failed its health check for 3 minutes", "AWS/ApplicationELB",
                        "UnHealthyHostCount", dims, "Maximum", "GreaterThanOrEqualToThreshold", 1, periods=3)  # fmt: skip
            self._error_rate(web, dims, s.error_rate_percent, minutes)
            self._alarm(f"{web.key}-p95-latency", f"{web.key}: p95 response time above {s.latency_p95_seconds} s", "AWS/ApplicationELB",
                        "TargetResponseTime", dims, "p95", "GreaterThanThreshold", s.latency_p95_seconds, periods=minutes)  # fmt: skip
        for svc in args.services:
            if svc.singleton:
                self._alarm(f"{svc.key}-not-running", f"{svc.key}: the singleton is not running", "ECS/ContainerInsights", "RunningTaskCount",
                            {"ClusterName": args.cluster_name, "ServiceName": svc.service_name}, "Minimum", "LessThanThreshold", 1, periods=3,
                            missing="breaching")  # fmt: skip
        if (db := args.database) is not None:
            dims = {"DBInstanceIdentifier": db.identifier}
            self._alarm(f"{args.system}-db-cpu", f"{db.identifier}: CPU above {s.db_cpu_percent} %", "AWS/RDS", "CPUUtilization", dims,
                        "Average", "GreaterThanThreshold", s.db_cpu_percent, periods=minutes)  # fmt: skip
            free = db.allocated_storage_gb * GIB * s.db_free_storage_percent / 100
            self._alarm(f"{args.system}-db-storage", f"{db.identifier}: free storage under {s.db_free_storage_percent} % of allocated", "AWS/RDS",
                        "FreeStorageSpace", dims, "Minimum", "LessThanThreshold", free, periods=minutes)  # fmt: skip
            limit = max_connections(db.instance_class) * s.db_connections_percent / 100
            self._alarm(f"{args.system}-db-connections", f"{db.identifier}: connections above {s.db_connections_percent} % of max_connections",
                        "AWS/RDS", "DatabaseConnections", dims, "Maximum", "GreaterThanThreshold", round(limit), periods=minutes)  # fmt: skip
        if (cache := args.cache) is not None:
            memory = s.cache_memory_noeviction_percent if cache.noeviction else s.cache_memory_percent
            for node in range(1, cache.nodes + 1):
                member = f"{cache.replication_group_id}-{node:03d}"  # ElastiCache names member clusters -001, -002, ...
                dims = {"CacheClusterId": member}
                self._alarm(f"{args.system}-cache-{node:03d}-cpu", f"{member}: engine CPU above {s.cache_cpu_percent} %", "AWS/ElastiCache",
                            "EngineCPUUtilization", dims, "Average", "GreaterThanThreshold", s.cache_cpu_percent, periods=minutes)  # fmt: skip
                self._alarm(f"{args.system}-cache-{node:03d}-memory", f"{member}: memory above {memory} %", "AWS/ElastiCache",
                            "DatabaseMemoryUsagePercentage", dims, "Maximum", "GreaterThanThreshold", memory, periods=minutes)  # fmt: skip
        self.dashboard = aws.cloudwatch.Dashboard(
            f"{name}-dashboard",
            dashboard_name=f"{args.env}-{args.system}",
            dashboard_body=pulumi.Output.all(
                pulumi.Output.all(*[pulumi.Output.all(w.key, w.target_group, w.load_balancer) for w in args.web]),
                pulumi.Output.all(*[pulumi.Output.all(svc.key, svc.service_name) for svc in args.services]),
                args.cluster_name,
            ).apply(lambda v: json.dumps(dashboard(args, v[0], v[1], v[2]))),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})

    def _alarm(self, key: str, description: str, namespace: str, metric: str, dimensions: dict, statistic: str, comparison: str,
               threshold: float, *, periods: int, missing: str = "notBreaching") -> None:  # fmt: skip
        stat = {"extended_statistic": statistic} if statistic.startswith("p") else {"statistic": statistic}
        aws.cloudwatch.MetricAlarm(
            key,
            alarm_description=description,
            namespace=namespace,
            metric_name=metric,
            dimensions=dimensions,
            period=60,
            evaluation_periods=periods,
            datapoints_to_alarm=periods,
            comparison_operator=comparison,
            threshold=threshold,
            treat_missing_data=missing,
            alarm_actions=[self._args.topic_arn],
            ok_actions=[self._args.topic_arn],
            **stat,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _error_rate(self, web: WebTarget, dims: dict, percent: float, minutes: int) -> None:
        def metric(id_: str, name: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=id_,
                return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace="AWS/ApplicationELB", metric_name=name, dimensions=dims, period=60, stat="Sum"
                ),
            )

        key = f"{web.key}-5xx-rate"
        aws.cloudwatch.MetricAlarm(
            key,
            alarm_description=f"{web.key}: 5xx above {percent} % of requests",
            comparison_operator="GreaterThanThreshold",
            threshold=percent,
            evaluation_periods=minutes,
            datapoints_to_alarm=minutes,
            treat_missing_data="notBreaching",
            metric_queries=[
                metric("errors", "HTTPCode_Target_5XX_Count"),
                metric("requests", "RequestCount"),
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="rate", label="5xx %", return_data=True, expression="IF(FILL(requests, 0) > 0, 100 * FILL(errors, 0) / requests, 0)"
                ),
            ],
            alarm_actions=[self._args.topic_arn],
            ok_actions=[self._args.topic_arn],
            opts=pulumi.ResourceOptions(parent=self),
        )


# ---------------------------------------------------------------- pure functions


# Memory (GiB) by instance size; r-families have twice the m-families' memory, burstables as listed.
_BURSTABLE = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
_GENERAL = {"large": 8, "xlarge": 16, "2xlarge": 32, "4xlarge": 64, "8xlarge": 128, "12xlarge": 192, "16xlarge": 256, "24xlarge": 384}


def max_connections(instance_class: str) -> int:
    """RDS Postgres's default ``max_connections``: LEAST(DBInstanceClassMemory / 9531392, 5000)."""
    _, family, size = instance_class.split(".")
    gib = _BURSTABLE[size] if family.startswith("t") else _GENERAL[size] * (2 if family.startswith("r") else 1)
    return min(gib * GIB // 9_531_392, 5000)


def dashboard(args: SystemMonitoringArgs, web: list[list[str]], services: list[list[str]], cluster: str) -> dict[str, Any]:
    """Widgets: ALB requests, 5xx and p95 per web service; ECS CPU and memory; database and cache."""
    region = args.region

    def widget(title: str, metrics: list[list[Any]], stat: str = "Average") -> dict[str, Any]:
        return {"type": "metric", "width": 12, "height": 6, "properties": {"title": title, "region": region, "stat": stat, "period": 60, "metrics": metrics}}

    widgets = []
    for key, tg, lb in web:
        dims = ["TargetGroup", tg, "LoadBalancer", lb]
        widgets.append(widget(f"{key} requests and 5xx", [["AWS/ApplicationELB", "RequestCount", *dims], [".", "HTTPCode_Target_5XX_Count", *dims]], "Sum"))
        widgets.append(widget(f"{key} p95 response time", [["AWS/ApplicationELB", "TargetResponseTime", *dims]], "p95"))
    if services:
        cpu = [["AWS/ECS", "CPUUtilization", "ClusterName", cluster, "ServiceName", name, {"label": key}] for key, name in services]
        mem = [["AWS/ECS", "MemoryUtilization", "ClusterName", cluster, "ServiceName", name, {"label": key}] for key, name in services]
        widgets += [widget("ECS CPU %", cpu), widget("ECS memory %", mem)]
    if args.database:
        dims = ["DBInstanceIdentifier", args.database.identifier]
        widgets.append(widget("Postgres", [["AWS/RDS", "CPUUtilization", *dims], [".", "DatabaseConnections", *dims], [".", "FreeStorageSpace", *dims]]))
    if args.cache:
        nodes = [f"{args.cache.replication_group_id}-{n:03d}" for n in range(1, args.cache.nodes + 1)]
        metrics = [["AWS/ElastiCache", m, "CacheClusterId", node] for node in nodes for m in ("EngineCPUUtilization", "DatabaseMemoryUsagePercentage")]
        widgets.append(widget("Redis", metrics))
    for i, w in enumerate(widgets):
        w["x"], w["y"] = (i % 2) * 12, (i // 2) * 6
    return {"widgets": widgets}
