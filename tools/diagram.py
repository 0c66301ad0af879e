"""The environment of one offline plan as a Mermaid flowchart: internet -> load balancer (and its WAF) ->
each web service -> the Postgres and Redis it reaches; workers and singletons with their stores.

Everything comes from the captured plan (:class:`tools.harness.Capture`), not from the catalog: a node
per ECS service the program registered, an edge from a service to a data store where one of the
service's security groups has an egress rule to one of the store's groups (the network path a task
actually gets). The stack's configuration only groups the nodes by system and names their kind.

    python -m tools.plan --stack dev --diagram dev.mmd
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from stacks.config import PlatformConfig

from .harness import Capture, Resource

SERVICE = "aws:ecs/service:Service"
RDS = "aws:rds/instance:Instance"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
LOAD_BALANCER = "aws:lb/loadBalancer:LoadBalancer"
WAF_ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"
STORE_KINDS = {RDS: "Postgres", REDIS: "Redis"}


@dataclass(frozen=True)
class Store:
    name: str
    """The resource name in the capture (``twinkle-db-instance``)."""
    kind: str
    """``Postgres`` or ``Redis``."""
    identifier: str
    """What AWS calls it (RDS identifier, replication group id)."""
    security_groups: frozenset[str]


@dataclass(frozen=True)
class EcsService:
    key: str
    """``<system>-<service>``: the capture's ``<key>-service`` resource."""
    web: bool
    """Behind the load balancer (it registers a target group)."""
    security_groups: frozenset[str]


@dataclass
class Graph:
    nodes: dict[str, str] = field(default_factory=dict)
    """Node id -> label."""
    edges: list[tuple[str, str, str]] = field(default_factory=list)
    """(from id, to id, label)."""
    groups: dict[str, list[str]] = field(default_factory=dict)
    """Subgraph title -> its node ids."""


def node_id(name: str) -> str:
    """A Mermaid node id: letters, digits and ``_`` only."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def stores(capture: Capture) -> list[Store]:
    out = []
    for r in capture.resources:
        if r.type == RDS:
            out.append(Store(r.name, "Postgres", str(r.inputs.get("identifier", r.name)), frozenset(r.inputs.get("vpcSecurityGroupIds") or ())))
        elif r.type == REDIS:
            out.append(Store(r.name, "Redis", str(r.inputs.get("replicationGroupId", r.name)), frozenset(r.inputs.get("securityGroupIds") or ())))
    return out


def ecs_services(capture: Capture) -> list[EcsService]:
    out = []
    for r in capture.of_type(SERVICE):
        groups = (r.inputs.get("networkConfiguration") or {}).get("securityGroups") or ()
        out.append(EcsService(r.name.removesuffix("-service"), bool(r.inputs.get("loadBalancers")), frozenset(groups)))
    return out


def _egress(capture: Capture) -> list[Resource]:
    return capture.of_type(EGRESS)


def store_edges(capture: Capture) -> dict[str, list[Store]]:
    """Service key -> the data stores its security groups have an egress rule to, in capture order."""
    rules = _egress(capture)
    all_stores = stores(capture)
    out: dict[str, list[Store]] = {}
    for svc in ecs_services(capture):
        targets = {str(rule.inputs.get("referencedSecurityGroupId")) for rule in rules if rule.inputs.get("securityGroupId") in svc.security_groups}
        out[svc.key] = sorted((s for s in all_stores if s.security_groups & targets), key=lambda s: s.kind)
    return out


def build(capture: Capture, cfg: PlatformConfig) -> Graph:
    """The graph of ``capture``; ``cfg`` only groups nodes by system and names each service's kind."""
    g = Graph()
    g.nodes["internet"] = "internet"
    services = ecs_services(capture)
    edge = None
    if capture.of_type(LOAD_BALANCER):
        waf = bool(capture.of_type(WAF_ASSOCIATION))
        edge = "alb"
        g.nodes[edge] = "load balancer + WAF" if waf else "load balancer"
        g.edges.append(("internet", edge, "HTTPS" if cfg.domain else "HTTP"))
    kinds = {svc.key: svc.spec.kind.value for svc in cfg.services()}
    system_of = {svc.key: svc.system for svc in cfg.services()}
    edges = store_edges(capture)
    for s in stores(capture):
        sid = node_id(s.name)
        g.nodes[sid] = f"{s.kind} {s.identifier}"
        g.groups.setdefault(_system(s.name, cfg), []).append(sid)
    for svc in services:
        sid = node_id(svc.key)
        g.nodes[sid] = f"{svc.key} ({kinds.get(svc.key, 'web' if svc.web else 'no port')})"
        g.groups.setdefault(system_of.get(svc.key) or _system(svc.key, cfg), []).append(sid)
        if svc.web and edge:
            g.edges.append((edge, sid, ""))
        for store in edges.get(svc.key, []):
            g.edges.append((sid, node_id(store.name), store.kind))
    return g


def _system(name: str, cfg: PlatformConfig) -> str:
    return next((s for s in cfg.systems if name.startswith(f"{s}-")), "shared")


def mermaid(g: Graph, title: str = "") -> str:
    lines = [f"%% {title}"] if title else []
    lines.append("flowchart LR")
    grouped = {n for ids in g.groups.values() for n in ids}
    for nid, label in g.nodes.items():
        if nid not in grouped:
            lines.append(f'  {nid}["{label}"]')
    for group, ids in g.groups.items():
        lines.append(f"  subgraph {node_id('sys_' + group)}[{group}]")
        for nid in ids:
            shape = '[("{}")]' if g.nodes[nid].startswith(("Postgres", "Redis")) else '["{}"]'
            lines.append(f"    {nid}{shape.format(g.nodes[nid])}")
        lines.append("  end")
    for a, b, label in g.edges:
        lines.append(f"  {a} -->|{label}| {b}" if label else f"  {a} --> {b}")
    return "\n".join(lines) + "\n"


def write(capture: Capture, cfg: PlatformConfig, path: Path) -> str:
    """Write the Mermaid source to ``path``; render it to SVG next to it if ``mmdc`` is installed. Returns
    what happened, in one line."""
    path.write_text(mermaid(build(capture, cfg), f"stack {cfg.stack}: offline plan"), encoding="utf-8")
    mmdc = shutil.which("mmdc")
    svg = path.with_suffix(".svg")
    if mmdc is None:
        return (
            f"wrote the diagram to {path} (Mermaid source). Render it: `npx -p @mermaid-js/mermaid-cli mmdc -i {path} -o {svg}`, "
            "paste it into https://mermaid.live, or put it in a ```mermaid block of a Markdown file on GitHub"
        )
    done = subprocess.run([mmdc, "-i", str(path), "-o", str(svg)], capture_output=True, text=True, check=False)  # noqa: S603 - our own paths
    if done.returncode != 0:
        return f"wrote the diagram to {path}; mmdc failed to render it: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    return f"wrote the diagram to {path} and rendered it to {svg}"
