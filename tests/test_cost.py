"""The cost model: lines priced from the price sheet, per system, and the dev budget against Render."""

from __future__ import annotations

import pytest

from stacks.config import load_platform
from tests.conftest import ROOT
from tools import cost

SYSTEMS = ["twinkle", "offerhub", "starkdca", "aurum", "darwin"]


def running(stack: str) -> dict[str, int]:
    """Tasks per service once released: the shipped stacks hold every service on their first deploy."""
    return cost.running_counts(load_platform(stack, ROOT))


@pytest.fixture(scope="module")
def prices():
    return cost.load_prices()


def test_prod_database_is_priced_multi_az(plans, prices):
    lines = cost.estimate(plans["prod"], SYSTEMS, prices)
    db = next(line for line in lines if line.system == "offerhub" and line.item.startswith("Postgres db."))
    assert db.item == "Postgres db.t4g.medium multi_az"
    assert db.monthly == pytest.approx(prices["rds_postgres_hourly"]["db.t4g.medium"]["multi_az"] * 730)
    storage = next(line for line in lines if line.system == "offerhub" and "gp3" in line.item)
    assert storage.monthly == pytest.approx(20 * prices["rds_storage_gp3_gb_month"]["multi_az"])


def test_fargate_counts_tasks_and_spot(plans, prices):
    dev = {line.item: line for line in cost.estimate(plans["dev"], SYSTEMS, prices, running("dev"))}
    darwin = dev["Fargate darwin-app 3 x 0.5 vCPU/1 GB spot"]
    rate = prices["fargate"]["arm64"]
    assert darwin.monthly == pytest.approx(3 * (0.5 * rate["vcpu_hour"] + 1 * rate["gb_hour"]) * 730 * (1 - cost.SPOT_DISCOUNT))


def test_every_line_belongs_to_a_system_or_shared_and_has_a_confidence(plans):
    for stack, cap in plans.items():
        lines = cost.estimate(cap, SYSTEMS, running=running(stack))
        assert {line.system for line in lines} == {*SYSTEMS, "shared"}
        assert all(line.confidence[0] in "ABC" and line.monthly > 0 for line in lines)


def test_dev_costs_no_more_than_render(plans):
    # issue 7's goal, kept as a budget guard: dev for all five systems within Render's equivalent
    dev = plans["dev"]
    counts = running("dev")
    assert sum(cost.totals(cost.estimate(dev, SYSTEMS, running=counts)).values()) <= cost.render_equivalent(dev, running=counts)


def test_plan_prints_the_cost(capsys):
    from tools import plan as plan_cli

    plan_cli.main(["--stack", "staging"])
    out = capsys.readouterr().out
    assert "estimated monthly cost" in out and "the same systems on Render" in out and "  shared " in out
