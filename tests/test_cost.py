"""The cost model: lines priced from the price sheet, per system, and the dev budget against Render."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from components.budget import amount as budget_amount
from stacks.config import load_platform
from tests.conftest import ROOT
from tools import cost, harness
from tools import plan as plan_cli

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


# ---------------------------------------------------------------- the cost of a change (tools.cost --diff)


def _priced(cap, stack: str, systems=SYSTEMS, running_counts=None, change_percent=20.0, change_usd=200.0) -> cost.PlanCost:
    counts = running(stack) if running_counts is None else running_counts
    return cost.PlanCost(stack, tuple(cost.estimate(cap, systems, running=counts)), tuple(systems), counts, change_percent, change_usd)


def _edited(cap, type_: str, name: str, **inputs):
    """A copy of ``cap`` in which one resource has other inputs."""
    target = cap.one(type_, name)
    changed = dataclasses.replace(target, inputs={**target.inputs, **inputs})
    return harness.Capture(cap.stack, [changed if r is target else r for r in cap.resources])


def _without_system(cap, system: str):
    return harness.Capture(cap.stack, [r for r in cap.resources if cap.top_component(r.urn).split("-", 1)[0] != system])


def _write(path, stack: str, priced: cost.PlanCost | None, cap=None):
    data = {"stack": stack, "resources": [r.to_json() for r in (cap.resources if cap else [])], "outputs": {}, "invokes": []}
    if priced is not None:
        data["cost"] = priced.to_json()
    path.write_text(json.dumps(data))
    return path


def json_of(path):
    return json.loads(path.read_text())


def test_a_class_bump_is_one_changed_line(plans, tmp_path, capsys):
    # GIVEN dev, and dev with its database (the systems' shared instance, components/shared_data.py) one class up
    base = _priced(plans["dev"], "dev")
    head = _priced(_edited(plans["dev"], "aws:rds/instance:Instance", "shared-db-instance", instanceClass="db.t4g.small"), "dev")
    # WHEN the two plans are compared as the preview workflow compares them
    b, h = _write(tmp_path / "base.json", "dev", base), _write(tmp_path / "head.json", "dev", head)
    code = cost.main(["--diff", str(b), str(h), "--markdown", str(tmp_path / "comment.md")])
    out = capsys.readouterr().out
    # THEN one line changed, paired (not removed and added), with its confidence; only the shared line moved
    [d] = cost.diff_plans({"dev": json_of(b)}, {"dev": json_of(h)})
    [change] = d.changes
    before, after = "Postgres db.t4g.micro single_az (shared)", "Postgres db.t4g.small single_az (shared)"
    assert (change.system, change.before.item, change.after.item) == ("shared", before, after)
    prices = cost.load_prices()["rds_postgres_hourly"]
    assert change.delta == pytest.approx((prices["db.t4g.small"]["single_az"] - prices["db.t4g.micro"]["single_az"]) * 730)
    assert {s: round(a - b_, 2) for s, b_, a in d.systems() if round(a - b_, 2)} == {"shared": round(change.delta, 2)}
    assert f"~ shared    {before} -> {after}" in out and out.count("\n    ") == 1
    assert f"({cost._signed(change.delta)})  B" in out
    # a rise of $11.68 on $204 is under both thresholds: no attention, exit 0
    assert code == 0 and d.attention is None and "NEEDS ATTENTION" not in out
    comment = (tmp_path / "comment.md").read_text()
    assert comment.startswith(cost.MARKER + "\n") and f"| ~ | shared | {before} → {after} |" in comment


def test_an_added_system_shows_every_line_of_it(plans, tmp_path, capsys):
    # GIVEN dev without aurum, then dev with it
    counts = running("dev")
    base = _priced(_without_system(plans["dev"], "aurum"), "dev", [s for s in SYSTEMS if s != "aurum"], counts)
    head = _priced(plans["dev"], "dev", SYSTEMS, counts)
    b, h = _write(tmp_path / "base.json", "dev", base), _write(tmp_path / "head.json", "dev", head)
    # WHEN compared
    code = cost.main(["--diff", str(b), str(h)])
    out = capsys.readouterr().out
    [d] = cost.diff_plans({"dev": json_of(b)}, {"dev": json_of(h)})
    # THEN every aurum line is added, aurum goes from $0 to its total, nothing else changes
    aurum = [line for line in head.lines if line.system == "aurum"]
    assert {c.after.item for c in d.changes} == {line.item for line in aurum} and all(c.before is None for c in d.changes)
    assert [(s, b_) for s, b_, a in d.systems() if s == "aurum"] == [("aurum", 0.0)]
    assert d.delta == pytest.approx(sum(line.monthly for line in aurum))
    assert all(f"+ aurum     {line.item}" in out for line in aurum)
    assert code == 0  # about $23 on dev: under 20 % and $200


def test_a_removed_replica_lowers_the_cost_and_never_needs_attention(plans, tmp_path, capsys):
    # GIVEN prod (two Redis nodes per cache), then prod with twinkle's cache down to one node
    base = _priced(plans["prod"], "prod")
    head = _priced(_edited(plans["prod"], "aws:elasticache/replicationGroup:ReplicationGroup", "twinkle-cache-group", numCacheClusters=1.0), "prod")
    b, h = _write(tmp_path / "base.json", "prod", base), _write(tmp_path / "head.json", "prod", head)
    code = cost.main(["--diff", str(b), str(h)])
    out = capsys.readouterr().out
    [d] = cost.diff_plans({"prod": json_of(b)}, {"prod": json_of(h)})
    [change] = d.changes
    assert (change.before.item, change.after.item) == ("Redis 2 x cache.t4g.small", "Redis 1 x cache.t4g.small")
    assert change.delta == pytest.approx(-cost.load_prices()["elasticache_redis_node_hourly"]["cache.t4g.small"]["price"] * 730)
    assert d.delta < 0 and d.attention is None and code == 0
    assert "prod: $" in out and "-$" in out


def test_a_rise_past_the_threshold_needs_attention_not_a_failure(plans, tmp_path, capsys):
    # GIVEN dev with its (shared) database on a much bigger class: more than 20 % of dev's month
    base = _priced(plans["dev"], "dev")
    head = _priced(_edited(plans["dev"], "aws:rds/instance:Instance", "shared-db-instance", instanceClass="db.m7g.large", multiAz=True), "dev")
    b, h = _write(tmp_path / "base.json", "dev", base), _write(tmp_path / "head.json", "dev", head)
    # WHEN compared; THEN the exit status says "attention" (3), not an error (1, 2)
    assert cost.main(["--diff", str(b), str(h), "--markdown", str(tmp_path / "c.md")]) == cost.ATTENTION
    out = capsys.readouterr().out
    assert "NEEDS ATTENTION: the rise is more than 20 % and more than $200 a month (this stack's threshold: 20 % or $200)" in out
    assert "**Needs attention:** dev" in (tmp_path / "c.md").read_text()


def test_thresholds_are_the_bases_and_each_can_be_off():
    assert cost.attention(1000, 1150, 20, 200) is None
    assert cost.attention(1000, 1250, 20, None) == "more than 20 %"
    assert cost.attention(1000, 1210, None, 200) == "more than $200 a month"
    assert cost.attention(0, 250, 20, 200) == "more than $200 a month"  # a new stack: the amount only
    assert cost.attention(1000, 5000, None, None) is None
    line = cost.Line("x", "item", 100, "A", "k")
    base = cost.PlanCost("s", (line,), ("x",), {}, 10, None)
    head = cost.PlanCost("s", (cost.Line("x", "item 2", 150, "A", "k"),), ("x",), {}, None, None)  # the change turns its threshold off
    assert cost.diff(base, head).attention == "more than 10 %"


def test_directories_of_plans_give_new_and_removed_stacks(plans, tmp_path, capsys):
    # GIVEN a base with dev and staging, a head with dev (unchanged) and prod
    (tmp_path / "base").mkdir(), (tmp_path / "head").mkdir()
    dev = _priced(plans["dev"], "dev")
    _write(tmp_path / "base" / "plan-dev.json", "dev", dev)
    _write(tmp_path / "head" / "plan-dev.json", "dev", dev)
    _write(tmp_path / "base" / "plan-staging.json", "staging", _priced(plans["staging"], "staging"))
    _write(tmp_path / "head" / "plan-prod.json", "prod", _priced(plans["prod"], "prod"))
    code = cost.main(["--diff", str(tmp_path / "base"), str(tmp_path / "head"), "--markdown", str(tmp_path / "c.md")])
    out = capsys.readouterr().out
    # THEN dev is left out (nothing changed), prod is new (and over $200: attention), staging removed
    assert "dev:" not in out and "prod: new stack" in out and "staging: removed" in out
    assert code == cost.ATTENTION
    comment = (tmp_path / "c.md").read_text()
    assert "| prod | (new) |" in comment and "| staging |" in comment and "(removed)" in comment


def test_a_base_plan_without_cost_lines_is_priced_at_diff_time(plans, tmp_path, capsys):
    # GIVEN the base written before plans carried their cost (the change that adds it), every service held
    head = _priced(plans["dev"], "dev")
    b = _write(tmp_path / "base.json", "dev", None, plans["dev"])
    h = _write(tmp_path / "head.json", "dev", head)
    # WHEN compared; THEN the base is priced from its resources at the head's released counts: no change
    assert cost.diff_plans({"dev": json_of(b)}, {"dev": json_of(h)}) == []
    assert cost.main(["--diff", str(b), str(h)]) == 0
    assert "no stack's modeled cost changed" in capsys.readouterr().out


def test_every_line_has_a_key_unique_in_its_system(plans):
    for stack, cap in plans.items():
        lines = cost.estimate(cap, SYSTEMS, running=running(stack))
        keys = [(line.system, line.key) for line in lines]
        assert all(line.key for line in lines) and len(set(keys)) == len(keys), stack


def test_plan_prints_the_cost_and_its_json_carries_the_lines(tmp_path, capsys):
    # the staging plan, priced at plan time: the same total the summary prints, every service released
    assert plan_cli.main(["--stack", "staging", "--json", str(tmp_path / "p.json")]) == 0
    out = capsys.readouterr().out
    assert "estimated monthly cost" in out and "the same systems on Render" in out and "  shared " in out
    data = json.loads((tmp_path / "p.json").read_text())["cost"]
    assert f"estimated monthly cost (list prices, 730 h; confidence A/B/C per tools/cost.py): ${data['total']:,.2f}" in out
    assert data["running"] == running("staging") and all(n > 0 for n in data["running"].values())
    assert data["attention"] == {"change_percent": 20, "change_usd": 200}
    assert cost.from_plan({"stack": "staging", "cost": data}).total == pytest.approx(data["total"])


def test_a_class_the_price_sheet_lacks_is_shown_and_needs_attention(plans):
    # RDS offers classes the team's price sheet has no row for: priced at $0 with confidence "?", flagged
    base = _priced(plans["dev"], "dev")
    head = _priced(_edited(plans["dev"], "aws:rds/instance:Instance", "shared-db-instance", instanceClass="db.r6g.large"), "dev")
    d = cost.diff(base, head)
    [change] = d.changes
    assert change.after.confidence == "?" and change.after.monthly == 0 and cost.UNPRICED in change.after.item
    assert d.attention == "unpriced: Postgres db.r6g.large single_az (shared) (add it to tools/data/aws-prices-us-east-1.json)"


def test_the_stacks_a_change_touches():
    stacks = ["dev", "prod", "staging", "staging-eks"]
    assert cost.touched_stacks(["README.md", "tests/test_cost.py", ".github/workflows/preview.yml", "docs/iam/x.json", "tools/drift.py"], stacks) == []
    assert cost.touched_stacks(["Pulumi.prod.yaml"], stacks) == ["prod"]
    assert cost.touched_stacks(["Pulumi.qa.yaml"], stacks) == ["qa"]  # a stack file added (or deleted) in the change
    for program in (
        "components/redis.py",
        "stacks/apps/darwin.yaml",
        "policy/local.py",
        "Pulumi.yaml",
        "requirements.txt",
        "tools/data/aws-prices-us-east-1.json",
    ):
        assert cost.touched_stacks([program, "Pulumi.dev.yaml"], stacks) == stacks, program


def test_the_readme_cost_table_matches_the_model():
    # README, "What each environment costs": the figures a newcomer reads first must be the model's
    model = json.loads((ROOT / "stacks" / "modeled-cost.json").read_text())
    readme = (ROOT / "README.md").read_text()
    for stack in ("dev", "staging", "prod"):
        row = re.search(rf"^\| `{stack}` \| \$([0-9,]+) \| \$([0-9,]+) \|", readme, re.MULTILINE)
        assert row, stack
        modeled, budget = (int(x.replace(",", "")) for x in row.groups())
        total = model["monthly_usd"][stack]
        usd, _ = budget_amount(stack, load_platform(stack, ROOT).preset.budget, model["monthly_usd"])
        assert modeled == round(total) and budget == round(usd), stack
