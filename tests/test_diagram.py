"""The environment as a Mermaid flowchart, built from the captured plan (tools/diagram.py)."""

from __future__ import annotations

import dataclasses
import os
import re
import stat

import pytest

from stacks.config import load_platform
from tests.conftest import ROOT
from tools import diagram, harness

SG = "aws:ec2/securityGroup:SecurityGroup"


def reachable_stores(capture: harness.Capture) -> dict[str, set[str]]:
    """Service key -> the stores (resource names) one of its security groups has an egress rule to, read
    through the engine's property dependencies (URNs), not the ids the diagram matches."""
    by_urn = {r.urn: r for r in capture.resources}
    store_groups = {}
    for r in capture.resources:
        if r.type in (diagram.RDS, diagram.REDIS):
            deps = r.property_dependencies.get("vpcSecurityGroupIds" if r.type == diagram.RDS else "securityGroupIds", [])
            store_groups[r.name] = {u for u in deps if by_urn[u].type == SG}
    out = {}
    for svc in capture.of_type(diagram.SERVICE):
        groups = {u for u in svc.property_dependencies.get("networkConfiguration", []) if by_urn[u].type == SG}
        targets = {
            u
            for rule in capture.of_type(diagram.EGRESS)
            if set(rule.property_dependencies.get("securityGroupId", [])) & groups
            for u in rule.property_dependencies.get("referencedSecurityGroupId", [])
        }
        out[svc.name.removesuffix("-service")] = {name for name, sgs in store_groups.items() if sgs & targets}
    return out


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_diagram_has_every_service_and_each_reachable_store(plans, stack):
    capture, cfg = plans[stack], load_platform(stack, ROOT)
    g = diagram.build(capture, cfg)
    services = capture.of_type(diagram.SERVICE)
    # every ECS service of the capture is a node, in its system's subgraph
    assert len(services) == 10
    for svc in services:
        key = svc.name.removesuffix("-service")
        assert diagram.node_id(key) in g.nodes and diagram.node_id(key) in g.groups[key.split("-")[0]]
    # every service -> store edge where its security group's egress reaches the store, and no other
    edges = {(a, b) for a, b, _ in g.edges}
    stores = {diagram.node_id(s.name) for s in diagram.stores(capture)}
    expected = {(diagram.node_id(key), diagram.node_id(name)) for key, names in reachable_stores(capture).items() for name in names}
    assert {(a, b) for a, b in edges if b in stores} == expected
    # dev's systems share one instance and one cache (components/shared_data.py); prod's have their own
    owner = "shared" if stack == "dev" else "twinkle"
    assert ("twinkle_indexer", f"{owner}_db_instance") in expected and ("twinkle_indexer", f"{owner}_cache_group") not in expected
    # internet -> load balancer (with its WAF) -> each web service; workers and singletons have no way in
    assert ("internet", "alb") in edges and g.nodes["alb"] == "load balancer + WAF"
    web = {diagram.node_id(s.name.removesuffix("-service")) for s in services if s.inputs.get("loadBalancers")}
    assert {b for a, b in edges if a == "alb"} == web and len(web) == 6
    assert "twinkle_worker" not in {b for a, b in edges if a == "alb"}


def test_diagram_follows_the_capture_not_the_catalog(plans):
    # GIVEN a capture where twinkle's api lost its egress rule to the cache
    capture = plans["dev"]
    cut = harness.Capture(capture.stack, [r for r in capture.resources if r.name != "twinkle-api-to-cache-out"], capture.invokes, capture.outputs)
    g = diagram.build(cut, load_platform("dev", ROOT))
    edges = {(a, b) for a, b, _ in g.edges}
    assert ("twinkle_api", "shared_db_instance") in edges and ("twinkle_api", "shared_cache_group") not in edges  # dev's shared stores
    # and one whose service is gone is no node
    gone = harness.Capture(capture.stack, [r for r in capture.resources if r.name != "twinkle-worker-service"], capture.invokes, capture.outputs)
    assert "twinkle_worker" not in diagram.build(gone, load_platform("dev", ROOT)).nodes


def test_mermaid_source_declares_every_node_and_edge(plans):
    g = diagram.build(plans["dev"], load_platform("dev", ROOT))
    source = diagram.mermaid(g, "stack dev")
    assert source.startswith("%% stack dev\nflowchart LR\n")
    declared = set(re.findall(r"^\s+([A-Za-z0-9_]+)\[", source, re.M))
    assert declared == set(g.nodes)
    for a, b, label in g.edges:
        assert (f"  {a} -->|{label}| {b}" if label else f"  {a} --> {b}") in source
    assert source.count("subgraph ") == len(g.groups) == 6  # the five systems and dev's shared stores
    assert '[("Postgres shared-dev")]' in source and '["twinkle-worker (worker)"]' in source


def test_write_renders_with_mmdc_or_says_how(plans, tmp_path, monkeypatch):
    cfg = load_platform("dev", ROOT)
    out = tmp_path / "dev.mmd"
    # without mmdc: the source, and how to render it
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    message = diagram.write(plans["dev"], cfg, out)
    assert out.read_text().startswith("%% stack dev") and "npx -p @mermaid-js/mermaid-cli mmdc" in message
    # with mmdc on PATH: rendered next to the source
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "mmdc"
    fake.write_text('#!/bin/sh\n# mmdc -i IN -o OUT\necho "<svg/>" > "$4"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}/bin{os.pathsep}/usr/bin")
    message = diagram.write(plans["dev"], cfg, out)
    assert message == f"wrote the diagram to {out} and rendered it to {out.with_suffix('.svg')}"
    assert out.with_suffix(".svg").read_text() == "<svg/>\n"


def test_store_edges_match_what_the_plan_prints(plans):
    reach = diagram.store_edges(plans["dev"])
    assert [s.kind for s in reach["aurum-api"]] == ["Postgres"]  # aurum has no cache
    assert [s.kind for s in reach["darwin-app"]] == ["Postgres", "Redis"]
    assert all(dataclasses.is_dataclass(s) for stores in reach.values() for s in stores)
