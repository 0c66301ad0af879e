"""Alerting (issue 16): two priorities, outside checks, offerhub's latency scaling and queues, starkdca's
failed runs and worker restarts. Each test quotes the seed line it meets."""

from __future__ import annotations

import json

import pytest

from components import alerting, otel
from components.observability import CRITICAL, WARNING, alarm_topic_policy
from stacks.catalog import load_catalog
from tests.conftest import plan

ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
CHECK = "aws:route53/healthCheck:HealthCheck"
TOPIC = "aws:sns/topic:Topic"
POLICY = "aws:appautoscaling/policy:Policy"
TARGET = "aws:appautoscaling/target:Target"
FILTER = "aws:cloudwatch/logMetricFilter:LogMetricFilter"
RULE = "aws:cloudwatch/eventRule:EventRule"
EVENT_TARGET = "aws:cloudwatch/eventTarget:EventTarget"
LOG_POLICY = "aws:cloudwatch/logResourcePolicy:LogResourcePolicy"
WEB = ["twinkle-api", "twinkle-facilitator", "offerhub-api", "starkdca-api", "aurum-api", "darwin-app"]


def health_path(key: str) -> str:
    """The catalog's ``health.path`` of a web service (``<system>-<service>``)."""
    system, service = key.split("-", 1)
    return load_catalog()[system].services[service].health.path


def alarms(cap) -> dict[str, dict]:
    return {r.name: r.inputs for r in cap.of_type(ALARM)}


def topics(cap) -> dict[str, str]:
    return cap.outputs["alarm_topic_arns"]


def check(cap, name: str) -> tuple[dict, dict]:
    """The health check ``name`` and the alarm on it."""
    hc = cap.one(CHECK, name)
    alarm = alarms(cap)[name]
    return hc.inputs, alarm


# ---------------------------------------------------------------- outside checks


def test_offerhub_database_and_redis_are_checked_from_the_internet(prod):
    # offerhub guide, "Alerts to Configure": "Database Connection | DB health unhealthy | Critical" and
    # "Redis Connection | Redis health unhealthy | High"; "Verify Health": GET /api/v1/health/detailed returns
    # {"data":{"status":"healthy","dependencies":{"database":{"status":"healthy"},"redis":{"status":"healthy"},...}}}
    for dep in ("database", "redis"):
        hc, alarm = check(prod, f"offerhub-api-{dep}-outside")
        assert (hc["type"], hc["fqdn"], hc["port"], hc["resourcePath"]) == ("HTTPS_STR_MATCH", "api.offerhub.example.com", 443, "/api/v1/health/detailed")
        assert hc["searchString"] == f'"{dep}":{{"status":"healthy"'
        body = json.dumps(
            {"data": {"status": "healthy", "dependencies": {"database": {"status": "healthy"}, "redis": {"status": "healthy"}}}}, separators=(",", ":")
        )
        assert hc["searchString"] in body[: alerting.SEARCH_WINDOW_BYTES]
        assert hc["requestInterval"] in alerting.REQUEST_INTERVALS and hc["failureThreshold"] in alerting.FAILURE_THRESHOLDS
        assert (alarm["namespace"], alarm["metricName"], alarm["statistic"], alarm["comparisonOperator"], alarm["threshold"]) == (
            "AWS/Route53", "HealthCheckStatus", "Minimum", "LessThanThreshold", 1)  # fmt: skip
        assert list(alarm["dimensions"]) == ["HealthCheckId"] and alarm["dimensions"]["HealthCheckId"].startswith(f"offerhub-api-{dep}-outside")
        assert alarm["alarmActions"] == [topics(prod)[CRITICAL]] and alarm["tags"]["priority"] == CRITICAL
        assert "region" not in alarm  # the stack runs in us-east-1, where Route 53's metrics are


def test_darwin_redis_and_solana_failures_are_checked_from_the_internet(prod):
    # darwin guide, "Alert Conditions": "Redis connection failures", "Solana RPC failures". Its /api/health
    # answers 200 whatever the services' state (NextResponse.json(health)), so the check matches the body.
    body = json.dumps(
        {"status": "healthy", "timestamp": 1, "services": {"timer": {"status": "healthy"}, "redis": {"status": "healthy"}, "solana": {"status": "healthy"}}},
        separators=(",", ":"),
    )
    for dep, priority in (("redis", CRITICAL), ("solana", WARNING)):
        hc, alarm = check(prod, f"darwin-app-{dep}-outside")
        assert (hc["type"], hc["fqdn"], hc["resourcePath"]) == ("HTTPS_STR_MATCH", "app.darwin.example.com", "/api/health")
        assert hc["searchString"] == f'"{dep}":{{"status":"healthy"' and hc["searchString"] in body[: alerting.SEARCH_WINDOW_BYTES]
        assert alarm["alarmActions"] == [topics(prod)[priority]] and alarm["tags"]["priority"] == priority


def test_every_web_service_is_checked_from_the_internet_where_there_is_a_domain(plans, prod):
    # offerhub guide, "Alerts to Configure": "API Down | Health check fails 3x | Critical" (every web service)
    for key in WEB:
        path = health_path(key)
        hc, alarm = check(prod, f"{key}-health-outside")
        assert (hc["type"], hc["port"], hc["resourcePath"]) == ("HTTPS", 443, path), key
        assert hc["failureThreshold"] == 3 and alarm["tags"]["priority"] == CRITICAL
        assert hc["fqdn"] == prod.outputs["urls"][key].removeprefix("https://")
    # dev has no domain: plain HTTP on the load balancer's name, no outside check (its target alarms stay)
    assert plans["dev"].of_type(CHECK) == []
    assert "offerhub-api-no-healthy-targets" in alarms(plans["dev"])


def test_route53_alarms_are_created_in_us_east_1_when_the_stack_is_elsewhere(project):
    # Route 53 health check metrics exist in us-east-1 only, and an alarm notifies SNS topics of its own region:
    # https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/monitoring-health-checks.html
    def west(config):
        config["aws:region"] = "eu-west-1"

    cap = plan("test", project("prod", west))
    alarm = alarms(cap)["offerhub-api-database-outside"]
    assert alarm["region"] == "us-east-1"
    east = {r.name: r for r in cap.of_type(TOPIC) if r.inputs.get("region") == "us-east-1"}
    assert set(east) == {"alarms-us-east-1-topic", "alarms-warning-us-east-1-topic"}
    [action] = alarm["alarmActions"]  # the mocks write every ARN in the stack's region; AWS's would read us-east-1
    assert "/alarms-us-east-1-topic" in action
    # the us-east-1 topic is encrypted with a key of its own region (SNS needs a key in the topic's region)
    key = next(r for r in cap.of_type("aws:kms/key:Key") if r.inputs.get("region") == "us-east-1")
    assert "us-east-1" in east["alarms-us-east-1-topic"].inputs["kmsMasterKeyId"] and key.inputs["enableKeyRotation"]
    # the stack's own alarms stay in its region
    assert "region" not in alarms(cap)["offerhub-api-no-healthy-targets"]


def test_no_outside_checks_behind_ingress_cidrs(project):
    # Route 53's checkers come from public ranges (ROUTE53_HEALTHCHECKS), which ingress_cidrs would block:
    # https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/route-53-ip-addresses.html
    def office(config):
        config.setdefault("platform:overrides", {})["edge"] = {"ingress_cidrs": ["198.51.100.0/24"]}

    cap = plan("test", project("prod", office))
    assert cap.of_type(CHECK) == []
    assert any("no outside health checks" in line and "ROUTE53_HEALTHCHECKS" in line for line in cap.logs)


# ---------------------------------------------------------------- scaling


def test_offerhub_scales_out_on_p95_latency(prod):
    # offerhub guide, "When to Scale": "Request Latency | p95 >500ms | Add replicas or optimize"
    policy = prod.one(POLICY, "offerhub-api-scale-latency")
    target = prod.one(TARGET, "offerhub-api-scaling")
    assert policy.inputs["policyType"] == "StepScaling"
    assert policy.inputs["resourceId"] == target.inputs["resourceId"] and policy.inputs["scalableDimension"] == "ecs:service:DesiredCount"
    # registered after the scalable target, a child of the service component it waits for
    assert target.urn in policy.dependencies
    steps = policy.inputs["stepScalingPolicyConfiguration"]["stepAdjustments"]
    assert [s["scalingAdjustment"] for s in steps] == [1, 2] and steps[0]["metricIntervalLowerBound"] == "0"
    alarm = alarms(prod)["offerhub-api-latency-scale-out"]
    assert (alarm["threshold"], alarm["comparisonOperator"], alarm["evaluationPeriods"]) == (0.5, "GreaterThanThreshold", 3)
    metrics = [q["metric"] for q in alarm["metricQueries"] if "metric" in q]
    assert {(m["metricName"], m["stat"]) for m in metrics} == {("TargetResponseTime", "p95")}
    # every target group the service's traffic can be in (its deploys may shift it to the second one)
    groups = {
        r.inputs["arnSuffix"] if "arnSuffix" in r.inputs else r.name
        for r in prod.of_type("aws:lb/targetGroup:TargetGroup")
        if r.name.startswith("offerhub-api-")
    }
    assert len(metrics) == len(groups) >= 1
    [expression] = [q["expression"] for q in alarm["metricQueries"] if q.get("returnData")]
    assert expression.startswith("MAX([")
    assert len(alarm["alarmActions"]) == 1 and "policy" in alarm["alarmActions"][0].lower()
    # CPU and memory still scale it (and scale it in)
    assert {p.name for p in prod.of_type(POLICY) if p.name.startswith("offerhub-api-scale-")} >= {"offerhub-api-scale-cpu", "offerhub-api-scale-memory"}


# ---------------------------------------------------------------- priorities


def test_every_alarm_has_a_priority_and_notifies_that_priority_s_topic(plans, prod):
    # offerhub guide, "Alerts to Configure": the Priority column (Critical / High / Medium): critical pages, warning emails
    for cap in (*plans.values(), prod):
        arns = topics(cap)
        for name, a in alarms(cap).items():
            if not any(":sns:" in x for x in a.get("alarmActions") or []):
                # not a notification: the latency scale-out alarm (its action is the scaling policy) and the
                # deployment alarms ECS watches to roll back (components/service.py), which notify no one
                assert a.get("tags", {}).get("purpose") == "scaling" or "deploy" in name, name
                continue
            priority = a.get("tags", {}).get("priority")
            assert priority in (CRITICAL, WARNING), name
            if "region" not in a:
                assert a["alarmActions"] == [arns[priority]] == a.get("okActions", a["alarmActions"]), name
    a = alarms(prod)
    critical = [
        "offerhub-api-no-healthy-targets",
        "offerhub-api-5xx-rate",
        "offerhub-db-storage",
        "alb-monitoring-5xx-rate",
        "twinkle-indexer-not-running",
        "offerhub-api-health-outside",
        "starkdca-worker-restarting",
    ]
    warning = [
        "offerhub-db-cpu",
        "offerhub-db-connections",
        "offerhub-cache-001-memory",
        "offerhub-cache-001-cpu",
        "offerhub-api-p95-latency",
        "redis-export-stale-offerhub-prod",
        "offerhub-queue-dead-letter",
    ]
    assert all(a[n]["tags"]["priority"] == CRITICAL for n in critical)
    assert all(a[n]["tags"]["priority"] == WARNING for n in warning)


def test_both_topics_are_encrypted_with_the_account_policy_and_the_subscribers(prod):
    # offerhub guide, "Alerts to Configure": two priorities, both must reach people
    arns = topics(prod)
    assert arns[CRITICAL] != arns[WARNING] and prod.outputs["alarm_topic_arn"] == arns[CRITICAL]
    main = [r for r in prod.of_type(TOPIC) if "region" not in r.inputs]
    assert len(main) == 2 and all(t.inputs["kmsMasterKeyId"].startswith("arn:aws:kms:") for t in main)
    policies = {r.inputs["arn"]: json.loads(r.inputs["policy"]) for r in prod.of_type("aws:sns/topicPolicy:TopicPolicy")}
    for arn in arns.values():
        assert policies[arn] == alarm_topic_policy(arn, "123456789012")
    subs = prod.of_type("aws:sns/topicSubscription:TopicSubscription")
    for arn in arns.values():
        assert {s.inputs["endpoint"] for s in subs if s.inputs["topic"] == arn} == {"platform-alerts@example.com", "oncall@example.com"}
    # the budget emails (warning); RDS events (failover, low storage) page
    assert prod.one("aws:budgets/budget:Budget").inputs["notifications"][0]["subscriberSnsTopicArns"] == [arns[WARNING]]
    assert {r.inputs["snsTopic"] for r in prod.of_type("aws:rds/eventSubscription:EventSubscription")} == {arns[CRITICAL]}


# ---------------------------------------------------------------- app-reported metrics


def test_offerhub_queue_backlog_and_dead_letter_alarms_read_what_the_collector_writes(prod):
    # offerhub guide: "DLQ Growing | Dead letter queue > 100 jobs | Medium"; "Queue Backlog | >1000 jobs | Consider separate worker"
    a = alarms(prod)
    for name, metric, threshold in (
        ("offerhub-queue-waiting", "offerhub.queue.waiting", 1000),
        ("offerhub-queue-dead-letter", "offerhub.queue.dead_letter", 100),
    ):
        alarm = a[name]
        assert (alarm["namespace"], alarm["metricName"], alarm["threshold"], alarm["statistic"]) == (
            otel.namespace("prod", "offerhub"),
            metric,
            threshold,
            "Maximum",
        )
        assert alarm["dimensions"] == {"OTelLib": "offerhub"} and alarm["tags"]["priority"] == WARNING
    task = prod.one("aws:ecs/taskDefinition:TaskDefinition", "offerhub-api-task")
    sidecar = next(c for c in json.loads(task.inputs["containerDefinitions"]) if c["name"] == otel.CONTAINER)
    config = json.loads(next(e["value"] for e in sidecar["environment"] if e["name"] == "AOT_CONFIG_CONTENT"))
    assert config["exporters"]["awsemf"]["namespace"] == a["offerhub-queue-waiting"]["namespace"] == "Platform/prod/offerhub"
    assert "awsemf" in config["service"]["pipelines"]["metrics"]["exporters"]
    # the alarms read the {OTelLib}-only series: the rollup that writes it is stated, not left to a default
    assert config["exporters"]["awsemf"]["dimension_rollup_option"] == "ZeroAndSingleDimensionRollup"


def test_starkdca_failed_runs_are_counted_from_the_worker_s_logs(prod):
    # starkdca guide, "Key Metrics to Watch": "DCA execution success/failure rate (grep logs for `executionStatus`)"
    f = prod.one(FILTER, "starkdca-failed-dca-runs").inputs
    assert f["logGroupName"] == prod.one("aws:cloudwatch/logGroup:LogGroup", "starkdca-worker-logs").inputs["name"] == "/platform/prod/starkdca/worker"
    assert '$.executionStatus = "FAILED"' in f["pattern"]
    t = f["metricTransformation"]
    alarm = alarms(prod)["starkdca-failed-dca-runs"]
    assert (alarm["namespace"], alarm["metricName"]) == (t["namespace"], t["name"]) == ("Platform/prod/starkdca", "DcaExecutionsFailed")
    assert (alarm["statistic"], alarm["comparisonOperator"], alarm["threshold"]) == ("Sum", "GreaterThanOrEqualToThreshold", 3)
    assert alarm["tags"]["priority"] == WARNING


def test_starkdca_worker_restarting_repeatedly_pages(prod):
    # starkdca guide, "Key Metrics to Watch": "Worker service restart count"
    rule = prod.one(RULE, "starkdca-worker-stops")
    pattern = json.loads(rule.inputs["eventPattern"])
    service = prod.outputs["service_names"]["starkdca-worker"]
    assert pattern["detail-type"] == ["ECS Task State Change"] and pattern["detail"]["group"] == [f"service:{service}"]
    # crashes and failed starts count, and so does a replacement for a failed container health check (the
    # worker's heartbeat; ECS stops it with stoppedReason "Task failed container health checks"); a deploy's
    # or scale-in's stop (stopCode ServiceSchedulerInitiated with another reason) does not
    (codes, reasons) = pattern["detail"]["$or"]
    assert pattern["detail"]["lastStatus"] == ["STOPPED"] and "ServiceSchedulerInitiated" not in codes["stopCode"]
    assert set(codes["stopCode"]) == {"EssentialContainerExited", "TaskFailedToStart"}
    assert reasons == {"stoppedReason": [{"prefix": "Task failed container health checks"}]}
    alarm = alarms(prod)["starkdca-worker-restarting"]
    # AWS/Events metrics with only RuleName are the default bus's:
    # https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-monitoring.html
    assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == ("AWS/Events", "TriggeredRules", "Sum")
    assert alarm["dimensions"] == {"RuleName": rule.inputs.get("name") or alarm["dimensions"]["RuleName"]}
    assert alarm["threshold"] == alerting.RESTART_THRESHOLD and alarm["tags"]["priority"] == CRITICAL


def test_eventbridge_may_write_the_worker_s_stops_into_its_log_group(prod):
    # EventBridge writes to a CloudWatch Logs target through the group's resource policy, not a role, and the
    # policy must exist before the target: https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-use-resource-based.html
    group = prod.one("aws:cloudwatch/logGroup:LogGroup", "starkdca-worker-stops")
    policy = prod.one(LOG_POLICY, "starkdca-worker-stops-delivery")
    target = prod.one(EVENT_TARGET, "starkdca-worker-stops")
    doc = json.loads(policy.inputs["policyDocument"])
    statement = doc["Statement"][0]
    assert "events.amazonaws.com" in statement["Principal"]["Service"] and set(statement["Action"]) == {"logs:CreateLogStream", "logs:PutLogEvents"}
    assert policy.inputs["resourceArn"] == target.inputs["arn"] and statement["Resource"] == [f"{target.inputs['arn']}:log-stream:*"]
    assert policy.urn in target.dependencies
    assert group.inputs["kmsKeyId"].startswith("arn:aws:kms:") and group.inputs["name"].startswith("/platform/prod/")


@pytest.mark.parametrize("search", ["", "x" * 256])
def test_search_strings_route53_would_refuse_are_caught(search):
    assert alerting.search_problem(search)


def test_a_held_service_pages_nobody_from_the_internet(plans, prod):
    # the shipped prod stack holds every service (secrets unset): they answer 503 until released, which is
    # no outage; once released (the prod fixture), the same checks page
    held = alarms(plans["prod"])
    released = alarms(prod)
    for key in WEB:
        assert held[f"{key}-health-outside"]["actionsEnabled"] is False, key
        assert released[f"{key}-health-outside"]["actionsEnabled"] is True, key
