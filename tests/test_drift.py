"""Drift: the preview read, and the stack's issue as a pure function (state in, action out)."""

from __future__ import annotations

import json

import pytest

from tools import drift

RUN = "https://github.com/o/r/actions/runs/1"
SHA = "0123456789abcdef0123456789abcdef01234567"

# What `pulumi preview --refresh --expect-no-changes --diff --color never` prints when a service was
# scaled by hand and an ingress rule was added in the console
DRIFTED = """Previewing update (dev)

  pulumi:pulumi:Stack: (same)
    [urn=urn:pulumi:dev::platform::pulumi:pulumi:Stack::platform-dev]
    ~ aws:ecs/service:Service: (update)
        [id=arn:aws:ecs:us-east-1:123456789012:service/platform-dev/twinkle-api]
        [urn=urn:pulumi:dev::platform::platform:compute:Service$aws:ecs/service:Service::twinkle-api-service]
        [provider=urn:pulumi:dev::platform::pulumi:providers:aws::default_7_51_1::04da6b54-80e4-46f7-96ec-b56ff0331ba9]
      ~ desiredCount: 3 => 1
    ~ aws:ec2/securityGroup:SecurityGroup: (update)
        [id=sg-0123456789abcdef0]
        [urn=urn:pulumi:dev::platform::platform:network:Network$aws:ec2/securityGroup:SecurityGroup::network-endpoints]
      - ingress: [
      -     [0]: {
              }
        ]
Resources:
    ~ 2 to update
    438 unchanged

error: no changes were expected but changes were proposed
"""
CLEAN = "Previewing update (dev)\n\nResources:\n    440 unchanged\n"
FAILED = "Previewing update (dev)\n\nerror: AccessDeniedException: User is not authorized to perform: budgets:ViewBudget\n"


def result(status: str, stack: str = "dev") -> drift.Result:
    output = {"clean": CLEAN, "drift": DRIFTED, "error": FAILED}[status]
    res = drift.classify(stack, 0 if status == "clean" else 255, output)
    assert res.status == status
    return res


def issue(res: drift.Result, number: int = 7) -> drift.Issue:
    return drift.Issue(number, drift.title(res.stack), drift.body(res, RUN))


def test_the_preview_is_read_as_clean_drift_or_error():
    assert drift.classify("dev", 0, CLEAN).status == "clean"
    assert drift.classify("dev", 255, DRIFTED).status == "drift"
    # newer CLIs name the operation
    assert drift.classify("dev", 255, "error: no changes were expected for preview but changes were proposed").status == "drift"
    assert drift.classify("dev", 255, FAILED).status == "error"  # the check failed: not drift
    assert drift.summary(DRIFTED) == (
        "~ update aws:ecs/service:Service twinkle-api-service\n"
        "~ update aws:ec2/securityGroup:SecurityGroup network-endpoints\n"
        "\n"
        "Resources:\n    ~ 2 to update\n    438 unchanged"
    )


# state in (the open issue or none, the result), action out
CASES = [
    ("drift", False, "open"),
    ("drift", True, "update"),
    ("clean", True, "close"),
    ("clean", False, "nothing"),
    ("error", True, "nothing"),
    ("error", False, "nothing"),
]


@pytest.mark.parametrize(("status", "has_issue", "kind"), CASES)
def test_one_issue_per_stack(status, has_issue, kind):
    res = result(status)
    existing = issue(result("drift")) if has_issue else None
    action = drift.decide(res, existing, RUN)
    assert action.kind == kind
    assert action.number == (7 if kind in ("update", "close") else None)


def test_a_new_drift_opens_an_issue_with_the_summary_and_how_to_reconcile():
    action = drift.decide(result("drift"), None, RUN)
    assert action.title == "Drift: stack dev differs from its code"
    assert action.body.startswith(drift.marker("dev"))
    assert "~ update aws:ecs/service:Service twinkle-api-service" in action.body and RUN in action.body
    assert "pulumi up --stack dev" in action.body and 'README, "Drift"' in action.body


def test_the_same_drift_again_updates_quietly_a_different_one_comments():
    first = result("drift")
    same = drift.decide(first, issue(first), RUN)
    assert same.kind == "update" and same.comment == ""  # nightly runs do not pile up comments
    other = drift.classify("dev", 255, DRIFTED.replace("twinkle-api-service", "offerhub-api-service"))
    changed = drift.decide(other, issue(first), RUN)
    assert changed.kind == "update" and "offerhub-api-service" in changed.comment and "offerhub-api-service" in changed.body


def test_clean_again_closes_with_a_comment():
    action = drift.decide(result("clean"), issue(result("drift")), RUN)
    assert action.kind == "close" and "clean again" in action.comment and RUN in action.comment


def test_issues_are_found_by_their_stacks_marker():
    res = result("drift")
    listing = [
        {"number": 3, "title": "x", "body": drift.body(result("drift", stack="prod"), RUN)},
        {"number": 4, "title": "PR", "body": drift.marker("dev"), "pull_request": {}},  # the issues API lists pull requests too
        {"number": 5, "title": "y", "body": None},
        {"number": 7, "title": "Drift: stack dev differs from its code", "body": drift.body(res, RUN)},
    ]
    assert drift.find_issue("dev", listing).number == 7
    assert drift.find_issue("prod", listing).number == 3
    assert drift.find_issue("staging", listing) is None


def test_the_commit_the_stack_was_deployed_from():
    def update(result="succeeded", kind="update", **env):
        return {"kind": kind, "result": result, "version": 1, "environment": env}

    assert drift.deployed_commit([update(**{"git.head": SHA})]) == SHA
    # newest first: a failed update and a refresh do not count; a dirty tree (a promotion's stack file) does
    history = [update("failed", **{"git.head": "f" * 40}), update(kind="refresh"), update(**{"git.head": SHA, "git.dirty": "true"})]
    assert drift.deployed_commit(history) == SHA
    assert drift.deployed_commit([update()]) is None  # run outside a git checkout
    assert drift.deployed_commit({"not": "a list"}) is None


def test_secret_versions_are_left_out_of_the_refresh():
    state = {
        "deployment": {
            "resources": [
                {"urn": "urn:pulumi:dev::platform::aws:secretsmanager/secret:Secret::s", "type": "aws:secretsmanager/secret:Secret"},
                {
                    "urn": "urn:pulumi:dev::platform::x$aws:secretsmanager/secretVersion:SecretVersion::v",
                    "type": "aws:secretsmanager/secretVersion:SecretVersion",
                },
            ]
        }
    }
    assert drift.excluded_urns(state) == ["urn:pulumi:dev::platform::x$aws:secretsmanager/secretVersion:SecretVersion::v"]


def test_the_command_line_writes_what_the_workflow_applies(tmp_path, capsys):
    (tmp_path / "drift.txt").write_text(DRIFTED)
    assert (
        drift.main(
            ["classify", "--stack", "dev", "--exit-code", "255", "--output", str(tmp_path / "drift.txt"), "--commit", SHA, "--json", str(tmp_path / "r.json")]
        )
        == 0
    )
    (tmp_path / "issues.json").write_text("[]")
    assert (
        drift.main(["decide", "--result", str(tmp_path / "r.json"), "--issues", str(tmp_path / "issues.json"), "--run-url", RUN, "--out", str(tmp_path / "a")])
        == 0
    )
    assert (tmp_path / "a" / "kind").read_text() == "open" and (tmp_path / "a" / "number").read_text() == ""
    assert SHA[:12] in (tmp_path / "a" / "body.md").read_text()
    # an error fails the step (after the result is written for the report)
    (tmp_path / "failed.txt").write_text(FAILED)
    assert drift.main(["classify", "--stack", "dev", "--exit-code", "1", "--output", str(tmp_path / "failed.txt"), "--json", str(tmp_path / "e.json")]) == 1
    assert json.loads((tmp_path / "e.json").read_text())["status"] == "error"
    history = tmp_path / "h.json"
    history.write_text("[]")
    capsys.readouterr()
    assert drift.main(["deployed-commit", "--history", str(history), "--default", SHA]) == 0
    assert capsys.readouterr().out == f"commit={SHA}\n"


def test_the_reporting_job_needs_nothing_but_the_standard_library():
    import ast
    import sys

    from tests.conftest import ROOT

    tree = ast.parse((ROOT / "tools" / "drift.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


# ---------------------------------------------------------------- the drift roles (docs/iam/github-drift-<stack>-*.json)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_drift_roles_read_what_a_refresh_reads_and_no_data(stack):
    from tests.conftest import ROOT
    from tests.test_delivery import DATA_READS, _actions

    iam = ROOT / "docs" / "iam"
    doc = json.loads((iam / f"github-drift-{stack}-permissions.json").read_text())
    allowed = {a for s in doc["Statement"] if s["Effect"] == "Allow" for a in _actions(s)}
    # read-only: every action reads (budgets calls its read ViewBudget), nothing is a wildcard
    assert all(a.split(":")[1].startswith(("Describe", "List", "Get", "View")) and "*" not in a for a in allowed), sorted(allowed)
    # what the preview role reads, and what refreshing this stack's resources reads besides
    preview = json.loads((iam / f"github-preview-{stack}-permissions.json").read_text())
    assert {a for s in preview["Statement"] if s["Effect"] == "Allow" for a in _actions(s)} <= allowed
    assert {"budgets:ViewBudget", "budgets:ListTagsForResource", "lambda:GetFunction", "logs:DescribeResourcePolicies"} <= allowed
    # no secret value, no decrypt, objects of the state bucket only; secret versions are not refreshed (--exclude)
    assert not DATA_READS & allowed and "secretsmanager:GetSecretValue" not in allowed
    assert DATA_READS <= {a for s in doc["Statement"] if s["Effect"] == "Deny" for a in _actions(s)}
    assert [s["Resource"] for s in doc["Statement"] if "s3:GetObject" in _actions(s)] == ["arn:aws:s3:::<STATE_BUCKET>/.pulumi/*"]
    assert drift.EXCLUDED_TYPES == ("aws:secretsmanager/secretVersion:SecretVersion",)
