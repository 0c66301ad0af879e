"""Deploys roll back on what users see (issue 16, part 3).

A web service's deploy fails, and ECS puts the previous revision back, when its 5xx rate or p95 response
time goes bad during the deploy or its bake, not only when new tasks fail to start (the circuit breaker).
Prod and staging shift traffic (a canary, then all of it, then a bake with the old tasks kept); dev rolls,
fast, and still rolls back on the same alarms. Read from the captured plans (``conftest.plans``).

Sources, each cited where it is used:
- ECS developer guide, "How CloudWatch alarms detect Amazon ECS deployment failures"
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/deployment-alarm-failure.html
- "Application Load Balancer resources for blue/green, linear, and canary deployments"
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/alb-resources-for-blue-green.html
- "Amazon ECS infrastructure IAM role for load balancers"
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/AmazonECSInfrastructureRolePolicyForLoadBalancers.html
- "Required resources for Amazon ECS blue/green deployments" (deployment controller ``ECS``)
  https://docs.aws.amazon.com/AmazonECS/latest/developerguide/blue-green-deployment-implementation.html
- terraform-provider-aws ``internal/service/ecs/service.go`` (how the provider sends and reads these fields)
"""

from __future__ import annotations

import json

import pytest

from components.alb import ECS_INFRASTRUCTURE_POLICY
from stacks.catalog import ServiceKind
from stacks.config import load_platform
from tests.conftest import ROOT
from tools import deploytime

SERVICE = "aws:ecs/service:Service"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
GROUP = "aws:lb/targetGroup:TargetGroup"
RULE = "aws:lb/listenerRule:ListenerRule"
ROLE = "aws:iam/role:Role"
ATTACHMENT = "aws:iam/rolePolicyAttachment:RolePolicyAttachment"


def by_name(cap) -> dict:
    return {r.name: r for r in cap.resources}


def web_keys(stack: str) -> list[str]:
    cfg = load_platform(stack, ROOT)
    return sorted(s.key for s in cfg.services() if s.spec.kind is ServiceKind.web)


def other_keys(stack: str) -> list[str]:
    cfg = load_platform(stack, ROOT)
    return sorted(s.key for s in cfg.services() if s.spec.kind is not ServiceKind.web)


def groups_read(alarm) -> set[str]:
    """The target groups an alarm's metrics read, by resource name. The harness's mock ARN suffix of a
    target group is ``targetgroup/<resource name>/<id>`` (tools/harness.py)."""
    return {q["metric"]["dimensions"]["TargetGroup"].split("/")[1] for q in alarm.inputs["metricQueries"] if "metric" in q}


# ---------------------------------------------------------------- every web service: alarms with rollback


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_web_service_rolls_back_on_alarms_that_exist_before_it(plans, stack):
    """``alarms`` with ``rollback`` (deployment-alarm-failure.html): ECS fails the deployment and puts the
    last completed one back when a named alarm goes to ALARM. ECS takes alarm names, so each name is an
    alarm of the plan, and the service depends on it (created first, deleted after)."""
    cap = plans[stack]
    names = by_name(cap)
    alarms = {a.inputs.get("name"): a for a in cap.of_type(ALARM) if a.inputs.get("name")}
    settings = load_platform(stack, ROOT).preset
    for key in web_keys(stack):
        service = names[f"{key}-service"]
        config = service.inputs["alarms"]
        assert config["enable"] is True and config["rollback"] is True, key
        assert sorted(config["alarmNames"]) == [f"{settings_env(stack)}-{key}-deploy-5xx", f"{settings_env(stack)}-{key}-deploy-p95"]
        watched = [alarms[n] for n in config["alarmNames"]]  # KeyError: ECS would watch an alarm that does not exist
        assert {a.urn for a in watched} <= set(service.dependencies), key
        five, p95 = watched
        assert five.inputs["threshold"] == settings.observability.error_rate_percent
        assert p95.inputs["threshold"] == settings.observability.latency_p95_seconds
        for alarm in watched:
            assert alarm.inputs["evaluationPeriods"] == alarm.inputs["datapointsToAlarm"] == settings.deploy.alarm_minutes
            assert alarm.inputs["treatMissingData"] == "notBreaching"  # an idle target group never blocks a deploy
            # every target group the service has: after a canary or blue/green deploy the traffic is in either
            assert groups_read(alarm) == {r.name for r in cap.of_type(GROUP) if r.name in (f"{key}-tg", f"{key}-tg2")}, key
        assert {q["metric"]["metricName"] for q in p95.inputs["metricQueries"] if "metric" in q} == {"TargetResponseTime"}
        assert {q["metric"]["stat"] for q in p95.inputs["metricQueries"] if "metric" in q} == {"p95"}


def settings_env(stack: str) -> str:
    return load_platform(stack, ROOT).env


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_workers_and_singletons_roll_with_the_circuit_breaker_only(plans, stack):
    """No load balancer, so no request metrics to watch: the circuit breaker alone, rolling."""
    names = by_name(plans[stack])
    for key in other_keys(stack):
        service = names[f"{key}-service"].inputs
        assert "alarms" not in service, key
        assert service["deploymentConfiguration"] == {"strategy": "ROLLING"}, key
        assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}, key


# ---------------------------------------------------------------- strategy and bake per preset


def test_prod_shifts_a_canary_then_bakes_with_the_old_tasks_kept(plans):
    names = by_name(plans["prod"])
    for key in web_keys("prod"):
        service = names[f"{key}-service"].inputs
        assert service["deploymentController"] == {"type": "ECS"}  # blue-green-deployment-implementation.html
        assert service["deploymentConfiguration"] == {
            "strategy": "CANARY",
            "canaryConfiguration": {"canaryPercent": 10.0, "canaryBakeTimeInMinutes": "5"},
            "bakeTimeInMinutes": "10",
        }, key
        assert service["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}  # tasks that never start still roll back


def test_staging_takes_prods_path_shorter(plans):
    names = by_name(plans["staging"])
    for key in web_keys("staging"):
        config = names[f"{key}-service"].inputs["deploymentConfiguration"]
        assert config["strategy"] == "CANARY" and config["bakeTimeInMinutes"] == "5" and config["canaryConfiguration"]["canaryBakeTimeInMinutes"] == "3"


def test_dev_takes_the_fast_path_and_still_rolls_back(plans):
    cap = plans["dev"]
    names = by_name(cap)
    for key in web_keys("dev"):
        service = names[f"{key}-service"].inputs
        assert service["deploymentConfiguration"] == {"strategy": "ROLLING"}, key
        assert service["alarms"]["rollback"] is True
        assert "advancedConfiguration" not in service["loadBalancers"][0]
        assert f"{key}-tg2" not in names
        assert "ignoreChanges" not in names[f"{key}-rule"].options or not names[f"{key}-rule"].options["ignoreChanges"]
    assert not [r for r in cap.of_type(ROLE) if "ecs-infrastructure" in r.name]
    dev = max(t.total for t in deploytime.deploy_times(cap).values())
    prod = min(t.total for t in deploytime.deploy_times(plans["prod"]).values())
    assert dev <= 5 < prod


def test_minutes_are_sent_as_the_provider_reads_them_back(plans):
    """The provider holds the minutes as nullable integers in strings and reads back ``Int32ToStringValue``
    of what ECS stores (service.go, ``flattenDeploymentConfiguration``): a value like ``"05"`` or ``5``
    would differ on every ``pulumi up``."""
    for key in web_keys("prod"):
        config = by_name(plans["prod"])[f"{key}-service"].inputs["deploymentConfiguration"]
        for value in (config["bakeTimeInMinutes"], config["canaryConfiguration"]["canaryBakeTimeInMinutes"]):
            assert isinstance(value, str) and str(int(value)) == value
        assert isinstance(config["canaryConfiguration"]["canaryPercent"], float)


def test_pulumi_waits_out_the_bake_within_the_update_timeout(plans):
    """``wait_for_steady_state`` waits for the service deployment to be SUCCESSFUL (service.go,
    ``statusServiceWaitForStable``), bake included: the update timeout must outlast the modeled deploy."""
    cap = plans["prod"]
    names = by_name(cap)
    for key, t in deploytime.deploy_times(cap).items():
        timeout = names[f"{key}-service"].options["customTimeouts"]["update"]
        assert t.total + 5 < int(timeout.removesuffix("m")), key


# ---------------------------------------------------------------- the alternate target group and the rule


def test_traffic_shifting_wiring(plans):
    """alb-resources-for-blue-green.html: two target groups with the same settings, a production listener
    rule that forwards to both, and the service naming the alternate group, that rule and the role."""
    cap = plans["prod"]
    names = by_name(cap)
    role = names["alb-ecs-infrastructure"]
    attachment = names["alb-ecs-infrastructure-policy"]
    for key in web_keys("prod"):
        primary, alternate, rule, service = (names[f"{key}-{n}"] for n in ("tg", "tg2", "rule", "service"))
        assert {k: v for k, v in alternate.inputs.items() if k != "name"} == {k: v for k, v in primary.inputs.items() if k != "name"}
        assert len(alternate.name) + 8 <= 32  # ELB's limit on a target group name, with Pulumi's random suffix
        forward = rule.inputs["actions"][0]["forward"]["targetGroups"]
        assert [(g["arn"].split("/")[-1].rsplit("-", 1)[0], g["weight"]) for g in forward] == [(f"{key}-tg", 100), (f"{key}-tg2", 0)]
        lb = service.inputs["loadBalancers"][0]
        advanced = lb["advancedConfiguration"]
        assert f"/{key}-tg-" in lb["targetGroupArn"] and f"/{key}-tg2-" in advanced["alternateTargetGroupArn"]
        assert f"/{key}-rule-" in advanced["productionListenerRule"]
        assert "/alb-ecs-infrastructure-" in advanced["roleArn"]
        assert {alternate.urn, rule.urn, role.urn, attachment.urn} <= set(service.dependencies)


def test_listener_rules_leave_the_weights_to_ecs(plans):
    """ECS rewrites the production listener rule's weights on every deploy; a program that sent 100/0 again
    would move the traffic back to the old, stopped revision (terraform-aws-modules/terraform-aws-alb#409).
    So a traffic-shifting rule ignores changes to its actions (components/service.py says why)."""
    for stack in ("staging", "prod"):
        names = by_name(plans[stack])
        for key in web_keys(stack):
            assert names[f"{key}-rule"].options["ignoreChanges"] == ["actions"], (stack, key)


def test_observability_alarms_follow_the_traffic_to_either_group(plans):
    """After a deploy the traffic lives in the group the deploy moved it to: the service's own alarms read
    both groups, or the no-healthy-targets alarm would fire for the idle group after every other deploy."""
    cap = plans["prod"]
    names = by_name(cap)
    for key in web_keys("prod"):
        for signal in ("no-healthy-targets", "failing-health-checks", "5xx-rate", "p95-latency"):
            assert groups_read(names[f"{key}-{signal}"]) == {f"{key}-tg", f"{key}-tg2"}, (key, signal)
        expression = {
            s: next(q["expression"] for q in names[f"{key}-{s}"].inputs["metricQueries"] if "expression" in q) for s in ("no-healthy-targets", "5xx-rate")
        }
        assert expression["no-healthy-targets"] == "FILL(m0, 0) + FILL(m1, 0)"  # down only when neither group has a healthy target
        assert names[f"{key}-no-healthy-targets"].inputs["treatMissingData"] == "breaching"
        assert "FILL(e0, 0) + FILL(c0, 0) + FILL(e1, 0) + FILL(c1, 0)" in expression["5xx-rate"]  # both groups' errors over both's requests


# ---------------------------------------------------------------- the infrastructure role and who may pass it


def test_the_infrastructure_role_trusts_ecs_and_carries_the_managed_policy(plans):
    """AmazonECSInfrastructureRolePolicyForLoadBalancers.html: trust ``ecs.amazonaws.com`` (the guide's trust
    policy has no conditions), attach the managed policy."""
    names = by_name(plans["prod"])
    role, attachment = names["alb-ecs-infrastructure"], names["alb-ecs-infrastructure-policy"]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ecs.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    assert attachment.inputs["policyArn"] == ECS_INFRASTRUCTURE_POLICY == "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"
    assert role.urn in attachment.dependencies


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_each_deploy_role_may_pass_the_infrastructure_role_and_attach_only_its_policy(plans, stack):
    """The service names the role (``advancedConfiguration.roleArn``), so the deploy role passes it to ECS
    (IAM user guide, "Grant a user permissions to pass a role to an AWS service": ``iam:PassRole`` with
    ``iam:PassedToService``), and attaches the managed policy, and no other (``iam:PolicyARN``)."""
    cap = plans[stack]
    statements = json.loads((ROOT / "docs" / "iam" / f"github-deploy-{stack}-permissions.json").read_text())["Statement"]
    roles = [r for r in cap.of_type(ROLE) if "ecs-infrastructure" in r.name]
    assert roles  # staging and prod shift traffic
    passed = set()
    for s in statements:
        if s["Effect"] == "Allow" and "iam:PassRole" in _list(s["Action"]):
            passed |= set(_list(s["Condition"]["StringEquals"]["iam:PassedToService"]))
    for role in roles:
        assert json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Principal"]["Service"] in passed
    attachable = {
        p
        for s in statements
        if s["Effect"] == "Allow" and "iam:AttachRolePolicy" in _list(s["Action"])
        for p in _list(s["Condition"]["ArnEquals"]["iam:PolicyARN"])
    }
    assert {a.inputs["policyArn"] for a in cap.of_type(ATTACHMENT)} <= attachable == {ECS_INFRASTRUCTURE_POLICY}


def _list(value) -> list:
    return value if isinstance(value, list) else [value]


def test_a_sticky_service_leaves_the_old_group_before_the_bake_ends(prod):
    # ELB: with weighted target groups, group stickiness "takes precedence over adjusting weight": a group
    # cookie longer than the bake would keep its clients on the emptied old group (503s) after a canary
    rule = prod.one("aws:lb/listenerRule:ListenerRule", "aurum-api-rule")
    stickiness = rule.inputs["actions"][0]["forward"]["stickiness"]
    bake = int(prod.one("aws:ecs/service:Service", "aurum-api-service").inputs["deploymentConfiguration"]["bakeTimeInMinutes"])
    assert stickiness["enabled"] is True and 0 < stickiness["duration"] < bake * 60
