"""The independent scanner (issue 15, part 6): checkov over the offline plan, converted to the Terraform
plan JSON it reads (tools/scan.py). The slow part, one checkov process, is the session fixture
``scanned`` (tests/conftest.py)."""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT, plan
from tools import harness, scan


@pytest.fixture(scope="module")
def allowed() -> list[scan.Allowed]:
    return scan.allowlist()


@pytest.fixture(scope="module")
def eks() -> harness.Capture:
    return plan("staging-eks")


def _listing(findings: list[scan.Finding]) -> str:
    return "\n".join(f"  {f.check:<12} {f.resource}\n  {'':<12} {f.name}" for f in findings)


# ---------------------------------------------------------------- the gate


def test_prod_has_no_finding_outside_the_allowlist(scanned, allowed):
    result = scanned["prod"]
    # GIVEN checkov read the whole plan (hundreds of checks passed: the conversion is not empty)
    assert len(result.passed) > 500
    # THEN every finding is argued in tests/scan_allowlist.yaml
    outside = result.not_allowed(allowed)
    assert outside == [], (
        f"checkov {result.checkov} finds {len(outside)} issues in the prod plan that tests/scan_allowlist.yaml does not argue; "
        f"fix them, or add an entry with the reason and the compensating control (`python -m tools.scan --stack prod`):\n{_listing(outside)}"
    )


def test_every_allowlist_entry_still_matches_a_finding(scanned, allowed):
    unused = [a for a in allowed if not any(a.covers(f, "prod") for f in scanned["prod"].findings)]
    assert unused == [], "stale entries in tests/scan_allowlist.yaml (no finding left): " + ", ".join(f"{a.check} {a.resource}" for a in unused)


def test_allowlist_entries_are_argued_and_name_known_types(allowed):
    assert allowed, "tests/scan_allowlist.yaml is empty"
    for entry in allowed:
        assert re.fullmatch(r"CKV2?_AWS_\d+", entry.check), entry
        type_, _, name = entry.resource.partition(" ")
        assert type_ in scan.TF_TYPES and name, f"{entry.resource}: '<Pulumi type> <name glob>'"
        assert len(entry.reason) > 40 and len(entry.control) > 40, f"{entry.check} {entry.resource}: argue the reason and the control"


def test_checkov_is_the_pinned_version(scanned):
    pins = (ROOT / "requirements-scan.txt").read_text().split()
    assert f"checkov=={scan.CHECKOV_VERSION}" in pins
    assert scanned["prod"].checkov == scan.CHECKOV_VERSION


# ---------------------------------------------------------------- nothing left unscanned


@pytest.mark.parametrize("stack", ["dev", "staging", "prod", "prod-running", "staging-eks"])
def test_every_type_and_field_of_every_stack_is_mapped(request, plans, stack):
    cap = {"prod-running": lambda: request.getfixturevalue("prod"), "staging-eks": lambda: request.getfixturevalue("eks")}.get(stack, lambda: plans[stack])()
    # GIVEN every type of the plan has a Terraform name or a reason it has nothing to scan
    assert scan.unmapped(cap) == []
    # THEN every AWS resource of the plan is in the Terraform plan, once
    aws = [r for r in cap.resources if r.custom and r.type.startswith("aws:")]
    converted = scan.tf_plan(cap)["planned_values"]["root_module"]["resources"]
    assert len(converted) == len(aws) and len({r["address"] for r in converted}) == len(aws)
    others = {r.type for r in cap.resources if r.custom} - set(scan.TF_TYPES)
    assert all(any(t.startswith(prefix) for prefix in scan.NOT_SCANNED) for t in others), others


def test_an_unknown_type_or_list_field_stops_the_scan(monkeypatch):
    with pytest.raises(scan.UnmappedError, match="aws:s3/bucketInventory:BucketInventory"):
        scan.tf_type("aws:s3/bucketInventory:BucketInventory")
    # a type the table knows, with a list field whose Terraform name LIST_FIELDS lacks
    monkeypatch.setitem(scan.TF_TYPES, "aws:s3/bucketCorsConfiguration:BucketCorsConfiguration", "aws_s3_bucket_cors_configuration")
    cors = _resource("aws:s3/bucketCorsConfiguration:BucketCorsConfiguration", "c", {"bucket": "b", "corsRules": [{"allowedMethods": ["GET"]}]})
    problems = scan.unmapped(harness.Capture("test", [_resource("aws:s3/bucket:Bucket", "b", {}), cors]))
    assert len(problems) == 1 and "corsRules" in problems[0] and "LIST_FIELDS" in problems[0]


# ---------------------------------------------------------------- the Terraform plan shape


def _resource(type_: str, name: str, inputs: dict, deps: dict[str, list[str]] | None = None) -> harness.Resource:
    deps = deps or {}
    urn = f"urn:pulumi:test::platform::{type_}::{name}"
    return harness.Resource(urn, type_, name, "", True, inputs, sorted({u for us in deps.values() for u in us}), deps, {})


def test_the_converter_writes_the_terraform_plan_checkov_reads():
    bucket = _resource("aws:s3/bucket:Bucket", "logs", {"bucket": "logs-bucket", "tags": {"Name": "logs", "costCenter": "ops"}})
    sse = _resource(
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "logs-encryption",
        {"bucket": "logs-bucket", "rules": [{"applyServerSideEncryptionByDefault": {"sseAlgorithm": "AES256"}, "bucketKeyEnabled": True}]},
        {"bucket": [bucket.urn], "rules": []},
    )
    sg_a, sg_b = (_resource("aws:ec2/securityGroup:SecurityGroup", n, {"vpcId": "vpc-1", "egress": []}) for n in ("a", "b"))
    service = _resource(
        "aws:ecs/service:Service",
        "api",
        {
            "name": "api",
            "desiredCount": 2.0,
            "networkConfiguration": {
                "assignPublicIp": False,
                "subnets": ["subnet-1"],
                "securityGroups": [harness._fake_id(sg_a.type, "a"), harness._fake_id(sg_b.type, "b")],
            },
            "loadBalancers": [{"containerName": "api", "containerPort": 3000.0, "targetGroupArn": "arn:tg"}],
        },
        {"networkConfiguration": [sg_a.urn, sg_b.urn], "name": [], "desiredCount": [], "loadBalancers": []},
    )
    doc = scan.tf_plan(harness.Capture("test", [bucket, sse, sg_a, sg_b, service]), region="us-east-1")

    planned = {r["address"]: r for r in doc["planned_values"]["root_module"]["resources"]}
    config = {r["address"]: r for r in doc["configuration"]["root_module"]["resources"]}
    assert set(planned) == {
        "aws_s3_bucket.logs",
        "aws_s3_bucket_server_side_encryption_configuration.logs-encryption",
        "aws_security_group.a",
        "aws_security_group.b",
        "aws_ecs_service.api",
    }
    assert planned["aws_s3_bucket.logs"] | {"values": None} == {
        "address": "aws_s3_bucket.logs",
        "mode": "managed",
        "type": "aws_s3_bucket",
        "name": "logs",
        "provider_name": "registry.terraform.io/hashicorp/aws",
        "schema_version": 0,
        "values": None,
        "sensitive_values": {},
    }
    # a map keeps its keys (tag keys are data)
    assert planned["aws_s3_bucket.logs"]["values"] == {"bucket": "logs-bucket", "tags": {"Name": "logs", "costCenter": "ops"}}
    # a repeated block gets Terraform's singular name; a flattened MaxItems=1 block is a list of one; the
    # bucket AWS names is the Terraform reference, in the value and in the configuration's expressions
    assert planned["aws_s3_bucket_server_side_encryption_configuration.logs-encryption"]["values"] == {
        "bucket": "aws_s3_bucket.logs.bucket",
        "rule": [{"apply_server_side_encryption_by_default": [{"sse_algorithm": "AES256"}], "bucket_key_enabled": True}],
    }
    assert config["aws_s3_bucket_server_side_encryption_configuration.logs-encryption"]["expressions"] == {
        "bucket": {"references": ["aws_s3_bucket.logs.bucket", "aws_s3_bucket.logs"]}
    }
    # references inside a nested block, one per security group; numbers are integers again
    api = planned["aws_ecs_service.api"]["values"]
    assert api["network_configuration"] == [
        {"assign_public_ip": False, "subnets": ["subnet-1"], "security_groups": ["aws_security_group.a.id", "aws_security_group.b.id"]}
    ]
    assert api["load_balancer"] == [{"container_name": "api", "container_port": 3000, "target_group_arn": "arn:tg"}]
    assert api["desired_count"] == 2 and isinstance(api["desired_count"], int)
    assert config["aws_ecs_service.api"]["expressions"]["network_configuration"]["references"] == [
        "aws_security_group.a.id",
        "aws_security_group.a",
        "aws_security_group.b.id",
        "aws_security_group.b",
    ]
    # every resource is created by the plan, as `terraform show -json` prints a first apply
    assert {c["address"]: c["change"]["actions"] for c in doc["resource_changes"]} == {address: ["create"] for address in planned}
    assert doc["configuration"]["provider_config"]["aws"]["expressions"]["region"] == {"constant_value": "us-east-1"}


def test_a_connected_check_follows_the_references(scanned):
    def public_access_block(result: scan.Scan, bucket: str) -> str:
        resource = f"aws:s3/bucket:Bucket {bucket}"
        if any(f.check == "CKV2_AWS_6" and f.resource == resource for f in result.findings):
            return "failed"
        assert any(f.check == "CKV2_AWS_6" and f.resource == resource for f in result.passed), bucket
        return "passed"

    # GIVEN prod, where each bucket's public access block references its bucket: CKV2_AWS_6 passes
    assert {b: public_access_block(scanned["prod"], b) for b in ("alb-logs", "redis-export-export", "redis-export-dr")} == dict.fromkeys(
        ("alb-logs", "redis-export-export", "redis-export-dr"), "passed"
    )
    # WHEN one block is removed and another loses its reference (its bucket is a literal name), THEN both fail
    assert {b: public_access_block(scanned["prod-cut"], b) for b in ("alb-logs", "redis-export-export", "redis-export-dr")} == {
        "alb-logs": "failed",
        "redis-export-export": "failed",
        "redis-export-dr": "passed",
    }
