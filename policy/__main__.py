"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policy`: serve the pack."""

from pulumi_policy import PolicyPack
from rules import POLICIES

PolicyPack(name="platform-guardrails", policies=POLICIES)
