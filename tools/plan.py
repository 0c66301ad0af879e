"""Offline plan: run the real program for a stack under Pulumi's mock runtime, with no cloud access.

    python -m tools.plan --stack dev                 # readable summary
    python -m tools.plan --stack dev --verbose       # plus resources by component, priced items, per-service timing
    python -m tools.plan --stack dev --diagram dev.mmd   # the environment as a Mermaid flowchart
    python -m tools.plan --stack prod --json out.json

The summary starts with what to do before the first ``pulumi up`` (placeholders, secrets, images, DNS,
emails, quotas), then one tree per system, the modeled cost and deploy time, the policy pack's findings
and the stack outputs; every value the mock runtime made up (ids, ARNs, DNS names, digests) is marked
``(offline)``.

The JSON file is ``{"stack", "resources": [{urn, type, name, parent, custom, inputs, dependencies,
propertyDependencies, options}], "outputs", "invokes", "cost"}`` with every secret value replaced by
``"[secret]"``; ``cost`` is the modeled month (:meth:`tools.cost.PlanCost.to_json`) that
``python -m tools.cost --diff`` compares. A configuration mistake prints one message and exits 2 before any resource exists.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi

from components import shared_data
from components.platform import HELD_WARNING
from components.postgres import app_role, ddl_role, runtime_ddl_services
from components.workload import task_counts
from policy import local as policy_local
from policy import rules as policy_rules
from stacks.config import PlatformConfig, hold_missing_images, load_platform, placeholders
from stacks.errors import ConfigError

from . import cost, deploytime, diagram
from .harness import ACCOUNT, PROJECT_DIR, Capture, _fake_id, engine_config, pushed_images, run

OFFLINE = "(offline)"
"""After a value the mock runtime made up: a real preview or up gives another one."""
VALUE_WIDTH = 64
"""Longest output value printed; longer ones end in "..."."""


def summary(capture: Capture, cfg: PlatformConfig, project_dir: Path = PROJECT_DIR, verbose: bool = False) -> str:
    lines: list[str] = []
    custom = [r for r in capture.resources if r.custom]
    lines.append(
        f"stack {cfg.stack}: preset {cfg.preset_name or cfg.env}, {cfg.region} ({', '.join(cfg.availability_zones)}); "
        f"{len(custom)} cloud resources in {len(capture.resources) - len(custom)} components, {len(capture.invokes)} data-source calls"
    )
    if cfg.layout is not None:
        lines.append(layout_line(cfg))
    lines.append(headline(capture, cfg))
    lines.append("")
    lines.extend(before_up(capture, cfg, project_dir))
    lines.append("")
    lines.extend(_system_lines(capture, cfg) if not cfg.is_core else _served_lines(capture, cfg))
    lines.append("")
    lines.extend(_network_lines(cfg))
    if cfg.stack_config.compute == "kubernetes":
        lines.append("")
        lines.extend(_kubernetes_lines(capture))
    lines.append("")
    lines.extend(_cost_lines(capture, cfg, verbose))
    lines.append("")
    lines.extend(_deploy_lines(capture, cfg, verbose))
    lines.append("")
    lines.extend(_policy_lines(capture, cfg))
    lines.append("")
    lines.append(f"outputs (a value marked {OFFLINE} is the mock runtime's; `pulumi stack output` gives the real one after an up):")
    lines.extend(output_lines(capture, cfg, project_dir))
    if verbose:
        lines.append("")
        lines.extend(_census_lines(capture))
    return "\n".join(lines)


def layout_line(cfg: PlatformConfig) -> str:
    """Which part of the split layout the stack is (README "Layouts")."""
    if cfg.is_core:
        return f"layout: split, the core of {cfg.env}; its systems run in stacks of their own that read this stack's output `platform_core`"
    ephemeral = f" as the ephemeral environment {cfg.env}" if cfg.layout and cfg.layout.environment else ""
    return f"layout: split, system {', '.join(cfg.systems)}{ephemeral} on the core {cfg.core_stack} (a StackReference; offline: the core's offline plan)"


def _served_lines(capture: Capture, cfg: PlatformConfig) -> list[str]:
    """A core's systems: what it holds for each (repositories, listeners); the rest is in the system's stack."""
    export = capture.outputs.get("platform_core") or {}
    listeners = (export.get("alb") or {}).get("urls") or {}
    lines = ["systems this core serves (each runs in its own stack, Pulumi.<system>-<env>.yaml):"]
    tokens = offline_tokens(capture)
    for system in cfg.systems.values():
        mine = sorted((key, url) for key, url in listeners.items() if key.startswith(f"{system.name}-"))
        hosts = [f"{key}: {url}{' ' + OFFLINE if is_offline(url, tokens) else ''}" for key, url in mine]
        repos = ", ".join(f"{system.name}/{image}" for image in sorted(system.system.images))
        lines.append(f"  {system.name}: repositories {repos}" + (f"; listeners {'; '.join(hosts)}" if hosts else ""))
    return [*_shared_lines(cfg), *lines]


# ---------------------------------------------------------------- the one-line summary


def headline(capture: Capture, cfg: PlatformConfig) -> str:
    """Modeled month (every service at its released task count) and first-up minutes, in one line."""
    month = math.fsum(cost.totals(cost.estimate(capture, cfg.systems, cost.load_prices(), cost.running_counts(cfg))).values())
    first = first_up_minutes(capture, cfg)
    time = f"first `pulumi up` about {first[0]:.0f} min (p50; {first[1]:.0f} min p90)" if first else "first `pulumi up` not modeled on Kubernetes"
    return f"modeled: ${month:,.0f}/month at list prices; {time}"


def first_up_minutes(capture: Capture, cfg: PlatformConfig) -> tuple[float, float] | None:
    if cfg.stack_config.compute == "kubernetes":
        return None
    times = deploytime.load_times()
    return deploytime.schedule(capture, "p50", times).total, deploytime.schedule(capture, "p90", times).total


# ---------------------------------------------------------------- before you run `pulumi up`


def before_up(capture: Capture, cfg: PlatformConfig, project_dir: Path = PROJECT_DIR) -> list[str]:
    """What the operator does or checks before the first ``pulumi up``: placeholders first, then unset
    secrets, images, DNS delegation, email confirmations and quotas."""
    out = ["Before you run `pulumi up`:"]
    todo = placeholders(cfg, project_dir)
    if todo:
        out.append(f"  placeholders: {len(todo)} values stand in for real ones (a real preview or up stops on them):")
        for key, value, why in todo:
            out.append(f"    {key}: {why}")
            out.append(f"      pulumi config set --stack {cfg.stack} --path '{key}' <value>    # now {_cut(repr(value), 48)}")
    cfg = with_missing_images(capture, cfg)
    if not cfg.is_core:  # a core runs no service: secrets and images are its systems' stacks'
        out.extend(_secret_lines(cfg))
        out.extend(_image_lines(cfg))
    out.extend(_dns_lines(cfg))
    out.extend(_email_lines(cfg))
    out.extend(_quota_lines(capture, cfg, project_dir))
    return out


def missing_images(capture: Capture) -> dict[str, str]:
    """Service key -> ``<system>/<image>:<ref>`` not in its repository, as the program found it in the
    (mock) registry: the ``held_services`` output names it next to the secrets and services it waits for."""
    held = capture.outputs.get("held_services") or {}
    return {key: item for key, items in held.items() if isinstance(items, list) for item in items if "/" in item and not item.startswith("secrets.")}


def with_missing_images(capture: Capture, cfg: PlatformConfig) -> PlatformConfig:
    """``cfg`` with each service's ``missing_image`` set as the program set it from the registry."""
    return hold_missing_images(cfg, missing_images(capture))


def unset_secrets(cfg: PlatformConfig) -> dict[str, list[str]]:
    """Config path of each external secret without a value -> the services it holds at zero tasks."""
    out: dict[str, list[str]] = {}
    for svc in cfg.services():
        for path in svc.missing_secrets:
            out.setdefault(path, []).append(svc.key)
    return out


def _secret_lines(cfg: PlatformConfig) -> list[str]:
    missing = unset_secrets(cfg)
    if not missing:
        return ["  external secrets: every one has a value"]
    out = [
        f"  external secrets without a value: {len(missing)}; a service that reads one runs no task until it is set. Set each once, or put it "
        f"into Secrets Manager as {cfg.env}/<system>/[<service>/]<NAME> and add it to platform:systems.<system>.set_out_of_band:"
    ]
    for path, services in missing.items():
        out.append(f"    {path}: holds {', '.join(services)}")
        out.append(f"      pulumi config set --secret --path '{path}' <value> --stack {cfg.stack}")
    waiting = [svc for svc in cfg.services() if svc.waits_for_held and not svc.missing_secrets and not svc.missing_image]
    if waiting:
        out.append("    held too, until what they start after runs: " + ", ".join(f"{s.key} (after {', '.join(s.waits_for_held)})" for s in waiting))
    return out


def _platform_flag(architecture: str) -> str:
    return "linux/arm64" if architecture == "ARM64" else "linux/amd64"


def _image_lines(cfg: PlatformConfig) -> list[str]:
    arch = cfg.preset.compute.architecture
    registry = cfg.stack_config.registry
    where = (
        f"the core {cfg.core_stack} created the repositories: push before this stack's up"
        if cfg.core_stack
        else "this stack creates the repositories: push after the first up, then up again"
        if registry.create
        else f"pulled from the repositories another stack creates in {f'account {registry.account_id}' if registry.account_id else 'this account'}"
    )
    out = [f"  images that must exist ({arch}: `docker buildx build --platform {_platform_flag(arch)}`; {where}):"]
    for system in cfg.systems.values():
        for image, ref in sorted(system.images.items()):
            users = [svc for svc in system.services.values() if svc.image_name == image]
            missing = next((svc.missing_image for svc in users if svc.missing_image), None)
            name = f"{ref.repository or f'{system.name}/{image}'}{'@' if ref.digest else ':'}{_short(ref.version)}"
            state = "NOT PUSHED: its services are held" if missing else ("another registry" if ref.repository else "pushed (offline registry)")
            out.append(f"    {name:<40} {state}; for {', '.join(s.key for s in users) or 'no service'}")
    out.append("    check one: aws ecr describe-images --repository-name <system>/<image> --image-ids imageTag=<tag>")
    return out


def zones(cfg: PlatformConfig) -> list[tuple[str, str]]:
    """(domain, hosted zone id) of every Route 53 zone the stack writes records and validates certificates in."""
    out = []
    if cfg.domain and cfg.stack_config.hosted_zone_id:
        out.append((cfg.domain, cfg.stack_config.hosted_zone_id))
    for svc in cfg.services():
        ext = svc.external
        if ext is not None and ext.hosted_zone_id:
            out.append((ext.name, ext.hosted_zone_id))
    return out


def _dns_lines(cfg: PlatformConfig) -> list[str]:
    found = zones(cfg)
    if not cfg.domain and cfg.stack_config.compute == "ecs":
        return [
            "  DNS: no domain configured: each web service is served over plain HTTP on its own port of the load balancer's name. "
            "Set platform:domain and platform:hosted_zone_id for HTTPS."
        ]
    if not found:
        return [f"  DNS: {cfg.domain}: the certificate is given (certificate_arn); point the hosts at the load balancer yourself"]
    out = ["  zones to delegate (certificate validation waits until the parent zone names the zone's name servers):"]
    for name, zone in found:
        out.append(f"    {name} (hosted zone {zone}): `dig NS {name} +short` must list the servers of")
        out.append(f"      aws route53 get-hosted-zone --id {zone} --query DelegationSet.NameServers")
    return out


def _email_lines(cfg: PlatformConfig) -> list[str]:
    emails = cfg.stack_config.alarm_emails
    if not emails:
        return ["  alarm emails: none (alarms reach the SNS topics only: platform:alarm_emails)"]
    return [f"  emails to confirm: SNS mails each a confirmation on the first up; alarms reach it only after the link is clicked: {', '.join(emails)}"]


# ---------------------------------------------------------------- quotas


# The stacks this repository ships; in one account and region they share its Elastic IP quota.
EXAMPLE_STACKS = ("dev", "staging", "prod")
# AWS EC2 user guide, "Elastic IP address quota": five per Region by default, per account; adjustable in
# Service Quotas as "EC2-VPC Elastic IPs", code L-0263D0A3.
EIP_DEFAULT_QUOTA = 5
EIP_QUOTA_CODE = "L-0263D0A3"
# Fargate's concurrent vCPU quotas per account and region (Service Quotas, service code "fargate"):
# "Fargate On-Demand vCPU resource count" and "Fargate Spot vCPU resource count". AWS sets the applied
# value per account (new accounts can start lower, and it rises with use), so the plan compares with the
# published default and says to look the account's value up.
FARGATE_VCPU_DEFAULT_QUOTA = 6
FARGATE_QUOTA_CODES = {"FARGATE": "L-3032A538", "FARGATE_SPOT": "L-36FBB829"}
FARGATE_QUOTA_NAMES = {"FARGATE": "Fargate On-Demand vCPU resource count", "FARGATE_SPOT": "Fargate Spot vCPU resource count"}


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


def fargate_vcpus(capture: Capture, cfg: PlatformConfig) -> dict[str, tuple[float, float]]:
    """Capacity provider (``FARGATE``, ``FARGATE_SPOT``) -> (vCPU at every service's autoscaling ceiling,
    vCPU while each of them deploys at its ceiling). Counts are the released ones (held services run once
    their secrets are set); vCPU per task from the captured task definition; a deploy runs up to the
    service's ``deploymentMaximumPercent`` (200 % for a rolling deploy that keeps full capacity)."""
    by_name = {r.name: r for r in capture.resources}
    out: dict[str, list[float]] = {}
    for svc in cfg.services():
        service = by_name.get(f"{svc.key}-service")
        task = by_name.get(f"{svc.key}-task")
        if service is None or task is None or "cpu" not in task.inputs:
            continue  # not on ECS (Kubernetes), or not in this plan
        ceiling = task_counts(svc.released(), cfg.preset.compute)[1]
        vcpu = float(task.inputs["cpu"]) / 1024
        peak = float(service.inputs.get("deploymentMaximumPercent", 200)) / 100
        for provider, share in _shares(service.inputs.get("capacityProviderStrategies") or [], ceiling).items():
            totals = out.setdefault(provider, [0.0, 0.0])
            totals[0] += share * vcpu
            totals[1] += share * vcpu * peak
    return {provider: (steady, deploy) for provider, (steady, deploy) in out.items()}


def _shares(strategy: list[dict[str, Any]], tasks: int) -> dict[str, float]:
    """Tasks per capacity provider: each provider's ``base`` first, the rest by ``weight``."""
    if not strategy:
        return {"FARGATE": float(tasks)}
    out = {s["capacityProvider"]: 0.0 for s in strategy}
    left = float(tasks)
    for s in strategy:
        base = min(left, float(s.get("base", 0)))
        out[s["capacityProvider"]] += base
        left -= base
    weights = sum(float(s.get("weight", 0)) for s in strategy) or 1.0
    for s in strategy:
        out[s["capacityProvider"]] += left * float(s.get("weight", 0)) / weights
    return out


def _quota_lines(capture: Capture, cfg: PlatformConfig, project_dir: Path) -> list[str]:
    out = ["  quotas this stack needs (per account and region):"]
    out.extend("    " + line.removeprefix("  ") for line in _eip_lines(capture, cfg, project_dir))
    for provider, (steady, deploy) in sorted(fargate_vcpus(capture, cfg).items()):
        code = FARGATE_QUOTA_CODES.get(provider, "?")
        where = "over" if deploy > FARGATE_VCPU_DEFAULT_QUOTA else "within"
        out.append(
            f"    {FARGATE_QUOTA_NAMES.get(provider, provider)} ({code}): {steady:g} vCPU with every service at its autoscaling maximum, "
            f"{deploy:g} while all of them deploy (up to twice the tasks); {where} the default of {FARGATE_VCPU_DEFAULT_QUOTA}"
        )
    if fargate_vcpus(capture, cfg):
        out.append(
            "    the Fargate default is account-specific (new accounts start lower): check it in Service Quotas, "
            "`aws service-quotas get-service-quota --service-code fargate --quota-code L-3032A538` (On-Demand; L-36FBB829 for Spot)"
        )
    return out


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


# ---------------------------------------------------------------- systems


def _system_lines(capture: Capture, cfg: PlatformConfig) -> list[str]:
    lines = ["systems (entry point -> service -> the data stores its security group reaches; held = no task until it is released):"]
    urls = capture.outputs.get("urls") or {}
    tokens = offline_tokens(capture)
    reaches = diagram.store_edges(capture)
    p = cfg.preset.postgres
    recovery = cfg.stack_config.recovery
    db_dr = f", backups replicated to {recovery.dr_region}" if recovery else ""
    cache_dr = f", exported to {recovery.dr_region} every {recovery.redis_export_minutes} min" if recovery else ""
    cfg = with_missing_images(capture, cfg)
    sharing = shared_data.tenancy(cfg)
    lines[:0] = _shared_lines(cfg)
    for system in cfg.systems.values():
        spec = system.system
        lines.append(f"  {system.name}  ({spec.seed})")
        if spec.postgres and sharing and system.name in sharing.postgres:
            roles = ", ".join(role(spec.postgres.database) for role in (app_role, *([ddl_role] if runtime_ddl_services(spec) else [])))
            lines.append(
                f"    database  db {spec.postgres.database} in {sharing.identifier} (shared: Postgres {p.engine_major}, {p.instance_class}, "
                f"backups {p.backup_retention_days} d): roles {roles}, its db-roles bootstrap creates the database"
            )
        elif spec.postgres:
            lines.append(
                f"    database  {system.name}-{cfg.env}: Postgres {p.engine_major}, {p.instance_class}, {'Multi-AZ' if p.multi_az else 'single-AZ'}, "
                f"backups {p.backup_retention_days} d{db_dr}, db {spec.postgres.database}"
            )
        if spec.redis and sharing and system.name in sharing.redis:
            r = cfg.preset.redis
            if cfg.core_stack:  # the number and the policy depend on every tenant: the core's output has them
                where, policy = f"a logical database of {sharing.identifier}", "number and maxmemory-policy in the core's output"
            else:
                where, policy = f"db {sharing.redis[system.name]} of {sharing.identifier}", f"maxmemory-policy {sharing.policy}"
            lines.append(
                f"    cache     {where} (shared: Redis 7.1, {r.nodes} x {r.node_type}, {policy}; its own: {spec.redis.maxmemory_policy}), "
                "REDIS_URL ends in its number"
            )
        elif spec.redis:
            r = cfg.redis_settings(system.name)
            lines.append(
                f"    cache     {system.name}-{cfg.env}: Redis 7.1, {r.nodes} x {r.node_type}, maxmemory-policy {spec.redis.maxmemory_policy}{cache_dr}"
            )
        for svc in system.services.values():
            url = urls.get(svc.key)
            entry = f"{url}{' ' + OFFLINE if is_offline(url, tokens) else ''} -> " if url else ""
            stores = reaches.get(svc.key)
            to = f" -> {', '.join(s.kind for s in stores) or 'no data store'}" if stores is not None else ""
            held = ", held" if svc.held else ", paused" if svc.paused else ""
            lines.append(f"    {entry}{svc.name}{to}   [{svc.spec.kind}, image {svc.image_name}={_short(svc.image.version)}{held}]")
        by_source: dict[str, list[str]] = {}
        for name, secret in spec.secrets.items():
            by_source.setdefault(secret.source.value, []).append(name)
        lines.append("    secrets   " + "; ".join(f"{source}: {', '.join(sorted(names))}" for source, names in sorted(by_source.items())))
        for part in spec.not_deployed:
            lines.append(f"    not deployed: {part.name} ({_cut(part.reason, 90)})")
        monitoring = [r for r in capture.resources if r.name == f"{system.name}-monitoring" and not r.custom]
        if monitoring:
            children = capture.children_of(monitoring[0].urn)
            alarms = sorted(r.name.removeprefix(system.name + "-") for r in children if r.type == "aws:cloudwatch/metricAlarm:MetricAlarm")
            boards = [r.inputs.get("dashboardName", r.name) for r in children if r.type == "aws:cloudwatch/dashboard:Dashboard"]
            lines.append(f"    alarms    {len(alarms)}: {_cut(', '.join(alarms), 110)}; dashboard {', '.join(boards)}")
    return lines


def _shared_lines(cfg: PlatformConfig) -> list[str]:
    """What the environment's systems share (preset ``data.shared``, components/shared_data.py)."""
    sharing = shared_data.tenancy(cfg)
    if sharing is None:
        return []
    out = ["shared data stores (data.shared; turn off with platform:overrides: {data: {shared: false}}):"]
    if cfg.core_stack:
        out.append(f"  this system's database and cache live in {sharing.identifier}, declared by the core {cfg.core_stack} (its output {shared_data.OUTPUT})")
    else:
        out.extend(sharing.lines())
    out.append(
        "  a stack that ran a store per system before: its `pulumi up` deletes them (dev takes no final snapshot); "
        "move each database first (pg_dump, then pg_restore into the shared instance), or keep data.shared: false"
    )
    return [*out, ""]


def _network_lines(cfg: PlatformConfig) -> list[str]:
    net = cfg.network
    if net.existing:
        return [f"network: adopted {net.existing.vpc_id}"]
    if not cfg.subnet_plan:
        return ["network: none planned"]
    plan = cfg.subnet_plan
    return [
        f"network: VPC {net.cidr}, NAT {cfg.preset.network.nat}; "
        + "; ".join(f"{tier} {', '.join(str(c) for c in plan.tier(tier))}" for tier in ("public", "private", "isolated"))
    ]


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


# ---------------------------------------------------------------- cost, time


def _cost_lines(capture: Capture, cfg: PlatformConfig, verbose: bool) -> list[str]:
    prices = cost.load_prices()
    running = cost.running_counts(cfg)
    estimate = cost.estimate(capture, cfg.systems, prices, running)
    totals = cost.totals(estimate)
    out = [f"estimated monthly cost (list prices, 730 h; confidence A/B/C per tools/cost.py): ${math.fsum(totals.values()):,.2f}"]
    for system in [*cfg.systems, "shared"]:
        items = [line for line in estimate if line.system == system]
        if not items:
            continue
        worst = max(line.confidence[0] for line in items)
        out.append(f"  {system:<10} ${totals[system]:>9,.2f}  (lowest confidence {worst})")
        if verbose:
            for line in sorted(items, key=lambda line: -line.monthly):
                out.append(f"      {line.item:<52} ${line.monthly:>8,.2f}  {line.confidence}")
    if cfg.layout is None:  # a split stack is part of an environment: Render's figure is the environment's
        out.append(f"  the same systems on Render (the seeds' host): ${cost.render_equivalent(capture, prices, running):,.2f}")
    else:
        out.append(f"  part of {cfg.env}: the split layout's stacks together cost what the all-in-one stack of the environment does")
    if capture.outputs.get("held_services"):
        out.append("  held services are priced at the tasks they run once released")
    out.append(f"  not included: {'; '.join(cost.EXCLUDED)}" if verbose else "  priced items and what is not included: --verbose")
    return out


def _deploy_lines(capture: Capture, cfg: PlatformConfig, verbose: bool) -> list[str]:
    if cfg.stack_config.compute == "kubernetes":
        return ["modeled deploy time: not modeled for Kubernetes workloads (the data file has AWS resources only)"]
    times = deploytime.load_times()
    p50, p90 = deploytime.schedule(capture, "p50", times), deploytime.schedule(capture, "p90", times)
    out = [f"modeled from-scratch pulumi up: {p50.total:.1f} min (p50), {p90.total:.1f} min (p90)"]
    out.append("  critical path: " + " -> ".join(r.name for r in p50.critical_path()))
    names = {r.name for r in capture.resources}
    if all(f"{svc.key}-service" in names for svc in cfg.services()):
        out.extend(_readiness_lines(p50, cfg, times, verbose))
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


def _readiness_lines(p50: deploytime.Schedule, cfg: PlatformConfig, times: dict, verbose: bool) -> list[str]:
    """Each service's modeled ready time against the earliest it could be ready: the VPC, its system's
    slowest data store, then one ECS steady-state wait per place in the system's start order."""
    ready = deploytime.readiness(p50, cfg, "p50", times)
    early = [r for r in ready if r.ratio < 0.9]
    late = [r for r in ready if r.ratio > 1.1]
    out = []
    if not early and not late:
        out.append(
            f"  services ready {min(r.ready for r in ready):.1f}-{max(r.ready for r in ready):.1f} min into the up (p50), each within 10 % "
            "of the earliest it can be (network, its database or cache, the services it starts after)"
        )
    for r in early:
        out.append(f"  EARLY: {r.service} is ready at {r.ready:.1f} min, before its data can be ({r.floor:.1f}): it crash-loops on the first deploy")
    for r in late:
        out.append(f"  LATE: {r.service} is ready at {r.ready:.1f} min, {r.ready - r.floor:.1f} min after it could be: it waits on something it does not need")
    if verbose:
        out.append("  each service (p50): ready at / earliest possible (network + slowest store of its system + one ECS start per place in its start order)")
        for r in ready:
            out.append(f"    {r.service:<22} {r.ready:5.1f} / {r.floor:5.1f} min  ({r.ratio:.0%} of the earliest)")
    return out


# ---------------------------------------------------------------- policy


def policy_findings(capture: Capture, cfg: PlatformConfig) -> tuple[list[str], list[str]]:
    """(violations of mandatory rules, advisories) of policy/rules.py over the capture, each
    ``"<rule> <resource>: <message>"``, with this stack's policy/config/<stack>.json as CI passes it.
    Mandatory ones through :func:`policy.local.check_resource` (what the program enforces); the advisory
    rules through the same config handling."""
    given = policy_local.policy_config(cfg.stack)
    stack_config = {"stack": cfg.stack, "preset": cfg.env, "policy_config": given}
    mandatory: list[str] = []
    advisory: list[str] = []
    for r in capture.resources:
        if not r.custom:
            continue
        protect = bool(r.options.get("protect"))
        mandatory += [
            f"{m.split(': ', 1)[0]} {r.name}: {m.split(': ', 1)[1]}"
            for m in policy_local.check_resource(r.type, r.inputs, stack_config, urn=r.urn, protect=protect)
        ]
        for rule in policy_rules.RULES:
            if r.type not in rule.types or policy_local._level(rule, given) != policy_rules.ADVISORY:
                continue
            props = policy_local._KnownMapping(policy_local._plain(dict(r.inputs)))
            try:
                found = rule.check(r.type, props, r.urn, policy_local._rule_config(rule, given, cfg.env, protect))
            except policy_local.UnknownValue:
                continue
            advisory += [f"{rule.name} {r.name}: {message}" for message in found]
    return mandatory, advisory


def _policy_lines(capture: Capture, cfg: PlatformConfig) -> list[str]:
    mandatory, advisory = policy_findings(capture, cfg)
    source = (
        f"policy/rules.py with policy/config/{cfg.stack}.json" if policy_local.policy_config(cfg.stack) else "policy/rules.py, every rule at its default level"
    )
    out = [f"policy pack ({source}): " + (f"{len(mandatory)} VIOLATIONS (a real preview or up stops on them)" if mandatory else "no violations")]
    out.extend(f"  {v}" for v in mandatory)
    if advisory:
        by_rule: dict[str, list[str]] = {}
        for finding in advisory:
            rule, rest = finding.split(" ", 1)
            by_rule.setdefault(rule, []).append(rest)
        out.append(f"  advisories ({len(advisory)}; reported, not enforced):")
        for rule, found in by_rule.items():
            names = [f.split(":", 1)[0] for f in found]
            out.append(f"    {rule} on {len(found)}: {found[0].split(': ', 1)[1]} ({_cut(', '.join(names), 80)})")
    return out


# ---------------------------------------------------------------- outputs


def offline_tokens(capture: Capture, made_up_digests: set[str] | None = None) -> set[str]:
    """Strings only the mock runtime produces (tools/harness.py): the account id, each resource's fake id
    and the name derived from it, the load balancer's and the stores' fake DNS names, made-up digests."""
    tokens = {ACCOUNT, ".abc123.", "-1234567890."}
    for r in capture.resources:
        if r.custom:
            rid = _fake_id(r.type, r.name)
            tokens.add(rid)
            tokens.add(f"{r.name}-{rid[-7:]}")
    return tokens | (made_up_digests or set())


def made_up_digests(cfg: PlatformConfig, project_dir: Path) -> set[str]:
    """Digests the mock registry derived from a tag (what a tag resolves to offline), and digests the stack
    file gives that are such made-up ones (:func:`stacks.config.placeholders`)."""
    try:
        values, _ = engine_config(cfg.stack, project_dir)
    except (ConfigError, OSError):
        return set()
    named = json.dumps(values)
    derived = {i["imageDigest"] for images in pushed_images(values).values() for i in images if i["imageDigest"] not in named}
    return derived | {value for _, value, _ in placeholders(cfg, project_dir) if str(value).startswith("sha256:")}


def is_offline(value: Any, tokens: set[str]) -> bool:
    text = value if isinstance(value, str) else json.dumps(value)
    return any(t in text for t in tokens)


def flatten(value: Any, key: str) -> Iterator[tuple[str, Any]]:
    """``key.sub: value`` for every leaf of a nested dict; a list is one value."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from flatten(v, f"{key}.{k}")
    else:
        yield key, value


def _short(version: str) -> str:
    """A tag, or a digest's first 12 hex digits (as ``docker images`` shows it)."""
    return version[:19] + "..." if version.startswith("sha256:") else version


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def output_lines(capture: Capture, cfg: PlatformConfig, project_dir: Path = PROJECT_DIR) -> list[str]:
    tokens = offline_tokens(capture, made_up_digests(cfg, project_dir))
    out = []
    for name, value in capture.outputs.items():
        for key, leaf in flatten(value, name):
            text = ", ".join(str(v) for v in leaf) if isinstance(leaf, list) else str(leaf)
            mark = f" {OFFLINE}" if is_offline(leaf, tokens) else ""
            out.append(f"  {key}: {_cut(text, VALUE_WIDTH)}{mark}")
    return out


# ---------------------------------------------------------------- --verbose


def _census_lines(capture: Capture) -> list[str]:
    custom = [r for r in capture.resources if r.custom]
    lines = ["resources by component:"]
    owner = {r.urn: capture.top_component(r.urn) for r in custom}
    for name, count in sorted(Counter(owner.values()).items()):
        types = Counter(r.type.split(":")[-1] for r in custom if owner[r.urn] == name)
        lines.append(f"  {name:<28} {count:>4}  {', '.join(f'{n} {t}' for t, n in sorted(types.items()))}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.plan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: dev, staging, prod or another Pulumi.<stack>.yaml")
    parser.add_argument("--json", metavar="FILE", help="write the captured resources as JSON")
    parser.add_argument("--verbose", "-v", action="store_true", help="also: resources by component, priced items, each service's modeled start")
    parser.add_argument("--diagram", metavar="FILE", help="write the environment as a Mermaid flowchart (rendered to SVG if `mmdc` is installed)")
    parser.add_argument("--project-dir", default=str(PROJECT_DIR), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    project_dir = Path(args.project_dir)

    try:
        cfg = load_platform(args.stack, project_dir)
        capture = run(args.stack, project_dir)
    except (ConfigError, pulumi.RunError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    print(summary(capture, cfg, project_dir, verbose=args.verbose))
    if args.json:
        # the priced lines too, with held services at their released counts: what `tools.cost --diff` compares
        data = {**capture.to_json(), "cost": cost.plan_cost(capture, cfg).to_json()}
        Path(args.json).write_text(json.dumps(data, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        print(f"\nwrote {len(capture.resources)} resources to {args.json}")
    if args.diagram:
        print(diagram.write(capture, cfg, Path(args.diagram)))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    # The mock runtime leaves an event loop that complains when collected at exit; skip that noise.
    import os

    os._exit(code)
