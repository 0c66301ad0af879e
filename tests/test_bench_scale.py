"""bench/scale.py's pure parts: the synthetic systems and what a series of plans says grows. No plan runs here
(a plan of the synthetic stacks takes seconds each); ``python -m bench.scale`` measures."""

from __future__ import annotations

from bench import scale
from stacks.catalog import ServiceKind

LISTENER = "aws:lb/listener:Listener"
REPO = "aws:ecr/repository:Repository"
ALB = "aws:lb/loadBalancer:LoadBalancer"
BUCKET = "aws:s3/bucket:Bucket"


def test_synthetic_systems_have_starkdcas_shape_with_its_web_service():
    systems = scale.synthetic(3)
    assert list(systems) == ["s000", "s001", "s002"]
    for name, system in systems.items():
        assert system.name == name
        assert {svc: spec.kind for svc, spec in system.services.items()} == {"api": ServiceKind.web, "worker": ServiceKind.worker}
        assert system.postgres is not None and system.redis is not None


def _row(n: int, albs: int, types: dict[str, int]) -> dict:
    return {"systems": n, "albs": albs, "resources": sum(types.values()), "types": types}


def test_growth_separates_what_each_system_adds_from_what_a_second_load_balancer_adds():
    # GIVEN a core series: 10 fixed resources, a repository and a listener per system, and at 100
    # systems a second ALB with its bucket
    rows = [_row(n, 1, {"x:y/z:Base": 10, REPO: n, LISTENER: n, ALB: 1, BUCKET: 1}) for n in (5, 25, 50)]
    rows.append(_row(100, 2, {"x:y/z:Base": 10, REPO: 100, LISTENER: 100, ALB: 2, BUCKET: 2}))
    lines = scale._growth(rows)
    assert lines[0] == "    + 2 resources per system (1 ecr Repository, 1 lb Listener)"
    assert lines[1] == "    + 2 resources per load balancer beyond the first (1 lb LoadBalancer, 1 s3 Bucket)"


def test_growth_of_a_flat_series_says_nothing_grows():
    rows = [_row(n, 0, {REPO: 1, LISTENER: 1}) for n in (5, 25, 50)]
    assert scale._growth(rows) == ["    + 0 resources per system"]


def test_type_labels_keep_the_module():
    assert scale._label("aws:rds/parameterGroup:ParameterGroup") == "rds ParameterGroup"
    assert scale._label("aws:elasticache/parameterGroup:ParameterGroup") == "elasticache ParameterGroup"
    assert scale._label("random:index/randomPassword:RandomPassword") == "random RandomPassword"
