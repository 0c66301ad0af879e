"""Promote the exact images running in one stack to the next: dev -> staging -> prod.

    python -m tools.promote --from dev --to staging                  # reads `pulumi stack output`
    python -m tools.promote --from staging --to prod --outputs staging-outputs.json

It reads the source stack's ``image_digests`` output (``{system: {image: "sha256:..."}}``), writes
those digests into ``Pulumi.<target>.yaml`` under ``platform:systems.<system>.images`` (comments,
order and everything else in the file kept), and prints what changed. It refuses to skip an
environment, and refuses anything but a ``sha256:`` digest. Nothing is built or copied: the images
live in the repositories the dev stack created, and the target pulls the same bytes.

The decision is :func:`promote`, a pure function; the rest reads outputs and writes the file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

ORDER = ("dev", "staging", "prod")
DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
PROJECT_DIR = Path(__file__).resolve().parent.parent


class PromotionError(Exception):
    """A promotion that must not happen; the message says why and what to do."""


@dataclass(frozen=True)
class Change:
    system: str
    image: str
    old: str | None
    new: str

    def __str__(self) -> str:
        return f"{self.system}.{self.image}: {self.old or '(none)'} -> {self.new}"


def check_step(source: str, target: str) -> None:
    """Only one step forward: dev -> staging, staging -> prod."""
    if source not in ORDER or target not in ORDER:
        raise PromotionError(f"stacks are {', '.join(ORDER)}; got --from {source} --to {target}")
    if ORDER.index(target) != ORDER.index(source) + 1:
        allowed = ", ".join(f"{a} -> {b}" for a, b in itertools.pairwise(ORDER))
        raise PromotionError(f"{source} -> {target} is not one step; promotion goes {allowed}")


def promote(source: str, target: str, outputs: Mapping[str, Any], config: dict[str, Any]) -> list[Change]:
    """Write the source's running digests into the target's stack config (in place); return the changes.

    ``outputs`` are the source stack's outputs; ``config`` is the target file's ``config`` mapping.
    Every system the target deploys must be running in the source, with a digest for each of its images.
    """
    check_step(source, target)
    digests = outputs.get("image_digests")
    if not isinstance(digests, Mapping):
        raise PromotionError(f"stack {source} has no 'image_digests' output; run `pulumi up --stack {source}` with this program first")
    systems = config.get("platform:systems")
    if not isinstance(systems, Mapping) or not systems:
        raise PromotionError(f"Pulumi.{target}.yaml has no platform:systems to promote into")
    changes: list[Change] = []
    for system, deployment in systems.items():
        running = digests.get(system)
        if not isinstance(running, Mapping):
            raise PromotionError(f"{system} is deployed in {target} but not running in {source}; deploy it to {source} first")
        images = deployment.setdefault("images", {})
        for image, digest in sorted(running.items()):
            if not isinstance(digest, str) or not DIGEST.match(digest):
                raise PromotionError(f"{source} runs {system}.{image} as {digest!r}, not a sha256 digest; only digests are promoted")
            old = images.get(image)
            if old != digest:
                images[image] = digest
                changes.append(Change(system, image, old, digest))
        for image in images:
            if image not in running:
                raise PromotionError(f"{target} sets {system}.{image}, which {source} does not run")
    return changes


def stack_outputs(stack: str) -> dict[str, Any]:
    """The source stack's outputs, from the Pulumi CLI (the only place they live)."""
    result = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack], capture_output=True, text=True, check=False)  # noqa: S603,S607
    if result.returncode != 0:
        raise PromotionError(f"`pulumi stack output --stack {stack}` failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def promote_file(source: str, target: str, outputs: Mapping[str, Any], path: Path) -> list[Change]:
    yaml = _yaml()
    document = yaml.load(path.read_text(encoding="utf-8"))
    changes = promote(source, target, outputs, document["config"])
    if changes:
        with path.open("w", encoding="utf-8") as handle:
            yaml.dump(document, handle)
    return changes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.promote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", required=True, choices=ORDER)
    parser.add_argument("--to", dest="target", required=True, choices=ORDER)
    parser.add_argument("--outputs", metavar="FILE", help="the source's `pulumi stack output --json`; default: ask the Pulumi CLI")
    parser.add_argument("--project-dir", default=str(PROJECT_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        check_step(args.source, args.target)
        outputs = json.loads(Path(args.outputs).read_text(encoding="utf-8")) if args.outputs else stack_outputs(args.source)
        changes = promote_file(args.source, args.target, outputs, Path(args.project_dir) / f"Pulumi.{args.target}.yaml")
    except PromotionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not changes:
        print(f"{args.target} already runs what {args.source} runs; nothing to change")
    for change in changes:
        print(change)
    return 0


if __name__ == "__main__":
    sys.exit(main())
