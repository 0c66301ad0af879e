"""The environment's AWS Budget: amount from the model plus a margin (or config), the tag filter, the alerts."""

from __future__ import annotations

import json
import math

import pytest
from pydantic import ValidationError

from components import budget
from stacks.presets import BudgetPreset, Preset
from tests.conftest import ROOT, plan
from tools import cost, harness

BUDGET = "aws:budgets/budget:Budget"


def test_the_modeled_cost_file_is_current(plans):
    # GIVEN the file the program reads, WHEN every stack is priced again, THEN it says the same
    model = budget.read_model()
    assert sorted(model) == cost.stack_names(), "run `python -m tools.cost --write-model`"
    from stacks.config import load_platform

    fresh = {}
    for stack in model:
        cap = plans[stack] if stack in plans else plan(stack)
        fresh[stack] = round(cost.plan_cost(cap, load_platform(stack, ROOT)).total, 2)
    stale = {s: (model[s], fresh[s]) for s in model if model[s] != fresh[s]}
    assert stale == {}, "the modeled cost changed (file, now): run `python -m tools.cost --write-model`"
    assert (ROOT / "stacks" / "modeled-cost.json").read_text() == cost.model_text(model)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_environment_has_a_monthly_budget_on_its_tag(plans, stack):
    cap = plans[stack]
    [b] = cap.of_type(BUDGET)
    i = b.inputs
    env = stack  # the shipped stacks are named after their preset
    settings = Preset().budget
    # the modeled month plus the default margin, rounded up to whole dollars
    assert i["limitAmount"] == f"{math.ceil(budget.read_model()[stack] * (1 + settings.margin_percent / 100)):.2f}" and i["limitUnit"] == "USD"
    assert (i["name"], i["budgetType"], i["timeUnit"]) == (f"platform-{env}", "COST", "MONTHLY")
    assert i["costFilters"] == [{"name": "TagKeyValue", "values": [f"user:environment${env}"]}]
    assert i["costTypes"] == {"includeCredit": False, "includeRefund": False, "includeTax": False, "includeSupport": False}
    # an actual alert at 80 and 100 %, a forecast one at 100 %, each to the environment's warning topic
    # (a cost alert pages nobody: docs/operating.md, "Alarms")
    topic = cap.one("aws:sns/topic:Topic", "alarms-warning-topic")
    alerts = sorted((n["notificationType"], n["threshold"]) for n in i["notifications"])
    assert alerts == [("ACTUAL", 80.0), ("ACTUAL", 100.0), ("FORECASTED", 100.0)]
    warning = cap.outputs["alarm_topic_arns"]["warning"]
    assert warning != cap.outputs["alarm_topic_arns"]["critical"]
    assert all(n["subscriberSnsTopicArns"] == [warning] for n in i["notifications"])
    assert b.property_dependencies["notifications"] == [topic.urn]
    assert all((n["comparisonOperator"], n["thresholdType"]) == ("GREATER_THAN", "PERCENTAGE") for n in i["notifications"])
    # created after everything of the topic component (the SDK expands a component in depends_on to its
    # children), so after whatever access policy it holds
    children = {r.urn for r in cap.children_of(topic.parent) if r.custom}
    assert topic.urn in children and children <= set(cap.by_urn(b.parent).dependencies)
    assert cap.outputs["monthly_budget"] == {"usd": float(i["limitAmount"]), "from": f"modeled ${budget.read_model()[stack]:,.2f} a month + 25 %"}


def test_amount_and_alerts_from_config(project):
    # GIVEN a stack the model does not know, with an amount and its own alerts in platform:overrides
    def mutate(config: dict) -> None:
        config["platform:overrides"] = {
            **config.get("platform:overrides", {}),
            "budget": {"amount_usd": 500, "actual_alerts_percent": [50, 90], "forecast_alerts_percent": []},
        }

    cap = plan("test", project("dev", mutate))
    [b] = cap.of_type(BUDGET)
    assert b.inputs["limitAmount"] == "500.00"
    assert sorted((n["notificationType"], n["threshold"]) for n in b.inputs["notifications"]) == [("ACTUAL", 50.0), ("ACTUAL", 90.0)]
    assert cap.outputs["monthly_budget"]["from"] == "platform:overrides budget.amount_usd"


def test_a_stack_with_no_model_and_no_amount_gets_a_warning_not_a_guess(project):
    cap = plan("test", project("dev"))
    assert cap.of_type(BUDGET) == []
    [warning] = [line for line in cap.logs if budget.NO_BUDGET_WARNING in line]
    assert "stack 'test' has no modeled cost in stacks/modeled-cost.json" in warning and "--write-model --stack <stack>" in warning


def test_amount_rules():
    model = {"dev": 306.68}
    assert budget.amount("dev", BudgetPreset(), model) == (384.0, "modeled $306.68 a month + 25 %")
    assert budget.amount("dev", BudgetPreset(margin_percent=0), model)[0] == 307.0
    assert budget.amount("dev", BudgetPreset(amount_usd=120), model) == (120, "platform:overrides budget.amount_usd")
    assert budget.amount("other", BudgetPreset(), model)[0] is None
    assert budget.cost_filter("prod") == "user:environment$prod"


@pytest.mark.parametrize(
    "bad",
    [
        {"actual_alerts_percent": [80, 80]},
        {"forecast_alerts_percent": [0]},
        {"actual_alerts_percent": [10, 20, 30, 40, 50, 60]},
        {"amount_usd": -1},
        {"change_percent": 0},
    ],
)
def test_budget_settings_are_checked(bad):
    with pytest.raises(ValidationError):
        BudgetPreset(**bad)


def test_the_statements_aws_budgets_needs_on_topic_and_key():
    topic = budget.topic_policy_statement("arn:aws:sns:us-east-1:123456789012:alarms", "123456789012")
    assert topic["Principal"] == {"Service": "budgets.amazonaws.com"} and topic["Action"] == "SNS:Publish"
    assert topic["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}, "ArnLike": {"aws:SourceArn": "arn:aws:budgets::123456789012:*"}}
    key = budget.key_policy_statement()
    assert key["Principal"] == {"Service": "budgets.amazonaws.com"} and key["Action"] == ["kms:GenerateDataKey*", "kms:Decrypt"]
    assert "Condition" not in key  # the guide gives none; one the service does not send would drop every alert


def _statements(cap: harness.Capture, type_: str, key: str) -> list[dict]:
    return [s for r in cap.of_type(type_) if isinstance(r.inputs.get(key), str) for s in json.loads(r.inputs[key]).get("Statement", [])]


def test_aws_budgets_may_publish_to_the_encrypted_alarm_topic(plans):
    cap = plans["dev"]
    published = _statements(cap, "aws:sns/topicPolicy:TopicPolicy", "policy") + _statements(cap, "aws:sns/topic:Topic", "policy")
    assert any(s.get("Principal") == {"Service": "budgets.amazonaws.com"} and "SNS:Publish" in str(s.get("Action")) for s in published)
    key = next(r for r in cap.of_type("aws:kms/key:Key") if r.name == "key-key")
    assert any(s.get("Principal") == {"Service": "budgets.amazonaws.com"} for s in json.loads(key.inputs["policy"])["Statement"])


def test_the_alarm_topic_policy_keeps_snss_default_owner_statement(plans):
    """A topic policy replaces SNS's default one; CloudWatch alarms and RDS events of this account publish
    through its owner statement (AWS:SourceOwner), so it must stay."""
    cap = plans["prod"]
    # both priorities' topics: alarms publish to each, RDS events to the critical one
    for name in ("alarms", "alarms-warning"):
        policy = cap.one("aws:sns/topicPolicy:TopicPolicy", f"{name}-policy")
        assert cap.one("aws:sns/topic:Topic", f"{name}-topic").urn in policy.property_dependencies["arn"]
        (owner,) = [s for s in json.loads(policy.inputs["policy"])["Statement"] if s.get("Sid") == "AccountOwner"]
        assert owner["Principal"] == {"AWS": "*"} and "SNS:Publish" in owner["Action"]
        assert owner["Condition"] == {"StringEquals": {"AWS:SourceOwner": "123456789012"}}
