"""Monthly cost model of a captured plan, from ``tools/data/aws-prices-us-east-1.json`` (the team's price sheet).

Each line is a resource the plan declares, priced at list price for 730 hours, with the price's
confidence from the data file (A primary source, B two agreeing secondary sources, C a single or
recalled figure). Usage-driven charges are left out and listed in :data:`EXCLUDED`. The exception is
the ALB, assumed to run 1 LCU on average.

Also modeled: what the same systems would cost on Render, the seeds' own host, with each service on
the smallest instance that has its task's memory.

The cost of a change (issue 19): ``python -m tools.plan --stack S --json FILE`` writes the priced lines
into the plan (``"cost"``, computed at plan time with each held service at the tasks it runs once
released), and

    python -m tools.cost --diff base.json head.json            # two plans of one stack
    python -m tools.cost --diff base/ head/ --markdown out.md   # directories of plan-<stack>.json
    git diff --name-only main HEAD | python -m tools.cost --touched -   # the stacks worth planning

prints, per stack and per system, the modeled monthly cost before and after, the difference, and the
lines that changed, with their confidence letters. A stack whose cost rises by more than its preset's
``budget.change_percent`` or ``budget.change_usd`` (``platform:overrides``) needs attention: the
command then exits :data:`ATTENTION` (3), which the preview workflow turns into a label, never a
failure. The default budget amount of each stack comes from ``python -m tools.cost --write-model``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from components.budget import MODEL_FILE
from components.shared_data import POSTGRES_TENANT, REDIS_TENANT, SHARED
from components.workload import task_counts
from stacks.config import PlatformConfig

from .harness import PROJECT_DIR, Capture, Resource

PRICES_FILE = PROJECT_DIR / "tools" / "data" / "aws-prices-us-east-1.json"  # a copy of shared/data, with its sources
ALB_AVERAGE_LCU = 1.0
SPOT_DISCOUNT = 0.5  # the low end of the file's 50-70 % range: a cautious estimate
EXCLUDED = (
    "data transfer and NAT processing",
    "CloudWatch log ingestion, metrics, alarms and dashboards",
    "KMS keys ($1 each) and requests",
    "WAF ($5 per web ACL, $1 per rule, per-request fees)",
    "backups beyond the free allowance",
    "Route 53 zone (not created here)",
    "ECR storage",
)
ATTENTION = 3
"""Exit status of ``--diff`` when a stack's modeled cost rises past its threshold (not an error)."""
UNPRICED = "(not in the price sheet: $0 here)"
"""Suffix of a line whose class the price sheet lacks (confidence ``?``); a change that adds one needs attention."""
MARKER = "<!-- platform-cost-diff -->"
"""First line of the pull request comment: the preview workflow finds its comment by it and updates it."""


@dataclass(frozen=True)
class Line:
    system: str
    """A system name, or ``shared`` (network, load balancer, keys)."""
    item: str
    monthly: float
    confidence: str
    key: str = ""
    """What the line prices, stable across a change of its size: ``postgres``, ``redis``,
    ``fargate:<service>``, ``nat``... A cost diff pairs lines by system and key, so a class bump is one
    changed line rather than a removed and an added one."""


def load_prices(path: Path = PRICES_FILE) -> dict[str, Any]:
    return json.loads(path.read_text())


def running_counts(cfg: PlatformConfig) -> dict[str, int]:
    """Tasks each ECS service runs once it is released (its secrets set): what a month costs in steady
    state. A first plan holds services at zero, which says nothing about the bill."""
    return {svc.key: task_counts(svc.released(), cfg.preset.compute)[0] for svc in cfg.services()}


def estimate(capture: Capture, systems: Iterable[str], prices: dict[str, Any] | None = None, running: Mapping[str, int] | None = None) -> list[Line]:
    """One line per priced resource (or group of them). ``running``: tasks per service key (default: the
    plan's desired count)."""
    p = prices or load_prices()
    hours = p["hours_per_month"]
    systems = list(systems)
    lines: list[Line] = []
    tasks = {r.urn: r for r in capture.of_type("aws:ecs/taskDefinition:TaskDefinition")}
    for r in capture.resources:
        if not r.custom:
            continue
        head = capture.top_component(r.urn).split("-", 1)[0]
        owner = head if head in systems else "shared"
        i = r.inputs
        # an environment's shared store (components/shared_data.py) says so; not how many systems it serves, so
        # that adding a system changes no line but its own (the plan lists the tenants)
        by = " (shared)" if head == SHARED else ""
        if r.type == "aws:rds/instance:Instance":
            az = "multi_az" if i.get("multiAz") else "single_az"
            rate = p["rds_postgres_hourly"].get(i["instanceClass"])
            if rate is None:
                lines.append(Line(owner, f"Postgres {i['instanceClass']} {az}{by} {UNPRICED}", 0.0, "?", "postgres"))
            else:
                lines.append(Line(owner, f"Postgres {i['instanceClass']} {az}{by}", rate[az] * hours, rate["confidence"], "postgres"))
            storage = p["rds_storage_gp3_gb_month"]
            lines.append(
                Line(owner, f"Postgres gp3 {i['allocatedStorage']:.0f} GB", storage[az] * i["allocatedStorage"], storage["confidence"], "postgres-storage")
            )
        elif r.type == "aws:elasticache/replicationGroup:ReplicationGroup":
            rate = p["elasticache_redis_node_hourly"].get(i["nodeType"])
            nodes = int(i.get("numCacheClusters", 1))
            if rate is None:
                lines.append(Line(owner, f"Redis {nodes} x {i['nodeType']}{by} {UNPRICED}", 0.0, "?", "redis"))
            else:
                lines.append(Line(owner, f"Redis {nodes} x {i['nodeType']}{by}", rate["price"] * nodes * hours, rate["confidence"], "redis"))
        elif r.type == "aws:ecs/service:Service":
            task = next(tasks[u] for u in r.dependencies if u in tasks)
            arch = "arm64" if task.inputs["runtimePlatform"]["cpuArchitecture"] == "ARM64" else "x86"
            rate = p["fargate"][arch]
            vcpu, gb = int(task.inputs["cpu"]) / 1024, int(task.inputs["memory"]) / 1024
            count = _count(r, running)
            spot = i["capacityProviderStrategies"][0]["capacityProvider"] == "FARGATE_SPOT"
            monthly = (vcpu * rate["vcpu_hour"] + gb * rate["gb_hour"]) * hours * count * (1 - SPOT_DISCOUNT if spot else 1)
            name = r.name.removesuffix("-service")
            label = f"Fargate {name} {count} x {vcpu:g} vCPU/{gb:g} GB{' spot' if spot else ''}"
            lines.append(Line(owner, label, monthly, p["fargate"]["confidence"], f"fargate:{name}"))
        elif r.type == "aws:lb/loadBalancer:LoadBalancer":
            rate = p["alb"]
            lines.append(Line(owner, f"ALB (+{ALB_AVERAGE_LCU:g} LCU)", (rate["hour"] + rate["lcu_hour"] * ALB_AVERAGE_LCU) * hours, rate["confidence"], "alb"))
            ips = len(i.get("subnets", []))
            lines.append(Line(owner, f"ALB public IPv4 x {ips}", p["public_ipv4"]["hour"] * ips * hours, p["public_ipv4"]["confidence"], "alb-ipv4"))
        elif r.type == "aws:ec2/natGateway:NatGateway":
            rate = p["nat_gateway"]
            lines.append(Line(owner, "NAT gateway (+ its IPv4)", (rate["hour"] + p["public_ipv4"]["hour"]) * hours, rate["confidence"], "nat"))
        elif r.type == "aws:route53/healthCheck:HealthCheck":
            monthly, label = health_check_monthly(i, p)
            lines.append(Line(owner, f"Route 53 health check {label}", monthly, p["route53"]["health_check_confidence"], f"route53-health-check:{r.name}"))
        elif r.type == "aws:secretsmanager/secret:Secret":
            copies = 1 + len(i.get("replicas") or [])
            sm = p["secrets_manager"]
            replica = copies > 1
            lines.append(
                Line(
                    owner,
                    "secret" + (" + replica" if replica else ""),
                    sm["secret_month"] * copies,
                    sm["confidence"],
                    "secret-replica" if replica else "secret",
                )
            )
    return _group(lines)


def health_check_monthly(inputs: Mapping[str, Any], prices: Mapping[str, Any], aws_endpoint: bool = True) -> tuple[float, str]:
    """A Route 53 health check's month: the basic check plus each optional feature it uses (HTTPS, string
    matching, the 10 s interval, latency measurement). An AWS endpoint's rates: the check names the
    hostname of our load balancer, in the same account. The 50 free AWS-endpoint checks are left out
    (an account shared by three stacks and anything else of its owner)."""
    r = prices["route53"]
    kind = str(inputs.get("type", "HTTP"))
    features = [
        name
        for name, used in (
            ("HTTPS", kind.startswith("HTTPS")),
            ("string match", kind.endswith("STR_MATCH")),
            ("10 s interval", inputs.get("requestInterval") == 10),
            ("latency", bool(inputs.get("measureLatency"))),
        )
        if used
    ]
    basic, feature = (
        (r["health_check_aws_month"], r["health_check_feature_aws_month"])
        if aws_endpoint
        else (r["health_check_non_aws_month"], r["health_check_feature_non_aws_month"])
    )
    return basic + feature * len(features), " + ".join(["basic", *features])


def outside_check_options(checks: Iterable[Mapping[str, Any]], prices: Mapping[str, Any] | None = None, canary_minutes: int = 5) -> dict[str, float]:
    """The month of the same outside checks as Route 53 health checks (AWS and non-AWS endpoint rates)
    and as CloudWatch Synthetics canaries (one canary per check, a run every ``canary_minutes``; Synthetics
    runs at most every minute, Route 53 checks every 30 s from each of its regions). Issue 16: Route 53."""
    p = prices or load_prices()
    checks = list(checks)
    runs = 30 * 24 * 60 / canary_minutes
    return {
        "route53": sum(health_check_monthly(c, p)[0] for c in checks),
        "route53_non_aws": sum(health_check_monthly(c, p, aws_endpoint=False)[0] for c in checks),
        "synthetics": len(checks) * runs * p["cloudwatch_synthetics"]["canary_run"],
    }


def _group(lines: list[Line]) -> list[Line]:
    """Collapse repeated identical items (secrets, NAT gateways) into one line with a count."""
    counts: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    for line in lines:
        counts[(line.system, line.item, line.confidence, line.key)].append(line.monthly)
    out = []
    for (system, item, confidence, key), values in counts.items():
        label = f"{len(values)} x {item}" if len(values) > 1 else item
        out.append(Line(system, label, sum(values), confidence, key))
    return out


def totals(lines: Iterable[Line]) -> dict[str, float]:
    """Monthly total per system. ``math.fsum``: exact, so independent of the order resources registered
    in (which the async runtime does not fix): a plain sum flipped core-dev between $91.72 and $91.73."""
    by: dict[str, list[float]] = defaultdict(list)
    for line in lines:
        by[line.system].append(line.monthly)
    return {system: math.fsum(values) for system, values in by.items()}


def _count(service: Resource, running: Mapping[str, int] | None) -> int:
    key = service.name.removesuffix("-service")
    return running[key] if running and key in running else int(service.inputs.get("desiredCount", 1))


def store_counts(capture: Capture) -> tuple[int, int]:
    """(Postgres, Redis) stores the plan's systems use, one per system whether its own or its share of
    an environment's shared one (components/shared_data.py): what the comparison with Render counts."""
    own_db = [r for r in capture.of_type("aws:rds/instance:Instance") if not r.name.startswith(f"{SHARED}-")]
    own_cache = [r for r in capture.of_type("aws:elasticache/replicationGroup:ReplicationGroup") if not r.name.startswith(f"{SHARED}-")]
    return len(own_db) + len(capture.of_type(POSTGRES_TENANT)), len(own_cache) + len(capture.of_type(REDIS_TENANT))


def render_equivalent(capture: Capture, prices: dict[str, Any] | None = None, running: Mapping[str, int] | None = None) -> float:
    """The same systems on Render: an instance per task with at least its memory, a Postgres and a Key
    Value per system's store. A system on a shared instance or cache still counts one (the comparison
    is of the five systems as the seeds run them, each with its own stores: sharing is our saving, not
    Render's)."""
    p = (prices or load_prices())["render_for_comparison"]
    sizes = p["service_instance_month"]
    instances = [(0.5, sizes["starter_512mb"]), (2, sizes["standard_2gb"]), (4, sizes["pro_4gb"])]
    tasks = {r.urn: r for r in capture.of_type("aws:ecs/taskDefinition:TaskDefinition")}
    total = 0.0
    for service in capture.of_type("aws:ecs/service:Service"):
        task = next(tasks[u] for u in service.dependencies if u in tasks)
        gb = int(task.inputs["memory"]) / 1024
        price = next(price for size, price in instances if gb <= size)
        total += price * _count(service, running)
    databases, caches = store_counts(capture)
    total += p["postgres_month"]["basic_1gb"] * databases
    total += p["key_value_month"]["starter_256mb"] * caches
    return total


# ---------------------------------------------------------------- the priced plan, as the plan JSON carries it


@dataclass(frozen=True)
class PlanCost:
    """One stack's modeled month: what ``tools.plan --json`` writes under ``"cost"``."""

    stack: str
    lines: tuple[Line, ...]
    systems: tuple[str, ...]
    running: Mapping[str, int] = field(default_factory=dict)
    change_percent: float | None = None
    change_usd: float | None = None
    note: str = ""
    """Set when the lines were priced at diff time (a plan written before plans carried them)."""

    @property
    def total(self) -> float:
        return math.fsum(line.monthly for line in self.lines)  # exact: the same in any registration order

    def by_system(self) -> dict[str, float]:
        return totals(self.lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": "tools/cost.py: list prices of tools/data/aws-prices-us-east-1.json, 730 h; held services at their released task count",
            "systems": list(self.systems),
            "running": dict(self.running),
            "lines": [{"system": x.system, "key": x.key, "item": x.item, "monthly": x.monthly, "confidence": x.confidence} for x in self.lines],
            "total": self.total,
            "attention": {"change_percent": self.change_percent, "change_usd": self.change_usd},
        }


def plan_cost(capture: Capture, cfg: PlatformConfig, prices: dict[str, Any] | None = None) -> PlanCost:
    """The stack's modeled month, priced from its capture with every service at its released count."""
    running = running_counts(cfg)
    budget = cfg.preset.budget
    return PlanCost(
        stack=cfg.stack,
        lines=tuple(estimate(capture, cfg.systems, prices, running)),
        systems=tuple(cfg.systems),
        running=running,
        change_percent=budget.change_percent,
        change_usd=budget.change_usd,
    )


def from_plan(data: Mapping[str, Any], other: PlanCost | None = None, prices: dict[str, Any] | None = None) -> PlanCost:
    """The :class:`PlanCost` of a plan JSON. A plan written before plans carried their cost (the base of
    the change that added it) is priced here from its resources, with the systems, released task
    counts and thresholds of ``other`` (the other side of the diff), and says so in ``note``."""
    stack = str(data.get("stack", "?"))
    cost = data.get("cost")
    if isinstance(cost, Mapping):
        attention = cost.get("attention") or {}
        lines = tuple(Line(x["system"], x["item"], float(x["monthly"]), x["confidence"], x.get("key", "")) for x in cost["lines"])
        return PlanCost(
            stack, lines, tuple(cost.get("systems", ())), dict(cost.get("running", {})), attention.get("change_percent"), attention.get("change_usd")
        )
    resources = [
        Resource(
            r["urn"],
            r["type"],
            r["name"],
            r.get("parent", ""),
            r["custom"],
            r.get("inputs", {}),
            r.get("dependencies", []),
            r.get("propertyDependencies", {}),
            {},
        )
        for r in data.get("resources", [])
    ]
    capture = Capture(stack, resources)
    if other is not None:
        systems, running = other.systems, other.running
    else:
        from stacks.catalog import load_catalog

        systems, running = tuple(load_catalog()), {}
    lines = tuple(estimate(capture, systems, prices, running))
    note = "priced at diff time from its resources (the plan predates cost lines), services at the other plan's released counts"
    return PlanCost(stack, lines, tuple(systems), dict(running), other.change_percent if other else None, other.change_usd if other else None, note)


# ---------------------------------------------------------------- the difference between two plans


@dataclass(frozen=True)
class Change:
    system: str
    before: Line | None
    after: Line | None

    @property
    def delta(self) -> float:
        return (self.after.monthly if self.after else 0.0) - (self.before.monthly if self.before else 0.0)


@dataclass(frozen=True)
class StackDiff:
    stack: str
    before: PlanCost | None
    """None: the stack is new in the change."""
    after: PlanCost | None
    """None: the change removes the stack."""
    changes: tuple[Change, ...]
    attention: str | None
    """Why the rise needs attention (``None``: it does not)."""

    @property
    def total_before(self) -> float:
        return self.before.total if self.before else 0.0

    @property
    def total_after(self) -> float:
        return self.after.total if self.after else 0.0

    @property
    def delta(self) -> float:
        return self.total_after - self.total_before

    def systems(self) -> list[tuple[str, float, float]]:
        """(system, before, after) for every system of either side, ``shared`` last."""
        b = self.before.by_system() if self.before else {}
        a = self.after.by_system() if self.after else {}
        order = [*(self.after.systems if self.after else ()), *(self.before.systems if self.before else ())]
        names = [s for s in dict.fromkeys([*order, *a, *b]) if s != "shared" and (s in a or s in b)]
        if "shared" in a or "shared" in b:
            names.append("shared")
        return [(s, b.get(s, 0.0), a.get(s, 0.0)) for s in names]


def _key(line: Line) -> tuple[str, str]:
    return (line.system, line.key or line.item)


def attention(before: float, after: float, percent: float | None, usd: float | None) -> str | None:
    """Why a rise from ``before`` to ``after`` (a month) needs attention, or None. The share applies
    when there was a cost before; the amount always (a new stack counts from zero)."""
    rise = after - before
    if rise <= 0:
        return None
    reasons = []
    if percent is not None and before > 0 and rise / before * 100 > percent:
        reasons.append(f"more than {percent:g} %")
    if usd is not None and rise > usd:
        reasons.append(f"more than ${usd:,.0f} a month")
    return " and ".join(reasons) or None


def diff(before: PlanCost | None, after: PlanCost | None) -> StackDiff:
    """Lines paired by system and key: changed, added, removed (unchanged ones left out). The thresholds
    are the base's (what main decided), the head's for a new stack."""
    if before is None and after is None:
        raise ValueError("nothing to compare")
    stack = (after or before).stack  # type: ignore[union-attr]
    old = {_key(x): x for x in (before.lines if before else ())}
    new = {_key(x): x for x in (after.lines if after else ())}
    changes = []
    for key in dict.fromkeys([*new, *old]):
        b, a = old.get(key), new.get(key)
        if b is not None and a is not None and (b.item, round(b.monthly, 2), b.confidence) == (a.item, round(a.monthly, 2), a.confidence):
            continue
        changes.append(Change(key[0], b, a))
    changes.sort(key=lambda c: -abs(c.delta))
    rules = before if before is not None else after
    assert rules is not None
    total_before, total_after = (before.total if before else 0.0), (after.total if after else 0.0)
    reasons = [attention(total_before, total_after, rules.change_percent, rules.change_usd)]
    unpriced = [c.after.item.removesuffix(" " + UNPRICED) for c in changes if c.after is not None and c.after.confidence == "?"]
    if unpriced:
        reasons.append(f"unpriced: {', '.join(unpriced)} (add it to tools/data/aws-prices-us-east-1.json)")
    return StackDiff(stack, before, after, tuple(changes), "; ".join(r for r in reasons if r) or None)


def _money(x: float) -> str:
    return f"${x:,.2f}"


def _signed(x: float) -> str:
    if round(x, 2) == 0:
        return "$0.00"
    return f"{'+' if x > 0 else '-'}${abs(x):,.2f}"


def _share(before: float, after: float) -> str:
    if before <= 0:
        return "new" if after > 0 else ""
    return f"{(after - before) / before * 100:+.1f} %"


def _change_text(c: Change) -> tuple[str, str, str]:
    """(sign, what, confidence) of one changed line."""
    if c.before is None:
        assert c.after is not None
        return "+", f"{c.after.item}  {_money(c.after.monthly)}", c.after.confidence
    if c.after is None:
        return "-", f"{c.before.item}  {_money(c.before.monthly)}", c.before.confidence
    what = c.after.item if c.before.item == c.after.item else f"{c.before.item} -> {c.after.item}"
    conf = c.after.confidence if c.before.confidence == c.after.confidence else f"{c.before.confidence} -> {c.after.confidence}"
    return "~", f"{what}  {_money(c.before.monthly)} -> {_money(c.after.monthly)}", conf


def _thresholds(d: StackDiff) -> str:
    rules = d.before if d.before is not None else d.after
    assert rules is not None
    parts = [f"{rules.change_percent:g} %" if rules.change_percent is not None else "", f"${rules.change_usd:,.0f}" if rules.change_usd is not None else ""]
    return " or ".join(p for p in parts if p) or "none"


def _headline(d: StackDiff) -> str:
    if d.before is None:
        return f"{d.stack}: new stack, {_money(d.total_after)} a month"
    if d.after is None:
        return f"{d.stack}: removed, {_money(d.total_before)} a month less"
    return f"{d.stack}: {_money(d.total_before)} -> {_money(d.total_after)} a month, {_signed(d.delta)} ({_share(d.total_before, d.total_after)})"


def render_text(diffs: Sequence[StackDiff]) -> str:
    out: list[str] = []
    for d in diffs:
        out.append(_headline(d))
        if d.attention:
            out.append(f"  NEEDS ATTENTION: the rise is {d.attention} (this stack's threshold: {_thresholds(d)})")
        out.append(f"  {'system':<10} {'before':>11} {'after':>11} {'difference':>11}")
        for system, b, a in d.systems():
            out.append(f"  {system:<10} {_money(b):>11} {_money(a):>11} {_signed(a - b):>11}")
        out.append(f"  {'total':<10} {_money(d.total_before):>11} {_money(d.total_after):>11} {_signed(d.delta):>11}")
        if d.changes:
            out.append("  lines that changed:")
            for c in d.changes:
                sign, what, conf = _change_text(c)
                out.append(f"    {sign} {c.system:<9} {what}  ({_signed(c.delta)})  {conf}")
        else:
            out.append("  no priced line changed")
        for side in (d.before, d.after):
            if side is not None and side.note:
                out.append(f"  note: the {'base' if side is d.before else 'head'} plan was {side.note}")
        out.append("")
    out.append(_footer())
    return "\n".join(out)


def _footer() -> str:
    return (
        "Modeled at list prices (us-east-1, 730 h a month), held services at the tasks they run once released; "
        "confidence A primary source, B two agreeing secondary sources, C one or a recalled figure (tools/cost.py). "
        f"Not included: {'; '.join(EXCLUDED)}."
    )


def render_markdown(diffs: Sequence[StackDiff]) -> str:
    """The pull request comment: :data:`MARKER`, a table of stacks, then each stack's systems and lines."""
    out = [MARKER, "### Modeled monthly cost of this change", ""]
    if not diffs:
        out += ["No modeled cost changed in the stacks this change touches.", "", f"<sub>{_footer()}</sub>"]
        return "\n".join(out) + "\n"
    flagged = [d.stack for d in diffs if d.attention]
    if flagged:
        out += [f"**Needs attention:** {', '.join(flagged)} (a rise past the stack's threshold; not a failure).", ""]
    out += ["| stack | before | after | difference | |", "|---|---:|---:|---:|---|"]
    for d in diffs:
        mark = f"needs attention: {d.attention} (threshold {_thresholds(d)})" if d.attention else ""
        before = _money(d.total_before) if d.before else "(new)"
        after = _money(d.total_after) if d.after else "(removed)"
        out.append(f"| {d.stack} | {before} | {after} | {_signed(d.delta)} ({_share(d.total_before, d.total_after)}) | {mark} |")
    for d in diffs:
        out += ["", f"<details{' open' if d.attention else ''}><summary><b>{d.stack}</b>: {_signed(d.delta)} a month</summary>", ""]
        out += ["| system | before | after | difference |", "|---|---:|---:|---:|"]
        for system, b, a in d.systems():
            out.append(f"| {system} | {_money(b)} | {_money(a)} | {_signed(a - b)} |")
        out.append("")
        if d.changes:
            out += ["| | system | line | monthly | difference | confidence |", "|---|---|---|---:|---:|---|"]
            for c in d.changes:
                sign, _, conf = _change_text(c)
                if c.before is not None and c.after is not None and c.before.item != c.after.item:
                    what = f"{c.before.item} → {c.after.item}"
                else:
                    what = (c.after or c.before).item  # type: ignore[union-attr]
                monthly = (
                    f"{_money(c.before.monthly)} → {_money(c.after.monthly)}" if c.before and c.after else _money((c.after or c.before).monthly)  # type: ignore[union-attr]
                )
                out.append(f"| {sign} | {c.system} | {what} | {monthly} | {_signed(c.delta)} | {conf.replace('->', '→')} |")
        else:
            out.append("No priced line changed.")
        for side in (d.before, d.after):
            if side is not None and side.note:
                out += ["", f"_The {'base' if side is d.before else 'head'} plan was {side.note}._"]
        out += ["", "</details>"]
    out += ["", f"<sub>{_footer()}</sub>"]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- reading plans


def _read_plan(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "resources" not in data:
        raise ValueError(f"{path}: not a plan written by `python -m tools.plan --json`")
    return data


def _plans(path: Path) -> dict[str, dict[str, Any]]:
    """Plan JSONs by stack: one file, or a directory of ``plan-<stack>.json`` (a missing directory holds none)."""
    if path.is_dir():
        return {p.name.removeprefix("plan-").removesuffix(".json"): _read_plan(p) for p in sorted(path.glob("plan-*.json"))}
    if not path.exists():
        return {}
    data = _read_plan(path)
    return {str(data.get("stack", path.stem)): data}


def diff_plans(base: Mapping[str, Mapping[str, Any]], head: Mapping[str, Mapping[str, Any]], prices: dict[str, Any] | None = None) -> list[StackDiff]:
    """One :class:`StackDiff` per stack of either side whose priced lines or total changed."""
    out = []
    for stack in dict.fromkeys([*head, *base]):
        h_data, b_data = head.get(stack), base.get(stack)
        h = from_plan(h_data, prices=prices) if h_data is not None and "cost" in h_data else None
        b = from_plan(b_data, h, prices) if b_data is not None else None
        if h is None and h_data is not None:
            h = from_plan(h_data, b, prices)
        d = diff(b, h)
        if d.changes or (d.before is None) != (d.after is None):
            out.append(d)
    return out


# ---------------------------------------------------------------- which stacks a change touches

# Paths whose change can change any stack's plan or its pricing (the program, its configuration and
# catalog, the policy it enforces, the harness and the model); a stack file changes its stack only.
PLAN_INPUTS = (
    "__main__.py",
    "Pulumi.yaml",
    "requirements.txt",
    "components/",
    "stacks/",
    "policy/",
    "tools/cost.py",
    "tools/plan.py",
    "tools/harness.py",
    "tools/data/",
)


def touched_stacks(changed: Iterable[str], stacks: Iterable[str], project_dir: Path = PROJECT_DIR) -> list[str]:
    """The stacks whose offline plan a change of ``changed`` (paths, as ``git diff --name-only`` gives them)
    can move: tools/stackselect.py's selection (a catalog entry its systems' stacks, a stack file its
    stack, the program every stack, docs, tests and workflows none), with :data:`PLAN_INPUTS` (the price
    sheet and the cost model too) moving every stack of ``stacks``."""
    from tools import stackselect

    return stackselect.select(changed, stackselect.read_stacks(project_dir, stacks), extra_shared=PLAN_INPUTS).names


# ---------------------------------------------------------------- the modeled cost the budgets start from


def stack_names(project_dir: Path = PROJECT_DIR) -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in project_dir.glob("Pulumi.*.yaml"))


def modeled_costs(stacks: Iterable[str], project_dir: Path = PROJECT_DIR) -> dict[str, float]:
    """Each stack's modeled monthly cost in USD (cents), planned offline."""
    from components.platform import run_stack
    from stacks.config import load_platform

    from .harness import run

    prices = load_prices()
    out = {}
    for stack in stacks:
        cfg = load_platform(stack, project_dir)
        capture = run(stack, project_dir, program=lambda: run_stack(project_dir))
        out[stack] = round(plan_cost(capture, cfg, prices).total, 2)
    return out


def model_text(costs: Mapping[str, float]) -> str:
    return (
        json.dumps(
            {
                "about": "modeled monthly cost (USD) of each stack, the default of its AWS Budget's amount plus budget.margin_percent; "
                "written by `python -m tools.cost --write-model`, read by components/budget.py, checked by tests/test_budget.py",
                "monthly_usd": dict(sorted(costs.items())),
            },
            indent=2,
        )
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tools.cost", description="The cost of a change between two offline plans, and the modeled cost budgets start from."
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--diff", nargs=2, metavar=("BASE", "HEAD"), help="two plan JSONs of one stack, or two directories of plan-<stack>.json")
    what.add_argument("--write-model", action="store_true", help=f"plan every stack and write {MODEL_FILE.relative_to(PROJECT_DIR)}")
    what.add_argument("--touched", metavar="FILE", help="print the stacks whose plan the changed paths in FILE (one a line, - for stdin) can move")
    parser.add_argument("--markdown", metavar="FILE", help="with --diff: also write the pull request comment")
    parser.add_argument("--stack", action="append", help="with --write-model: only these stacks (default: every Pulumi.<stack>.yaml)")
    args = parser.parse_args(argv)

    if args.write_model:
        # every stack file (a deleted stack's entry goes too), or the named stacks beside the others
        known = json.loads(MODEL_FILE.read_text())["monthly_usd"] if MODEL_FILE.exists() and args.stack else {}
        costs = {**known, **modeled_costs(args.stack or stack_names())}
        MODEL_FILE.write_text(model_text(costs), encoding="utf-8")
        for stack, total in sorted(costs.items()):
            print(f"{stack:<14} ${total:>10,.2f}")
        print(f"wrote {MODEL_FILE.relative_to(PROJECT_DIR)}")
        return 0

    if args.touched:
        text = sys.stdin.read() if args.touched == "-" else Path(args.touched).read_text()
        print("\n".join(touched_stacks(text.splitlines(), stack_names())))
        return 0

    try:
        base, head = (_plans(Path(p)) for p in args.diff)
        diffs = diff_plans(base, head)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    # a plan that could not run leaves plan-<stack>.failed beside the others (the preview workflow)
    failed = [
        f"{side} plan of {p.name.removeprefix('plan-').removesuffix('.failed')}"
        for side, d in zip(("base", "head"), args.diff, strict=True)
        for p in sorted(Path(d).glob("plan-*.failed"))
        if Path(d).is_dir()
    ]
    print(render_text(diffs) if diffs else "no stack's modeled cost changed")
    for what in failed:
        print(f"could not price the {what}: the plan failed (its log is beside it)")
    if args.markdown:
        text = render_markdown(diffs)
        if failed:
            text += "\n" + "".join(f"- could not price the {what}: the plan failed\n" for what in failed)
        Path(args.markdown).write_text(text, encoding="utf-8")
    return ATTENTION if any(d.attention for d in diffs) else 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    import os

    os._exit(code)  # the mock runtime of --write-model leaves an event loop that complains at exit
