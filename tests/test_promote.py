"""Promotion: one step at a time, digests only, the target's stack file otherwise untouched."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import yaml

from stacks.config import load_platform
from tests.conftest import ROOT
from tools import promote as tool

D = {c: "sha256:" + c * 64 for c in "abcdef"}


def outputs(**systems):
    return {"image_digests": systems, "environment": "staging"}


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
    assert tool.main(["--from", "staging", "--to", "prod", "--outputs", str(tmp_path / "out.json"), "--project-dir", str(tmp_path)]) == 0
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
