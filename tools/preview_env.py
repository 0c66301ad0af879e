"""A pull request's preview environments: one split system stack ``<system>-pr-<n>`` per system it changes.

    python -m tools.preview_env systems --base HEAD^1                 # the systems to bring up (JSON list)
    python -m tools.preview_env generate --system twinkle --pr 12     # writes Pulumi.twinkle-pr-12.yaml
    python -m tools.preview_env policy-config --system twinkle        # the policy pack config of its up
    python -m tools.preview_env section --system twinkle --pr 12 --outcome success --urls urls.json
    python -m tools.preview_env teardown --stacks ls.json --pr 12 [--keep '["twinkle"]']
    python -m tools.preview_env stale --stacks ls.json --open-prs prs.json --days 3
    python -m tools.preview_env check-name twinkle-pr-12

``.github/workflows/preview-env.yml`` runs these. A preview environment is the system's dev stack
(``Pulumi.<system>-dev.yaml``, split layout) on the dev core, with ``platform:layout.environment:
pr-<n>`` (physical names, and the ``environment`` default tag, use ``pr-<n>`` instead of ``dev``) and the
smallest data tier (:data:`SMALLEST_DATA_TIER`). Its file is generated on each run and never committed (.gitignore).

Never staging or prod: :func:`generate` refuses a source that is not a ``-dev`` system stack of preset
dev, and any generated stack whose preset is not dev or whose overrides the dev preset model refuses.
Secret values are never copied as ciphertext (each stack encrypts its own): they come from the preview
stack's own file, which ``pulumi config cp`` filled from the dev stack before ``generate`` runs; without
that file the environment has no external secrets (the services that need one are held at zero tasks).

The decisions are pure functions (:func:`generate`, :func:`stale`, :func:`teardown`,
:func:`systems_to_preview`); the CLI reads and writes files.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from tools import stackselect

PROJECT_DIR = stackselect.PROJECT_DIR
ENV = "dev"
"""The only environment a preview environment comes from and runs in."""
MARKER = "<!-- platform-preview-env -->"
"""Starts the one comment per pull request that lists its preview environments."""
HEADER_KEYS = ("secretsprovider", "encryptedkey", "encryptionsalt")
"""Top-level keys of a stack file that belong to its own secrets provider: never copied between stacks."""

# The smallest data tier the preset model accepts (stacks/presets.py): gp3's 20 GB minimum with the
# lowest ceiling stacks/config.py accepts over it (10 % above), no automated backups (dev has no
# platform:recovery, which would need them), one Redis node without snapshots, nothing kept or protected
# on delete so the teardown's `pulumi destroy` removes everything.
SMALLEST_DATA_TIER: dict[str, Any] = {
    # stores of its own: as a tenant of dev's shared ones it would take dev's database and roles
    "data": {"shared": False},
    "postgres": {
        "instance_class": "db.t4g.micro",
        "allocated_storage_gb": 20,
        "max_allocated_storage_gb": 22,
        "multi_az": False,
        "backup_retention_days": 0,
        "performance_insights": False,
        "monitoring_interval_seconds": 0,
        "deletion_protection": False,
        "final_snapshot": False,
    },
    "redis": {"node_type": "cache.t4g.micro", "nodes": 1, "multi_az": False, "snapshot_retention_days": 0, "final_snapshot": False},
    "security": {"protect_state": False},
}


class PreviewEnvError(Exception):
    """A preview environment that must not be made or touched; the message says why."""


def pr_stack(system: str, pr: int | str) -> str:
    return f"{system}-pr-{int(pr)}"


def parse_pr_stack(name: str) -> tuple[str, int]:
    """``(system, pull request)`` of a preview environment's stack name (``org/project/`` ignored)."""
    match = stackselect.PR_STACK.match(name.rsplit("/", 1)[-1])
    if not match:
        raise PreviewEnvError(f"{name} is not a preview environment's stack (<system>-pr-<n>)")
    return match["system"], int(match["pr"])


def _layout(config: Mapping[str, Any]) -> Mapping[str, Any]:
    layout = config.get("platform:layout")
    return layout if isinstance(layout, Mapping) else {}


def check_source(system: str, name: str, document: Any) -> dict[str, Any]:
    """The ``config`` of ``Pulumi.<system>-dev.yaml`` if it may seed a preview environment: a split system
    stack of ``system``, preset dev, on a core, holding that one system. Anything else is refused."""
    if name != f"{system}-{ENV}":
        raise PreviewEnvError(f"a preview environment comes from {system}-{ENV}, not {name}")
    config = document.get("config") if isinstance(document, Mapping) else None
    if not isinstance(config, Mapping):
        raise PreviewEnvError(f"Pulumi.{name}.yaml has no config")
    layout = _layout(config)
    if layout.get("system") != system or not isinstance(layout.get("core"), str):
        raise PreviewEnvError(f"Pulumi.{name}.yaml is not a split system stack of {system} (platform:layout: {{system: {system}, core: <core>}})")
    if layout.get("environment") is not None:
        raise PreviewEnvError(f"Pulumi.{name}.yaml is an ephemeral environment already ({layout.get('environment')})")
    if config.get("platform:preset") != ENV:
        raise PreviewEnvError(f"Pulumi.{name}.yaml has platform:preset {config.get('platform:preset')!r}; preview environments come from {ENV} only")
    systems = config.get("platform:systems")
    if not isinstance(systems, Mapping) or list(systems) != [system]:
        raise PreviewEnvError(f"Pulumi.{name}.yaml must deploy {system} only")
    return dict(config)


def _is_secure(node: Any) -> bool:
    return isinstance(node, Mapping) and set(node) == {"secure"}


def _secure_leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    if _is_secure(node):
        yield path, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _secure_leaves(value, (*path, str(key)))


def _without_secure(node: Any) -> Any:
    """A copy of ``node`` without its encrypted values, and without the mappings that held only those."""
    if isinstance(node, Mapping):
        out = {}
        for key, value in node.items():
            if _is_secure(value) or (isinstance(value, Mapping) and value and not (kept := _without_secure(value))):
                continue
            out[key] = kept if isinstance(value, Mapping) and value else copy.deepcopy(value)
        return out
    return copy.deepcopy(node)


def _put(config: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def overrides(source_overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The source's ``platform:overrides`` with the smallest data tier over them."""
    from stacks.presets import deep_merge

    return deep_merge(copy.deepcopy(dict(source_overrides or {})), copy.deepcopy(SMALLEST_DATA_TIER))


def check_generated(name: str, document: Mapping[str, Any]) -> None:
    """Refuse a generated stack that is not a dev preview environment: its name, its preset (dev), its
    layout (``environment: pr-<n>`` of that name) and overrides the dev preset model accepts."""
    from pydantic import ValidationError

    from stacks.presets import PRESETS, Preset, deep_merge

    system, pr = parse_pr_stack(name)
    config = document.get("config") or {}
    if config.get("platform:preset") != ENV:
        raise PreviewEnvError(f"{name} would have platform:preset {config.get('platform:preset')!r}; a preview environment is {ENV} only")
    layout = _layout(config)
    if layout.get("system") != system or layout.get("environment") != f"pr-{pr}" or not isinstance(layout.get("core"), str):
        raise PreviewEnvError(f"{name} must be {system} on a core with platform:layout.environment pr-{pr}")
    try:
        Preset.model_validate(deep_merge(PRESETS[ENV], config.get("platform:overrides") or {}))
    except ValidationError as err:
        raise PreviewEnvError(f"{name}'s overrides are refused by the {ENV} preset: {err}") from None


def generate(system: str, pr: int | str, source: Mapping[str, Any], dest: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The stack file of ``<system>-pr-<pr>`` from the document of ``Pulumi.<system>-dev.yaml`` (``source``).

    ``dest`` is the preview stack's current file, if any (``pulumi stack init`` and ``pulumi config cp``
    wrote it): its secrets provider keys and its encrypted values are kept, the rest comes from the
    source. Refused (:class:`PreviewEnvError`) unless the source is a dev system stack and the result a
    dev preview environment."""
    name = pr_stack(system, pr)
    config = _without_secure(check_source(system, f"{system}-{ENV}", source))
    for path, value in _secure_leaves((dest or {}).get("config") or {}):
        _put(config, path, value)
    config["platform:layout"] = {**config["platform:layout"], "environment": f"pr-{int(pr)}"}
    # the program requires the stack's environment as the provider's default tag (components/tags.py)
    tags = (config.get("aws:defaultTags") or {}).get("tags")
    if isinstance(tags, dict):
        tags["environment"] = f"pr-{int(pr)}"
    config["platform:overrides"] = overrides(config.get("platform:overrides"))
    document: dict[str, Any] = {k: copy.deepcopy(v) for k, v in source.items() if k not in (*HEADER_KEYS, "config")}
    document.update({k: (dest or {})[k] for k in HEADER_KEYS if k in (dest or {})})
    document["config"] = config
    check_generated(name, document)
    return document


def write(project_dir: Path, system: str, pr: int | str) -> Path:
    """Generate ``Pulumi.<system>-pr-<pr>.yaml`` in ``project_dir`` from ``Pulumi.<system>-dev.yaml``."""
    source_path = project_dir / f"Pulumi.{system}-{ENV}.yaml"
    if not source_path.exists():
        raise PreviewEnvError(f"{source_path.name} does not exist: {system} has no dev stack of the split layout to preview")
    dest_path = project_dir / f"Pulumi.{pr_stack(system, pr)}.yaml"
    source = yaml.safe_load(source_path.read_text(encoding="utf-8")) or {}
    dest = yaml.safe_load(dest_path.read_text(encoding="utf-8")) if dest_path.exists() else None
    document = generate(system, pr, source, dest)
    header = (
        f"# Generated by tools/preview_env.py from {source_path.name} for pull request #{int(pr)}; never committed.\n"
        "# Its resources are named pr-<n> instead of dev, on the dev core, with the smallest data tier.\n"
    )
    dest_path.write_text(header + yaml.safe_dump(document, sort_keys=False, width=4096), encoding="utf-8")
    return dest_path


def policy_config(system: str, project_dir: Path = PROJECT_DIR) -> str:
    """The policy pack config of a preview environment's update: its dev stack's, else dev's."""
    own = f"policy/config/{system}-{ENV}.json"
    return own if (project_dir / own).exists() else f"policy/config/{ENV}.json"


def systems_to_preview(selected: Iterable[str], stacks: Mapping[str, stackselect.StackInfo]) -> list[str]:
    """The systems whose dev system stack (``<system>-dev``, split layout) is among the ``selected`` stacks."""
    out = set()
    for name in selected:
        info = stacks.get(name)
        if info and info.kind == "system" and info.preset == ENV and len(info.systems) == 1 and name == f"{info.systems[0]}-{ENV}":
            out.add(info.systems[0])
    return sorted(out)


def last_updates(stack_ls: Any) -> dict[str, datetime | None]:
    """The preview environments in ``pulumi stack ls --json`` and when each was last updated (UTC; None:
    never). ``lastUpdate`` is written like ``2026-01-31T12:00:00.000Z`` (the Automation API reads it with
    ``%Y-%m-%dT%H:%M:%S.%fZ``)."""
    if not isinstance(stack_ls, list):
        raise PreviewEnvError("not the JSON list of `pulumi stack ls --json`")
    out: dict[str, datetime | None] = {}
    for entry in stack_ls:
        name = str(entry.get("name", "")).rsplit("/", 1)[-1] if isinstance(entry, Mapping) else ""
        if not stackselect.is_pr_stack(name):
            continue
        text = entry.get("lastUpdate")
        when = datetime.fromisoformat(text.replace("Z", "+00:00")) if isinstance(text, str) and text else None
        out[name] = when.astimezone(UTC) if when and when.tzinfo else (when.replace(tzinfo=UTC) if when else None)
    return out


def stale(stacks_with_last_update: Mapping[str, datetime | None], open_prs: Iterable[int], now: datetime, days: float) -> list[tuple[str, str]]:
    """The preview environments to destroy, with why: their pull request is no longer open, or their last
    update is more than ``days`` before ``now``. One never updated is kept while its pull request is open
    (a run may be creating it); names that are not preview environments are never returned."""
    open_set = {int(n) for n in open_prs}
    out = []
    for name, last in sorted(stacks_with_last_update.items()):
        try:
            _, pr = parse_pr_stack(name)
        except PreviewEnvError:
            continue
        if pr not in open_set:
            out.append((name, f"pull request #{pr} is closed"))
        elif last is not None and now - last > timedelta(days=days):
            out.append((name, f"last updated {last:%Y-%m-%d %H:%M} UTC, more than {days:g} days ago"))
    return out


def teardown(existing: Iterable[str], pr: int, keep: Iterable[str] = ()) -> list[str]:
    """This pull request's preview environments among ``existing`` stack names, except those of the
    systems in ``keep`` (the systems it still changes; none when it closed or lost its label)."""
    kept = set(keep)
    out = []
    for name in existing:
        try:
            system, number = parse_pr_stack(name)
        except PreviewEnvError:
            continue
        if number == int(pr) and system not in kept:
            out.append(name.rsplit("/", 1)[-1])
    return sorted(set(out))


def section(system: str, pr: int | str, outcome: str, urls: Mapping[str, Any] | None, run_url: str = "") -> str:
    """One system's part of the pull request comment: its stack, the outcome, each service's URL."""
    lines = [f"#### {system}: `{pr_stack(system, pr)}` ({outcome})", ""]
    if urls:
        lines += [f"- {key}: {url}" for key, url in sorted(urls.items())]
    else:
        lines.append("- no URLs" + (f" (see {run_url})" if run_url else ""))
    return "\n".join(lines) + "\n\n"


def _read_json(path: str) -> Any:
    try:
        return json.loads(sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PreviewEnvError(f"cannot read {path}: {err}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preview_env", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project-dir", default=str(PROJECT_DIR), help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    systems = sub.add_parser("systems", help="the systems a change brings up (JSON list)")
    where = systems.add_mutually_exclusive_group(required=True)
    where.add_argument("--changed", metavar="FILE")
    where.add_argument("--base", metavar="REF")
    gen = sub.add_parser("generate", help="write Pulumi.<system>-pr-<n>.yaml from Pulumi.<system>-dev.yaml")
    gen.add_argument("--system", required=True)
    gen.add_argument("--pr", type=int, required=True)
    pol = sub.add_parser("policy-config", help="the policy pack config of the preview environment's update")
    pol.add_argument("--system", required=True)
    sec = sub.add_parser("section", help="one system's part of the pull request comment (Markdown)")
    sec.add_argument("--system", required=True)
    sec.add_argument("--pr", type=int, required=True)
    sec.add_argument("--outcome", required=True)
    sec.add_argument("--urls", metavar="FILE", help="`pulumi stack output urls --json`")
    sec.add_argument("--run-url", default="")
    down = sub.add_parser("teardown", help="this pull request's preview stacks to destroy (JSON list)")
    down.add_argument("--stacks", metavar="FILE", required=True, help="`pulumi stack ls --json`")
    down.add_argument("--pr", type=int, required=True)
    down.add_argument("--keep", default="[]", help="JSON list of the systems still previewed")
    old = sub.add_parser("stale", help="the preview stacks to destroy (JSON list; reasons on stderr)")
    old.add_argument("--stacks", metavar="FILE", required=True, help="`pulumi stack ls --json`")
    old.add_argument("--open-prs", metavar="FILE", required=True, help="`gh pr list --state open --json number`")
    old.add_argument("--days", type=float, required=True)
    old.add_argument("--now", help="ISO time (default: now)")
    name = sub.add_parser("check-name", help="exit 0 for a preview environment's stack name, 2 otherwise")
    name.add_argument("stack")
    args = parser.parse_args(argv)
    project = Path(args.project_dir)
    try:
        if args.command == "systems":
            infos = stackselect.read_stacks(project)
            if args.base:
                changed = stackselect.changed_since(args.base, project)
            else:
                changed = (sys.stdin.read() if args.changed == "-" else Path(args.changed).read_text(encoding="utf-8")).splitlines()
            print(json.dumps(systems_to_preview(stackselect.select(changed, infos).names, infos)))
        elif args.command == "generate":
            path = write(project, args.system, args.pr)
            print(f"wrote {path.name}")
        elif args.command == "policy-config":
            print(policy_config(args.system, project))
        elif args.command == "section":
            urls = _read_json(args.urls) if args.urls and Path(args.urls).exists() else None
            print(section(args.system, args.pr, args.outcome, urls if isinstance(urls, Mapping) else None, args.run_url), end="")
        elif args.command == "teardown":
            existing = last_updates(_read_json(args.stacks))
            print(json.dumps(teardown(existing, args.pr, json.loads(args.keep or "[]"))))
        elif args.command == "stale":
            now = datetime.fromisoformat(args.now) if args.now else datetime.now(UTC)
            prs = [int(p["number"]) for p in _read_json(args.open_prs)]
            found = stale(last_updates(_read_json(args.stacks)), prs, now if now.tzinfo else now.replace(tzinfo=UTC), args.days)
            for stack, why in found:
                print(f"{stack}: {why}", file=sys.stderr)
            print(json.dumps([stack for stack, _ in found]))
        else:
            parse_pr_stack(args.stack)
    except (PreviewEnvError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
