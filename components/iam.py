"""IAM documents more than one component writes."""

from __future__ import annotations

import json
from collections.abc import Mapping

import pulumi


def service_trust(service: str, *, source_account: pulumi.Input[str] | None = None, source_arn: pulumi.Input[str] | None = None) -> pulumi.Output[str]:
    """Assume-role policy (JSON) that lets one AWS service principal, e.g. ``lambda.amazonaws.com``, use the role.

    ``source_account`` / ``source_arn`` add the confused-deputy guard the IAM user guide recommends for
    service principals ("The confused deputy problem": ``aws:SourceAccount`` equal to our account,
    ``aws:SourceArn`` matching the resource that acts for us, ``ArnLike`` so a ``*`` pattern works). Use
    them only where the service documents that it sets those keys when it assumes the role; a key the
    service does not send makes the condition false and the role unusable.
    """
    condition: dict[str, Mapping[str, pulumi.Input[str]]] = {}
    if source_account is not None:
        condition["StringEquals"] = {"aws:SourceAccount": source_account}
    if source_arn is not None:
        condition["ArnLike"] = {"aws:SourceArn": source_arn}

    def document(resolved: dict) -> str:
        statement = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
        if resolved:
            statement["Condition"] = resolved
        return json.dumps({"Version": "2012-10-17", "Statement": [statement]})

    return pulumi.Output.from_input(condition).apply(document)
