"""Alarms and dashboards: two encrypted SNS topics per environment (critical, warning), alarms and a dashboard per system.

Children of :class:`AlarmTopic`: ``aws:sns/topic:Topic`` (encrypted with the environment key) and an
``aws:sns/topicSubscription:TopicSubscription`` per address in ``alarm_emails`` (each must confirm
the email AWS sends).

Children of :class:`SystemMonitoring`: ``aws:cloudwatch/metricAlarm:MetricAlarm`` per signal below,
and ``aws:cloudwatch/dashboard:Dashboard`` ``<env>-<system>``. Every alarm has a priority (its
``priority`` tag) and notifies that priority's topic when it fires and when it recovers: **critical**
pages (the service is down, answers 5xx, or its database is filling up), **warning** emails (CPU,
memory, connections, latency: something to look at in working hours). docs/operating.md, "Alarms".
:class:`LoadBalancerMonitoring` adds the load balancer's own 5xx rate (the
ELB's 502/503/504 are published per load balancer only, not per service).

=================  ===========================================================================
web service        no healthy targets (critical); a target failing its health check 3 minutes
                   running (warning); 5xx above ``error_rate_percent`` of requests (critical); p95
                   above ``latency_p95_seconds`` (warning) (offerhub's alert table, every web service)
database           CPU (warning); free storage under ``db_free_storage_percent`` of allocated
                   (critical); connections above ``db_connections_percent`` of the
                   ``max_connections`` the parameter group sets for the class (warning; one table:
                   ``stacks.presets.postgres_max_connections``)
cache (per node)   engine CPU; memory above ``cache_memory_percent``, or the lower
                   ``cache_memory_noeviction_percent`` for ``noeviction`` caches, whose writes fail
                   when full (they never evict, so an evictions alarm would stay silent) (warning)
singleton          fewer than one running task (Container Insights) (critical)
=================  ===========================================================================

What the apps themselves report (outside checks, queues, log-derived counts, task restarts) is in
components/alerting.py, with the same two priorities.

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

from stacks.presets import ObservabilityPreset, postgres_max_connections

from .budget import topic_policy_statement

GIB = 1024**3
CRITICAL, WARNING = "critical", "warning"
PRIORITIES = (CRITICAL, WARNING)
"""Critical pages (whoever is on call, at any hour); warning emails (working hours)."""


@dataclass(frozen=True)
class Topics:
    """Where each priority's alarms go: two topics of one environment (or, for alarms that must live in
    another region, that region's copies)."""

    critical: pulumi.Input[str]
    warning: pulumi.Input[str]

    def arn(self, priority: str) -> pulumi.Input[str]:
        if priority not in PRIORITIES:
            raise ValueError(f"unknown alarm priority {priority!r}")
        return self.critical if priority == CRITICAL else self.warning


@dataclass(frozen=True, kw_only=True)
class AlarmTopicArgs:
    kms_key_arn: pulumi.Input[str]
    emails: Sequence[str] = ()
    region: str | None = None
    """Create the topic in this region instead of the provider's (the us-east-1 copy that Route 53 health
    check alarms need: their metrics exist only there). ``kms_key_arn`` must be a key of that region."""
    account_id: pulumi.Input[str] | None = None
    """With it, the topic gets an access policy: SNS's default statement (this account's principals and
    services acting for it, ``AWS:SourceOwner``: CloudWatch alarms and RDS events publish through it)
    plus AWS Budgets, which only a statement naming it may publish (components/budget.py)."""


class AlarmTopic(pulumi.ComponentResource):
    """Where every alarm of the environment goes."""

    arn: pulumi.Output[str]

    def __init__(self, name: str, args: AlarmTopicArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:observability:AlarmTopic", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        where = {"region": args.region} if args.region else {}
        topic = aws.sns.Topic(f"{name}-topic", kms_master_key_id=args.kms_key_arn, opts=child, **where)
        if args.account_id is not None:
            policy = pulumi.Output.all(topic.arn, args.account_id).apply(lambda v: json.dumps(alarm_topic_policy(v[0], v[1])))
            aws.sns.TopicPolicy(f"{name}-policy", arn=topic.arn, policy=policy, opts=child, **where)
        for email in args.emails:
            slug = re.sub(r"[^a-z0-9]+", "-", email.lower()).strip("-")
            aws.sns.TopicSubscription(f"{name}-{slug}", topic=topic.arn, protocol="email", endpoint=email, opts=child, **where)
        self.arn = topic.arn
        self.register_outputs({"arn": self.arn})


def alarm_topic_policy(topic_arn: str, account: str) -> dict:
    """The alarm topic's access policy. A topic policy replaces SNS's default one, so its owner statement
    is kept as SNS writes it (SNS developer guide, "Example cases for Amazon SNS access control"); the
    second statement lets AWS Budgets of this account publish."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AccountOwner",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": [
                    "SNS:GetTopicAttributes",
                    "SNS:SetTopicAttributes",
                    "SNS:AddPermission",
                    "SNS:RemovePermission",
                    "SNS:DeleteTopic",
                    "SNS:Subscribe",
                    "SNS:ListSubscriptionsByTopic",
                    "SNS:Publish",
                ],
                "Resource": topic_arn,
                "Condition": {"StringEquals": {"AWS:SourceOwner": account}},
            },
            topic_policy_statement(topic_arn, account),
        ],
    }


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
    paused: bool = False
    """See :class:`EcsService`."""
    alternate: pulumi.Input[str] | None = None
    """The service's second target group where its deploys shift traffic (blue/green, canary): ECS
    moves the traffic from one group to the other on every deploy, so each alarm reads both."""


@dataclass(frozen=True)
class EcsService:
    key: str
    service_name: pulumi.Input[str]
    singleton: bool
    paused: bool = False
    """An operator paused it (``platform:systems.<s>.paused``): its alarms keep evaluating but notify
    no one, so ``pulumi up`` agrees with ``tools.ops pause``, which turned their actions off."""


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
    """The critical topic (pages)."""
    cluster_name: pulumi.Input[str]
    settings: ObservabilityPreset
    warning_topic_arn: pulumi.Input[str] | None = None
    """The warning topic (emails). Default: the critical topic (one topic for everything)."""
    web: Sequence[WebTarget] = ()
    services: Sequence[EcsService] = ()
    database: Database | None = None
    cache: Cache | None = None


class SystemMonitoring(pulumi.ComponentResource):
    """One system's alarms and dashboard."""

    def __init__(self, name: str, args: SystemMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:observability:SystemMonitoring", name, None, opts)
        self._args = args
        self.topics = Topics(args.topic_arn, args.warning_topic_arn or args.topic_arn)
        s = args.settings
        minutes = s.evaluation_minutes
        for web in args.web:
            if web.alternate is not None:
                self._both_groups(web, s, minutes)
                continue
            dims = {"TargetGroup": web.target_group, "LoadBalancer": web.load_balancer}
            self._alarm(f"{web.key}-no-healthy-targets", f"{web.key} is down: no healthy targets", "AWS/ApplicationELB", "HealthyHostCount",
                        dims, "Minimum", "LessThanThreshold", 1, periods=1, missing="breaching", paused=web.paused, priority=CRITICAL)  # fmt: skip
            self._alarm(f"{web.key}-failing-health-checks", f"{web.key}: a target has failed its health check for 3 minutes", "AWS/ApplicationELB",
                        "UnHealthyHostCount", dims, "Maximum", "GreaterThanOrEqualToThreshold", 1, periods=3, paused=web.paused, priority=WARNING)  # fmt: skip
            self._error_rate(web, dims, s.error_rate_percent, minutes)
            self._alarm(f"{web.key}-p95-latency", f"{web.key}: p95 response time above {s.latency_p95_seconds} s", "AWS/ApplicationELB",
                        "TargetResponseTime", dims, "p95", "GreaterThanThreshold", s.latency_p95_seconds, periods=minutes, paused=web.paused,
                        priority=WARNING)  # fmt: skip
        for svc in args.services:
            if svc.singleton:
                self._alarm(f"{svc.key}-not-running", f"{svc.key}: the singleton is not running", "ECS/ContainerInsights", "RunningTaskCount",
                            {"ClusterName": args.cluster_name, "ServiceName": svc.service_name}, "Minimum", "LessThanThreshold", 1, periods=3,
                            missing="breaching", paused=svc.paused, priority=CRITICAL)  # fmt: skip
        if (db := args.database) is not None:
            dims = {"DBInstanceIdentifier": db.identifier}
            self._alarm(f"{args.system}-db-cpu", f"{db.identifier}: CPU above {s.db_cpu_percent} %", "AWS/RDS", "CPUUtilization", dims,
                        "Average", "GreaterThanThreshold", s.db_cpu_percent, periods=minutes, priority=WARNING)  # fmt: skip
            free = db.allocated_storage_gb * GIB * s.db_free_storage_percent / 100
            self._alarm(f"{args.system}-db-storage", f"{db.identifier}: free storage under {s.db_free_storage_percent} % of allocated", "AWS/RDS",
                        "FreeStorageSpace", dims, "Minimum", "LessThanThreshold", free, periods=minutes, priority=CRITICAL)  # fmt: skip
            limit = max_connections(db.instance_class) * s.db_connections_percent / 100
            self._alarm(f"{args.system}-db-connections", f"{db.identifier}: connections above {s.db_connections_percent} % of max_connections",
                        "AWS/RDS", "DatabaseConnections", dims, "Maximum", "GreaterThanThreshold", round(limit), periods=minutes,
                        priority=WARNING)  # fmt: skip
        if (cache := args.cache) is not None:
            memory = s.cache_memory_noeviction_percent if cache.noeviction else s.cache_memory_percent
            for node in range(1, cache.nodes + 1):
                member = f"{cache.replication_group_id}-{node:03d}"  # ElastiCache names member clusters -001, -002, ...
                dims = {"CacheClusterId": member}
                self._alarm(f"{args.system}-cache-{node:03d}-cpu", f"{member}: engine CPU above {s.cache_cpu_percent} %", "AWS/ElastiCache",
                            "EngineCPUUtilization", dims, "Average", "GreaterThanThreshold", s.cache_cpu_percent, periods=minutes,
                            priority=WARNING)  # fmt: skip
                self._alarm(f"{args.system}-cache-{node:03d}-memory", f"{member}: memory above {memory} %", "AWS/ElastiCache",
                            "DatabaseMemoryUsagePercentage", dims, "Maximum", "GreaterThanThreshold", memory, periods=minutes,
                            priority=WARNING)  # fmt: skip
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
               threshold: float, *, periods: int, priority: str, missing: str = "notBreaching", paused: bool = False) -> None:  # fmt: skip
        stat = {"extended_statistic": statistic} if statistic.startswith("p") else {"statistic": statistic}
        topic = self.topics.arn(priority)
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
            alarm_actions=[topic],
            ok_actions=[topic],
            actions_enabled=not paused,
            tags={"priority": priority},
            **stat,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _both_groups(self, web: WebTarget, s: ObservabilityPreset, minutes: int) -> None:
        """The same four alarms, same names, for a service whose traffic lives in either of two target
        groups (components/service.py, "Deploys"): healthy targets summed, unhealthy and p95 the worse
        group, 5xx over both groups' requests. A metric a group does not report counts as 0."""
        groups = [web.target_group, web.alternate]

        def alarm(key: str, description: str, metric: str, stat: str, expression: str, comparison: str, threshold: float, periods: int,
                  missing: str = "notBreaching", *, priority: str) -> None:  # fmt: skip
            topic = self.topics.arn(priority)
            queries = [
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id=f"{prefix}{i}",
                    return_data=False,
                    metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(namespace="AWS/ApplicationELB", metric_name=name, period=60, stat=stat,
                                                                           dimensions={"TargetGroup": tg, "LoadBalancer": web.load_balancer}),
                )
                for prefix, name in (metric if isinstance(metric, dict) else {"m": metric}).items()
                for i, tg in enumerate(groups)
            ]  # fmt: skip
            aws.cloudwatch.MetricAlarm(
                key,
                alarm_description=description,
                comparison_operator=comparison,
                threshold=threshold,
                evaluation_periods=periods,
                datapoints_to_alarm=periods,
                treat_missing_data=missing,
                metric_queries=[*queries, aws.cloudwatch.MetricAlarmMetricQueryArgs(id="signal", return_data=True, expression=expression)],
                alarm_actions=[topic],
                ok_actions=[topic],
                actions_enabled=not web.paused,
                tags={"priority": priority},
                opts=pulumi.ResourceOptions(parent=self),
            )

        alarm(f"{web.key}-no-healthy-targets", f"{web.key} is down: no healthy targets", "HealthyHostCount", "Minimum",
              "FILL(m0, 0) + FILL(m1, 0)", "LessThanThreshold", 1, 1, missing="breaching", priority=CRITICAL)  # fmt: skip
        alarm(f"{web.key}-failing-health-checks", f"{web.key}: a target has failed its health check for 3 minutes", "UnHealthyHostCount",
              "Maximum", "MAX([FILL(m0, 0), FILL(m1, 0)])", "GreaterThanOrEqualToThreshold", 1, 3, priority=WARNING)  # fmt: skip
        alarm(f"{web.key}-5xx-rate", f"{web.key}: 5xx (its targets' own, plus connections to them the load balancer answered 502/504) above "
              f"{s.error_rate_percent} % of requests", {"e": "HTTPCode_Target_5XX_Count", "c": "TargetConnectionErrorCount", "r": "RequestCount"}, "Sum",
              "IF(FILL(r0, 0) + FILL(r1, 0) > 0, 100 * (FILL(e0, 0) + FILL(c0, 0) + FILL(e1, 0) + FILL(c1, 0)) / (FILL(r0, 0) + FILL(r1, 0)), 0)",
              "GreaterThanThreshold", s.error_rate_percent, minutes, priority=CRITICAL)  # fmt: skip
        alarm(f"{web.key}-p95-latency", f"{web.key}: p95 response time above {s.latency_p95_seconds} s", "TargetResponseTime", "p95",
              "MAX([FILL(m0, 0), FILL(m1, 0)])", "GreaterThanThreshold", s.latency_p95_seconds, minutes, priority=WARNING)  # fmt: skip

    def _error_rate(self, web: WebTarget, dims: dict, percent: float, minutes: int) -> None:
        # What is attributable to this service (AWS, "CloudWatch metrics for your Application Load Balancer",
        # the dimensions of each metric): HTTPCode_Target_5XX_Count and TargetConnectionErrorCount are
        # published per target group. HTTPCode_ELB_5XX_Count and HTTPCode_ELB_500/502/503/504_Count, the
        # errors the load balancer answers itself, are published per load balancer (and AZ) only, so no
        # target group is charged with them; LoadBalancerMonitoring alarms on them for the whole ALB.
        # A failed connection to a target is an ELB 502 (RST on connect) or 504 (connect timeout) to the
        # client ("Troubleshoot your Application Load Balancers", HTTP 502/504): that share of the ELB's 5xx is
        # attributable and counted here. Not attributable: 503 while the target group has no registered
        # target (the no-healthy-targets alarm covers it), 502 when a task dies mid-request or answers
        # garbage, 504 past the idle timeout.
        # Each count is reported only when non-zero, so each is filled with 0; with no request in a minute
        # the rate is 0, and with no data at all the alarm stays OK (notBreaching), not INSUFFICIENT_DATA.
        _rate_alarm(
            f"{web.key}-5xx-rate",
            self,
            f"{web.key}: 5xx (its targets' own, plus connections to them the load balancer answered 502/504) above {percent} % of requests",
            {"errors": "HTTPCode_Target_5XX_Count", "connection_errors": "TargetConnectionErrorCount", "requests": "RequestCount"},
            dims,
            "IF(FILL(requests, 0) > 0, 100 * (FILL(errors, 0) + FILL(connection_errors, 0)) / requests, 0)",
            percent,
            minutes,
            self.topics.arn(CRITICAL),
            paused=web.paused,
        )


@dataclass(frozen=True, kw_only=True)
class LoadBalancerMonitoringArgs:
    load_balancer: pulumi.Input[str]
    """Load balancer ARN suffix (``app/...``)."""
    topic_arn: pulumi.Input[str]
    """The critical topic: a load balancer answering 5xx pages."""
    settings: ObservabilityPreset


class LoadBalancerMonitoring(pulumi.ComponentResource):
    """The 5xx rate of the whole load balancer, the ELB's own 5xx included.

    Child: one ``aws:cloudwatch/metricAlarm:MetricAlarm`` ``<name>-5xx-rate``. The 502/503/504 the load
    balancer generates itself (tasks gone, a target group empty, a target resetting or timing out) are
    published per load balancer only, so this is the one alarm that sees all of them; the per-service
    ``<service>-5xx-rate`` alarms say which service it is when the targets answer.
    """

    def __init__(self, name: str, args: LoadBalancerMonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:observability:LoadBalancerMonitoring", name, None, opts)
        s = args.settings
        # RequestCount counts only the requests for which the load balancer chose a target; a 503 for an
        # empty target group is not in it, so the ELB's 5xx join the denominator (a 502/504 to a chosen
        # target is then counted twice there: the rate reads at most half too low, an outage still crosses it).
        _rate_alarm(
            f"{name}-5xx-rate",
            self,
            f"load balancer: 5xx (the load balancer's own and its targets') above {s.error_rate_percent} % of requests",
            {"elb_errors": "HTTPCode_ELB_5XX_Count", "target_errors": "HTTPCode_Target_5XX_Count", "requests": "RequestCount"},
            {"LoadBalancer": args.load_balancer},
            "IF(FILL(requests, 0) + FILL(elb_errors, 0) > 0, "
            "100 * (FILL(elb_errors, 0) + FILL(target_errors, 0)) / (FILL(requests, 0) + FILL(elb_errors, 0)), 0)",
            s.error_rate_percent,
            s.evaluation_minutes,
            args.topic_arn,
        )
        self.register_outputs({})


def _rate_alarm(key: str, parent: pulumi.Resource, description: str, metrics: dict[str, str], dims: dict, expression: str, percent: float,
                minutes: int, topic_arn: pulumi.Input[str], paused: bool = False) -> aws.cloudwatch.MetricAlarm:  # fmt: skip
    """A metric-math alarm on ``expression`` (a percentage) over per-minute sums of ``metrics`` (id -> name);
    a 5xx rate, so critical: ``topic_arn`` is the critical topic."""
    queries = [
        aws.cloudwatch.MetricAlarmMetricQueryArgs(
            id=id_,
            return_data=False,
            metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(namespace="AWS/ApplicationELB", metric_name=name, dimensions=dims, period=60, stat="Sum"),
        )
        for id_, name in metrics.items()
    ]
    return aws.cloudwatch.MetricAlarm(
        key,
        alarm_description=description,
        comparison_operator="GreaterThanThreshold",
        threshold=percent,
        evaluation_periods=minutes,
        datapoints_to_alarm=minutes,
        treat_missing_data="notBreaching",
        metric_queries=[*queries, aws.cloudwatch.MetricAlarmMetricQueryArgs(id="rate", label="5xx %", return_data=True, expression=expression)],
        alarm_actions=[topic_arn],
        ok_actions=[topic_arn],
        actions_enabled=not paused,
        tags={"priority": CRITICAL},  # a 5xx rate pages (offerhub: "High Error Rate | >5% 5xx errors | High")
        opts=pulumi.ResourceOptions(parent=parent),
    )


# ---------------------------------------------------------------- pure functions


def max_connections(instance_class: str) -> int:
    """The ``max_connections`` the Postgres parameter group sets for the class: the alarm's 100 %.

    Not RDS's default (which comes from DBInstanceClassMemory, less than the nominal memory): the
    component sets the value explicitly from the same table (:func:`stacks.presets.postgres_max_connections`).
    """
    return postgres_max_connections(instance_class)


def dashboard(args: SystemMonitoringArgs, web: list[list[str]], services: list[list[str]], cluster: str) -> dict[str, Any]:
    """Widgets: ALB requests, 5xx, p50 and p95 per web service; ECS CPU and memory; database and cache."""
    region = args.region

    def widget(title: str, metrics: list[list[Any]], stat: str = "Average") -> dict[str, Any]:
        return {"type": "metric", "width": 12, "height": 6, "properties": {"title": title, "region": region, "stat": stat, "period": 60, "metrics": metrics}}

    widgets = []
    for key, tg, lb in web:
        dims = ["TargetGroup", tg, "LoadBalancer", lb]
        widgets.append(
            widget(
                f"{key} requests and 5xx",
                [
                    ["AWS/ApplicationELB", "RequestCount", *dims],
                    [".", "HTTPCode_Target_5XX_Count", *dims],
                    [".", "TargetConnectionErrorCount", *dims, {"label": "connections failed (ELB 502/504)"}],
                    # published per load balancer only: every service's 502/503/504 from the ELB itself
                    [".", "HTTPCode_ELB_5XX_Count", "LoadBalancer", lb, {"label": "ELB 5xx, whole load balancer"}],
                ],
                "Sum",
            )
        )
        # starkdca's guide, "Key Metrics to Watch": "API response times (p50, p95)"
        latency = [["AWS/ApplicationELB", "TargetResponseTime", *dims, {"stat": "p50", "label": "p50"}], [".", ".", *dims, {"stat": "p95", "label": "p95"}]]
        widgets.append(widget(f"{key} response time p50 and p95", latency, "p95"))
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
