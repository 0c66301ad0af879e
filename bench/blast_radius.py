"""Blast radius (measured): plan prod twice and diff the captured inputs, per kind of change.

    python -m bench.blast_radius

Changes measured, each against the unchanged prod plan:
- one service's image (darwin's app gets a new digest): only its task definition and ECS service
  may differ;
- one external secret's value (offerhub's AIRTM_API_KEY set, then changed): its secret version and
  the task definitions and services of the services that read it;
- a new system (prod without aurum, then with it): no resource that existed before may change.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml

from tools.harness import PROJECT_DIR, Capture, run

DIGEST = "sha256:" + "f" * 64


def plan(config: dict) -> Capture:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(PROJECT_DIR / "Pulumi.yaml", Path(tmp) / "Pulumi.yaml")
        shutil.copy(PROJECT_DIR / "__main__.py", Path(tmp) / "__main__.py")
        (Path(tmp) / "Pulumi.prod.yaml").write_text(yaml.safe_dump({"config": config}, sort_keys=False))
        return run("prod", Path(tmp))


def changed(before: Capture, after: Capture) -> tuple[list[str], list[str], list[str]]:
    """(changed, added, removed) resource names, comparing inputs, dependencies and options by URN."""
    b = {r.urn: r for r in before.resources if r.custom}
    a = {r.urn: r for r in after.resources if r.custom}

    def key(r):
        return json.dumps([r.inputs, sorted(r.dependencies), r.options], sort_keys=True)

    diff = sorted(b[u].name for u in b.keys() & a.keys() if key(b[u]) != key(a[u]))
    return diff, sorted(a[u].name for u in a.keys() - b.keys()), sorted(b[u].name for u in b.keys() - a.keys())


def measure(name: str, base: dict, mutate: Callable[[dict], None]) -> dict:
    after_cfg = copy.deepcopy(base)
    mutate(after_cfg)
    diff, added, removed = changed(plan(base), plan(after_cfg))
    return {"change": name, "changed": diff, "added": added, "removed": removed}


def main() -> int:
    prod = yaml.safe_load((PROJECT_DIR / "Pulumi.prod.yaml").read_text())["config"]
    with_secret = copy.deepcopy(prod)
    with_secret["platform:secrets"] = {"offerhub": {"AIRTM_API_KEY": {"secure": "v1:AAAA"}}}
    without_aurum = copy.deepcopy(prod)
    del without_aurum["platform:systems"]["aurum"]

    results = [
        measure("image of darwin-app", prod, lambda c: c["platform:systems"]["darwin"]["images"].update(app=DIGEST)),
        measure("value of offerhub AIRTM_API_KEY", with_secret, lambda c: c["platform:secrets"]["offerhub"].update(AIRTM_API_KEY={"secure": "v1:BBBB"})),
        measure("new system (aurum)", without_aurum, lambda c: c["platform:systems"].update(aurum=prod["platform:systems"]["aurum"])),
    ]
    for r in results:
        print(f"{r['change']}: {len(r['changed'])} changed, {len(r['added'])} added, {len(r['removed'])} removed")
        for name in r["changed"]:
            print(f"    changed  {name}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    code = main()
    os._exit(code)
