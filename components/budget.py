"""The environment's AWS Budget: its monthly cost, filtered by the ``environment`` tag, alerting the alarm topic.

Child: ``aws:budgets/budget:Budget`` ``platform-<env>`` (a COST budget, MONTHLY, in USD). Its filter is
the provider's default tag ``environment`` (components/tags.py) as a cost allocation tag,
``TagKeyValue`` = ``user:environment$<env>`` (the ``user:`` prefix marks a user-defined tag; the SDK's
"Create a cost filter using resource tags" example writes ``user:business-unit$human_resources``). The
tag must be activated once per payer account (Billing console, "Cost allocation tags"; user-defined
tags appear there up to 24 hours after they are first applied): until then the budget sees nothing.
Credits, refunds, tax and support are left out, so the budget follows usage at the list prices the
model uses rather than what credits leave of the bill.

Notifications: an ``ACTUAL`` and a ``FORECASTED`` alert per threshold of the preset (``budget``), as a
percentage of the amount, each to the environment's alarm topic. AWS Budgets publishes only if the
topic's access policy allows ``budgets.amazonaws.com`` ``SNS:Publish`` and, the topic being encrypted
with the environment key, the key policy lets ``budgets.amazonaws.com`` use it (AWS Cost Management
user guide, "Creating an Amazon SNS topic for budget notifications", and its section "Protecting your
Amazon SNS budget alerts data with SSE and AWS KMS"): :func:`topic_policy_statement` and
:func:`key_policy_statement` are those two statements, for the topic and key components.

The amount: ``budget.amount_usd`` when the stack sets it, else the stack's modeled monthly cost
(:data:`MODEL_FILE`, written by ``python -m tools.cost --write-model`` and kept current by
tests/test_budget.py) plus ``budget.margin_percent``, rounded up to whole dollars. The program reads the
number from that file rather than pricing itself: the model prices the captured plan, which only the
offline harness has. A stack the file does not know and that sets no amount gets no budget, and the
program says so in a warning.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from stacks.presets import BudgetPreset

from .tags import ENVIRONMENT

MODEL_FILE = Path(__file__).resolve().parent.parent / "stacks" / "modeled-cost.json"
NO_BUDGET_WARNING = "no AWS Budget for this stack: "
"""Start of the warning a stack with neither a modeled cost nor ``budget.amount_usd`` gets."""


def read_model(path: Path = MODEL_FILE) -> dict[str, float]:
    """Stack -> modeled monthly cost in USD; empty when the file is missing."""
    if not path.exists():
        return {}
    return {str(k): float(v) for k, v in json.loads(path.read_text())["monthly_usd"].items()}


def amount(stack: str, settings: BudgetPreset, model: Mapping[str, float]) -> tuple[float | None, str]:
    """(monthly amount in USD, where it comes from); the amount is None when there is none to give."""
    if settings.amount_usd is not None:
        return settings.amount_usd, "platform:overrides budget.amount_usd"
    modeled = model.get(stack)
    if modeled is None:
        return None, (
            f"stack '{stack}' has no modeled cost in {MODEL_FILE.parent.name}/{MODEL_FILE.name} and sets no "
            "overrides.budget.amount_usd; run `python -m tools.cost --write-model --stack <stack>` or set the amount"
        )
    total = math.ceil(modeled * (1 + settings.margin_percent / 100))
    return float(total), f"modeled ${modeled:,.2f} a month + {settings.margin_percent:g} %"


def cost_filter(env: str) -> str:
    """The ``TagKeyValue`` filter of the environment's default tag."""
    return f"user:{ENVIRONMENT}${env}"


def topic_policy_statement(topic_arn: str, account: str, partition: str = "aws") -> dict:
    """What the alarm topic's access policy must allow for budget notifications (AWS Cost Management user
    guide, "Creating an Amazon SNS topic for budget notifications": ``SNS:Publish`` for
    ``budgets.amazonaws.com``, limited to budgets of this account by ``aws:SourceAccount`` and
    ``aws:SourceArn`` ``arn:aws:budgets::<account-id>:*``)."""
    return {
        "Sid": "AWSBudgetsPublish",
        "Effect": "Allow",
        "Principal": {"Service": "budgets.amazonaws.com"},
        "Action": "SNS:Publish",
        "Resource": topic_arn,
        "Condition": {"StringEquals": {"aws:SourceAccount": account}, "ArnLike": {"aws:SourceArn": f"arn:{partition}:budgets::{account}:*"}},
    }


def key_policy_statement() -> dict:
    """What the environment key's policy must allow for AWS Budgets to publish to the encrypted topic
    (the same guide, "Protecting your Amazon SNS budget alerts data with SSE and AWS KMS":
    ``kms:GenerateDataKey*`` and ``kms:Decrypt`` for ``budgets.amazonaws.com`` on ``*``). The guide gives
    no condition; one the service does not send (``aws:SourceAccount``) would drop every alert silently."""
    return {
        "Sid": "BudgetsToSns",
        "Effect": "Allow",
        "Principal": {"Service": "budgets.amazonaws.com"},
        "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
        "Resource": "*",
    }


@dataclass(frozen=True, kw_only=True)
class BudgetArgs:
    env: str
    account_id: pulumi.Input[str]
    amount_usd: float
    topic_arn: pulumi.Input[str]
    actual_alerts_percent: Sequence[float] = (80.0, 100.0)
    forecast_alerts_percent: Sequence[float] = (100.0,)


class Budget(pulumi.ComponentResource):
    """A monthly cost budget of the environment, with its alerts."""

    name: pulumi.Output[str]

    def __init__(self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:cost:Budget", name, None, opts)
        alerts = [("ACTUAL", t) for t in args.actual_alerts_percent] + [("FORECASTED", t) for t in args.forecast_alerts_percent]
        budget = aws.budgets.Budget(
            f"{name}-budget",
            name=f"platform-{args.env}",
            account_id=args.account_id,
            budget_type="COST",
            time_unit="MONTHLY",
            limit_amount=f"{args.amount_usd:.2f}",
            limit_unit="USD",
            cost_filters=[aws.budgets.BudgetCostFilterArgs(name="TagKeyValue", values=[cost_filter(args.env)])],
            cost_types=aws.budgets.BudgetCostTypesArgs(include_credit=False, include_refund=False, include_tax=False, include_support=False),
            notifications=[
                aws.budgets.BudgetNotificationArgs(
                    notification_type=kind,
                    comparison_operator="GREATER_THAN",
                    threshold=float(threshold),
                    threshold_type="PERCENTAGE",
                    subscriber_sns_topic_arns=[args.topic_arn],
                )
                for kind, threshold in alerts
            ],
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.name = budget.name
        self.register_outputs({"name": self.name})


__all__ = ["MODEL_FILE", "Budget", "BudgetArgs", "amount", "cost_filter", "key_policy_statement", "read_model", "topic_policy_statement"]
