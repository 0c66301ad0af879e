"""Which stacks a change can move (tools/stackselect.py): the plan of a pull request's previews and of a
push's deploys, and the GitHub environment each stack uses."""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tools import cost, stackselect
from tools.stackselect import StackInfo

SYSTEMS = ("twinkle", "offerhub", "starkdca", "aurum", "darwin")


def _write(project: Path, stack: str, config: dict) -> None:
    (project / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Both layouts side by side: all-in-one dev (every system) and prod (no darwin), staging-eks on
    Kubernetes; split dev (core-dev serving twinkle and darwin, their system stacks), a split prod core
    named with its org, a leftover preview environment's file."""
    (tmp_path / "Pulumi.yaml").write_text("name: platform\n")
    _write(tmp_path, "dev", {"platform:systems": {s: {"images": {"api": "1.0.0"}} for s in SYSTEMS}})
    _write(tmp_path, "prod", {"platform:systems": {s: {} for s in SYSTEMS if s != "darwin"}})
    _write(tmp_path, "staging-eks", {"platform:preset": "staging", "platform:compute": "kubernetes", "platform:systems": {"twinkle": {}}})
    _write(tmp_path, "core-dev", {"platform:preset": "dev", "platform:layout": {"core": True}, "platform:systems": {"twinkle": {}, "darwin": {}}})
    for system in ("twinkle", "darwin"):
        layout = {"system": system, "core": "core-dev"}
        _write(tmp_path, f"{system}-dev", {"platform:preset": "dev", "platform:layout": layout, "platform:systems": {system: {"images": {"api": "1.0.0"}}}})
    _write(tmp_path, "core-prod", {"platform:preset": "prod", "platform:layout": {"core": True}, "platform:systems": {"twinkle": {}}})
    layout = {"system": "twinkle", "core": "acme/platform/core-prod"}
    _write(tmp_path, "twinkle-prod", {"platform:preset": "prod", "platform:layout": layout, "platform:systems": {"twinkle": {}}})
    pr = {"system": "twinkle", "core": "core-dev", "environment": "pr-12"}
    _write(tmp_path, "twinkle-pr-12", {"platform:preset": "dev", "platform:layout": pr, "platform:systems": {"twinkle": {}}})
    return tmp_path


def selected(project: Path, *changed: str) -> list[str]:
    return stackselect.select(changed, stackselect.read_stacks(project)).names


def test_stack_files_are_read_with_their_layout(project):
    stacks = stackselect.read_stacks(project)
    assert "twinkle-pr-12" not in stacks  # a preview environment is never a stack of the selection
    assert stacks["dev"] == StackInfo("dev", "all-in-one", SYSTEMS, None, None, "ecs")
    assert stacks["core-dev"].kind == "core" and stacks["core-dev"].systems == ("twinkle", "darwin")
    assert stacks["twinkle-dev"].kind == "system" and stacks["twinkle-dev"].core == "core-dev"
    assert stacks["twinkle-prod"].core == "core-prod"  # org/project/stack: the stack's own name


def test_a_catalog_change_selects_every_stack_that_deploys_the_system(project):
    # all-in-one stacks listing it, its split system stacks, and the cores serving it (its hosts, repositories)
    assert selected(project, "stacks/apps/darwin.yaml") == ["core-dev", "darwin-dev", "dev"]
    assert selected(project, "stacks/apps/twinkle.yaml") == ["core-dev", "core-prod", "dev", "prod", "staging-eks", "twinkle-dev", "twinkle-prod"]
    selection = stackselect.select(["stacks/apps/aurum.yaml"], stackselect.read_stacks(project))
    assert selection.names == ["dev", "prod"] and selection.stacks["prod"] == ["stacks/apps/aurum.yaml: aurum's catalog entry (the stack deploys aurum)"]


def test_a_stack_file_selects_that_stack_and_a_core_file_its_system_stacks(project):
    assert selected(project, "Pulumi.twinkle-dev.yaml") == ["twinkle-dev"]
    assert selected(project, "Pulumi.prod.yaml") == ["prod"]
    selection = stackselect.select(["Pulumi.core-dev.yaml"], stackselect.read_stacks(project))
    assert selection.names == ["core-dev", "darwin-dev", "twinkle-dev"]
    assert selection.stacks["darwin-dev"] == ["Pulumi.core-dev.yaml: the core it runs on"]
    # a core named with its org and project is matched by its stack name
    assert selected(project, "Pulumi.core-prod.yaml") == ["core-prod", "twinkle-prod"]
    # a stack file the change adds or deletes selects that name
    assert selected(project, "Pulumi.qa.yaml") == ["qa"]


@pytest.mark.parametrize(
    "path",
    ["components/service.py", "stacks/config.py", "stacks/presets.py", "__main__.py", "Pulumi.yaml", "policy/rules.py", "requirements.txt", "tools/harness.py"],
)
def test_shared_code_selects_every_stack_but_preview_environments(project, path):
    assert selected(project, path) == ["core-dev", "core-prod", "darwin-dev", "dev", "prod", "staging-eks", "twinkle-dev", "twinkle-prod"]


def test_docs_tests_and_tools_select_none(project):
    paths = (
        "docs/reference.md",
        "tests/test_cost.py",
        "bench/scale.py",
        "README.md",
        "stacks/apps/NOTES.md",
        ".github/workflows/deploy.yml",
        "tools/ops/pause.py",
    )
    selection = stackselect.select(paths, stackselect.read_stacks(project))
    assert selection.names == []
    assert len(selection.notes) == len(paths) and all("read by no stack" in n for n in selection.notes)


def test_an_unknown_path_selects_every_stack_and_says_why(project):
    selection = stackselect.select(["infra/new.tf"], stackselect.read_stacks(project))
    assert len(selection.names) == 8 and all("not a path this selection knows" in r[0] for r in selection.stacks.values())


def test_preview_environments_are_never_selected(project):
    assert selected(project, "Pulumi.twinkle-pr-12.yaml") == []
    assert "twinkle-pr-12" not in selected(project, "components/platform.py", "stacks/apps/twinkle.yaml", "Pulumi.core-dev.yaml")
    # even when a caller hands one in
    stacks = {**stackselect.read_stacks(project), "twinkle-pr-3": StackInfo("twinkle-pr-3", "system", ("twinkle",), "core-dev", "dev")}
    assert "twinkle-pr-3" not in stackselect.select(["components/x.py", "Pulumi.core-dev.yaml"], stacks).names


def test_a_system_no_stack_deploys_is_noted(project):
    selection = stackselect.select(["stacks/apps/newcomer.yaml"], stackselect.read_stacks(project))
    assert selection.names == [] and selection.notes == ["stacks/apps/newcomer.yaml: no stack deploys newcomer"]


def test_no_module_the_program_imports_reads_tools():
    # NO_STACK lists tools/ as read by no stack: neither the program nor the policy pack may import it
    files = [ROOT / "__main__.py", *(ROOT / "components").rglob("*.py"), *(ROOT / "stacks").rglob("*.py"), *(ROOT / "policy").rglob("*.py")]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "tools" or n.startswith("tools.") for n in names), path


# ---------------------------------------------------------------- the GitHub environment of each stack


@pytest.mark.parametrize(
    ("info", "environment"),
    [
        (StackInfo("dev"), "preview-dev"),  # all-in-one: its own, as before
        (StackInfo("staging"), "preview-staging"),
        (StackInfo("prod"), "preview-prod"),
        (StackInfo("core-dev", "core", preset="dev"), "preview-dev"),  # split: its environment's
        (StackInfo("twinkle-dev", "system", ("twinkle",), "core-dev", "dev"), "preview-dev"),
        (StackInfo("twinkle-staging", "system", ("twinkle",), "core-staging", "staging"), "preview-staging"),
        (StackInfo("darwin-prod", "system", ("darwin",), "core-prod", "prod"), "preview-prod"),
        (StackInfo("twinkle-dev", "system", ("twinkle",), "core-dev", "prod"), None),  # the name says dev, the preset prod
        (StackInfo("twinkle-dev", "system", ("twinkle",), "core-dev", None), None),  # no preset
        (StackInfo("twinkle-qa", "system", ("twinkle",), "core-dev", "qa"), None),  # not a preset
        (StackInfo("staging-eks", preset="staging", compute="kubernetes"), None),  # no cluster credentials in CI
        (StackInfo("twinkle-pr-12", "system", ("twinkle",), "core-dev", "dev"), None),  # preview-envs only
        (StackInfo("envs"), None),  # preview-envs is never a stack's preview environment
    ],
)
def test_each_stack_previews_in_the_environment_of_its_environment(info, environment):
    assert stackselect.preview_environment(info) == environment


def test_the_plan_runs_what_has_an_environment_and_exists(project):
    stacks = stackselect.read_stacks(project)
    selection = stackselect.select(["components/x.py"], stacks)
    result = stackselect.plan(selection, stacks)
    assert [m["stack"] for m in result["matrix"]] == ["core-dev", "core-prod", "darwin-dev", "dev", "prod", "twinkle-dev", "twinkle-prod"]
    assert {m["env"] for m in result["matrix"] if m["stack"].endswith("-dev") or m["stack"] == "dev"} == {"dev"}
    assert [s["stack"] for s in result["skipped"]] == ["staging-eks"]
    # deploy: dev only, and only the stacks the backend has (`pulumi stack ls --json` names, org stripped)
    existing = stackselect.existing_stacks([{"name": "acme/dev"}, {"name": "core-dev"}, {"name": "twinkle-dev", "lastUpdate": "x"}])
    deploy = stackselect.plan(selection, stacks, environment="dev", existing=existing)
    assert [(m["stack"], m["kind"]) for m in deploy["matrix"]] == [("core-dev", "core"), ("dev", "all-in-one"), ("twinkle-dev", "system")]
    assert "darwin-dev" in {s["stack"] for s in deploy["skipped"] if "not in the state backend" in s["why"]}


def test_cli_prints_the_plan_and_its_json(project, tmp_path, capsys):
    changed = tmp_path / "changed.txt"
    changed.write_text("stacks/apps/darwin.yaml\nREADME.md\n")
    assert stackselect.main(["--changed", str(changed), "--project-dir", str(project)]) == 0
    out = capsys.readouterr().out
    assert "darwin-dev (system)" in out and "darwin's catalog entry" in out and "moves no stack: README.md" in out
    assert stackselect.main(["--changed", str(changed), "--json", "--project-dir", str(project)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [m["stack"] for m in data["matrix"]] == ["core-dev", "darwin-dev", "dev"]
    # docs only: an empty matrix, which the workflows skip
    changed.write_text("docs/operating.md\n")
    assert stackselect.main(["--changed", str(changed), "--json", "--project-dir", str(project)]) == 0
    assert json.loads(capsys.readouterr().out)["matrix"] == []


def test_cli_diffs_against_a_base_with_renames_as_two_paths(project, capsys):
    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(project), "-c", "user.name=t", "-c", "user.email=t@example.com", *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "base")
    (project / "Pulumi.prod.yaml").rename(project / "Pulumi.prod2.yaml")
    git("add", "-A")
    git("commit", "-qm", "rename")
    assert stackselect.main(["--base", "HEAD^1", "--json", "--project-dir", str(project)]) == 0
    assert [r["stack"] for r in json.loads(capsys.readouterr().out)["stacks"]] == ["prod", "prod2"]
    assert stackselect.main(["--base", "no-such-ref", "--project-dir", str(project)]) == 2


def test_the_cost_check_uses_the_same_selection(project):
    # tools/cost.py --touched: this selection, plus the price sheet and cost model moving every plan
    names = ["dev", "prod", "core-dev", "darwin-dev", "twinkle-dev"]
    assert cost.touched_stacks(["stacks/apps/darwin.yaml"], names, project) == ["core-dev", "darwin-dev", "dev"]
    assert cost.touched_stacks(["tools/data/aws-prices-us-east-1.json"], names, project) == sorted(names)
    assert cost.touched_stacks(["tools/drift.py", "docs/x.md"], names, project) == []
