"""Shared fixtures: a scratch project dir with an editable stack file, and the capture harness."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from components.platform import run_stack
from stacks.catalog import SecretSource, load_catalog
from tools import harness

ROOT = Path(__file__).resolve().parent.parent


def load_stack_yaml(stack: str) -> dict:
    return yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())


@pytest.fixture
def project(tmp_path: Path) -> Callable[..., Path]:
    """GIVEN a copy of a real stack file, edited by ``mutate``, in a scratch project dir."""

    def make(stack: str = "dev", mutate: Callable[[dict], None] | None = None, name: str = "test") -> Path:
        data = load_stack_yaml(stack)
        data["config"]["platform:preset"] = stack  # the copy is named "test"; keep the source's preset
        if mutate:
            mutate(data["config"])
        (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")
        return tmp_path

    return make


def plan(stack: str, project_dir: Path = ROOT, registry: dict | None = None, config: tuple | None = None) -> harness.Capture:
    """WHEN the real program runs for ``stack`` under the mock runtime. ``registry``: what ECR holds
    (default: every image the stack file names, pushed); ``config``: the engine's (values, secret keys)
    (default: what the CLI would pass for the stack file)."""
    return harness.run(stack, project_dir, program=lambda: run_stack(project_dir), registry=registry, config=config)


def refused_real_up(monkeypatch: pytest.MonkeyPatch, stack: str) -> tuple[str, list]:
    """WHEN ``stack`` runs as a real ``pulumi up`` would (not under the mock runtime, not a dry run; only
    ``components.platform.offline`` is simulated) and stops: (its message, the resources it declared)."""
    import pulumi

    from components import platform

    monkeypatch.setattr(platform, "offline", lambda: False)
    captured = harness.Capture(stack=stack)
    monkeypatch.setattr(harness, "Capture", lambda stack: captured)
    with pytest.raises(pulumi.RunError) as info:
        plan(stack, ROOT)
    return str(info.value), captured.resources


@pytest.fixture(scope="session")
def plans() -> dict[str, harness.Capture]:
    """The three real stacks, planned once per test session."""
    return {stack: plan(stack) for stack in ("dev", "staging", "prod")}


def set_every_secret(config: dict) -> None:
    """Declare every external secret of every system set out of band (the operator put the values into
    Secrets Manager), as a stack looks once its first deploy is finished: nothing is held."""
    catalog = load_catalog()
    for name, system in config["platform:systems"].items():
        entries = []
        for secret, spec in catalog[name].secrets.items():
            if spec.source is not SecretSource.external:
                continue
            users = [s for s, svc in catalog[name].services.items() if secret in svc.secrets]
            entries += [f"{secret}.{user}" for user in users] if spec.per_service else [secret]
        system["set_out_of_band"] = entries


def plan_released(stack: str, project_dir: Path) -> harness.Capture:
    """``stack`` as shipped but with every external secret set, planned from a copy in ``project_dir``."""
    data = load_stack_yaml(stack)
    set_every_secret(data["config"])
    (project_dir / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(ROOT / "Pulumi.yaml", project_dir / "Pulumi.yaml")
    return plan(stack, project_dir)


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory) -> harness.Capture:
    """The prod stack once its external secrets are set: every service runs. Most control-id tests read
    this steady state; ``plans["prod"]`` is the shipped file, a first deploy with every service held."""
    return plan_released("prod", tmp_path_factory.mktemp("prod-released"))


@pytest.fixture(scope="session")
def scanned(prod: harness.Capture) -> dict:
    """checkov over the prod plan, once per session (tools/scan.py: one checkov process, ~15 s of CPU). Two
    plans: ``"prod"``; ``"prod-cut"``, the same with the ALB log bucket's public access block removed and
    the export bucket's one cut off from its bucket (no dependencies, so no reference), where the
    connected check CKV2_AWS_6 must fail for both."""
    import dataclasses

    from tools import scan

    cut = [
        dataclasses.replace(r, dependencies=[], property_dependencies={}) if r.name == "redis-export-export-private" else r
        for r in prod.resources
        if r.name != "alb-logs-private"
    ]
    return scan.scan({"prod": prod, "prod-cut": harness.Capture(prod.stack, cut)})
