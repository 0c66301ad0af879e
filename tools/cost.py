"""Monthly cost model of a captured plan, from ``tools/data/aws-prices-us-east-1.json`` (the team's price sheet).

Each line is a resource the plan declares, priced at list price for 730 hours, with the price's
confidence from the data file (A primary source, B two agreeing secondary sources, C a single or
recalled figure). Usage-driven charges are left out and listed in :data:`EXCLUDED`. The exception is
the ALB, assumed to run 1 LCU on average.

Also modeled: what the same systems would cost on Render, the seeds' own host, with each service on
the smallest instance that has its task's memory.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.service import task_counts
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


@dataclass(frozen=True)
class Line:
    system: str
    """A system name, or ``shared`` (network, load balancer, keys)."""
    item: str
    monthly: float
    confidence: str


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
        if r.type == "aws:rds/instance:Instance":
            az = "multi_az" if i.get("multiAz") else "single_az"
            rate = p["rds_postgres_hourly"][i["instanceClass"]]
            lines.append(Line(owner, f"Postgres {i['instanceClass']} {az}", rate[az] * hours, rate["confidence"]))
            storage = p["rds_storage_gp3_gb_month"]
            lines.append(Line(owner, f"Postgres gp3 {i['allocatedStorage']:.0f} GB", storage[az] * i["allocatedStorage"], storage["confidence"]))
        elif r.type == "aws:elasticache/replicationGroup:ReplicationGroup":
            rate = p["elasticache_redis_node_hourly"][i["nodeType"]]
            nodes = int(i.get("numCacheClusters", 1))
            lines.append(Line(owner, f"Redis {nodes} x {i['nodeType']}", rate["price"] * nodes * hours, rate["confidence"]))
        elif r.type == "aws:ecs/service:Service":
            task = next(tasks[u] for u in r.dependencies if u in tasks)
            arch = "arm64" if task.inputs["runtimePlatform"]["cpuArchitecture"] == "ARM64" else "x86"
            rate = p["fargate"][arch]
            vcpu, gb = int(task.inputs["cpu"]) / 1024, int(task.inputs["memory"]) / 1024
            count = _count(r, running)
            spot = i["capacityProviderStrategies"][0]["capacityProvider"] == "FARGATE_SPOT"
            monthly = (vcpu * rate["vcpu_hour"] + gb * rate["gb_hour"]) * hours * count * (1 - SPOT_DISCOUNT if spot else 1)
            label = f"Fargate {r.name.removesuffix('-service')} {count} x {vcpu:g} vCPU/{gb:g} GB{' spot' if spot else ''}"
            lines.append(Line(owner, label, monthly, p["fargate"]["confidence"]))
        elif r.type == "aws:lb/loadBalancer:LoadBalancer":
            rate = p["alb"]
            lines.append(Line(owner, f"ALB (+{ALB_AVERAGE_LCU:g} LCU)", (rate["hour"] + rate["lcu_hour"] * ALB_AVERAGE_LCU) * hours, rate["confidence"]))
            ips = len(i.get("subnets", []))
            lines.append(Line(owner, f"ALB public IPv4 x {ips}", p["public_ipv4"]["hour"] * ips * hours, p["public_ipv4"]["confidence"]))
        elif r.type == "aws:ec2/natGateway:NatGateway":
            rate = p["nat_gateway"]
            lines.append(Line(owner, "NAT gateway (+ its IPv4)", (rate["hour"] + p["public_ipv4"]["hour"]) * hours, rate["confidence"]))
        elif r.type == "aws:secretsmanager/secret:Secret":
            copies = 1 + len(i.get("replicas") or [])
            sm = p["secrets_manager"]
            lines.append(Line(owner, "secret" + (" + replica" if copies > 1 else ""), sm["secret_month"] * copies, sm["confidence"]))
    return _group(lines)


def _group(lines: list[Line]) -> list[Line]:
    """Collapse repeated identical items (secrets, NAT gateways) into one line with a count."""
    counts: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for line in lines:
        counts[(line.system, line.item, line.confidence)].append(line.monthly)
    out = []
    for (system, item, confidence), values in counts.items():
        label = f"{len(values)} x {item}" if len(values) > 1 else item
        out.append(Line(system, label, sum(values), confidence))
    return out


def totals(lines: Iterable[Line]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for line in lines:
        out[line.system] += line.monthly
    return dict(out)


def _count(service: Resource, running: Mapping[str, int] | None) -> int:
    key = service.name.removesuffix("-service")
    return running[key] if running and key in running else int(service.inputs.get("desiredCount", 1))


def render_equivalent(capture: Capture, prices: dict[str, Any] | None = None, running: Mapping[str, int] | None = None) -> float:
    """The same systems on Render: an instance per task with at least its memory, a Postgres and a Key Value per store."""
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
    total += p["postgres_month"]["basic_1gb"] * len(capture.of_type("aws:rds/instance:Instance"))
    total += p["key_value_month"]["starter_256mb"] * len(capture.of_type("aws:elasticache/replicationGroup:ReplicationGroup"))
    return total
