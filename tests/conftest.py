"""Shared fixtures: a scratch project dir with an editable stack file, and the capture harness."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from components.platform import run_stack
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


def plan(stack: str, project_dir: Path = ROOT) -> harness.Capture:
    """WHEN the real program runs for ``stack`` under the mock runtime."""
    return harness.run(stack, project_dir, program=lambda: run_stack(project_dir))


@pytest.fixture(scope="session")
def plans() -> dict[str, harness.Capture]:
    """The three real stacks, planned once per test session."""
    return {stack: plan(stack) for stack in ("dev", "staging", "prod")}


@pytest.fixture(scope="session")
def prod(plans: dict[str, harness.Capture]) -> harness.Capture:
    """The prod plan, which most control-id tests read."""
    return plans["prod"]
