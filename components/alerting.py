"""What the apps themselves report, turned into alarms (issue 16): outside checks, queues, log-derived
counts, task restarts, and scaling out on latency.

One :class:`AppAlarms` component per system with anything below (``<system>-alerting``); each alarm has a
priority (``stacks``' two topics, components/observability.py) and its ``priority`` tag.

- **Outside checks** (:class:`OutsideCheck`): Route 53 health checks from the internet, on stacks with a
  domain only (HTTPS on 443 to the service's hostname). Every web service's catalog ``health.path``
  (HTTPS: 2xx/3xx), plus the app's own string-matched checks (offerhub: database and Redis from
  ``/api/v1/health/detailed``). Route 53 publishes ``AWS/Route53`` ``HealthCheckStatus`` in us-east-1
  only, so the alarm is created there (``region``) and notifies a us-east-1 copy of the critical topic
  when the stack runs elsewhere. Without a domain (dev: plain HTTP, one port per service on the load
  balancer's DNS name) there is no outside check: the load balancer's no-healthy-targets and
  failing-health-check alarms still watch every target. With ``edge.ingress_cidrs`` the load balancer
  admits only those ranges, not Route 53's health checkers (``ROUTE53_HEALTHCHECKS`` in ip-ranges.json),
  so the checks would always fail: they are not created and the preview says why.
- **Queues** (offerhub): gauges the app publishes through the OTEL collector, read where the EMF exporter
  writes them (:func:`components.otel.namespace`, dimension ``OTelLib`` = the meter's name).
- **Log-derived counts** (starkdca): a metric filter on a service's log group (pino JSON lines).
- **Restarts** (starkdca's worker): an EventBridge rule on ``ECS Task State Change`` events of the
  service whose task stopped because its essential container exited or it failed to start; the rule
  writes each event to a log group (the record of why) and the alarm counts the rule's
  ``AWS/Events`` ``TriggeredRules``.
- **Latency scaling** (offerhub): step scaling on a p95 ``TargetResponseTime`` alarm.

The per-app contract lives in :data:`APP_ALERTS` (each value with the seed line it meets), documented for
the app teams in docs/operating.md, "Alarms".

Cost note: a Route 53 health check of an AWS endpoint is $0.50 a month (the first 50 free), plus $1 for
HTTPS and $1 for string matching (non-AWS endpoints: $0.75, $2, $2); tools/cost.py prices them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pulumi
import pulumi_aws as aws

from stacks.catalog import ServiceKind

from . import otel
from .observability import CRITICAL, WARNING, Topics

if TYPE_CHECKING:
    from stacks.config import DeployedSystem, PlatformConfig

    from .service import Service

ROUTE53_METRICS_REGION = "us-east-1"
"""Route 53 health check metrics exist in US East (N. Virginia) only (Route 53 developer guide,
"Monitoring health checks using CloudWatch"): an alarm on them must be created there."""
REQUEST_INTERVAL_SECONDS = 30
"""Seconds between one checker's requests: 30 (standard) or 10 (fast, an extra charge); fixed at creation."""
REQUEST_INTERVALS = (10, 30)
FAILURE_THRESHOLD = 3
"""Consecutive failures before a checker calls the endpoint unhealthy (1-10): offerhub's "Health check fails 3x"."""
FAILURE_THRESHOLDS = range(1, 11)
SEARCH_WINDOW_BYTES = 5120
"""``HTTP(S)_STR_MATCH`` searches the first 5,120 bytes of the body (HealthCheckConfig, Route 53 API)."""
SEARCH_STRING_MAX = 255
RESTART_WINDOW_MINUTES = 15
RESTART_THRESHOLD = 3
CRASH_STOP_CODES = ("EssentialContainerExited", "TaskFailedToStart")
HEALTH_CHECK_STOP_REASON = "Task failed container health checks"
"""How ECS's service scheduler says it replaced a task whose essential container failed its health check."""
"""``stopCode`` of a task that died or never started (ECS API ``Task.stopCode``). Not counted: a deploy or a
scale-in (``ServiceSchedulerInitiated``), an operator (``UserInitiated``), a Spot reclaim (``SpotInterruption``,
``TerminationNotice``)."""


# ---------------------------------------------------------------- the apps' contract


@dataclass(frozen=True)
class OutsideCheck:
    """A string-matched check of one path of a web service, from the internet."""

    name: str
    service: str
    path: str
    search: str
    """Case-sensitive; must appear in the first 5,120 bytes of the body."""
    priority: str
    seed: str


@dataclass(frozen=True)
class QueueGauge:
    metric: str
    threshold: float
    priority: str
    seed: str


@dataclass(frozen=True)
class LogCount:
    """Count log lines of ``service`` that match ``pattern`` (a CloudWatch Logs filter pattern) into
    ``metric``; alarm at ``threshold`` within ``minutes``."""

    name: str
    service: str
    metric: str
    pattern: str
    threshold: int
    minutes: int
    priority: str
    seed: str


@dataclass(frozen=True)
class AppAlerts:
    checks: tuple[OutsideCheck, ...] = ()
    meter: str | None = None
    """The OTEL meter (instrumentation scope) the app publishes its gauges with: the ``OTelLib`` dimension."""
    queues: tuple[QueueGauge, ...] = ()
    logs: tuple[LogCount, ...] = ()
    restarts: tuple[str, ...] = ()
    """Services whose repeated crashes alarm (critical)."""
    latency_scaling: Mapping[str, float] = field(default_factory=dict)
    """Service -> p95 seconds above which it adds tasks (where it autoscales)."""


APP_ALERTS: dict[str, AppAlerts] = {
    "offerhub": AppAlerts(
        checks=(
            # the guide's expected body: {"data":{"status":"healthy","dependencies":{"database":{"status":"healthy"},...}}}
            OutsideCheck(
                "database", "api", "/api/v1/health/detailed", '"database":{"status":"healthy"', CRITICAL, "Database Connection | DB health unhealthy | Critical"
            ),
            OutsideCheck(
                "redis", "api", "/api/v1/health/detailed", '"redis":{"status":"healthy"', CRITICAL, "Redis Connection | Redis health unhealthy | High"
            ),
        ),
        meter="offerhub",
        queues=(
            QueueGauge("offerhub.queue.waiting", 1000, WARNING, "Queue Backlog | >1000 jobs | Consider separate worker"),
            QueueGauge("offerhub.queue.dead_letter", 100, WARNING, "DLQ Growing | Dead letter queue > 100 jobs | Medium"),
        ),
        latency_scaling={"api": 0.5},  # "Request Latency | p95 >500ms | Add replicas or optimize"
    ),
    "darwin": AppAlerts(
        checks=(
            # the guide's app/api/health/route.ts: NextResponse.json({status, timestamp, services: {timer:
            # {status: 'healthy'}, redis: await checkRedis(), solana: await checkSolanaRPC()}, ...}), always 200,
            # so only the body tells; checkRedis/checkSolanaRPC are assumed to return {status: 'healthy'} as
            # timer does (docs/operating.md asks the app team to confirm)
            OutsideCheck("redis", "app", "/api/health", '"redis":{"status":"healthy"', CRITICAL, "Alert Conditions: Redis connection failures"),
            OutsideCheck("solana", "app", "/api/health", '"solana":{"status":"healthy"', WARNING, "Alert Conditions: Solana RPC failures"),
        ),
    ),
    "starkdca": AppAlerts(
        logs=(
            LogCount(
                "failed-dca-runs",
                "worker",
                "DcaExecutionsFailed",
                '{ ($.executionStatus = "FAILED") || ($.executionStatus = "failed") }',
                3,
                15,
                WARNING,
                "DCA execution success/failure rate (grep logs for `executionStatus`)",
            ),
        ),
        restarts=("worker",),  # "Worker service restart count"
    ),
}


# ---------------------------------------------------------------- the component


@dataclass(frozen=True)
class Endpoint:
    """One outside check to create."""

    key: str
    fqdn: str
    path: str
    search: str | None
    priority: str
    description: str
    paused: bool = False


@dataclass(frozen=True)
class Target:
    """One ECS service of the system, as the alarms need it."""

    name: str
    key: str
    service_name: pulumi.Input[str]
    log_group_name: pulumi.Input[str] | None
    paused: bool = False
    autoscaled: bool = False
    service: pulumi.Resource | None = None
    """The Service component: a scaling policy waits for its scalable target (a child)."""
    target_group: pulumi.Input[str] | None = None
    alternate: pulumi.Input[str] | None = None
    """The second target group of a blue/green or canary service (components/service.py, "Deploys")."""
    load_balancer: pulumi.Input[str] | None = None


@dataclass(frozen=True, kw_only=True)
class AppAlarmsArgs:
    env: str
    system: str
    region: str
    account_id: pulumi.Input[str]
    topics: Topics
    route53_topics: Topics | None = None
    """Topics in us-east-1 for the Route 53 alarms; None when the stack runs in us-east-1 (``topics``)."""
    cluster_name: pulumi.Input[str] = ""
    cluster_arn: pulumi.Input[str] = ""
    kms_key_arn: pulumi.Input[str] = ""
    log_retention_days: int = 7
    alerts: AppAlerts = AppAlerts()
    endpoints: Sequence[Endpoint] = ()
    services: Mapping[str, Target] = field(default_factory=dict)
    emf: bool = True
    """Metrics reach CloudWatch through the EMF exporter (no external OTLP endpoint)."""
    evaluation_minutes: int = 5


class AppAlarms(pulumi.ComponentResource):
    """One system's outside checks, app-reported alarms, restart alarm and latency scaling."""

    def __init__(self, name: str, args: AppAlarmsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:observability:AppAlarms", name, None, opts)
        self._child = pulumi.ResourceOptions(parent=self)
        for endpoint in args.endpoints:
            self._outside_check(args, endpoint)
        a = args.alerts
        if a.queues and args.emf and a.meter:
            namespace = otel.namespace(args.env, args.system)
            for q in a.queues:
                short = q.metric.rsplit(".", 1)[-1].replace("_", "-")
                self._alarm(f"{args.system}-queue-{short}", f"{args.system}: {q.metric} above {q.threshold:g} ({q.seed})", args.topics, q.priority,
                            namespace=namespace, metric_name=q.metric, dimensions={"OTelLib": a.meter}, statistic="Maximum", period=60,
                            evaluation_periods=args.evaluation_minutes, datapoints_to_alarm=args.evaluation_minutes,
                            comparison_operator="GreaterThanThreshold", threshold=q.threshold, treat_missing_data="notBreaching")  # fmt: skip
        elif a.queues:
            pulumi.log.warn(f"{args.system}: no queue alarms: its metrics go to the external OTLP endpoint, not to CloudWatch", self)
        for count in a.logs:
            target = args.services.get(count.service)
            if target is None or target.log_group_name is None:
                continue
            namespace = otel.namespace(args.env, args.system)
            aws.cloudwatch.LogMetricFilter(
                f"{args.system}-{count.name}",
                name=f"{args.system}-{count.name}",
                log_group_name=target.log_group_name,
                pattern=count.pattern,
                metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(name=count.metric, namespace=namespace, value="1", unit="Count"),
                opts=self._child,
            )
            self._alarm(f"{args.system}-{count.name}", f"{target.key}: {count.threshold} or more failures in {count.minutes} minutes ({count.seed})",
                        args.topics, count.priority, namespace=namespace, metric_name=count.metric, statistic="Sum", period=count.minutes * 60,
                        evaluation_periods=1, datapoints_to_alarm=1, comparison_operator="GreaterThanOrEqualToThreshold", threshold=count.threshold,
                        treat_missing_data="notBreaching", paused=target.paused)  # fmt: skip
        for service in a.restarts:
            if (target := args.services.get(service)) is not None:
                self._restarts(args, target)
        for service, seconds in a.latency_scaling.items():
            target = args.services.get(service)
            if target is not None and target.autoscaled and target.target_group is not None:
                self._latency_scaling(args, target, seconds)
        self.register_outputs({})

    def _alarm(
        self, key: str, description: str, topics: Topics, priority: str, *, paused: bool = False, region: str | None = None, **kwargs
    ) -> aws.cloudwatch.MetricAlarm:
        topic = topics.arn(priority)
        where = {"region": region} if region else {}
        return aws.cloudwatch.MetricAlarm(
            key,
            alarm_description=description,
            alarm_actions=[topic],
            ok_actions=[topic],
            actions_enabled=not paused,
            tags={"priority": priority},
            opts=self._child,
            **where,
            **kwargs,
        )

    def _outside_check(self, args: AppAlarmsArgs, e: Endpoint) -> None:
        check = aws.route53.HealthCheck(
            f"{e.key}-outside",
            type="HTTPS_STR_MATCH" if e.search else "HTTPS",
            fqdn=e.fqdn,
            port=443,
            resource_path=e.path,
            search_string=e.search,
            enable_sni=True,
            request_interval=REQUEST_INTERVAL_SECONDS,
            failure_threshold=FAILURE_THRESHOLD,
            measure_latency=False,
            tags={"Name": f"{args.env}-{e.key}"},
            opts=self._child,
        )
        elsewhere = args.region != ROUTE53_METRICS_REGION
        topics = args.route53_topics if elsewhere and args.route53_topics else args.topics
        self._alarm(f"{e.key}-outside", e.description, topics, e.priority, paused=e.paused, region=ROUTE53_METRICS_REGION if elsewhere else None,
                    namespace="AWS/Route53", metric_name="HealthCheckStatus", dimensions={"HealthCheckId": check.id}, statistic="Minimum",
                    period=60, evaluation_periods=1, datapoints_to_alarm=1, comparison_operator="LessThanThreshold", threshold=1,
                    treat_missing_data="breaching")  # fmt: skip

    def _restarts(self, args: AppAlarmsArgs, target: Target) -> None:
        key = target.key
        group = aws.cloudwatch.LogGroup(
            f"{key}-stops",
            name=f"/platform/{args.env}/{args.system}/{target.name}/stops",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            opts=self._child,
        )
        policy = aws.cloudwatch.LogResourcePolicy(
            f"{key}-stops-delivery",
            resource_arn=group.arn,
            policy_document=group.arn.apply(lambda arn: json.dumps(events_to_logs_policy(arn))),
            opts=self._child,
        )
        rule = aws.cloudwatch.EventRule(
            f"{key}-stops",
            description=f"{key}: a task stopped because its essential container exited or it failed to start",
            event_pattern=pulumi.Output.all(args.cluster_arn, target.service_name).apply(lambda v: json.dumps(crash_pattern(v[0], v[1]))),
            opts=self._child,
        )
        aws.cloudwatch.EventTarget(
            f"{key}-stops",
            rule=rule.name,
            arn=group.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self._alarm(f"{key}-restarting", f"{key} restarts repeatedly: {RESTART_THRESHOLD} or more tasks crashed or failed to start in "
                    f"{RESTART_WINDOW_MINUTES} minutes (why: log group /platform/{args.env}/{args.system}/{target.name}/stops)",
                    args.topics, CRITICAL, paused=target.paused, namespace="AWS/Events", metric_name="TriggeredRules",
                    dimensions={"RuleName": rule.name}, statistic="Sum", period=RESTART_WINDOW_MINUTES * 60, evaluation_periods=1,
                    datapoints_to_alarm=1, comparison_operator="GreaterThanOrEqualToThreshold", threshold=RESTART_THRESHOLD,
                    treat_missing_data="notBreaching")  # fmt: skip

    def _latency_scaling(self, args: AppAlarmsArgs, target: Target, seconds: float) -> None:
        resource_id = pulumi.Output.concat("service/", args.cluster_name, "/", target.service_name)
        policy = aws.appautoscaling.Policy(
            f"{target.key}-scale-latency",
            policy_type="StepScaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=resource_id,
            step_scaling_policy_configuration=aws.appautoscaling.PolicyStepScalingPolicyConfigurationArgs(
                adjustment_type="ChangeInCapacity",
                cooldown=120,
                metric_aggregation_type="Maximum",
                # bounds are relative to the alarm's threshold: up to twice it, one task; beyond, two
                step_adjustments=[
                    aws.appautoscaling.PolicyStepScalingPolicyConfigurationStepAdjustmentArgs(
                        metric_interval_lower_bound="0", metric_interval_upper_bound=f"{seconds:g}", scaling_adjustment=1
                    ),
                    aws.appautoscaling.PolicyStepScalingPolicyConfigurationStepAdjustmentArgs(metric_interval_lower_bound=f"{seconds:g}", scaling_adjustment=2),
                ],
            ),
            # the scalable target is a child of the service component: registered first
            opts=pulumi.ResourceOptions(parent=self, depends_on=[target.service] if target.service is not None else None),
        )
        # the worse p95 of the service's target groups: a blue/green or canary deploy moves the traffic to the other one
        groups = [g for g in (target.target_group, target.alternate) if g is not None]
        queries = [
            aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=f"p{i}",
                return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(namespace="AWS/ApplicationELB", metric_name="TargetResponseTime", period=60,
                                                                       stat="p95", dimensions={"TargetGroup": g, "LoadBalancer": target.load_balancer}),
            )
            for i, g in enumerate(groups)
        ]  # fmt: skip
        fill = ", ".join(f"FILL(p{i}, 0)" for i in range(len(groups)))
        aws.cloudwatch.MetricAlarm(
            f"{target.key}-latency-scale-out",
            alarm_description=f"{target.key}: p95 response time above {seconds:g} s for 3 minutes adds tasks (scaling, notifies no one)",
            metric_queries=[
                *queries,
                aws.cloudwatch.MetricAlarmMetricQueryArgs(id="p95", label="p95 response time", return_data=True, expression=f"MAX([{fill}])"),
            ],
            evaluation_periods=3,
            datapoints_to_alarm=3,
            comparison_operator="GreaterThanThreshold",
            threshold=seconds,
            treat_missing_data="notBreaching",
            alarm_actions=[policy.arn],
            tags={"purpose": "scaling"},
            opts=self._child,
        )


# ---------------------------------------------------------------- pure functions (tested directly)


def crash_pattern(cluster_arn: str, service_name: str) -> dict:
    """ECS Task State Change events of one service's tasks that stopped because they crashed or never
    started (ECS developer guide, "Amazon ECS task state change events": ``group`` is ``service:<name>``)."""
    return {
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
        "detail": {
            "clusterArn": [cluster_arn],
            "group": [f"service:{service_name}"],
            "lastStatus": ["STOPPED"],
            # crashed, never started, or replaced for failing its container health check (the worker's
            # heartbeat): the scheduler stops that one with stoppedReason "Task failed container health checks"
            "$or": [{"stopCode": list(CRASH_STOP_CODES)}, {"stoppedReason": [{"prefix": HEALTH_CHECK_STOP_REASON}]}],
        },
    }


def events_to_logs_policy(group_arn: str) -> dict:
    """The log group's resource policy that lets EventBridge write a rule's events into it.

    EventBridge writes to a CloudWatch Logs target with the log group's resource policy, not a role
    (EventBridge user guide, "Using resource-based policies for Amazon EventBridge", CloudWatch Logs
    permissions: ``events.amazonaws.com`` and ``delivery.logs.amazonaws.com``, ``logs:CreateLogStream``
    and ``logs:PutLogEvents``). Scoped to this one group's streams; no condition key, since the guide
    documents none and one the service does not send would drop every event silently.
    """
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "TrustEventsToStoreLogEvent",
                "Effect": "Allow",
                "Principal": {"Service": ["delivery.logs.amazonaws.com", "events.amazonaws.com"]},
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [f"{group_arn}:log-stream:*"],
            }
        ],
    }


def search_problem(search: str) -> str | None:
    """Why Route 53 would refuse ``search`` as a SearchString, or None."""
    if not search or len(search) > SEARCH_STRING_MAX:
        return f"a search string has 1 to {SEARCH_STRING_MAX} characters"
    return None


# ---------------------------------------------------------------- wiring (called by components/platform.py)


def app_alarms(
    cfg: PlatformConfig,
    deployed: DeployedSystem,
    services: Mapping[str, Service],
    *,
    topics: Topics,
    route53_topics: Topics | None,
    cluster_name: pulumi.Input[str],
    cluster_arn: pulumi.Input[str],
    load_balancer: pulumi.Input[str] | None,
    account_id: pulumi.Input[str],
    kms_key_arn: pulumi.Input[str],
) -> AppAlarms | None:
    """The system's :class:`AppAlarms`, or None when it has nothing to watch (ECS stacks only)."""
    system = deployed.system
    alerts = APP_ALERTS.get(system.name, AppAlerts())
    endpoints = outside_endpoints(cfg, deployed, alerts) if load_balancer is not None else []
    targets = {
        name: Target(
            name=name,
            key=s.deployed.key,
            service_name=s.service_name,
            log_group_name=s.log_group_name,
            paused=s.deployed.paused,
            autoscaled=_autoscaled(s, cfg),
            service=s,
            target_group=s.target_group_arn_suffix,
            alternate=getattr(s, "alternate_target_group_arn_suffix", None),
            load_balancer=load_balancer,
        )
        for name, s in services.items()
    }
    telemetry_to_cloudwatch = not cfg.stack_config.observability.otlp_endpoint
    if not endpoints and not (alerts.queues or alerts.logs or alerts.restarts or alerts.latency_scaling):
        return None
    return AppAlarms(
        f"{system.name}-alerting",
        AppAlarmsArgs(
            env=cfg.env,
            system=system.name,
            region=cfg.region,
            account_id=account_id,
            topics=topics,
            route53_topics=route53_topics,
            cluster_name=cluster_name,
            cluster_arn=cluster_arn,
            kms_key_arn=kms_key_arn,
            log_retention_days=cfg.preset.logs.retention_days,
            alerts=alerts,
            endpoints=endpoints,
            services=targets,
            emf=telemetry_to_cloudwatch,
            evaluation_minutes=cfg.preset.observability.evaluation_minutes,
        ),
    )


def _autoscaled(s: Service, cfg: PlatformConfig) -> bool:
    from .workload import task_counts

    desired, maximum = task_counts(s.deployed, cfg.preset.compute)
    return maximum > desired


def outside_endpoints(cfg: PlatformConfig, deployed: DeployedSystem, alerts: AppAlerts) -> list[Endpoint]:
    """The outside checks of one system: none without a domain, none (with a warning) behind ``ingress_cidrs``."""
    if not cfg.domain:
        return []  # plain HTTP on the load balancer's name: its own target alarms watch the services
    web = [svc for svc in deployed.services.values() if svc.spec.kind is ServiceKind.web and svc.hostname]
    out = [
        Endpoint(
            f"{svc.key}-health",
            svc.hostname,
            svc.spec.health.path,
            None,
            CRITICAL,
            f"{svc.key} is down from the internet: https://{svc.hostname}{svc.spec.health.path} failed {FAILURE_THRESHOLD} checks in a row "
            "(offerhub: API Down | Health check fails 3x | Critical)",
            paused=svc.paused or svc.held,  # a held service answers 503 until released: nobody is paged for that
        )
        for svc in web
        if svc.spec.health is not None
    ]
    by_name = {svc.name: svc for svc in web}
    for check in alerts.checks:
        if (svc := by_name.get(check.service)) is None:
            continue
        if problem := search_problem(check.search):
            raise ValueError(f"{svc.key} outside check {check.name}: {problem}")
        out.append(
            Endpoint(
                f"{svc.key}-{check.name}",
                svc.hostname,
                check.path,
                check.search,
                check.priority,
                f"{svc.key}: {check.name} unhealthy from the internet: https://{svc.hostname}{check.path} lacks {check.search} ({check.seed})",
                paused=svc.paused or svc.held,
            )
        )
    if out and cfg.preset.edge.ingress_cidrs:
        pulumi.log.warn(
            f"{deployed.system.name}: no outside health checks: the load balancer admits only edge.ingress_cidrs, and Route 53's health "
            "checkers come from the ROUTE53_HEALTHCHECKS ranges of ip-ranges.json, so every check would fail. Admit them (the "
            "com.amazonaws.<region>.route53-healthchecks managed prefix list) on the load balancer to have them"
        )
        return []
    return out
