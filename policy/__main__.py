"""Entry point the Pulumi CLI runs for `pulumi preview --policy-pack policy`: serve the pack.

The CLI runs it with ``policy/venv/bin/python`` (``PulumiPolicy.yaml``: ``virtualenv: venv``, resolved
against this directory) and this directory first on ``sys.path``; create that virtualenv first (README).
"""

from pulumi_policy import PolicyPack
from rules import policies

PolicyPack(name="platform-guardrails", policies=policies())
