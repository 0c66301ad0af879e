"""The IAM roles the workflows assume (docs/iam): who may assume each, and what it may do.

GitHub's OIDC token names a job by its ``sub`` claim: ``repo:<org>/<repo>:environment:<name>`` for a
job that names an environment, ``repo:<org>/<repo>:pull_request`` for any other job of a pull request,
``repo:<org>/<repo>:ref:refs/heads/<branch>`` otherwise (docs.github.com, "OpenID Connect reference",
subject claims). Every role here trusts exactly one environment, so only a job of that environment can
assume it: ``dev``/``staging``/``prod`` admit main alone (deployment branches), and
``preview-<stack>`` is where pull request previews run. aws-actions/configure-aws-credentials asks for
the audience ``sts.amazonaws.com`` by default (its README, "OIDC audience").
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

from tests.conftest import ROOT

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports pkg_resources (tools/iampolicies.py)
    import parliament

IAM = ROOT / "docs" / "iam"
ISSUER = "token.actions.githubusercontent.com"
STACKS = ("dev", "staging", "prod")
ROLES = (
    {f"github-deploy-{s}": f"repo:<ORG>/<REPO>:environment:{s}" for s in STACKS}
    | {f"github-preview-{s}": f"repo:<ORG>/<REPO>:environment:preview-{s}" for s in STACKS}
    # the nightly drift check (.github/workflows/drift.yml; its permissions: tests/test_drift.py)
    | {f"github-drift-{s}": f"repo:<ORG>/<REPO>:environment:drift-{s}" for s in STACKS}
    # pull requests' preview environments on the dev core (.github/workflows/preview-env.yml): dev's deploy rights
    | {"github-previewenvs-dev": "repo:<ORG>/<REPO>:environment:preview-envs"}
)
SAMPLE = {
    "<ACCOUNT_ID>": "123456789012",
    "<ORG>": "my-org",
    "<REPO>": "platform",
    "<STATE_BUCKET>": "my-state-bucket",
    "<REGION>": "us-east-1",
    "<DR_REGION>": "us-west-2",
}
# What parliament says about these documents and why each stays (like tests/parliament_allowlist.yaml).
ALLOWED = {
    "deploy": {
        "RESOURCE_STAR": "the program creates auto-named resources of these services (ECS, RDS, VPC, ...); the deploy role "
        "is limited to the stack's regions, and IAM to roles of the account minus the CI roles",
        "PERMISSIONS_MANAGEMENT_ACTIONS": "it creates the program's task, Lambda and replication roles and KMS key policies",
        "PRIVILEGE_ESCALATION": "creating roles with inline policies and passing them is what deploying this program is; "
        "iam:PassRole only to the program's services, and nothing on the github-* roles",
        "CREDENTIALS_EXPOSURE": "it writes secret values (secretsmanager) and ECR repository policies of the program",
    },
    "previewenvs": {},  # the deploy role's findings, filled in below: the same document
    "preview": {
        "RESOURCE_STAR": "read-only Describe/List/Get calls on auto-named resources; no secret values, no decrypt (explicit Deny)",
    },
    "drift": {
        "RESOURCE_STAR": "the preview role's reads plus what a refresh reads (budgets:ViewBudget, lambda:GetFunction ...); no secret values, no decrypt",
    },
}
ALLOWED["previewenvs"] = ALLOWED["deploy"]
DATA_READS = {"secretsmanager:GetSecretValue", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "ssm:GetParameter", "ssm:GetParameters"}


def load(name: str) -> dict:
    return json.loads((IAM / name).read_text())


def with_sample_values(document: dict) -> str:
    text = json.dumps(document)
    for placeholder, value in SAMPLE.items():
        text = text.replace(placeholder, value)
    assert "<" not in text, text  # every placeholder is one the README explains
    return text


def test_one_trust_and_one_permissions_policy_per_role():
    assert sorted(p.name for p in IAM.glob("*.json")) == sorted(f"{r}-{k}.json" for r in ROLES for k in ("trust", "permissions"))


@pytest.mark.parametrize("role", sorted(ROLES))
def test_trust_policy_admits_exactly_one_environment(role):
    doc = load(f"{role}-trust.json")
    assert doc["Version"] == "2012-10-17"
    [statement] = doc["Statement"]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Federated": f"arn:aws:iam::<ACCOUNT_ID>:oidc-provider/{ISSUER}"}
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    # StringEquals only: no StringLike, no wildcard subject, no ForAllValues (true on a missing claim)
    assert statement["Condition"] == {"StringEquals": {f"{ISSUER}:aud": "sts.amazonaws.com", f"{ISSUER}:sub": ROLES[role]}}
    assert "*" not in ROLES[role] and "?" not in ROLES[role]
    assert ":pull_request" not in ROLES[role] and ":ref:" not in ROLES[role]


def test_no_two_roles_trust_the_same_jobs():
    subjects = [load(f"{r}-trust.json")["Statement"][0]["Condition"]["StringEquals"][f"{ISSUER}:sub"] for r in ROLES]
    assert len(set(subjects)) == len(subjects)


def _actions(statement: dict) -> list[str]:
    action = statement.get("Action", [])
    return action if isinstance(action, list) else [action]


@pytest.mark.parametrize("stack", STACKS)
def test_preview_roles_read_no_secret_value_and_decrypt_nothing(stack):
    doc = load(f"github-preview-{stack}-permissions.json")
    allowed = [a for s in doc["Statement"] if s["Effect"] == "Allow" for a in _actions(s)]
    assert not any("*" in a.split(":")[1] and not a.split(":")[1].startswith(("Describe", "List", "Get")) for a in allowed)
    verbs = ("Describe", "List", "Get")
    assert all(a.split(":")[1].startswith(verbs) for a in allowed), [a for a in allowed if not a.split(":")[1].startswith(verbs)]
    assert not DATA_READS & set(allowed)
    # and an explicit Deny, so a managed ReadOnlyAccess attached beside it cannot add them back
    denied = {a for s in doc["Statement"] if s["Effect"] == "Deny" for a in _actions(s)}
    assert DATA_READS <= denied
    # objects only from the state bucket (the Redis exports and access logs are data)
    objects = [s for s in doc["Statement"] if "s3:GetObject" in _actions(s)]
    assert [s["Resource"] for s in objects] == ["arn:aws:s3:::<STATE_BUCKET>/.pulumi/*"]


def test_the_preview_environments_role_has_dev_deploy_rights_only():
    # it deploys <system>-pr-<n> stacks on the dev core: what github-deploy-dev may do, in the dev account
    # (its trust names the dev account's OIDC provider; no statement names another account)
    assert load("github-previewenvs-dev-permissions.json") == load("github-deploy-dev-permissions.json")


@pytest.mark.parametrize("stack", STACKS)
def test_deploy_roles_cannot_touch_the_ci_roles(stack):
    doc = load(f"github-deploy-{stack}-permissions.json")
    deny = [s for s in doc["Statement"] if s["Effect"] == "Deny"]
    assert {"Effect": "Deny", "Action": "iam:*", "Resource": "arn:aws:iam::<ACCOUNT_ID>:role/github-*", "Sid": "NotTheCiRoles"} in deny
    pass_role = next(s for s in doc["Statement"] if _actions(s) == ["iam:PassRole"])
    assert "iam:PassedToService" in pass_role["Condition"]["StringEquals"]


def lint(document: dict) -> list[tuple[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysed = parliament.analyze_policy_string(with_sample_values(document), include_community_auditors=True)
    return [(f.issue, str(f.detail)) for f in analysed.findings]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_permission_policies_pass_parliament(role):
    allowed = ALLOWED[role.split("-")[1]]
    findings = lint(load(f"{role}-permissions.json"))
    assert [f for f in findings if f[0] not in allowed] == []


@pytest.mark.parametrize("role", sorted(ROLES))
def test_trust_policies_pass_parliament(role):
    doc = json.loads(with_sample_values(load(f"{role}-trust.json")))
    doc["Statement"][0]["Resource"] = f"arn:aws:iam::123456789012:role/{role}"  # as tools/iampolicies.py shows a trust policy
    # parliament's IAM definitions know neither GitHub as a federation source nor the provider's own
    # condition keys (`<provider host>:aud`, `:sub`, which IAM takes from the OIDC provider's URL), and
    # call issuing credentials what it is: the purpose of a role
    expected = {
        ("CREDENTIALS_EXPOSURE", ""),
        ("UNKNOWN_FEDERATION_SOURCE", f"arn:aws:iam::123456789012:oidc-provider/{ISSUER}"),
        ("UNKNOWN_CONDITION_FOR_ACTION", f"Unknown condition {ISSUER}:aud for action sts:AssumeRoleWithWebIdentity"),
        ("UNKNOWN_CONDITION_FOR_ACTION", f"Unknown condition {ISSUER}:sub for action sts:AssumeRoleWithWebIdentity"),
    }
    assert set(lint(doc)) <= expected


def test_the_linter_catches_a_bad_policy():
    bad = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObjekt", "Resource": "arn:aws:s3:::<STATE_BUCKET>/*"}]}
    assert any(issue == "UNKNOWN_ACTION" for issue, _ in lint(bad))


def test_workflows_use_the_environments_these_roles_trust():
    text = "".join(p.read_text() for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    # preview.yml: preview-<env>, the environment of each selected stack (tools/stackselect.py ci_env)
    assert "environment: preview-${{ matrix.env }}" in text and "environment: dev" in text
    assert "environment: ${{ inputs.target }}" in text and "environment: preview-${{ inputs.target }}" in text


def test_docs_directory_is_where_the_readme_points():
    assert Path(IAM).is_dir()


# The IAM service prefix of each pulumi-aws module the plans use (the cloudwatch module holds CloudWatch
# Logs too; lb is Elastic Load Balancing; vpc's rules are EC2's). A new module fails the test below until
# it is named here.
IAM_PREFIX = {
    "acm": "acm", "appautoscaling": "application-autoscaling", "budgets": "budgets", "ec2": "ec2", "ecr": "ecr", "ecs": "ecs",
    "elasticache": "elasticache", "iam": "iam", "kms": "kms", "lambda": "lambda", "lb": "elasticloadbalancing", "rds": "rds",
    "route53": "route53", "s3": "s3", "scheduler": "scheduler", "secretsmanager": "secretsmanager", "sns": "sns", "vpc": "ec2", "wafv2": "wafv2",
}  # fmt: skip
CLOUDWATCH_PREFIX = {
    "logGroup": "logs", "logResourcePolicy": "logs", "logMetricFilter": "logs", "metricAlarm": "cloudwatch", "dashboard": "cloudwatch",
    "eventRule": "events", "eventTarget": "events",  # EventBridge, the former CloudWatch Events (components/alerting.py)
}  # fmt: skip


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_deploy_role_may_call_every_service_its_stack_uses(plans, stack):
    """A service the plan uses that the deploy role cannot call fails the first real `pulumi up` with
    AccessDenied (the budget, for one, is a global service outside the region-scoped statement)."""
    statements = load(f"github-deploy-{stack}-permissions.json")["Statement"]
    allowed = {a.split(":")[0] for s in statements if s["Effect"] == "Allow" for a in _actions(s)}
    needed = set()
    for resource in plans[stack].resources:
        if not resource.custom or not resource.type.startswith("aws:"):
            continue
        module, kind = resource.type.split(":")[1].split("/")
        needed.add(CLOUDWATCH_PREFIX[kind] if module == "cloudwatch" else IAM_PREFIX[module])
    assert needed - allowed == set()
