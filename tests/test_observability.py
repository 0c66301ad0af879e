"""OTEL sidecar and Sentry wiring on every service; alarms from the seeds; dashboards; the alarm topic."""

from __future__ import annotations

import json

from components import otel
from components.observability import max_connections
from tests.conftest import plan

TASK = "aws:ecs/taskDefinition:TaskDefinition"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
WEB = ["twinkle-api", "twinkle-facilitator", "offerhub-api", "starkdca-api", "aurum-api", "darwin-app"]


def containers(task) -> dict[str, dict]:
    return {c["name"]: c for c in json.loads(task.inputs["containerDefinitions"])}


def app(task) -> dict:
    name = task.name.removesuffix("-task").split("-", 1)[1]
    return containers(task)[name]


def env(container) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


def alarms(cap) -> dict[str, dict]:
    return {r.name: r.inputs for r in cap.of_type(ALARM)}


def test_every_task_runs_the_pinned_collector_sidecar(plans):
    for cap in plans.values():
        for task in cap.of_type(TASK):
            sidecar = containers(task)[otel.CONTAINER]
            assert sidecar["image"] == otel.IMAGE and ":v0." in sidecar["image"] and "latest" not in sidecar["image"]
            assert sidecar["essential"] is False and sidecar["readonlyRootFilesystem"] is True
            assert app(task)["dependsOn"][0] == {"containerName": otel.CONTAINER, "condition": "START"}


def test_otel_and_sentry_variables_on_every_service(prod):
    for task in prod.of_type(TASK):
        key = task.name.removesuffix("-task")
        e = env(app(task))
        version = app(task)["image"].split("@")[1]
        assert e["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318", key
        assert e["OTEL_SERVICE_NAME"] == key
        assert e["OTEL_RESOURCE_ATTRIBUTES"] == f"deployment.environment=prod,service.version={version}"
        assert (e["SENTRY_ENVIRONMENT"], e["SENTRY_RELEASE"]) == ("prod", version)
        assert e["NODE_ENV"] and e["LOG_LEVEL"]
        # SENTRY_DSN arrives only as a secret
        assert "SENTRY_DSN" not in e
        assert any(s["name"] == "SENTRY_DSN" for s in app(task)["secrets"]), key


def test_catalog_values_win_over_platform_defaults(plans):
    dev = {t.name.removesuffix("-task"): t for t in plans["dev"].of_type(TASK)}
    assert env(app(dev["offerhub-api"]))["NODE_ENV"] == "development"  # offerhub's own per-env table
    assert env(app(dev["twinkle-api"]))["LOG_LEVEL"] == "debug"
    prod = {t.name.removesuffix("-task"): t for t in plans["prod"].of_type(TASK)}
    assert env(app(prod["aurum-api"]))["LOG_LEVEL"] == "warn"  # aurum: warn in prod
    assert env(app(prod["darwin-app"]))["NODE_ENV"] == "production"


def test_collector_scrapes_declared_prometheus_endpoints(prod):
    tasks = {t.name.removesuffix("-task"): t for t in prod.of_type(TASK)}
    for key, port in (("twinkle-api", 3000), ("twinkle-facilitator", 3001), ("aurum-api", 9090), ("aurum-indexer", 9090)):
        config = json.loads(env(containers(tasks[key])[otel.CONTAINER])["AOT_CONFIG_CONTENT"])
        scrape = config["receivers"]["prometheus"]["config"]["scrape_configs"][0]
        assert scrape["static_configs"][0]["targets"] == [f"127.0.0.1:{port}"] and scrape["metrics_path"] == "/metrics"
        assert "prometheus" in config["service"]["pipelines"]["metrics"]["receivers"]
    config = json.loads(env(containers(tasks["darwin-app"])[otel.CONTAINER])["AOT_CONFIG_CONTENT"])
    assert "prometheus" not in config["receivers"]
    assert config["service"]["pipelines"]["traces"]["exporters"] == ["awsxray"]
    assert config["exporters"]["awsemf"]["log_group_name"] == "/platform/prod/darwin/app/metrics"


def test_task_role_holds_only_what_the_collector_needs(prod):
    policy = json.loads(prod.one("aws:iam/rolePolicy:RolePolicy", "offerhub-api-task-otel").inputs["policy"])
    actions = sorted(a for st in policy["Statement"] for a in st["Action"])
    assert actions == sorted(
        ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets",
         "logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"]
    )  # fmt: skip
    logs = next(st for st in policy["Statement"] if st["Sid"] == "EmfLogs")
    assert all("/platform/prod/offerhub/api/metrics" in r or r.startswith("arn:") for r in logs["Resource"])


def test_external_otlp_endpoint_with_a_secret_header(project):
    # GIVEN an environment that exports to an external OTLP endpoint
    cap = plan(
        "test",
        project(
            "staging", lambda c: c.update({"platform:observability": {"otlp_endpoint": "https://api.honeycomb.io", "otlp_auth_header": "x-honeycomb-team"}})
        ),
    )
    secret = cap.one("aws:secretsmanager/secret:Secret", "otlp-auth-secret")
    assert secret.inputs["name"] == "staging/platform/OTLP_AUTH"
    assert not [v for v in cap.of_type("aws:secretsmanager/secretVersion:SecretVersion") if secret.urn in v.dependencies]  # filled by an operator
    for task in cap.of_type(TASK):
        sidecar = containers(task)[otel.CONTAINER]
        config = json.loads(env(sidecar)["AOT_CONFIG_CONTENT"])
        # THEN the collector exports there with the header taken from the secret, never in plain text
        assert config["exporters"] == {"otlphttp": {"endpoint": "https://api.honeycomb.io", "headers": {"x-honeycomb-team": "${env:OTLP_AUTH}"}}}
        assert [s["name"] for s in sidecar["secrets"]] == ["OTLP_AUTH"]
    assert not [r for r in cap.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.endswith("-task-otel")]


def test_service_can_opt_out_of_the_sidecar():
    from stacks.catalog import Service

    assert Service(kind="worker", otel_sidecar=False).otel_sidecar is False


# ---------------------------------------------------------------- alarms


def test_web_services_have_offerhubs_alert_table(plans):
    # dev rolls, so each service has one target group; prod's read both of its groups (tests/test_deploy_safety.py)
    a = alarms(plans["dev"])
    for key in WEB:
        down = a[f"{key}-no-healthy-targets"]
        assert (down["metricName"], down["comparisonOperator"], down["threshold"], down["treatMissingData"]) == (
            "HealthyHostCount", "LessThanThreshold", 1, "breaching")  # fmt: skip
        failing = a[f"{key}-failing-health-checks"]
        assert failing["metricName"] == "UnHealthyHostCount" and failing["evaluationPeriods"] == 3
        rate = a[f"{key}-5xx-rate"]
        assert rate["threshold"] == 5 and rate["comparisonOperator"] == "GreaterThanThreshold"
        queries = {q["id"]: q for q in rate["metricQueries"]}
        assert queries["errors"]["metric"]["metricName"] == "HTTPCode_Target_5XX_Count"
        assert queries["requests"]["metric"]["metricName"] == "RequestCount"
        assert "100 * (FILL(errors, 0) + FILL(connection_errors, 0)) / requests" in queries["rate"]["expression"]
        assert queries["rate"]["returnData"] is True
        p95 = a[f"{key}-p95-latency"]
        assert (p95["metricName"], p95["extendedStatistic"], p95["threshold"]) == ("TargetResponseTime", "p95", 2)


def test_5xx_rate_counts_the_failures_the_load_balancer_answers_for_the_service(plans):
    # GIVEN AWS publishes the ELB's own 5xx (HTTPCode_ELB_5XX_Count, _502/_503/_504) per load balancer only,
    # and per target group the connections to its targets that failed (answered 502 or 504 by the ELB)
    for key in WEB:
        rate = alarms(plans["dev"])[f"{key}-5xx-rate"]  # one target group (dev rolls); prod's: tests/test_deploy_safety.py
        queries = {q["id"]: q for q in rate["metricQueries"]}
        connections = queries["connection_errors"]["metric"]
        assert (connections["metricName"], connections["stat"]) == ("TargetConnectionErrorCount", "Sum")
        assert set(connections["dimensions"]) == {"TargetGroup", "LoadBalancer"}
        # THEN the rate adds them to the target's own 5xx, each series filled with 0 (both are reported only when non-zero)
        expression = queries["rate"]["expression"]
        assert "FILL(errors, 0) + FILL(connection_errors, 0)" in expression
        # and no traffic at all is OK, not INSUFFICIENT_DATA
        assert rate["treatMissingData"] == "notBreaching" and "FILL(requests, 0) > 0" in expression


def test_load_balancer_5xx_alarm_counts_what_no_target_group_is_charged_with():
    from components.observability import LoadBalancerMonitoring, LoadBalancerMonitoringArgs
    from stacks.presets import ObservabilityPreset
    from tools import harness

    # WHEN the environment's load balancer is monitored
    topic = "arn:aws:sns:us-east-1:123456789012:alarms"
    args = LoadBalancerMonitoringArgs(load_balancer="app/alb/0123456789abcdef", topic_arn=topic, settings=ObservabilityPreset())
    cap = harness.run("dev", program=lambda: LoadBalancerMonitoring("alb-monitoring", args))
    alarm = cap.one(ALARM).inputs
    queries = {q["id"]: q for q in alarm["metricQueries"]}
    # THEN ELB-generated and target-generated 5xx both count, per load balancer (the only dimension the ELB's own 5xx has)
    assert queries["elb_errors"]["metric"]["metricName"] == "HTTPCode_ELB_5XX_Count"
    assert queries["target_errors"]["metric"]["metricName"] == "HTTPCode_Target_5XX_Count"
    assert all(q["metric"]["dimensions"] == {"LoadBalancer": "app/alb/0123456789abcdef"} for q in queries.values() if "metric" in q)
    # a 503 for a target group with no registered target is in no RequestCount: it joins the denominator
    expression = queries["rate"]["expression"]
    assert "FILL(requests, 0) + FILL(elb_errors, 0)" in expression
    assert (alarm["threshold"], alarm["treatMissingData"]) == (5, "notBreaching")
    assert alarm["alarmActions"] == alarm["okActions"] == [topic]


def test_every_alarm_notifies_the_topic_on_alarm_and_ok(prod):
    # two topics, one per priority (tests/test_alerting.py); alarms that notify no one (deployment rollback,
    # latency scale-out) are not notifications
    topics = {t.urn for t in prod.of_type("aws:sns/topic:Topic")}
    for alarm in prod.of_type(ALARM):
        if not any(":sns:" in a for a in alarm.inputs.get("alarmActions") or []):
            continue
        assert len(alarm.inputs["alarmActions"]) == 1 and alarm.inputs["alarmActions"] == alarm.inputs["okActions"]
        assert len(topics & set(alarm.property_dependencies["alarmActions"])) == 1, alarm.name


def test_databases_caches_and_singletons(prod):
    a = alarms(prod)
    for system in ("twinkle", "offerhub", "starkdca", "aurum", "darwin"):
        assert a[f"{system}-db-cpu"]["threshold"] == 80
        # free storage against what is allocated: darwin's guide's 100 GB in prod, the preset's 20 GB for the rest
        assert a[f"{system}-db-storage"]["threshold"] == (100 if system == "darwin" else 20) * 1024**3 * 0.10
        assert a[f"{system}-db-connections"]["threshold"] == round(max_connections("db.t4g.medium") * 0.8)
    # offerhub's BullMQ cache never evicts: warn at 70 %, not 85 %
    assert a["offerhub-cache-001-memory"]["threshold"] == 70 and a["starkdca-cache-001-memory"]["threshold"] == 70
    assert a["twinkle-cache-001-memory"]["threshold"] == 85
    assert {a[f"offerhub-cache-00{n}-cpu"]["dimensions"]["CacheClusterId"] for n in (1, 2)} == {"offerhub-prod-001", "offerhub-prod-002"}
    # aurum's session store (prod scales its API out) may evict an expiring session: the usual 85 %
    assert a["aurum-cache-001-memory"]["threshold"] == 85
    for singleton in ("twinkle-indexer", "aurum-indexer"):
        alarm = a[f"{singleton}-not-running"]
        assert (alarm["namespace"], alarm["metricName"], alarm["threshold"]) == ("ECS/ContainerInsights", "RunningTaskCount", 1)
    # workers have no singleton alarm (starkdca's has its restart alarm, tests/test_alerting.py)
    assert not any(name.startswith(("twinkle-worker", "starkdca-worker")) and name != "starkdca-worker-restarting" for name in a)


def test_dev_waits_longer_before_paging(plans):
    assert alarms(plans["dev"])["offerhub-api-p95-latency"]["evaluationPeriods"] == 15
    assert alarms(plans["prod"])["offerhub-api-p95-latency"]["evaluationPeriods"] == 5


def test_alarm_topic_encrypted_with_email_subscribers(prod):
    for topic in prod.of_type("aws:sns/topic:Topic"):  # critical and warning
        assert prod.one("aws:kms/key:Key", "key-key").urn in topic.property_dependencies["kmsMasterKeyId"]
    subs = sorted(s.inputs["endpoint"] for s in prod.of_type("aws:sns/topicSubscription:TopicSubscription"))
    assert subs == ["oncall@example.com", "oncall@example.com", "platform-alerts@example.com", "platform-alerts@example.com"]
    key_policy = json.loads(prod.one("aws:kms/key:Key", "key-key").inputs["policy"])
    assert any(st.get("Principal") == {"Service": "cloudwatch.amazonaws.com"} for st in key_policy["Statement"])


def test_one_dashboard_per_system(prod):
    boards = {r.inputs["dashboardName"]: json.loads(r.inputs["dashboardBody"]) for r in prod.of_type("aws:cloudwatch/dashboard:Dashboard")}
    assert set(boards) == {f"prod-{s}" for s in ("twinkle", "offerhub", "starkdca", "aurum", "darwin")}
    titles = [w["properties"]["title"] for w in boards["prod-offerhub"]["widgets"]]
    assert titles == ["offerhub-api requests and 5xx", "offerhub-api response time p50 and p95", "ECS CPU %", "ECS memory %", "Postgres", "Redis"]
    # starkdca's guide, "Key Metrics to Watch": "API response times (p50, p95)"
    latency = next(w for w in boards["prod-starkdca"]["widgets"] if "response time" in w["properties"]["title"])
    assert [m[-1]["stat"] for m in latency["properties"]["metrics"]] == ["p50", "p95"]
    assert prod.outputs["dashboards"]["darwin"] == "prod-darwin"


def test_plan_lists_alarms_and_dashboards(capsys):
    from tools import plan as plan_cli

    plan_cli.main(["--stack", "prod"])
    out = capsys.readouterr().out
    assert "dashboard prod-offerhub" in out and "alarms    11: api-5xx-rate" in out
