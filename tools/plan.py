"""Offline plan: run the real program for a stack under Pulumi's mock runtime, with no cloud access.

    python -m tools.plan --stack dev                 # readable summary
    python -m tools.plan --stack prod --json out.json

The JSON file is ``{"stack", "resources": [{urn, type, name, parent, custom, inputs, dependencies,
propertyDependencies, options}], "outputs", "invokes", "cost"}`` with every secret value replaced by
``"[secret]"``; ``cost`` is the modeled month (:meth:`tools.cost.PlanCost.to_json`) that
``python -m tools.cost --diff`` compares. A configuration mistake prints one message and exits 2 before any resource exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import pulumi

from components.platform import HELD_WARNING
from stacks.config import PlatformConfig, load_platform
from stacks.errors import ConfigError

from . import cost, deploytime
from .harness import PROJECT_DIR, Capture, run


def summary(capture: Capture, cfg: PlatformConfig, project_dir: Path = PROJECT_DIR) -> str:
    lines: list[str] = []
    custom = [r for r in capture.resources if r.custom]
    lines.append(f"stack {cfg.stack}  (preset {cfg.env}, region {cfg.region}, AZs {', '.join(cfg.availability_zones)})")
    lines.append(f"{len(custom)} cloud resources in {len(capture.resources) - len(custom)} components; {len(capture.invokes)} data-source calls")
    lines.append("")
    todo = [(name, setting, system.system.settings[setting]) for name, system in cfg.systems.items() for setting in system.placeholders]
    if todo:
        lines.append(f"before you run `pulumi up`: {len(todo)} settings are still placeholders (a real preview or up stops on them):")
        for name, setting, spec in todo:
            lines.append(f"  {name} {setting}: {spec.description}")
            lines.append(f"    pulumi config set --stack {cfg.stack} --path 'platform:systems.{name}.env.{setting}' <value>")
        lines.append("")
    # what the preview itself warns: missing secrets and images are known only once the program ran
    held = held_services(capture)
    if held:
        lines.append(f"held at zero tasks ({len(held)} services; each starts on the first `pulumi up` after what it lacks is set):")
        for key, reasons in held.items():
            lines.append(f"  {key}")
            lines.extend(f"    - {reason}" for reason in reasons)
        lines.append("")
    lines.append("resources by component:")
    owner = {r.urn: capture.top_component(r.urn) for r in custom}
    groups = Counter(owner.values())
    for name, count in sorted(groups.items()):
        types = Counter(r.type.split(":")[-1] for r in custom if owner[r.urn] == name)
        detail = ", ".join(f"{n} {t}" for t, n in sorted(types.items()))
        lines.append(f"  {name:<28} {count:>4}  {detail}")
    lines.append("")
    net = cfg.network
    if net.existing:
        lines.append(f"network: adopted {net.existing.vpc_id}")
    elif cfg.subnet_plan:
        plan = cfg.subnet_plan
        lines.append(f"network: VPC {net.cidr}, NAT {cfg.preset.network.nat}")
        for tier in ("public", "private", "isolated"):
            lines.append(f"  {tier:<9} {', '.join(str(c) for c in plan.tier(tier))}")
    lines.extend(_eip_lines(capture, cfg, project_dir))
    lines.append("")
    lines.append("systems, their data and services:")
    urls = capture.outputs.get("urls") or {}
    p, r = cfg.preset.postgres, cfg.preset.redis
    recovery = cfg.stack_config.recovery
    db_dr = f", backups replicated to {recovery.dr_region}" if recovery else ""
    cache_dr = f", exported to {recovery.dr_region} every {recovery.redis_export_minutes} min" if recovery else ""
    for system in cfg.systems.values():
        spec = system.system
        lines.append(f"  {system.name}  ({spec.seed})")
        if spec.postgres:
            lines.append(
                f"    database  {system.name}-{cfg.env}: Postgres {p.engine_major}, {p.instance_class}, {'Multi-AZ' if p.multi_az else 'single-AZ'}, "
                f"backups {p.backup_retention_days} d{db_dr}, db {spec.postgres.database}"
            )
        if spec.redis:
            policy = spec.redis.maxmemory_policy
            node_type = cfg.redis_settings(system.name).node_type
            lines.append(f"    cache     {system.name}-{cfg.env}: Redis 7.1, {r.nodes} x {node_type}, maxmemory-policy {policy}{cache_dr}")
        by_source: dict[str, list[str]] = {}
        for name, secret in spec.secrets.items():
            by_source.setdefault(secret.source.value, []).append(name)
        lines.append("    secrets   " + "; ".join(f"{source}: {', '.join(sorted(names))}" for source, names in sorted(by_source.items())))
        for svc in system.services.values():
            sspec = svc.spec
            where = f"port {sspec.port}, health {sspec.health.path}" if sspec.health else "no port"
            url = f"  {urls[svc.key]}" if svc.key in urls else ""
            state = "  (held: 0 tasks)" if svc.key in held else ""
            lines.append(f"    {svc.name:<12} {sspec.kind:<9} {where:<34} image {svc.image_name}={svc.image.version}{url}{state}")
        for part in spec.not_deployed:
            lines.append(f"    {part.name:<12} not deployed: {part.reason}")
        monitoring = [r for r in capture.resources if r.name == f"{system.name}-monitoring" and not r.custom]
        if monitoring:
            children = capture.children_of(monitoring[0].urn)
            alarms = sorted(r.name for r in children if r.type == "aws:cloudwatch/metricAlarm:MetricAlarm")
            boards = [r.inputs.get("dashboardName", r.name) for r in children if r.type == "aws:cloudwatch/dashboard:Dashboard"]
            lines.append(f"    dashboard {', '.join(boards)}")
            lines.append(f"    alarms    {len(alarms)}: {', '.join(a.removeprefix(system.name + '-') for a in alarms)}")
    if cfg.stack_config.compute == "kubernetes":
        lines.append("")
        lines.extend(_kubernetes_lines(capture))
    lines.append("")
    lines.extend(_cost_lines(capture, cfg))
    lines.append("")
    lines.extend(_deploy_lines(capture, cfg))
    if not cfg.domain and cfg.stack_config.compute == "ecs":
        lines.append("")
        lines.append(
            "no domain configured: each web service is served over plain HTTP on its own port of the load balancer's name "
            "(the URLs above). Set platform:domain and platform:hosted_zone_id for HTTPS."
        )
    lines.append("")
    lines.append("outputs:")
    for name, value in capture.outputs.items():
        lines.append(f"  {name}: {json.dumps(value) if not isinstance(value, str) else value}")
    return "\n".join(lines)


# The stacks this repository ships; in one account and region they share its Elastic IP quota.
EXAMPLE_STACKS = ("dev", "staging", "prod")
# AWS EC2 user guide, "Elastic IP address quota": five per Region by default, per account; adjustable in
# Service Quotas as "EC2-VPC Elastic IPs", code L-0263D0A3.
EIP_DEFAULT_QUOTA = 5
EIP_QUOTA_CODE = "L-0263D0A3"


def held_services(capture: Capture) -> dict[str, list[str]]:
    """Service key -> what it lacks, from the warnings the program gives (the same a real preview prints)."""
    out = {}
    for line in capture.logs:
        key, sep, reasons = line.removeprefix("warning: ").partition(HELD_WARNING)
        if sep:
            out[key] = reasons.split("; ")
    return out


def elastic_ips(cfg: PlatformConfig) -> int:
    """Elastic IPs a stack allocates, read from its configuration without running it: one per NAT gateway
    (components/network.py: one, or one per AZ with ``nat: per_az``); none when it adopts a VPC."""
    if cfg.network.existing:
        return 0
    return len(cfg.availability_zones) if cfg.preset.network.nat == "per_az" else 1


def _eip_lines(capture: Capture, cfg: PlatformConfig, project_dir: Path) -> list[str]:
    """This stack's Elastic IPs (counted in the capture) and the example stacks' total per region against the quota."""
    own = len(capture.of_type("aws:ec2/eip:Eip"))
    out = [f"elastic IPs: {own} for this stack ({'one per NAT gateway' if own else 'no NAT gateway of its own'})"]
    by_region: dict[str, list[tuple[str, int]]] = {}
    for stack in EXAMPLE_STACKS:
        if stack == cfg.stack:
            by_region.setdefault(cfg.region, []).append((stack, own))
            continue
        try:
            other = load_platform(stack, project_dir)
        except (ConfigError, OSError):
            continue  # not in this project, or not valid: nothing to add up
        by_region.setdefault(other.region, []).append((stack, elastic_ips(other)))
    short = False
    for region, counts in sorted(by_region.items()):
        if len(counts) < 2:
            continue
        total = sum(n for _, n in counts)
        where = "over" if total > EIP_DEFAULT_QUOTA else "at" if total == EIP_DEFAULT_QUOTA else "within"
        short = short or total >= EIP_DEFAULT_QUOTA
        out.append(
            f"  {' + '.join(f'{s} {n}' for s, n in counts)} = {total} in {region}, {where} the default quota of {EIP_DEFAULT_QUOTA} "
            f"per account and region (EC2-VPC Elastic IPs, Service Quotas code {EIP_QUOTA_CODE})"
        )
    if short:
        out.append(
            '  request more before the first `pulumi up` (README, "Elastic IP quota"): addresses other projects hold in the '
            "account count too, and another stack or AZ needs one more each"
        )
    return out


KUBE_ORDER = (
    "Namespace",
    "ServiceAccount",
    "SecretStore",
    "ExternalSecret",
    "Secret",
    "Job",
    "Deployment",
    "Service",
    "Ingress",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
)


def _kubernetes_lines(capture: Capture) -> list[str]:
    """Every Kubernetes object, by namespace: kind, name and what matters about it."""
    objects: dict[str, list[tuple[int, str]]] = {}
    for r in capture.resources:
        if not r.type.startswith("kubernetes:") or not r.custom:
            continue
        i = r.inputs
        kind, meta = i.get("kind", r.type.rsplit(":", 1)[-1]), i.get("metadata", {})
        ns = meta.get("namespace") or meta.get("name", "")
        detail = ""
        spec = i.get("spec", {})
        if kind == "Deployment":
            pod = spec["template"]["spec"]
            c = pod["containers"][0]
            replicas = spec.get("replicas", "hpa")
            probes = "probes" if "livenessProbe" in c else "no probes"
            requests = c["resources"]["requests"]
            replicas = int(replicas) if isinstance(replicas, float) else replicas
            detail = f"replicas {replicas}, {spec['strategy']['type']}, requests {requests['cpu']}/{requests['memory']}, {probes}"
        elif kind == "Ingress":
            rule = spec["rules"][0]
            detail = f"class {spec.get('ingressClassName')}, host {rule.get('host', '*')}"
        elif kind == "HorizontalPodAutoscaler":
            detail = f"{spec['minReplicas']}-{spec['maxReplicas']} on CPU"
        elif kind == "Job":
            detail = "migration, gates the Deployment"
        rank = KUBE_ORDER.index(kind) if kind in KUBE_ORDER else len(KUBE_ORDER)
        objects.setdefault(ns, []).append((rank, f"    {kind:<24} {meta.get('name', r.name)}  {detail}".rstrip()))
    total = sum(len(v) for v in objects.values())
    out = [f"kubernetes workloads ({total} objects):"]
    for ns in sorted(objects):
        out.append(f"  namespace {ns}")
        out.extend(line for _, line in sorted(objects[ns]))
    return out


def _cost_lines(capture: Capture, cfg: PlatformConfig) -> list[str]:
    prices = cost.load_prices()
    running = cost.running_counts(cfg)
    estimate = cost.estimate(capture, cfg.systems, prices, running)
    totals = cost.totals(estimate)
    out = [f"estimated monthly cost (list prices, 730 h; confidence A/B/C per tools/cost.py): ${sum(totals.values()):,.2f}"]
    for system in [*cfg.systems, "shared"]:
        items = [line for line in estimate if line.system == system]
        if not items:
            continue
        worst = max(line.confidence[0] for line in items)
        out.append(f"  {system:<10} ${totals[system]:>9,.2f}  (lowest confidence {worst})")
        for line in sorted(items, key=lambda line: -line.monthly):
            out.append(f"      {line.item:<52} ${line.monthly:>8,.2f}  {line.confidence}")
    out.append(f"  the same systems on Render (the seeds' host): ${cost.render_equivalent(capture, prices, running):,.2f}")
    if capture.outputs.get("held_services"):
        out.append("  held services are priced at the tasks they run once released")
    out.append(f"  not included: {'; '.join(cost.EXCLUDED)}")
    return out


def _deploy_lines(capture: Capture, cfg: PlatformConfig) -> list[str]:
    if cfg.stack_config.compute == "kubernetes":
        return ["modeled deploy time: not modeled for Kubernetes workloads (the data file has AWS resources only)"]
    times = deploytime.load_times()
    p50, p90 = deploytime.schedule(capture, "p50", times), deploytime.schedule(capture, "p90", times)
    out = [f"modeled from-scratch pulumi up: {p50.total:.1f} min (p50), {p90.total:.1f} min (p90)"]
    out.append("  critical path: " + " -> ".join(r.name for r in p50.critical_path()))
    out.append("  service ready (p50) against its floor (VPC + slowest store of its system + one steady state per start-order place):")
    for r in deploytime.readiness(p50, cfg, "p50", times):
        verdict = "ok" if r.within_goal else ("EARLY: starts before its data" if r.ratio < 0.9 else "LATE: waits on something it does not need")
        out.append(f"    {r.service:<22} {r.ready:5.1f} min  floor {r.floor:5.1f}  ({r.ratio:.2f}) {verdict}")
    rolling = deploytime.rolling_update(capture)
    if rolling:
        ours, default = max(rolling.values())
        out.append(f"  image bump of a web service (rolling, full capacity): {ours:.1f} min; with ECS/ELB defaults {default:.1f} min ({ours / default:.0%})")
    deploys = deploytime.deploy_times(capture)
    if deploys:
        d = max(deploys.values(), key=lambda t: t.total)
        out.append(
            f"  image bump with rollback on alarms ({d.strategy.lower()}): {d.total:.1f} min (start and health checks {d.rollout:.1f}, "
            f"canary {d.canary:.0f}, bake {d.bake:.0f}, drain {d.drain:.1f})"
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: dev, staging, prod or another Pulumi.<stack>.yaml")
    parser.add_argument("--json", metavar="FILE", help="write the captured resources as JSON")
    parser.add_argument("--project-dir", default=str(PROJECT_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    project_dir = Path(args.project_dir)

    try:
        cfg = load_platform(args.stack, project_dir)
        capture = run(args.stack, project_dir)
    except (ConfigError, pulumi.RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print(summary(capture, cfg, project_dir))
    if args.json:
        # the priced lines too, with held services at their released counts: what `tools.cost --diff` compares
        data = {**capture.to_json(), "cost": cost.plan_cost(capture, cfg).to_json()}
        Path(args.json).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        print(f"\nwrote {len(capture.resources)} resources to {args.json}")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # The mock runtime leaves an event loop that complains when collected at exit; skip that noise.
    import os

    os._exit(code)
