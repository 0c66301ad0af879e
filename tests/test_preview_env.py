"""A pull request's preview environments (tools/preview_env.py): generated from a dev system stack only,
dev preset only, the smallest data tier; which systems, which stacks to destroy, the comment."""

from __future__ import annotations

import copy
import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from stacks.presets import PRESETS, Preset, deep_merge
from tests.conftest import ROOT
from tools import preview_env as tool
from tools import stackselect

SECRET = {"secure": "v1:source-ciphertext"}


def source(system: str = "twinkle", **changes) -> dict:
    """A small ``Pulumi.<system>-dev.yaml`` of the split layout, as a YAML document."""
    config = {
        "aws:region": "us-east-1",
        "aws:defaultTags": {"tags": {"environment": "dev", "managed-by": "pulumi", "repository": "platform"}},
        "platform:preset": "dev",
        "platform:layout": {"system": system, "core": "core-dev"},
        "platform:systems": {system: {"images": {"api": "1.0.0"}, "env": {"CHAIN_ID": "84532"}}},
        "platform:overrides": {"postgres": {"instance_class": "db.t4g.small"}, "compute": {"web_max_tasks": 1}},
        "platform:secrets": {system: {"API_KEY": SECRET, "OTHER": SECRET}},
    }
    config.update(changes)
    return {"encryptionsalt": "v1:source-salt", "environment": ["platform/dev"], "config": config}


def test_the_generated_stack_is_the_dev_stack_as_pr_n_with_the_smallest_data_tier():
    document = tool.generate("twinkle", 12, source())
    config = document["config"]
    assert config["platform:layout"] == {"system": "twinkle", "core": "core-dev", "environment": "pr-12"}
    assert config["platform:preset"] == "dev" and config["platform:systems"] == source()["config"]["platform:systems"]
    # the environment default tag the program checks (components/tags.py) is the preview environment's
    assert config["aws:defaultTags"]["tags"] == {"environment": "pr-12", "managed-by": "pulumi", "repository": "platform"}
    # the source's own overrides stay, the data tier is the smallest over them
    assert config["platform:overrides"]["compute"] == {"web_max_tasks": 1}
    assert config["platform:overrides"]["postgres"]["instance_class"] == "db.t4g.micro"
    preset = Preset.model_validate(deep_merge(PRESETS["dev"], config["platform:overrides"]))
    assert preset.postgres.allocated_storage_gb == 20 and preset.postgres.backup_retention_days == 0 and not preset.postgres.multi_az
    assert preset.redis.nodes == 1 and preset.redis.snapshot_retention_days == 0
    # nothing kept or protected, so `pulumi destroy` removes all of it
    assert not (preset.postgres.deletion_protection or preset.postgres.final_snapshot or preset.redis.final_snapshot or preset.security.protect_state)
    # the ESC import stays; the source's secrets provider and ciphertexts never move to another stack
    assert document["environment"] == ["platform/dev"] and "encryptionsalt" not in document
    assert "platform:secrets" not in config


def _floor(model, name: str) -> int:
    return next(m.ge for m in model.model_fields[name].metadata if hasattr(m, "ge"))


def test_the_smallest_tier_is_the_floor_of_each_key_the_preset_model_accepts():
    import math

    from stacks.config import STORAGE_CEILING_HEADROOM
    from stacks.presets import PostgresPreset, RedisPreset

    pg, redis = tool.SMALLEST_DATA_TIER["postgres"], tool.SMALLEST_DATA_TIER["redis"]
    assert pg["allocated_storage_gb"] == _floor(PostgresPreset, "allocated_storage_gb") == 20
    # the lowest ceiling the loader accepts over it (RDS: at least 10 % above the allocated storage)
    assert pg["max_allocated_storage_gb"] == math.ceil(pg["allocated_storage_gb"] * STORAGE_CEILING_HEADROOM)
    assert pg["backup_retention_days"] == _floor(PostgresPreset, "backup_retention_days") == 0
    assert redis["nodes"] == _floor(RedisPreset, "nodes") == 1
    assert redis["snapshot_retention_days"] == _floor(RedisPreset, "snapshot_retention_days") == 0
    assert pg["instance_class"] == PostgresPreset().instance_class and redis["node_type"] == RedisPreset().node_type  # the smallest classes
    # and they are preset keys: the model refuses unknown ones (Strict), so this validates them
    Preset.model_validate(deep_merge(PRESETS["dev"], tool.SMALLEST_DATA_TIER))


def test_the_preview_stacks_own_encrypted_values_and_secrets_provider_are_kept():
    # `pulumi stack init` + `pulumi config cp` wrote the stack's file: its salt, its ciphertexts
    dest = tool.generate("twinkle", 12, source())
    dest["encryptionsalt"] = "v1:own-salt"
    dest["config"]["platform:secrets"] = {"twinkle": {"API_KEY": {"secure": "v1:own"}}}
    dest["config"]["platform:layout"] = {"system": "twinkle", "core": "core-dev"}  # what config cp copied
    document = tool.generate("twinkle", 12, source(), dest)
    assert document["encryptionsalt"] == "v1:own-salt"
    assert document["config"]["platform:secrets"] == {"twinkle": {"API_KEY": {"secure": "v1:own"}}}
    assert document["config"]["platform:layout"]["environment"] == "pr-12"


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"platform:preset": "staging"}, "from dev only"),
        ({"platform:preset": "prod"}, "from dev only"),
        ({"platform:preset": None}, "from dev only"),
        ({"platform:layout": {"core": True}}, "not a split system stack"),  # a core
        ({"platform:layout": None}, "not a split system stack"),  # all-in-one
        ({"platform:layout": {"system": "darwin", "core": "core-dev"}}, "not a split system stack of twinkle"),
        ({"platform:layout": {"system": "twinkle", "core": "core-dev", "environment": "pr-3"}}, "ephemeral environment already"),
        ({"platform:systems": {"twinkle": {}, "darwin": {}}}, "must deploy twinkle only"),
    ],
)
def test_a_source_that_is_not_a_dev_system_stack_is_refused(changes, match):
    with pytest.raises(tool.PreviewEnvError, match=match):
        tool.generate("twinkle", 12, source(**changes))


def test_only_the_systems_dev_stack_is_a_source():
    with pytest.raises(tool.PreviewEnvError, match="comes from twinkle-dev, not twinkle-staging"):
        tool.check_source("twinkle", "twinkle-staging", source())


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c.update({"platform:preset": "prod"}), "a preview environment is dev only"),
        (lambda c: c.update({"platform:preset": "staging"}), "a preview environment is dev only"),
        (lambda c: c["platform:layout"].update({"environment": "pr-13"}), "environment pr-12"),
        (lambda c: c["platform:layout"].pop("environment"), "environment pr-12"),
        (lambda c: c["platform:overrides"]["redis"].update({"nodes": 0}), "refused by the dev preset"),
        (lambda c: c["platform:overrides"].update({"nope": 1}), "refused by the dev preset"),
    ],
)
def test_a_generated_stack_that_is_not_a_dev_preview_environment_is_refused(edit, match):
    document = tool.generate("twinkle", 12, source())
    edit(document["config"])
    with pytest.raises(tool.PreviewEnvError, match=match):
        tool.check_generated("twinkle-pr-12", document)
    with pytest.raises(tool.PreviewEnvError, match="not a preview environment"):
        tool.check_generated("twinkle-dev", tool.generate("twinkle", 12, source()))


def test_a_source_override_the_preset_refuses_is_refused():
    with pytest.raises(tool.PreviewEnvError, match="refused by the dev preset"):
        tool.generate("twinkle", 12, source(**{"platform:overrides": {"compute": {"web_max_tasks": 0}}}))


def _project(tmp_path: Path, **files: dict) -> Path:
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
    for stack, document in files.items():
        (tmp_path / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return tmp_path


def test_cli_writes_the_file_and_it_loads_as_pr_n(tmp_path, capsys):
    from stacks.config import load_platform

    offerhub = source("offerhub", **{"platform:secrets": {}})
    offerhub["config"]["platform:systems"]["offerhub"].pop("env")
    project = _project(tmp_path, **{"offerhub-dev": offerhub})
    assert tool.main(["--project-dir", str(project), "generate", "--system", "offerhub", "--pr", "12"]) == 0
    assert "wrote Pulumi.offerhub-pr-12.yaml" in capsys.readouterr().out
    text = (project / "Pulumi.offerhub-pr-12.yaml").read_text()
    assert text.startswith("# Generated by tools/preview_env.py from Pulumi.offerhub-dev.yaml")
    assert yaml.safe_load(text)["config"]["platform:systems"]["offerhub"]["images"]["api"] == "1.0.0"  # a string still
    # the loader reads it as the environment pr-12 of the dev preset, with the smallest data tier
    cfg = load_platform("offerhub-pr-12", project)
    assert (cfg.env, cfg.preset_name) == ("pr-12", "dev")
    assert cfg.preset.postgres.allocated_storage_gb == 20 and cfg.preset.redis.nodes == 1


def test_cli_refuses_a_system_without_a_dev_stack_and_a_non_dev_one(tmp_path, capsys):
    project = _project(tmp_path, **{"darwin-dev": source("darwin", **{"platform:preset": "prod"})})
    assert tool.main(["--project-dir", str(project), "generate", "--system", "twinkle", "--pr", "12"]) == 2
    assert "Pulumi.twinkle-dev.yaml does not exist" in capsys.readouterr().err
    assert tool.main(["--project-dir", str(project), "generate", "--system", "darwin", "--pr", "12"]) == 2
    assert "from dev only" in capsys.readouterr().err
    assert not list(project.glob("Pulumi.*-pr-*.yaml"))  # nothing written


def test_the_policy_config_is_the_dev_stacks_or_devs(tmp_path):
    (tmp_path / "policy" / "config").mkdir(parents=True)
    assert tool.policy_config("twinkle", tmp_path) == "policy/config/dev.json"
    (tmp_path / "policy" / "config" / "twinkle-dev.json").write_text("{}")
    assert tool.policy_config("twinkle", tmp_path) == "policy/config/twinkle-dev.json"


# ---------------------------------------------------------------- which systems, which stacks to destroy


def test_the_systems_of_a_change_are_those_of_its_selected_dev_system_stacks():
    stacks = {
        "dev": stackselect.StackInfo("dev", systems=("twinkle", "darwin")),
        "core-dev": stackselect.StackInfo("core-dev", "core", ("twinkle", "darwin"), preset="dev"),
        "twinkle-dev": stackselect.StackInfo("twinkle-dev", "system", ("twinkle",), "core-dev", "dev"),
        "darwin-dev": stackselect.StackInfo("darwin-dev", "system", ("darwin",), "core-dev", "dev"),
        "twinkle-prod": stackselect.StackInfo("twinkle-prod", "system", ("twinkle",), "core-prod", "prod"),
    }
    assert tool.systems_to_preview(stackselect.select(["stacks/apps/twinkle.yaml"], stacks).names, stacks) == ["twinkle"]
    assert tool.systems_to_preview(stackselect.select(["components/alb.py"], stacks).names, stacks) == ["darwin", "twinkle"]
    assert tool.systems_to_preview(stackselect.select(["Pulumi.twinkle-prod.yaml", "Pulumi.dev.yaml"], stacks).names, stacks) == []
    assert tool.systems_to_preview(stackselect.select(["docs/operating.md"], stacks).names, stacks) == []


NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def test_stale_destroys_closed_pull_requests_and_old_updates_only():
    stacks = {
        "twinkle-pr-12": NOW - timedelta(days=1),  # open, fresh: kept
        "darwin-pr-12": NOW - timedelta(days=3, minutes=1),  # open, older than 3 days
        "twinkle-pr-9": NOW - timedelta(hours=1),  # closed
        "aurum-pr-14": None,  # open, never updated (a run may be creating it): kept
        "aurum-pr-15": None,  # closed, never updated
        "twinkle-dev": NOW - timedelta(days=90),  # never a preview environment
        "prod": NOW - timedelta(days=90),
    }
    found = dict(tool.stale(stacks, open_prs=[12, 14], now=NOW, days=3))
    assert sorted(found) == ["aurum-pr-15", "darwin-pr-12", "twinkle-pr-9"]
    assert found["twinkle-pr-9"] == "pull request #9 is closed" and "more than 3 days ago" in found["darwin-pr-12"]
    assert tool.stale({"darwin-pr-12": NOW - timedelta(days=3)}, [12], NOW, 3) == []  # exactly N days: kept
    assert [s for s, _ in tool.stale(stacks, [12, 14], NOW, 0.5)] == ["aurum-pr-15", "darwin-pr-12", "twinkle-pr-12", "twinkle-pr-9"]


def test_pulumi_stack_ls_is_read_for_preview_environments_only():
    listing = [
        {"name": "twinkle-pr-12", "current": False, "lastUpdate": "2026-03-09T11:59:00.000Z", "resourceCount": 40},
        {"name": "acme/platform/darwin-pr-3", "current": False, "lastUpdate": "2026-03-01T00:00:00.000Z"},
        {"name": "aurum-pr-4", "current": False},
        {"name": "dev", "current": True, "lastUpdate": "2026-03-01T00:00:00.000Z"},
    ]
    updates = tool.last_updates(listing)
    assert updates == {"twinkle-pr-12": datetime(2026, 3, 9, 11, 59, tzinfo=UTC), "darwin-pr-3": datetime(2026, 3, 1, tzinfo=UTC), "aurum-pr-4": None}
    with pytest.raises(tool.PreviewEnvError):
        tool.last_updates({"name": "dev"})


def test_teardown_is_this_pull_requests_stacks_but_the_systems_it_still_changes():
    existing = ["twinkle-pr-12", "darwin-pr-12", "twinkle-pr-120", "twinkle-pr-1", "twinkle-dev", "acme/aurum-pr-12"]
    assert tool.teardown(existing, 12) == ["aurum-pr-12", "darwin-pr-12", "twinkle-pr-12"]
    assert tool.teardown(existing, 12, keep=["twinkle", "aurum"]) == ["darwin-pr-12"]


def test_cli_stale_and_teardown_read_the_cli_outputs(tmp_path, capsys):
    (tmp_path / "ls.json").write_text(
        json.dumps([{"name": "twinkle-pr-12", "lastUpdate": "2026-03-09T12:00:00.000Z"}, {"name": "darwin-pr-9", "lastUpdate": "2026-03-09T12:00:00.000Z"}])
    )
    (tmp_path / "prs.json").write_text(json.dumps([{"number": 12}]))
    args = ["stale", "--stacks", str(tmp_path / "ls.json"), "--open-prs", str(tmp_path / "prs.json"), "--days", "3", "--now", "2026-03-10T12:00:00+00:00"]
    assert tool.main(args) == 0
    out = capsys.readouterr()
    assert json.loads(out.out) == ["darwin-pr-9"] and "pull request #9 is closed" in out.err
    assert tool.main(["teardown", "--stacks", str(tmp_path / "ls.json"), "--pr", "12", "--keep", "[]"]) == 0
    assert json.loads(capsys.readouterr().out) == ["twinkle-pr-12"]


@pytest.mark.parametrize(
    ("name", "ok"), [("twinkle-pr-12", True), ("acme/platform/darwin-pr-3", True), ("dev", False), ("twinkle-dev", False), ("prod", False), ("pr-12", False)]
)
def test_the_destroy_job_accepts_preview_environment_names_only(name, ok):
    assert (tool.main(["check-name", name]) == 0) is ok


def test_each_systems_part_of_the_comment_lists_its_urls():
    urls = {"twinkle-api": "http://alb.example:8001", "twinkle-facilitator": "http://alb.example:8002"}
    part = tool.section("twinkle", 12, "success", urls)
    assert part.startswith("#### twinkle: `twinkle-pr-12` (success)")
    assert "- twinkle-api: http://alb.example:8001\n- twinkle-facilitator: http://alb.example:8002" in part
    assert "no URLs (see https://run)" in tool.section("darwin", 12, "failure", None, "https://run")


def test_the_source_document_is_not_changed():
    document = source()
    before = copy.deepcopy(document)
    tool.generate("twinkle", 12, document)
    assert document == before
