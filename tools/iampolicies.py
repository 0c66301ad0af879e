"""Every IAM policy document in a capture, linted by parliament (its own IAM definitions, offline).

:data:`KINDS` names each resource input that carries a policy document and what kind it is. Any other
input whose value is a policy document (a JSON string with ``Statement``) is reported by
:func:`unclassified`, so a new policy-carrying type cannot go unlinted.

parliament reads identity policies. The others are shown to it as AWS reads them: a trust policy and
an ECR repository policy have no ``Resource`` (it is the role, the repository), so the statement gets
that ARN; key and bucket policies are linted as written. ARNs from the harness's mocks are first made
AWS-shaped (:func:`tools.awsshapes.arn_rewriter`), since parliament checks resources against each
action's ARN format. What parliament leaves out is checked here: where a ``Principal`` belongs,
service principals' form, and the size quotas.
"""

from __future__ import annotations

import fnmatch
import json
import re
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tools import awsshapes, harness

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # parliament imports pkg_resources and leaves its data files open
    import parliament

ALLOWLIST = Path(__file__).resolve().parent.parent / "tests" / "parliament_allowlist.yaml"

IDENTITY, TRUST, RESOURCE, REPOSITORY = "identity", "trust", "resource", "repository"
# (resource type, input) -> kind of document, and the quota AWS puts on its size (characters,
# whitespace not counted for IAM; IAM and service quotas pages).
KINDS: dict[tuple[str, str], tuple[str, int]] = {
    ("aws:iam/rolePolicy:RolePolicy", "policy"): (IDENTITY, 10_240),  # aggregate of a role's inline policies
    ("aws:iam/policy:Policy", "policy"): (IDENTITY, 6_144),
    ("aws:iam/role:Role", "assumeRolePolicy"): (TRUST, 2_048),
    ("aws:kms/key:Key", "policy"): (RESOURCE, 32_768),
    ("aws:s3/bucketPolicy:BucketPolicy", "policy"): (RESOURCE, 20_480),
    ("aws:sns/topicPolicy:TopicPolicy", "policy"): (RESOURCE, 30_720),
    ("aws:sns/topic:Topic", "policy"): (RESOURCE, 30_720),
    ("aws:secretsmanager/secretPolicy:SecretPolicy", "policy"): (RESOURCE, 20_480),
    ("aws:ecr/repositoryPolicy:RepositoryPolicy", "policy"): (REPOSITORY, 10_240),
    # 5,120 for an account-level policy, 51,200 for one scoped to a log group (CloudWatch Logs): the stricter
    ("aws:cloudwatch/logResourcePolicy:LogResourcePolicy", "policyDocument"): (RESOURCE, 5_120),
    ("aws:ec2/vpcEndpoint:VpcEndpoint", "policy"): (RESOURCE, 20_480),  # VPC quotas: "VPC endpoint policy size"
}
SERVICE_PRINCIPAL = re.compile(r"[a-z0-9][a-z0-9.-]*\.amazonaws\.com")


@dataclass(frozen=True)
class Document:
    resource: harness.Resource
    key: str
    kind: str
    quota: int
    policy: dict
    implied_resource: str | None
    """The ARN a trust or repository policy applies to (it names none itself)."""

    @property
    def label(self) -> str:
        return f"{self.resource.type} {self.resource.name}"


@dataclass(frozen=True)
class Finding:
    label: str
    issue: str
    detail: str

    def __str__(self) -> str:
        return f"{self.label}: {self.issue} {self.detail}"


def _is_policy(value: Any) -> bool:
    if not isinstance(value, str) or '"Statement"' not in value:
        return False
    try:
        return isinstance(json.loads(value), dict) and "Statement" in json.loads(value)
    except ValueError:
        return False


def unclassified(cap: harness.Capture) -> list[str]:
    """Inputs that hold a policy document but are not in :data:`KINDS`; secret or unknown policies."""
    found = []
    for r in cap.resources:
        for key, value in r.inputs.items():
            if (r.type, key) in KINDS:
                if not _is_policy(value):
                    found.append(f"{r.type} {r.name}.{key} is not a known policy document: {str(value)[:60]}")
            elif _is_policy(value):
                found.append(f"{r.type} {r.name}.{key} holds a policy document of no known kind")
    return found


def _implied_resource(cap: harness.Capture, r: harness.Resource, kind: str, rewrite: Callable[[Any], Any]) -> str | None:
    if kind == TRUST:
        return rewrite(awsshapes.mock_arn(r))
    if kind == REPOSITORY:
        return f"arn:aws:ecr:{r.inputs.get('region', 'us-east-1')}:{harness.ACCOUNT}:repository/{r.inputs['repository']}"
    return None


def documents(cap: harness.Capture) -> list[Document]:
    rewrite = awsshapes.arn_rewriter(cap)
    docs = []
    for r in cap.resources:
        for key, value in r.inputs.items():
            if (r.type, key) in KINDS and _is_policy(value):
                kind, quota = KINDS[(r.type, key)]
                docs.append(Document(r, key, kind, quota, json.loads(rewrite(value)), _implied_resource(cap, r, kind, rewrite)))
    return docs


def _statements(policy: dict) -> list[dict]:
    s = policy.get("Statement", [])
    return s if isinstance(s, list) else [s]


def _as_parliament_sees_it(doc: Document) -> dict:
    if doc.implied_resource is None:
        return doc.policy
    return {**doc.policy, "Statement": [{**s, "Resource": doc.implied_resource} for s in _statements(doc.policy)]}


def _principals(statement: dict) -> Iterable[tuple[str, str]]:
    principal = statement.get("Principal", statement.get("NotPrincipal"))
    if isinstance(principal, dict):
        for kind, values in principal.items():
            for v in values if isinstance(values, list) else [values]:
                yield kind, v


def structure_findings(doc: Document) -> list[Finding]:
    """What AWS rejects and parliament does not look at."""
    found = []
    for i, s in enumerate(_statements(doc.policy)):
        where = s.get("Sid", f"statement {i}")
        has_principal = "Principal" in s or "NotPrincipal" in s
        if doc.kind == IDENTITY and has_principal:
            found.append(Finding(doc.label, "PRINCIPAL_IN_IDENTITY_POLICY", where))
        if doc.kind != IDENTITY and not has_principal:
            found.append(Finding(doc.label, "NO_PRINCIPAL", where))
        if doc.kind in (TRUST, REPOSITORY) and ("Resource" in s or "NotResource" in s):
            found.append(Finding(doc.label, "RESOURCE_IN_" + doc.kind.upper() + "_POLICY", where))
        for kind, value in _principals(s):
            if kind == "Service" and not SERVICE_PRINCIPAL.fullmatch(value):
                found.append(Finding(doc.label, "BAD_SERVICE_PRINCIPAL", f"{where}: {value}"))
    return found


def size_findings(docs: list[Document]) -> list[Finding]:
    """IAM counts a role's inline policies together; every other document alone."""
    sizes: dict[str, tuple[int, int]] = {}
    for doc in docs:
        owner = doc.resource.property_dependencies.get("role", [doc.resource.urn]) if doc.kind == IDENTITY else [doc.resource.urn]
        key = f"{doc.label}" if len(owner) != 1 or doc.kind != IDENTITY else f"inline policies of {owner[0].rsplit('::', 1)[-1]}"
        used, quota = sizes.get(key, (0, doc.quota))
        sizes[key] = (used + len(re.sub(r"\s", "", json.dumps(doc.policy))), quota)
    return [Finding(key, "TOO_LARGE", f"{used} characters, quota {quota}") for key, (used, quota) in sizes.items() if used > quota]


def parliament_findings(doc: Document) -> list[Finding]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        analysed = parliament.analyze_policy_string(json.dumps(_as_parliament_sees_it(doc)), include_community_auditors=True)
    return [Finding(doc.label, f.issue, _detail(f)) for f in analysed.findings]


def _detail(f: Any) -> str:
    detail = f.detail if isinstance(f.detail, str) else json.dumps(f.detail, sort_keys=True)
    if not detail and isinstance(f.location, dict) and f.location.get("actions"):
        detail = json.dumps(sorted(f.location["actions"]))  # the community auditors' findings
    sid = (f.location or {}).get("sid") if isinstance(f.location, dict) else None
    return f"[{sid}] {detail}" if sid else detail


def lint(cap: harness.Capture) -> list[Finding]:
    docs = documents(cap)
    found = size_findings(docs)
    for doc in docs:
        found += structure_findings(doc) + parliament_findings(doc)
    return found


# ---------------------------------------------------------------- the allowlist


@dataclass(frozen=True)
class Allowed:
    policy: str
    """``<resource type> <name glob>``"""
    finding: str
    match: str
    """Text the finding's detail must contain, in any case ("" for any)."""
    reason: str

    def covers(self, f: Finding) -> bool:
        return f.issue == self.finding and fnmatch.fnmatchcase(f.label, self.policy) and self.match.lower() in f.detail.lower()


def allowlist(path: Path = ALLOWLIST) -> list[Allowed]:
    entries = yaml.safe_load(path.read_text()) or []
    allowed = []
    for e in entries:
        if set(e) - {"policy", "finding", "match", "reason"} or not e.get("reason", "").strip():
            raise ValueError(f"{path.name}: each entry has policy, finding, reason and optionally match: {e}")
        allowed.append(Allowed(e["policy"], e["finding"], e.get("match", ""), e["reason"]))
    return allowed


def not_allowed(findings: list[Finding], allowed: list[Allowed]) -> list[Finding]:
    return [f for f in findings if not any(a.covers(f) for a in allowed)]
