"""The move between layouts (README "Layouts"): which resources of an all-in-one stack go to which stack of
the split layout, as the `pulumi state move` commands that move them, and back.

    python -m tools.layoutmove --from dev --core core-dev            # all-in-one dev -> split
    python -m tools.layoutmove --from dev --core core-dev --reverse  # split -> all-in-one dev

Both layouts declare the same resources under the same names, parents and inputs
(``tests/test_layouts.py``), so a resource's URN differs only in its stack
(``urn:pulumi:<stack>::platform::<type chain>::<name>``): moving the state is the whole migration, no
alias is needed and nothing is replaced. Which stack each resource goes to is read from the offline plans
of the split stack files (``Pulumi.<core>.yaml`` and every system stack on it), not from a list kept by
hand. Only top-level resources are named: ``pulumi state move`` "automatically includes their children"
(Pulumi docs, "Moving resources between stacks"). A system stack's StackReference (``core``) is new: its
first ``pulumi up`` reads it, nothing moves.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

from tools import harness

PROJECT = harness.PROJECT


def split_stacks(core: str, project_dir: Path) -> list[str]:
    """The core and the system stacks whose ``platform:layout.core`` names it (as ``core`` or ``<org>/<project>/core``)."""
    out = [core]
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        stack = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        if stack == core or "-pr-" in stack:
            continue
        values, _ = harness.engine_config(stack, project_dir)
        named = harness.core_of(values)
        if named is not None and named.rsplit("/", 1)[-1] == core:
            out.append(stack)
    return out


def top_level(capture: harness.Capture) -> list[str]:
    """The URN tails (without the stack) of the resources directly under the stack, in declaration order."""
    return [_tail(r.urn) for r in capture.resources if "::pulumi:pulumi:Stack::" in r.parent]


def holds_cloud_resources(capture: harness.Capture, tail: str) -> bool:
    """The resource is a cloud resource, or a component with one below it."""

    def holds(urn: str) -> bool:
        return capture.by_urn(urn).custom or any(holds(c.urn) for c in capture.children_of(urn))

    return holds(next(r.urn for r in capture.resources if _tail(r.urn) == tail))


def assign(captures: Mapping[str, harness.Capture]) -> dict[str, list[str]]:
    """Split stack -> the top-level resources it takes. A name more than one split stack declares (every
    system stack's view of the core's image repositories, ``registry``, a component with nothing below
    it) goes to the one where it holds cloud resources: moving the all-in-one ``registry`` to a system
    stack would take the repositories with it; the others create their empty component at their first up."""
    tails = {stack: top_level(capture) for stack, capture in captures.items()}
    seen: dict[str, list[str]] = {}
    for stack, names in tails.items():
        for tail in names:
            seen.setdefault(tail, []).append(stack)
    out: dict[str, list[str]] = {stack: [] for stack in captures}
    for tail, stacks in seen.items():
        owners = [s for s in stacks if holds_cloud_resources(captures[s], tail)] if len(stacks) > 1 else stacks
        if len(owners) != 1:
            raise ValueError(f"{tail} holds cloud resources in {', '.join(owners) or 'no stack'}: move it by hand")
        out[owners[0]].append(tail)
    return out


def _tail(urn: str) -> str:
    return urn.split("::", 2)[2]


def plan_moves(core: str, project_dir: Path = harness.PROJECT_DIR) -> dict[str, list[str]]:
    """Split stack -> the URN tails of its top-level resources, from the offline plans."""
    stacks = split_stacks(core, project_dir)
    captures = {core: harness.run(core, project_dir, stacks={})}
    for stack in stacks[1:]:
        values, _ = harness.engine_config(stack, project_dir)
        captures[stack] = harness.run(stack, project_dir, stacks={harness.core_of(values) or core: captures[core].outputs})
    return assign(captures)


def commands(source: str, moves: Mapping[str, list[str]], reverse: bool = False) -> list[str]:
    """The `pulumi state move` commands: ``source`` -> each split stack, or each split stack -> ``source``."""
    out = []
    for stack, tails in moves.items():
        if not tails:
            continue
        frm, to = (stack, source) if reverse else (source, stack)
        urns = " ".join(shlex.quote(f"urn:pulumi:{frm}::{PROJECT}::{t}") for t in tails)
        out.append(f"pulumi state move --source {frm} --dest {to} --yes {urns}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.layoutmove", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, help="the all-in-one stack (dev)")
    parser.add_argument("--core", required=True, help="the split layout's core stack (core-dev)")
    parser.add_argument("--reverse", action="store_true", help="from the split stacks back into the all-in-one stack")
    parser.add_argument("--project-dir", default=str(harness.PROJECT_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    moves = plan_moves(args.core, Path(args.project_dir))
    for line in commands(args.source, moves, args.reverse):
        print(line)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    import os

    os._exit(code)
