"""Promotion: one step at a time, digests only, the target's stack file otherwise untouched."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess

import pytest
import yaml

from stacks.config import load_platform
from tests.conftest import ROOT
from tools import promote as tool

D = {c: "sha256:" + c * 64 for c in "abcdef"}


def outputs(**systems):
    return {"image_digests": systems, "environment": "staging"}


def entry(kind="update", result="succeeded", version=7):
    return {"kind": kind, "result": result, "version": version, "startTime": "2026-01-01T00:00:00.000Z", "message": "", "environment": {}, "config": {}}


SUCCEEDED = [entry(), entry(result="failed", version=6)]  # newest first, as `pulumi stack history --json` lists


def staging_config():
    return yaml.safe_load((ROOT / "Pulumi.staging.yaml").read_text())["config"]


RUNNING = {
    "twinkle": {"api": D["a"], "facilitator": D["b"], "indexer": D["c"], "worker": D["d"]},
    "offerhub": {"api": D["e"]},
    "starkdca": {"backend": D["f"]},
    "aurum": {"api": D["a"]},
    "darwin": {"app": D["b"]},
}


@pytest.mark.parametrize(("source", "target"), [("dev", "prod"), ("prod", "staging"), ("staging", "dev"), ("dev", "dev"), ("qa", "prod")])
def test_only_one_step_forward(source, target):
    with pytest.raises(tool.PromotionError, match=r"one step|stacks are"):
        tool.promote(source, target, outputs(**RUNNING), staging_config())


def test_writes_every_running_digest_and_reports_changes():
    config = staging_config()
    before = copy.deepcopy(config)
    changes = tool.promote("staging", "prod", outputs(**RUNNING), config)
    assert config["platform:systems"]["offerhub"]["images"] == {"api": D["e"]}
    assert {(c.system, c.image) for c in changes} == {(s, i) for s, imgs in RUNNING.items() for i in imgs}
    assert all(c.old == before["platform:systems"][c.system]["images"][c.image] for c in changes)
    # nothing but images changed
    for system in before["platform:systems"]:
        before["platform:systems"][system]["images"] = config["platform:systems"][system]["images"]
    assert before == config


@pytest.mark.parametrize("value", ["1.0.0", "", None, "sha256:abc"])
def test_refuses_anything_but_a_digest(value):
    running = copy.deepcopy(RUNNING)
    running["darwin"]["app"] = value
    with pytest.raises(tool.PromotionError, match="not a sha256 digest"):
        tool.promote("staging", "prod", outputs(**running), staging_config())


def test_refuses_a_system_the_source_does_not_run():
    running = {k: v for k, v in RUNNING.items() if k != "aurum"}
    with pytest.raises(tool.PromotionError, match="aurum is deployed in prod but not running in staging"):
        tool.promote("staging", "prod", outputs(**running), staging_config())


def test_refuses_a_source_without_the_output():
    with pytest.raises(tool.PromotionError, match="no 'image_digests' output"):
        tool.promote("dev", "staging", {"environment": "dev"}, staging_config())


def test_file_keeps_comments_order_and_quotes_and_prod_still_validates(tmp_path):
    # GIVEN a copy of the real project with prod's stack file
    for name in ("Pulumi.yaml", "Pulumi.prod.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    original = (tmp_path / "Pulumi.prod.yaml").read_text()
    (tmp_path / "out.json").write_text(json.dumps(outputs(**RUNNING)))
    # WHEN staging's digests are promoted through the CLI
    (tmp_path / "history.json").write_text(json.dumps(SUCCEEDED))
    args = ["--outputs", str(tmp_path / "out.json"), "--history", str(tmp_path / "history.json"), "--project-dir", str(tmp_path)]
    assert tool.main(["--from", "staging", "--to", "prod", *args]) == 0
    promoted = (tmp_path / "Pulumi.prod.yaml").read_text()
    # THEN only image lines differ: every comment, key order and quoted value is where it was
    old_lines, new_lines = original.splitlines(), promoted.splitlines()
    assert len(old_lines) == len(new_lines)
    differing = [(a, b) for a, b in zip(old_lines, new_lines, strict=True) if a != b]
    assert differing and all(a.split(":")[0] == b.split(":")[0] and "sha256:" in b for a, b in differing)
    assert [line for line in old_lines if line.lstrip().startswith("#")] == [line for line in new_lines if line.lstrip().startswith("#")]
    assert 'CHAIN_ID: "8453"' in promoted
    # and the result is a valid prod stack (digests only)
    cfg = load_platform("prod", tmp_path)
    assert cfg.systems["darwin"].images["app"].digest == D["b"]


def test_cli_refuses_a_skip_with_exit_2(tmp_path, capsys):
    assert tool.main(["--from", "dev", "--to", "prod", "--outputs", str(tmp_path / "missing.json")]) == 2
    assert "not one step" in capsys.readouterr().err


def test_dev_outputs_are_promotable(plans):
    # the offline plan of dev carries exactly the output promotion reads
    config = staging_config()
    tool.promote("dev", "staging", plans["dev"].outputs, config)
    assert all(tool.DIGEST.match(d) for s in config["platform:systems"].values() for d in s["images"].values())


# ---------------------------------------------------------------- the source's last update must have succeeded


@pytest.mark.parametrize(
    ("history", "match"),
    [
        ([entry(result="failed")], "ended 'failed'"),
        ([entry(result="in-progress")], "ended 'in-progress'"),
        ([entry(kind="refresh"), entry(result="failed"), entry()], "ended 'failed'"),  # a refresh says nothing about images
        ([entry(kind="destroy"), entry()], "destroyed"),
        ([], "no update"),
        ([entry(kind="refresh")], "no update"),
        ({"kind": "update"}, "not the JSON list"),
    ],
)
def test_refuses_a_source_whose_newest_update_did_not_succeed(history, match):
    with pytest.raises(tool.PromotionError, match=match):
        tool.check_history("staging", history)


def test_accepts_the_newest_update_succeeding_after_a_failure():
    tool.check_history("staging", [entry(kind="refresh", result="failed"), *SUCCEEDED])


def _project(tmp_path, *stacks):
    for name in ("Pulumi.yaml", *(f"Pulumi.{s}.yaml" for s in stacks)):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "out.json").write_text(json.dumps(outputs(**RUNNING)))
    return ["--outputs", str(tmp_path / "out.json"), "--project-dir", str(tmp_path)]


def test_cli_refuses_a_failed_source_and_leaves_the_file_alone(tmp_path, capsys):
    args = _project(tmp_path, "prod")
    before = (tmp_path / "Pulumi.prod.yaml").read_text()
    (tmp_path / "history.json").write_text(json.dumps([entry(result="failed", version=9), entry(version=8)]))
    assert tool.main(["--from", "staging", "--to", "prod", "--history", str(tmp_path / "history.json"), *args]) == 2
    assert "newest update of staging (version 9) ended 'failed'" in capsys.readouterr().err
    assert (tmp_path / "Pulumi.prod.yaml").read_text() == before


# ---------------------------------------------------------------- one system


def test_one_system_changes_only_that_system_and_needs_only_it_running():
    config = staging_config()
    before = copy.deepcopy(config)
    changes = tool.promote("staging", "prod", outputs(offerhub={"api": D["e"]}), config, system="offerhub")
    assert [(c.system, c.image, c.new) for c in changes] == [("offerhub", "api", D["e"])]
    before["platform:systems"]["offerhub"]["images"]["api"] = D["e"]
    assert config == before


def test_an_unknown_system_is_refused():
    with pytest.raises(tool.PromotionError, match="--system nope is not deployed in prod"):
        tool.promote("staging", "prod", outputs(**RUNNING), staging_config(), system="nope")


def test_cli_promotes_one_system(tmp_path):
    args = _project(tmp_path, "prod")
    (tmp_path / "history.json").write_text(json.dumps(SUCCEEDED))
    assert tool.main(["--from", "staging", "--to", "prod", "--system", "darwin", "--history", str(tmp_path / "history.json"), *args]) == 0
    cfg = load_platform("prod", tmp_path)
    assert cfg.systems["darwin"].images["app"].digest == D["b"]
    assert cfg.systems["offerhub"].images["api"].digest != D["e"]


# ---------------------------------------------------------------- staging-eks is a staging stack


def test_staging_eks_is_promoted_into_from_dev_only(tmp_path):
    args = _project(tmp_path, "staging-eks")
    (tmp_path / "history.json").write_text(json.dumps(SUCCEEDED))
    history = ["--history", str(tmp_path / "history.json")]
    assert tool.main(["--from", "staging", "--to", "staging-eks", *history, *args]) == 2  # staging -> staging is no step
    assert tool.main(["--from", "dev", "--to", "staging-eks", *history, *args]) == 0
    cfg = load_platform("staging-eks", tmp_path)
    assert cfg.systems["twinkle"].images["worker"].digest == D["d"]


# ---------------------------------------------------------------- rollback from git history


def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def _commit_prod(tmp_path, digests, message):
    path = tmp_path / "Pulumi.prod.yaml"
    tool.edit_file(path, lambda config: [c for s, imgs in digests.items() for c in tool._write(config["platform:systems"][s], s, imgs, "test")])
    _git(tmp_path, "add", "-A")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)


@pytest.fixture
def prod_history(tmp_path):
    """A repository whose Pulumi.prod.yaml was: the original, promotion 1 (every system), a config-only
    commit, promotion 2 (darwin and offerhub)."""
    _project(tmp_path, "prod")
    _git(tmp_path, "init", "-q")
    _commit_prod(tmp_path, {}, "initial")
    original = tool.digests_of(yaml.safe_load((tmp_path / "Pulumi.prod.yaml").read_text())["config"])
    _commit_prod(tmp_path, RUNNING, "promote staging -> prod")
    first = tool.digests_of(yaml.safe_load((tmp_path / "Pulumi.prod.yaml").read_text())["config"])
    text = (tmp_path / "Pulumi.prod.yaml").read_text().replace('CHAIN_ID: "8453"', 'CHAIN_ID: "84532"')
    (tmp_path / "Pulumi.prod.yaml").write_text(text)
    _commit_prod(tmp_path, {}, "config only")
    _commit_prod(tmp_path, {"darwin": {"app": D["f"]}, "offerhub": {"api": D["a"]}}, "promote staging -> prod")
    return tmp_path, original, first


def test_rollback_writes_the_digests_before_the_last_promotion(prod_history, capsys):
    tmp_path, _, first = prod_history
    assert tool.main(["--rollback", "prod", "--project-dir", str(tmp_path)]) == 0
    now = tool.digests_of(yaml.safe_load((tmp_path / "Pulumi.prod.yaml").read_text())["config"])
    assert now == first
    assert 'CHAIN_ID: "84532"' in (tmp_path / "Pulumi.prod.yaml").read_text()  # config is not rolled back
    assert f"darwin.app: {D['f']} -> {D['b']}" in capsys.readouterr().out


def test_rollback_of_one_system_looks_at_that_systems_history(prod_history):
    tmp_path, original, _ = prod_history
    # twinkle last changed in promotion 1: rolling it back goes to the original digests
    assert tool.main(["--rollback", "prod", "--system", "twinkle", "--project-dir", str(tmp_path)]) == 0
    now = tool.digests_of(yaml.safe_load((tmp_path / "Pulumi.prod.yaml").read_text())["config"])
    assert now["twinkle"] == original["twinkle"]
    assert now["darwin"] == {"app": D["f"]}  # untouched


def test_rollback_without_an_earlier_promotion_is_refused(tmp_path, capsys):
    _project(tmp_path, "prod")
    _git(tmp_path, "init", "-q")
    _commit_prod(tmp_path, {}, "initial")
    assert tool.main(["--rollback", "prod", "--project-dir", str(tmp_path)]) == 2
    assert "nothing to roll back to" in capsys.readouterr().err


def test_the_workflow_keeps_every_digest_a_stack_pins(capsys):
    # GIVEN prod's file: each digest it pins gets the keep- tag the lifecycle policy never expires
    from components.registry import LIFECYCLE, keep_tag

    assert tool.main(["--pinned", "prod"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 8 and all(tag == keep_tag("prod", digest) and repo.count("/") == 1 for repo, digest, tag in lines)
    keep = LIFECYCLE["rules"][0]["selection"]
    assert all(any(tag.startswith(prefix) for prefix in keep["tagPrefixList"]) for _, _, tag in lines)
    # AND promote.yml tags them right after the update and its check
    steps = yaml.safe_load((ROOT / ".github/workflows/promote.yml").read_text())["jobs"]["up"]["steps"]
    names = [s.get("name", "") for s in steps]
    assert names.index("Keep the images this stack now pins") > names.index("Verify every service runs this update's task definition")


# ---------------------------------------------------------------- split layout: one system's own stacks


def _split_file(stack: str, preset: str, layout: dict, systems: dict) -> dict:
    return {"config": {"aws:region": "us-east-1", "platform:preset": preset, "platform:layout": layout, "platform:systems": systems}}


@pytest.fixture
def split(tmp_path):
    """twinkle's stacks in dev, staging and prod (split layout), staging's core; a failed-then-fixed history."""
    files = {
        "twinkle-dev": _split_file("twinkle-dev", "dev", {"system": "twinkle", "core": "core-dev"}, {"twinkle": {"images": {"api": "1.0.0"}}}),
        "twinkle-staging": _split_file(
            "twinkle-staging", "staging", {"system": "twinkle", "core": "core-staging"}, {"twinkle": {"images": {"api": D["c"], "worker": D["c"]}}}
        ),
        "twinkle-prod": _split_file("twinkle-prod", "prod", {"system": "twinkle", "core": "org/platform/core-prod"}, {"twinkle": {"images": {"api": D["c"]}}}),
        "core-staging": _split_file("core-staging", "staging", {"core": True}, {"twinkle": {}}),
    }
    for stack, document in files.items():
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    (tmp_path / "out.json").write_text(json.dumps(outputs(twinkle={"api": D["a"], "worker": D["b"]})))
    (tmp_path / "history.json").write_text(json.dumps(SUCCEEDED))
    return tmp_path, ["--outputs", str(tmp_path / "out.json"), "--history", str(tmp_path / "history.json"), "--project-dir", str(tmp_path)]


def test_a_split_system_stack_is_promoted_from_its_dev_stack(split, capsys):
    tmp_path, args = split
    assert tool.main(["--from", "twinkle-dev", "--to", "twinkle-staging", *args]) == 0
    promoted = yaml.safe_load((tmp_path / "Pulumi.twinkle-staging.yaml").read_text())["config"]
    assert promoted["platform:systems"] == {"twinkle": {"images": {"api": D["a"], "worker": D["b"]}}}
    assert promoted["platform:layout"] == {"system": "twinkle", "core": "core-staging"}  # nothing else changed
    assert f"twinkle.api: {D['c']} -> {D['a']}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("source", "target", "match"),
    [
        ("twinkle-dev", "twinkle-prod", "not one step"),  # dev -> prod skips staging, by the presets
        ("twinkle-staging", "twinkle-staging", "not one step"),
        ("twinkle-prod", "twinkle-staging", "not one step"),
        ("twinkle-qa", "twinkle-staging", "stacks are"),  # no file: its name is no preset
        ("twinkle-dev", "core-staging", "core stack: it runs no images"),
    ],
)
def test_a_split_promotion_is_one_step_by_preset_and_never_into_a_core(split, capsys, source, target, match):
    tmp_path, args = split
    before = {p.name: p.read_text() for p in tmp_path.glob("Pulumi.*.yaml")}
    assert tool.main(["--from", source, "--to", target, *args]) == 2
    assert match in capsys.readouterr().err
    assert {p.name: p.read_text() for p in tmp_path.glob("Pulumi.*.yaml")} == before


def test_a_split_promotion_reads_the_sources_preset_not_its_name():
    target = _split_file("twinkle-staging", "staging", {"system": "twinkle", "core": "core-staging"}, {"twinkle": {"images": {}}})["config"]
    running = outputs(twinkle={"api": D["a"]})
    # twinkle-dev is dev by its preset; without its file, its name is no environment
    tool.promote("twinkle-dev", "twinkle-staging", running, copy.deepcopy(target), source_config={"platform:preset": "dev"})
    with pytest.raises(tool.PromotionError, match="stacks are"):
        tool.promote("twinkle-dev", "twinkle-staging", running, copy.deepcopy(target))
    # a system the target stack does not deploy is refused, as in all-in-one
    with pytest.raises(tool.PromotionError, match="--system darwin is not deployed in twinkle-staging"):
        tool.promote("twinkle-dev", "twinkle-staging", running, copy.deepcopy(target), "darwin", {"platform:preset": "dev"})


def test_a_split_stacks_pinned_images_get_their_own_keep_tag():
    from components.registry import keep_tag

    config = _split_file("twinkle-prod", "prod", {"system": "twinkle", "core": "core-prod"}, {"twinkle": {"images": {"api": D["a"]}}})["config"]
    assert tool.pinned("twinkle-prod", config) == [("twinkle/api", D["a"], keep_tag("twinkle-prod", D["a"]))]
    assert len(keep_tag("twinkle-prod", D["a"])) <= 128  # ECR's tag limit
