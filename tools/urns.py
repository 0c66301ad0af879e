"""The URN snapshot of each stack: ``tests/urns/<stack>.txt``, one URN a line, sorted.

A URN that disappears is a resource Pulumi deletes (and, when something else takes its place, a
replacement): a renamed resource or component, a changed parent or type. ``tests/test_hygiene.py``
fails when one does; new URNs are fine. After a rename on purpose, either add an alias
(``pulumi.ResourceOptions(aliases=[pulumi.Alias(name="old-name")])``), which keeps the resource, or,
if the delete is meant, refresh the snapshot:

    python -m tools.urns --write              # every stack with a snapshot (default: dev, staging, prod)
    python -m tools.urns --write --stack dev
    python -m tools.urns                      # print what disappeared and what is new, exit 1 on a loss

URNs are written as the engine computes them: the mock monitor puts the root stack's type in front of
every type chain (``pulumi:pulumi:Stack$...``), the engine does not, so it is dropped here and a line
can be compared with ``pulumi stack export`` output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tools import harness

SNAPSHOT_DIR = Path(__file__).resolve().parent.parent / "tests" / "urns"
STACKS = ("dev", "staging", "prod")
_ROOT_CHAIN = "pulumi:pulumi:Stack$"


def engine_urn(urn: str) -> str:
    """``urn:pulumi:s::p::pulumi:pulumi:Stack$a$b::n`` -> ``urn:pulumi:s::p::a$b::n``."""
    head, project, chain, name = urn.split("::", 3)
    return "::".join((head, project, chain.removeprefix(_ROOT_CHAIN), name))


def urns(capture: harness.Capture) -> list[str]:
    return sorted({engine_urn(r.urn) for r in capture.resources})


def plan(stack: str, project_dir: Path = harness.PROJECT_DIR) -> harness.Capture:
    from components.platform import run_stack

    return harness.run(stack, project_dir, program=lambda: run_stack(project_dir))


def snapshot_path(stack: str) -> Path:
    return SNAPSHOT_DIR / f"{stack}.txt"


def read_snapshot(stack: str) -> list[str]:
    path = snapshot_path(stack)
    return [line for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def compare(stack: str, current: list[str]) -> tuple[list[str], list[str]]:
    """(gone, new) against the committed snapshot."""
    before = set(read_snapshot(stack))
    now = set(current)
    return sorted(before - now), sorted(now - before)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", action="append", help="stack to plan (repeatable); default: dev, staging, prod")
    parser.add_argument("--write", action="store_true", help="write tests/urns/<stack>.txt from the current program")
    args = parser.parse_args(argv)
    status = 0
    for stack in args.stack or STACKS:
        current = urns(plan(stack))
        gone, new = compare(stack, current)
        if args.write:
            SNAPSHOT_DIR.mkdir(parents=True, exist_ok=True)
            snapshot_path(stack).write_text("\n".join(current) + "\n")
            print(f"{stack}: wrote {len(current)} URNs ({len(gone)} gone, {len(new)} new) to {snapshot_path(stack)}")
            continue
        for urn in gone:
            print(f"{stack}: gone  {urn}")
        for urn in new:
            print(f"{stack}: new   {urn}")
        status = status or (1 if gone else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
