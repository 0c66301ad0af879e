"""Promote the exact images running in one stack to the next: dev -> staging -> prod.

    python -m tools.promote --from dev --to staging                  # asks the Pulumi CLI
    python -m tools.promote --from staging --to prod --outputs out.json --history history.json
    python -m tools.promote --from dev --to staging-eks --system offerhub
    python -m tools.promote --from twinkle-dev --to twinkle-staging     # split layout: one system's stacks
    python -m tools.promote --rollback prod [--system darwin]

It reads the source stack's ``image_digests`` output (``{system: {image: "sha256:..."}}``), writes
those digests into ``Pulumi.<target>.yaml`` under ``platform:systems.<system>.images`` (comments,
order and everything else in the file kept), and prints what changed. It refuses to skip an
environment, refuses anything but a ``sha256:`` digest, and refuses a source whose newest update
did not succeed (``pulumi stack history --json``, newest first: its outputs may describe images that
never ran). ``--system`` promotes one system; all of them by default. A stack's environment is its
``platform:preset`` (``staging-eks`` is a staging stack), for the source as for the target: in the split
layout a system's stacks promote into each other (``twinkle-dev`` -> ``twinkle-staging``, presets dev and
staging), and a core stack, which runs no images, is refused as a target. Nothing is built or copied: the
images live in the repositories the dev stack (or dev core) created, and the target pulls the same bytes.

``--rollback <stack>`` writes back the digests of the previous promotion: the version of
``Pulumi.<stack>.yaml`` before the newest commit that changed its digests (``git log``).

The decisions are pure functions (:func:`promote`, :func:`check_history`, :func:`rollback`); the rest
reads outputs, history and git, and writes the file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from components.registry import keep_tag

ORDER = ("dev", "staging", "prod")
SUCCEEDED = "succeeded"
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


def environment_of(stack: str, config: Mapping[str, Any] | None = None) -> str:
    """The environment a stack belongs to: its ``platform:preset`` (the stack name by default, as
    stacks/config.py reads it), so ``staging-eks`` is a staging stack."""
    preset = (config or {}).get("platform:preset", stack)
    return preset if isinstance(preset, str) else stack


def is_core(config: Mapping[str, Any] | None) -> bool:
    """A split layout's core stack (``platform:layout: {core: true}``): it holds no images."""
    layout = (config or {}).get("platform:layout")
    return isinstance(layout, Mapping) and layout.get("core") is True


def check_step(source: str, target: str, target_env: str | None = None, source_env: str | None = None) -> None:
    """Only one step forward: dev -> staging, staging -> prod (by environment: staging-eks is staging,
    twinkle-dev is dev)."""
    target_env = target_env or target
    source_env = source_env or source
    if source_env not in ORDER or target_env not in ORDER:
        raise PromotionError(f"stacks are {', '.join(ORDER)} (or a stack whose platform:preset is one); got --from {source} --to {target}")
    if ORDER.index(target_env) != ORDER.index(source_env) + 1:
        allowed = ", ".join(f"{a} -> {b}" for a, b in itertools.pairwise(ORDER))
        raise PromotionError(f"{source} -> {target} is not one step; promotion goes {allowed}")


def check_history(source: str, history: Any) -> None:
    """The source's newest update succeeded (``pulumi stack history --json``: a list, newest first).

    A failed or cancelled update can leave outputs that describe images that never ran (or that ECS
    rolled back), so promotion waits for a successful update of the source."""
    if not isinstance(history, list):
        raise PromotionError(f"the history of {source} is not the JSON list of `pulumi stack history --json`")
    for entry in history:
        kind = entry.get("kind") if isinstance(entry, Mapping) else None
        if kind == "destroy":
            raise PromotionError(f"the newest operation on {source} destroyed it; deploy it again before promoting from it")
        if kind != "update":  # refresh, import, preview entries say nothing about what runs
            continue
        result = entry.get("result")
        if result != SUCCEEDED:
            version = entry.get("version", "?")
            raise PromotionError(
                f"the newest update of {source} (version {version}) ended {result!r}, not {SUCCEEDED!r}; fix it and "
                f"`pulumi up --stack {source}` until it succeeds, then promote"
            )
        return
    raise PromotionError(f"{source} has no update in its history; run `pulumi up --stack {source}` first")


def _selected(systems: Mapping[str, Any], only: str | None, stack: str) -> list[str]:
    if only is None:
        return list(systems)
    if only not in systems:
        raise PromotionError(f"--system {only} is not deployed in {stack} ({', '.join(systems)})")
    return [only]


def promote(
    source: str,
    target: str,
    outputs: Mapping[str, Any],
    config: dict[str, Any],
    system: str | None = None,
    source_config: Mapping[str, Any] | None = None,
) -> list[Change]:
    """Write the source's running digests into the target's stack config (in place); return the changes.

    ``outputs`` are the source stack's outputs; ``config`` is the target file's ``config`` mapping;
    ``source_config`` the source file's (its preset is its environment; default: its name). Every system
    promoted (``system``, or all the target deploys) must be running in the source, with a digest for
    each of its images.
    """
    check_step(source, target, environment_of(target, config), environment_of(source, source_config))
    if is_core(config):
        raise PromotionError(f"{target} is a core stack: it runs no images; promote into a system's stack (<system>-{environment_of(target, config)})")
    digests = outputs.get("image_digests")
    if not isinstance(digests, Mapping):
        raise PromotionError(f"stack {source} has no 'image_digests' output; run `pulumi up --stack {source}` with this program first")
    systems = config.get("platform:systems")
    if not isinstance(systems, Mapping) or not systems:
        raise PromotionError(f"Pulumi.{target}.yaml has no platform:systems to promote into")
    changes: list[Change] = []
    for name in _selected(systems, system, target):
        running = digests.get(name)
        if not isinstance(running, Mapping):
            raise PromotionError(f"{name} is deployed in {target} but not running in {source}; deploy it to {source} first")
        for image in systems[name].get("images", {}):
            if image not in running:
                raise PromotionError(f"{target} sets {name}.{image}, which {source} does not run")
        changes += _write(systems[name], name, running, f"{source} runs")
    return changes


def _write(deployment: dict[str, Any], system: str, digests: Mapping[str, Any], whose: str) -> list[Change]:
    images = deployment.setdefault("images", {})
    for image, digest in digests.items():
        if not isinstance(digest, str) or not DIGEST.match(digest):
            raise PromotionError(f"{whose} {system}.{image} as {digest!r}, not a sha256 digest; only digests are promoted")
    changes = []
    for image, digest in sorted(digests.items()):
        old = images.get(image)
        if old != digest:
            images[image] = digest
            changes.append(Change(system, image, old, digest))
    return changes


def digests_of(config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{system: {image: digest-or-tag}}`` of a stack file's ``config``."""
    systems = config.get("platform:systems") or {}
    return {s: dict(d.get("images") or {}) for s, d in systems.items() if isinstance(d, Mapping)}


def rollback(stack: str, versions: list[Mapping[str, Any]], config: dict[str, Any], system: str | None = None) -> list[Change]:
    """Write back the digests of the previous promotion into ``config`` (in place); return the changes.

    ``versions`` are the ``config`` mappings of ``Pulumi.<stack>.yaml`` as committed, newest first (the
    current file's commit first). The newest commit that changed the digests (of ``system``, or of
    any system) is the last promotion; the version before it holds the digests to go back to.
    """
    systems = config.get("platform:systems")
    if not isinstance(systems, Mapping) or not systems:
        raise PromotionError(f"Pulumi.{stack}.yaml has no platform:systems to roll back")
    selected = _selected(systems, system, stack)

    def key(version: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        found = digests_of(version)
        return {s: found.get(s, {}) for s in selected}

    for newer, older in itertools.pairwise(versions):
        if key(newer) != key(older):
            previous = key(older)
            break
    else:
        what = f"{system}'s digests" if system else "its digests"
        raise PromotionError(f"no earlier version of Pulumi.{stack}.yaml in git history has different {what}; nothing to roll back to")
    changes: list[Change] = []
    for name in selected:
        if not previous[name]:
            raise PromotionError(f"{name} had no images in Pulumi.{stack}.yaml before its last promotion; roll it back by hand")
        changes += _write(systems[name], name, previous[name], f"the previous version of Pulumi.{stack}.yaml sets")
    return changes


def _pulumi_json(args: list[str]) -> Any:
    result = subprocess.run(["pulumi", *args], capture_output=True, text=True, check=False)  # noqa: S603,S607
    if result.returncode != 0:
        raise PromotionError(f"`pulumi {' '.join(args)}` failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def stack_outputs(stack: str) -> dict[str, Any]:
    """The source stack's outputs, from the Pulumi CLI (the only place they live)."""
    return _pulumi_json(["stack", "output", "--json", "--stack", stack])


def stack_history(stack: str) -> list[Any]:
    """The source stack's recent operations, newest first (`pulumi stack history --json`)."""
    return _pulumi_json(["stack", "history", "--json", "--page-size", "20", "--stack", stack])


def committed_versions(project_dir: Path, name: str) -> list[dict[str, Any]]:
    """The ``config`` of every committed version of ``name``, newest first (HEAD's first)."""

    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(project_dir), *args], capture_output=True, text=True, check=False)  # noqa: S603,S607
        if result.returncode != 0:
            raise PromotionError(f"`git {' '.join(args)}` failed: {result.stderr.strip()} (a full clone is needed: fetch-depth 0)")
        return result.stdout

    commits = git("log", "--format=%H", "--", name).split()
    yaml = _yaml()
    return [(yaml.load(git("show", f"{c}:{name}")) or {}).get("config") or {} for c in commits]


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, order and quoting survive
    yaml.preserve_quotes = True
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 4096
    return yaml


def edit_file(path: Path, change: Callable[[dict[str, Any]], list[Change]]) -> list[Change]:
    """Apply ``change`` to the file's ``config`` and write it back when anything changed."""
    if not path.exists():
        raise PromotionError(f"{path.name} does not exist")
    yaml = _yaml()
    document = yaml.load(path.read_text(encoding="utf-8"))
    changes = change(document["config"])
    if changes:
        with path.open("w", encoding="utf-8") as handle:
            yaml.dump(document, handle)
    return changes


def promote_file(
    source: str, target: str, outputs: Mapping[str, Any], path: Path, system: str | None = None, source_config: Mapping[str, Any] | None = None
) -> list[Change]:
    return edit_file(path, lambda config: promote(source, target, outputs, config, system, source_config))


def read_config(path: Path) -> dict[str, Any]:
    """The ``config`` mapping of a stack file; ``{}`` when there is none."""
    return ((_yaml().load(path.read_text(encoding="utf-8")) or {}).get("config") or {}) if path.exists() else {}


def _read_json(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PromotionError(f"cannot read {path}: {err}") from None


def pinned(stack: str, config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(repository, digest, keep tag) for every image of our registry that ``Pulumi.<stack>.yaml`` pins by
    digest: what the promote workflow tags so the lifecycle policy never expires it
    (components/registry.py, rule 1)."""
    out = []
    for system, dep in sorted((config.get("platform:systems") or {}).items()):
        for image, ref in sorted(((dep or {}).get("images") or {}).items()):
            if isinstance(ref, str) and ref.startswith("sha256:"):
                out.append((f"{system}/{image}", ref, keep_tag(stack, ref)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.promote", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from", dest="source", metavar="STACK", help="dev or staging, or a stack whose platform:preset is one (twinkle-dev)")
    parser.add_argument("--to", dest="target", metavar="STACK", help="staging, prod, or another stack file (staging-eks, twinkle-staging)")
    parser.add_argument("--rollback", metavar="STACK", help="write back the digests of STACK's previous promotion (git history)")
    parser.add_argument("--system", help="promote (or roll back) this system only; default: every system the target deploys")
    parser.add_argument("--outputs", metavar="FILE", help="the source's `pulumi stack output --json`; default: ask the Pulumi CLI")
    parser.add_argument("--history", metavar="FILE", help="the source's `pulumi stack history --json`; default: ask the Pulumi CLI")
    parser.add_argument("--source-stack", help="the source's stack name for the Pulumi CLI (e.g. org/dev); default: --from")
    parser.add_argument("--pinned", metavar="STACK", help="print `<repository> <digest> <keep tag>` for each digest STACK's file pins")
    parser.add_argument("--project-dir", default=str(PROJECT_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    project = Path(args.project_dir)
    try:
        if args.pinned:
            path = project / f"Pulumi.{args.pinned}.yaml"
            if not path.exists():
                raise PromotionError(f"{path.name} does not exist")
            for line in pinned(args.pinned, (_yaml().load(path.read_text(encoding="utf-8")) or {}).get("config") or {}):
                print(" ".join(line))
            return 0
        if args.rollback:
            if args.source or args.target or args.outputs or args.history:
                raise PromotionError("--rollback takes only --system")
            name = f"Pulumi.{args.rollback}.yaml"
            versions = committed_versions(project, name)
            changes = edit_file(project / name, lambda config: rollback(args.rollback, versions, config, args.system))
            what = f"{args.rollback} already runs the digests before its last promotion"
        else:
            if not (args.source and args.target):
                raise PromotionError("give --from and --to, or --rollback")
            path = project / f"Pulumi.{args.target}.yaml"
            source_config = read_config(project / f"Pulumi.{args.source}.yaml")
            check_step(args.source, args.target, environment_of(args.target, read_config(path)), environment_of(args.source, source_config))
            stack = args.source_stack or args.source
            check_history(args.source, _read_json(args.history) if args.history else stack_history(stack))
            outputs = _read_json(args.outputs) if args.outputs else stack_outputs(stack)
            changes = promote_file(args.source, args.target, outputs, path, args.system, source_config)
            what = f"{args.target} already runs what {args.source} runs; nothing to change"
    except PromotionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not changes:
        print(what)
    for change in changes:
        print(change)
    return 0


if __name__ == "__main__":
    sys.exit(main())
