"""Independent validators over the captured plans: parliament for every policy document, botocore's
service models for the requests of the types that carry the most settings (the ECS task definitions
are checked the same way in tests/test_services.py). Each check is shown failing on a broken copy."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pytest

from components import registry
from tools import awsshapes, harness, iampolicies

STACKS = ["dev", "staging", "prod"]


def _capture(request: pytest.FixtureRequest, plans: dict[str, harness.Capture], stack: str) -> harness.Capture:
    # "prod-running": the prod fixture (its external secrets set, every service runs)
    return request.getfixturevalue("prod") if stack == "prod-running" else plans[stack]


def with_inputs(cap: harness.Capture, resource: harness.Resource, inputs: dict) -> tuple[harness.Capture, harness.Resource]:
    """A copy of ``cap`` in which ``resource`` has ``inputs``."""
    changed = dataclasses.replace(resource, inputs=inputs)
    return harness.Capture(cap.stack, [changed if r is resource else r for r in cap.resources]), changed


# ---------------------------------------------------------------- IAM policy documents


@pytest.fixture(scope="module")
def allowed() -> list[iampolicies.Allowed]:
    return iampolicies.allowlist()


@pytest.fixture(scope="module")
def linted() -> Callable[[harness.Capture], list[iampolicies.Finding]]:
    """Every finding of a capture, linted once per module (parliament takes a second or two a stack)."""
    done: dict[int, tuple[harness.Capture, list[iampolicies.Finding]]] = {}

    def lint(cap: harness.Capture) -> list[iampolicies.Finding]:
        if id(cap) not in done:
            done[id(cap)] = (cap, iampolicies.lint(cap))
        return done[id(cap)][1]

    return lint


@pytest.mark.parametrize("stack", [*STACKS, "prod-running"])
def test_every_policy_document_is_known_and_linted(request, plans, linted, allowed, stack):
    cap = _capture(request, plans, stack)
    # GIVEN every input that holds a policy document is of a kind the linter knows (none is secret or unknown)
    assert iampolicies.unclassified(cap) == []
    kinds = {d.resource.type for d in iampolicies.documents(cap)}
    assert {"aws:iam/rolePolicy:RolePolicy", "aws:iam/role:Role", "aws:kms/key:Key", "aws:s3/bucketPolicy:BucketPolicy"} <= kinds
    # THEN parliament and the structure checks find nothing the allowlist does not argue
    found = iampolicies.not_allowed(linted(cap), allowed)
    assert found == [], "\n".join(map(str, found))


def test_every_allowlist_entry_is_still_needed(plans, linted, allowed):
    findings = [f for stack in STACKS for f in linted(plans[stack])]
    unused = [a for a in allowed if not any(a.covers(f) for f in findings)]
    assert unused == [], [f"{a.policy} {a.finding} {a.match}" for a in unused]


def test_ecr_pull_policy_passes_parliament():
    # No shipped stack sets registry.pull_accounts, so no plan holds the repository policy: lint the function.
    repo = harness.Resource("urn:x", "aws:ecr/repositoryPolicy:RepositoryPolicy", "twinkle-api-policy", "", True, {"repository": "twinkle/api"}, [], {}, {})
    doc = iampolicies.Document(
        repo,
        "policy",
        iampolicies.REPOSITORY,
        10_240,
        registry._pull_policy(["111122223333", "444455556666"]),
        "arn:aws:ecr:us-east-1:123456789012:repository/twinkle/api",
    )
    assert iampolicies.structure_findings(doc) + iampolicies.parliament_findings(doc) == []


def test_mock_arns_reach_the_linter_in_aws_format(plans):
    # the harness's mocks give every resource arn:aws:<service>:<region>:<account>:<type>/<id>
    text = json.dumps([d.policy for d in iampolicies.documents(plans["prod"])])
    for mock in (":loggroup/", ":bucket/", ":secret/", ":function/", ":topic/", "iam:us-east-1:"):
        assert mock not in text, mock
    assert "arn:aws:logs:us-east-1:123456789012:log-group:" in text and "arn:aws:s3:::" in text


def _policy_of(cap: harness.Capture, type_: str, name: str) -> harness.Resource:
    return cap.one(type_, name)


def _edit_statement(sid: str | None, change: Callable[[dict], None]) -> Callable[[dict], dict]:
    def edit(policy: dict) -> dict:
        policy = copy.deepcopy(policy)
        statement = next(s for s in policy["Statement"] if sid is None or s.get("Sid") == sid)
        change(statement)
        return policy

    return edit


def _lint_changed(cap: harness.Capture, resource: harness.Resource, key: str, edit: Callable[[dict], dict], allowed) -> list[str]:
    inputs = {**resource.inputs, key: json.dumps(edit(json.loads(resource.inputs[key])))}
    changed_cap, changed = with_inputs(cap, resource, inputs)
    docs = [d for d in iampolicies.documents(changed_cap) if d.resource is changed]
    found = [f for d in docs for f in iampolicies.structure_findings(d) + iampolicies.parliament_findings(d)]
    return [f"{f.issue} {f.detail}" for f in iampolicies.not_allowed(found, allowed)]


EXECUTION = ("aws:iam/rolePolicy:RolePolicy", "twinkle-api-execution-policy", "policy")
EXPORT_FN = ("aws:iam/rolePolicy:RolePolicy", "redis-export-function", "policy")
KEY = ("aws:kms/key:Key", "key-key", "policy")
TRUST = ("aws:iam/role:Role", "twinkle-api-execution", "assumeRolePolicy")
ALB_LOGS = ("aws:s3/bucketPolicy:BucketPolicy", "alb-logs-policy", "policy")


@pytest.mark.parametrize(
    ("where", "edit", "expected"),
    [
        # the issue's example: a misspelt action
        (EXPORT_FN, _edit_statement("ExportBucket", lambda s: s.update(Action=["s3:ListBucket", "s3:PutObject", "s3:GetObjekt"])), "UNKNOWN_ACTION"),
        (EXECUTION, _edit_statement("Pull", lambda s: s["Action"].append("ecr:BatchGetImages")), "UNKNOWN_ACTION"),
        (EXECUTION, _edit_statement("Secrets", lambda s: s.update(Action="secretmanager:GetSecretValue")), "UNKNOWN_PREFIX"),
        # a resource that is not of the action's ARN format: secrets read on the log group
        (EXECUTION, _edit_statement("Secrets", lambda s: s.update(Resource="arn:aws:logs:us-east-1:123456789012:log-group:x")), "RESOURCE_MISMATCH"),
        # objects granted on the bucket ARN alone
        (ALB_LOGS, _edit_statement("ElbServiceWritesLogs", lambda s: s.update(Resource="arn:aws:s3:::alb-logs")), "RESOURCE_MISMATCH"),
        # a condition key the action does not take, and a wrongly typed condition
        (EXECUTION, _edit_statement("DecryptSecrets", lambda s: s.update(Condition={"StringEquals": {"kms:ViaServise": "x"}})), "UNKNOWN_CONDITION"),
        (TRUST, _edit_statement(None, lambda s: s.update(Condition={"Bool": {"aws:SourceAccount": "123456789012"}})), "MISMATCHED_TYPE"),
        # a Principal where AWS refuses one, none where one is needed, a malformed service principal
        (EXECUTION, _edit_statement("Pull", lambda s: s.update(Principal={"AWS": "arn:aws:iam::123456789012:root"})), "PRINCIPAL_IN_IDENTITY_POLICY"),
        (KEY, _edit_statement("CloudWatchAlarmsToSns", lambda s: s.pop("Principal")), "NO_PRINCIPAL"),
        (TRUST, _edit_statement(None, lambda s: s.update(Principal={"Service": "ecs-tasks"})), "BAD_SERVICE_PRINCIPAL"),
        (KEY, _edit_statement("AccountAdmin", lambda s: s.update(Effect="Permit")), "MALFORMED"),
    ],
)  # fmt: skip
def test_a_broken_policy_fails(plans, allowed, where, edit, expected):
    type_, name, key = where
    cap = plans["prod"]
    assert _lint_changed(cap, cap.one(type_, name), key, lambda p: p, allowed) == []  # the real one passes
    found = _lint_changed(cap, cap.one(type_, name), key, edit, allowed)
    assert any(f.startswith(expected) for f in found), found


def test_a_policy_of_an_unknown_kind_fails(plans):
    cap = plans["dev"]
    topic = cap.one("aws:sns/topic:Topic", "alarms-topic")
    policy = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sns:Publish", "Resource": "*"}]})
    changed_cap, _ = with_inputs(cap, topic, {**topic.inputs, "deliveryPolicy": policy})
    assert iampolicies.unclassified(changed_cap) != []


def test_an_oversized_role_policy_fails(plans):
    cap = plans["prod"]
    resource = cap.one(*EXECUTION[:2])
    policy = json.loads(resource.inputs["policy"])
    policy["Statement"][0]["Resource"] = [f"arn:aws:logs:us-east-1:123456789012:log-group:/g{i:05}:*" for i in range(250)]
    changed_cap, _ = with_inputs(cap, resource, {**resource.inputs, "policy": json.dumps(policy)})
    assert [f.issue for f in iampolicies.size_findings(iampolicies.documents(changed_cap))] == ["TOO_LARGE"]


# ---------------------------------------------------------------- API requests against botocore's models

EXPECTED_REQUESTS = {
    "aws:rds/instance:Instance",
    "aws:elasticache/replicationGroup:ReplicationGroup",
    "aws:lb/targetGroup:TargetGroup",
    "aws:lb/listener:Listener",
    "aws:lb/listenerRule:ListenerRule",
    "aws:cloudwatch/metricAlarm:MetricAlarm",
    "aws:wafv2/webAcl:WebAcl",
}


@pytest.mark.parametrize("stack", [*STACKS, "prod-running"])
def test_requests_pass_botocore(request, plans, stack):
    # GIVEN botocore's models of RDS, ElastiCache, ELBv2, CloudWatch, WAFv2 and Lambda
    cap = _capture(request, plans, stack)
    rewrite = awsshapes.arn_rewriter(cap)
    resources = list(awsshapes.checked_resources(cap))
    assert EXPECTED_REQUESTS <= {r.type for r in resources}
    # WHEN each resource's inputs become the API calls the provider makes; THEN none has a problem
    found = {f"{r.type} {r.name}": p for r in resources if (p := awsshapes.problems(cap, r, rewrite))}
    assert found == {}


def test_the_export_function_is_checked(plans):
    assert [r.name for r in awsshapes.checked_resources(plans["prod"]) if r.type == "aws:lambda/function:Function"] == ["redis-export-function"]


def test_every_mapping_is_used(plans):
    assert {r.type for stack in STACKS for r in awsshapes.checked_resources(plans[stack])} == set(awsshapes.REQUESTS)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    """Set ``a.b.0.c`` (list indexes as numbers) in the inputs."""

    def change(inputs: dict) -> None:
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        node: Any = inputs
        for p in parents:
            node = node[p]
        node[last] = value

    return change


def _first_rule_with(key: str, change: Callable[[dict], None]) -> Callable[[dict], None]:
    """Change the first WAF rule whose statement is a ``key``."""
    return lambda inputs: change(next(r for r in inputs["rules"] if key in r["statement"]))


def _math(change: Callable[[list], None]) -> Callable[[dict], None]:
    return lambda inputs: change(inputs["metricQueries"])


def _expression(queries: list) -> dict:
    """The alarm's one metric math query (the metric queries come first; their ids change with the target groups)."""
    (query,) = [q for q in queries if "expression" in q]
    return query


WAF = "aws:wafv2/webAcl:WebAcl"
CACHE = "aws:elasticache/replicationGroup:ReplicationGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
SCOPED = "statement.rateBasedStatement.scopeDownStatement.andStatement.statements.0.byteMatchStatement"


@pytest.mark.parametrize(
    ("type_", "name", "change", "expected"),
    [
        # an input nobody mapped, at the top and nested
        ("aws:rds/instance:Instance", "darwin-db-instance", _set("storageThroughput", 125), "input 'storageThroughput' has no mapping"),
        ("aws:lb/targetGroup:TargetGroup", "aurum-api-tg", _set("stickiness.cookieName", "x"), "input 'stickiness.cookieName' has no mapping"),
        (WAF, None, _first_rule_with("rateBasedStatement", _set("statement.rateBasedStatement.customKeys", [])), "rateBasedStatement.customKeys' has no"),
        # RDS: a type botocore refuses, a documented value set
        ("aws:rds/instance:Instance", "darwin-db-instance", _set("port", "5432"), "Invalid type for parameter Port"),
        ("aws:rds/instance:Instance", "darwin-db-instance", _set("monitoringInterval", 45), "MonitoringInterval: 45: not one of"),
        ("aws:rds/instance:Instance", "darwin-db-instance", _set("storageType", "gp9"), "StorageType: 'gp9'"),
        ("aws:rds/instance:Instance", "darwin-db-instance", _set("identifier", None), "Invalid type for parameter DBInstanceIdentifier"),
        # ElastiCache: an enum of the ModifyReplicationGroup call, the node count
        (CACHE, "darwin-cache-group", _set("authTokenUpdateStrategy", "ROTATE_NOW"), "ModifyReplicationGroup: .AuthTokenUpdateStrategy: 'ROTATE_NOW' not in"),
        (CACHE, "darwin-cache-group", _set("numCacheClusters", 7), "NumCacheClusters: 7: not within"),
        # ELBv2: enums, a maximum, a pattern, a documented name limit
        ("aws:lb/targetGroup:TargetGroup", "darwin-app-tg", _set("protocol", "HTTP2"), "Protocol: 'HTTP2' not in"),
        ("aws:lb/targetGroup:TargetGroup", "darwin-app-tg", _set("healthCheck.interval", 400), "HealthCheckIntervalSeconds: 400 above the maximum 300"),
        ("aws:lb/targetGroup:TargetGroup", "darwin-app-tg", _set("name", "darwin-app-target-group-for-the-api"), "CreateTargetGroup: .Name:"),
        ("aws:lb/listener:Listener", "alb-https", _set("defaultActions.0.type", "fixed_response"), "Type: 'fixed_response' not in"),
        ("aws:lb/listener:Listener", "alb-https", _set("defaultActions.0.fixedResponse.statusCode", "600"), "StatusCode: '600' does not match"),
        ("aws:lb/listener:Listener", "alb-http", _set("defaultActions.0.redirect.statusCode", "HTTP_307"), "StatusCode: 'HTTP_307' not in"),
        ("aws:lb/listener:Listener", "alb-https", _set("sslPolicy", "ELBSecurityPolicy-TLS13-1-2-2021"), "SslPolicy"),
        ("aws:lb/listenerRule:ListenerRule", "darwin-app-rule", _set("priority", 60000), "Priority: 60000 above the maximum 50000"),
        ("aws:lb/listenerRule:ListenerRule", "darwin-app-rule", _set("conditions.0.hostHeader.regexValues", ["x"]), "has no mapping"),
        ("aws:lb/listenerRule:ListenerRule", "darwin-app-rule", _set("actions.0.forward.targetGroups.1.weight", 1000), "Weight: 1000: not within 0-999"),
        ("aws:lb/listenerRule:ListenerRule", "darwin-app-rule", _set("actions.0.forward.targetGroups.0.targetGroupArn", "x"), "has no mapping"),
        # CloudWatch: enums, a documented period, metric math
        (ALARM, "darwin-db-cpu", _set("comparisonOperator", "GreaterThan"), "ComparisonOperator: 'GreaterThan' not in"),
        (ALARM, "darwin-db-cpu", _set("statistic", "Avg"), "Statistic: 'Avg' not in"),
        (ALARM, "darwin-db-cpu", _set("period", 45), "Period: 45: not 10, 20, 30"),
        (ALARM, "darwin-db-cpu", _set("treatMissingData", "notbreaching"), "TreatMissingData"),
        (ALARM, "darwin-app-5xx-rate", _math(lambda q: q[0].update(returnData=True)), "exactly one metric query returns data"),
        (ALARM, "darwin-app-5xx-rate", _math(lambda q: _expression(q).update(expression="100 * (e0 + e1) / requestz")), "unknown queries ['requestz']"),
        (ALARM, "darwin-app-5xx-rate", _math(lambda q: q[0]["metric"].update(stat="Summ")), "Stat"),
        (ALARM, "darwin-app-5xx-rate", _set("period", 60), "Metrics excludes ['Period']"),
        # WAFv2: enums deep in the nested statements, a documented window, one action per rule, one field
        (WAF, None, _first_rule_with("rateBasedStatement", _set(f"{SCOPED}.positionalConstraint", "EQUALS")), "PositionalConstraint: 'EQUALS' not in"),
        (WAF, None, _first_rule_with("rateBasedStatement", _set(f"{SCOPED}.textTransformations.0.type", "LOWER")), "Type: 'LOWER' not in"),
        (WAF, None, _first_rule_with("rateBasedStatement", _set("statement.rateBasedStatement.evaluationWindowSec", 30)), "EvaluationWindowSec: 30"),
        (WAF, None, _first_rule_with("rateBasedStatement", _set("statement.rateBasedStatement.aggregateKeyType", "SOURCE_IP")), "AggregateKeyType"),
        (WAF, None, _first_rule_with("managedRuleGroupStatement", _set("action", {"block": {}})), "a rule group takes OverrideAction"),
        (WAF, None, _first_rule_with("rateBasedStatement", _set(f"{SCOPED}.fieldToMatch.uriPath", {})), "FieldToMatch takes exactly one"),
        (WAF, None, _set("scope", "GLOBAL"), "Scope: 'GLOBAL' not in"),
        # Lambda: enums, a minimum botocore checks, the role ARN's pattern (the mock's own form fails it)
        ("aws:lambda/function:Function", "redis-export-function", _set("runtime", "python9.9"), "Runtime: 'python9.9' not in"),
        ("aws:lambda/function:Function", "redis-export-function", _set("architectures", ["arm"]), "'arm' not in"),
        ("aws:lambda/function:Function", "redis-export-function", _set("memorySize", 64), "Invalid value for parameter MemorySize"),
        ("aws:lambda/function:Function", "redis-export-function", _set("role", "arn:aws:iam:us-east-1:123456789012:role/x"), "Role: 'arn:aws:iam:us-east-1"),
        ("aws:lambda/function:Function", "redis-export-function", _set("loggingConfig.logFormat", "Yaml"), "LogFormat: 'Yaml' not in"),
    ],
)  # fmt: skip
def test_a_broken_request_fails(plans, type_, name, change, expected):
    cap = plans["prod"]
    resource = cap.one(type_, name)
    rewrite = awsshapes.arn_rewriter(cap)
    assert awsshapes.problems(cap, resource, rewrite) == []  # the real one passes
    inputs = copy.deepcopy(resource.inputs)
    change(inputs)
    found = awsshapes.problems(cap, resource, rewrite, inputs)
    assert any(expected in p for p in found), found


def test_a_secret_of_unknown_origin_cannot_pass_silently(plans):
    cap = plans["prod"]
    group = cap.one("aws:elasticache/replicationGroup:ReplicationGroup", "darwin-cache-group")
    orphan = dataclasses.replace(group, property_dependencies={**group.property_dependencies, "authToken": []})
    assert awsshapes.problems(cap, orphan, awsshapes.arn_rewriter(cap)) == [
        "darwin-cache-group.authToken is secret and not from one RandomPassword: cannot check its value"
    ]


def test_secret_stand_ins_follow_their_generator(plans):
    cap = plans["prod"]
    out = awsshapes.requests(cap, cap.one("aws:elasticache/replicationGroup:ReplicationGroup", "darwin-cache-group"), awsshapes.arn_rewriter(cap))
    assert len(out.params["AuthToken"]) == 64 and out.params["AuthToken"].isalnum()
