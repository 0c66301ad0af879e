"""The environment's KMS key: encrypts secrets, RDS, ElastiCache and CloudWatch log groups.

Children: ``aws:kms/key:Key`` (``<name>-key``, yearly rotation on; protected and retained on delete with
``protect``) and ``aws:kms/alias:Alias``.
The key policy gives the account root full control (so IAM policies decide who uses it, the AWS
default), lets CloudWatch Logs in this region use it for log groups of this account, which a log
group's ``kmsKeyId`` requires, and lets CloudWatch alarms and RDS event notifications of this account
publish to the encrypted alarm topic. A protected key (prod, staging) cannot be scheduled for deletion
or disabled by anyone but the break-glass role.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


@dataclass(frozen=True, kw_only=True)
class EnvironmentKeyArgs:
    account_id: pulumi.Input[str]
    region: str
    alias: str
    """Alias without the ``alias/`` prefix, e.g. ``platform-prod``."""
    deletion_window_days: int = 30
    """Days a deleted key can still be recovered (7-30). Default: 30."""
    in_other_region: bool = False
    """Create the key in ``region`` rather than the provider's region (the DR copy). Default: false."""
    protect: bool = False
    """Pulumi ``protect`` and ``retain_on_delete`` on the key (preset ``security.protect_state``): every
    secret, database, cache, log group and backup of the environment is encrypted with it, and a
    scheduled key deletion makes all of them unreadable once the window ends. With it, the key policy
    also denies ``kms:ScheduleKeyDeletion`` and ``kms:DisableKey`` to every principal but
    ``break_glass_role_arn``. Default: false."""
    break_glass_role_arn: str | None = None
    """The one role that may schedule the deletion of, or disable, a protected key (preset
    ``security.break_glass_role_arn``). Unset: nobody, until the key policy is changed."""


class EnvironmentKey(pulumi.ComponentResource):
    """One customer-managed key per environment, rotation on."""

    arn: pulumi.Output[str]
    """Key ARN, for ``kmsKeyId`` arguments and IAM ``kms:Decrypt`` grants."""

    def __init__(self, name: str, args: EnvironmentKeyArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:security:EnvironmentKey", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        policy = pulumi.Output.from_input(args.account_id).apply(
            lambda account: json.dumps(_key_policy(account, args.region, protect=args.protect, break_glass_role_arn=args.break_glass_role_arn))
        )
        region = args.region if args.in_other_region else None
        key = aws.kms.Key(
            f"{name}-key",
            description=f"platform {args.alias}: secrets, databases, caches and logs",
            enable_key_rotation=True,
            deletion_window_in_days=args.deletion_window_days,
            policy=policy,
            region=region,
            # protect: no delete and no replacement through Pulumi; retain_on_delete: a stack deleted
            # anyway (after `pulumi state unprotect`) leaves the key, not a ScheduleKeyDeletion
            opts=pulumi.ResourceOptions(parent=self, protect=args.protect, retain_on_delete=args.protect),
        )
        aws.kms.Alias(f"{name}-alias", name=f"alias/{args.alias}", target_key_id=key.key_id, region=region, opts=child)
        self.arn = key.arn
        self.register_outputs({"arn": self.arn})


def _key_policy(account: str, region: str, *, protect: bool = False, break_glass_role_arn: str | None = None) -> dict:
    statements: list[dict] = []
    if protect:
        # An explicit Deny in the key policy wins over every Allow, the root's included (KMS developer
        # guide, "Key policies in AWS KMS" and IAM policy evaluation logic), so neither a mistaken
        # `aws kms schedule-key-deletion` nor a disabled key takes the environment's data with it.
        # aws:PrincipalArn is the role's ARN for an assumed-role session (IAM "AWS global condition
        # context keys"). The key administrators keep kms:PutKeyPolicy: changing this policy is the
        # documented, reviewable way out when no break-glass role is set.
        deny: dict = {
            "Sid": "ProtectKeyFromDeletion",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": ["kms:ScheduleKeyDeletion", "kms:DisableKey"],
            "Resource": "*",
        }
        if break_glass_role_arn:
            deny["Condition"] = {"ArnNotEquals": {"aws:PrincipalArn": break_glass_role_arn}}
        statements.append(deny)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AccountAdmin", "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{account}:root"}, "Action": "kms:*", "Resource": "*"},
            {
                "Sid": "CloudWatchLogs",
                "Effect": "Allow",
                "Principal": {"Service": f"logs.{region}.amazonaws.com"},
                # AWS's example also lists kms:Describe*; DescribeKey carries no encryption context, so
                # under this condition it never matched (parliament: UNKNOWN_CONDITION_FOR_ACTION)
                "Action": ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"ArnLike": {"kms:EncryptionContext:aws:logs:arn": f"arn:aws:logs:{region}:{account}:log-group:*"}},
            },
            {
                # CloudWatch alarms publish to the encrypted alarm topic
                "Sid": "CloudWatchAlarmsToSns",
                "Effect": "Allow",
                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            },
            {
                # RDS event notifications publish to the encrypted alarm topic (SNS developer guide,
                # "Configure AWS KMS permissions for AWS services": events.rds.amazonaws.com)
                "Sid": "RdsEventsToSns",
                "Effect": "Allow",
                "Principal": {"Service": "events.rds.amazonaws.com"},
                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:SourceAccount": account}},
            },
            {
                # AWS Budgets alerts publish to the encrypted alarm topic (AWS Cost Management user guide,
                # "Creating an Amazon SNS topic for budget notifications", "Protecting your Amazon SNS
                # budget alerts data with SSE and AWS KMS"). The guide gives no condition: one the
                # service does not send would drop every alert silently.
                "Sid": "BudgetsToSns",
                "Effect": "Allow",
                "Principal": {"Service": "budgets.amazonaws.com"},
                "Action": ["kms:GenerateDataKey*", "kms:Decrypt"],
                "Resource": "*",
            },
            *statements,
        ],
    }
