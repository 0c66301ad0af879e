"""IAM documents more than one component writes."""

from __future__ import annotations

import json


def service_trust(service: str) -> str:
    """Assume-role policy (JSON) that lets one AWS service principal, e.g. ``lambda.amazonaws.com``, use the role."""
    return json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}]})
