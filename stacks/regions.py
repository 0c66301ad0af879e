"""The AWS regions a stack may name: those of the ``aws`` partition, as botocore lists them.

The list is botocore's own (``botocore/data/endpoints.json``, partition ``aws``, its ``regions``: what
``boto3.session.Session().get_available_regions`` draws on), copied here because botocore is not a
runtime dependency of the program (it is pinned in requirements-dev.txt and requirements-ops.txt, not
in requirements.txt, and pulumi-aws does not pull it in). ``tests/test_bad_input.py`` compares this
copy with the installed botocore, so a botocore bump that adds a region fails there until it is added
here. Only the ``aws`` partition: the program writes ``arn:aws:`` ARNs (key policies, trust
conditions), so a GovCloud or China region would not work even if it were accepted.
"""

from __future__ import annotations

from .errors import did_you_mean

BOTOCORE_VERSION = "1.44.5"
"""The botocore release the list below was copied from (requirements-dev.txt pins the same)."""

AWS_REGIONS = (
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
)


def region_problem(value: object) -> str | None:
    """None for a region of the ``aws`` partition, else what is wrong and what is allowed."""
    if isinstance(value, str) and value in AWS_REGIONS:
        return None
    shown = repr(value) if not isinstance(value, str) else f"'{value}'"
    hint = did_you_mean(value, AWS_REGIONS) if isinstance(value, str) else ""
    return f"{shown} is not an AWS region{hint}; allowed: the aws partition's regions as botocore {BOTOCORE_VERSION} lists them ({', '.join(AWS_REGIONS)})"
