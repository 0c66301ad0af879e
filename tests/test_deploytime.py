"""The deploy-time model's mechanics: the engine's ordering rule, the critical path, the floors."""

from __future__ import annotations

import itertools

from stacks.config import load_platform
from tests.conftest import ROOT
from tools import deploytime


def test_every_resource_starts_after_its_dependencies(plans):
    s = deploytime.schedule(plans["prod"], "p50")
    for urn, r in s.by_urn.items():
        assert all(s.start[urn] >= s.finish[d] for d in r.dependencies if d in s.finish), r.name


def test_critical_path_is_a_dependency_chain_that_sets_the_total(plans):
    s = deploytime.schedule(plans["prod"], "p90")
    path = s.critical_path()
    assert s.finish[path[-1].urn] == s.total
    assert all(a.urn in b.dependencies for a, b in itertools.pairwise(path))
    assert any(r.type == "aws:rds/instance:Instance" for r in path)  # the multi-AZ database is the long pole


def test_durations_follow_the_data(plans):
    times = deploytime.load_times()
    prod_db = plans["prod"].of_type("aws:rds/instance:Instance")[0]
    dev_db = plans["dev"].of_type("aws:rds/instance:Instance")[0]
    assert deploytime.duration(prod_db, "p50", times) == times["rds_postgres_multi_az"]["p50"]
    assert deploytime.duration(dev_db, "p90", times) == times["rds_postgres_single_az"]["p90"]


def test_floor_counts_start_order_places(plans):
    cfg = load_platform("prod", ROOT)
    floors = {r.service: r.floor for r in deploytime.readiness(deploytime.schedule(plans["prod"]), cfg)}
    steady = deploytime.load_times()["ecs_service_to_steady_state"]["p50"]
    assert floors["twinkle-worker"] - floors["twinkle-indexer"] == 3 * steady
    assert floors["starkdca-worker"] - floors["starkdca-api"] == steady  # waits for the migration


def test_plan_prints_the_model(capsys):
    from tools import plan as plan_cli

    plan_cli.main(["--stack", "prod"])
    out = capsys.readouterr().out
    assert "modeled from-scratch pulumi up:" in out and "critical path: network-vpc" in out and "twinkle-worker" in out


def test_rolling_update_uses_our_health_and_drain_settings(plans):
    rolling = deploytime.rolling_update(plans["prod"])
    ours, default = rolling["offerhub-api"]
    assert ours == deploytime.TASK_START_MINUTES + (2 * 10 + 10) / 60  # 2 checks of 10 s, 10 s drain
    assert default == deploytime.TASK_START_MINUTES + (5 * 30 + 300) / 60
