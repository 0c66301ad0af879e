"""Redis snapshots copied to the DR region: the export function's logic (against botocore's service
models, through Stubber) and what the prod plan declares for it."""

from __future__ import annotations

import datetime as dt
import json

import botocore.session
import pytest
from botocore.stub import Stubber

from components import redis_export
from components.lambdas import redis_export as fn
from stacks.config import load_platform
from tests.conftest import ROOT

NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
GROUP = "offerhub-prod"
BUCKET = "redis-export-export-abc"
INTERVAL = dt.timedelta(minutes=120)


def client(service: str):
    return botocore.session.get_session().create_client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


class Clients:
    """Stubbed ElastiCache and S3 clients: every expected request is checked against the service model."""

    def __init__(self) -> None:
        self.ec, self.s3 = client("elasticache"), client("s3")
        self.ec_stub, self.s3_stub = Stubber(self.ec), Stubber(self.s3)

    def bucket_has(self, *names: str) -> None:
        contents = [{"Key": f"{n}{fn.EXPORT_SUFFIX}"} for n in names]
        self.s3_stub.add_response(
            "list_objects_v2", {"Contents": contents, "KeyCount": len(contents), "IsTruncated": False}, {"Bucket": BUCKET, "Prefix": f"dr-{GROUP}-"}
        )

    def snapshots(self, *snaps: tuple[str, str]) -> None:
        self.ec_stub.add_response(
            "describe_snapshots",
            {"Snapshots": [{"SnapshotName": n, "SnapshotStatus": s} for n, s in snaps]},
            {"ReplicationGroupId": GROUP, "SnapshotSource": "manual", "MaxRecords": 50},
        )

    def expect(self, operation: str, params: dict) -> None:
        self.ec_stub.add_response(operation, {}, params)

    def run(self, now: dt.datetime = NOW) -> list[str]:
        with self.ec_stub, self.s3_stub:
            done = fn.reconcile(self.ec, self.s3, GROUP, BUCKET, INTERVAL, now)
            self.ec_stub.assert_no_pending_responses()
            self.s3_stub.assert_no_pending_responses()
        return done


def name_at(t: dt.datetime) -> str:
    return fn.snapshot_name(GROUP, t)


def test_first_run_takes_a_snapshot():
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.expect("create_snapshot", {"ReplicationGroupId": GROUP, "SnapshotName": "dr-offerhub-prod-202611221000"})
    assert c.run() == ["creating dr-offerhub-prod-202611221000"]


def test_available_snapshot_is_exported_and_no_new_one_before_the_interval():
    c = Clients()
    recent = name_at(NOW - HOUR)
    c.bucket_has()
    c.snapshots((recent, "available"))
    c.expect("copy_snapshot", {"SourceSnapshotName": recent, "TargetSnapshotName": recent, "TargetBucket": BUCKET})
    assert c.run() == [f"exporting {recent} to s3://{BUCKET}"]


def test_exported_snapshot_is_deleted_and_the_next_one_taken_when_due():
    c = Clients()
    old = name_at(NOW - 2 * HOUR)
    c.bucket_has(name_at(NOW - 4 * HOUR), old)
    c.snapshots((old, "available"), ("someone-elses-manual-backup", "available"))
    c.expect("delete_snapshot", {"SnapshotName": old})
    c.expect("create_snapshot", {"ReplicationGroupId": GROUP, "SnapshotName": name_at(NOW)})
    assert c.run() == [f"deleted {old} (exported)", f"creating {name_at(NOW)}"]


def test_the_bucket_remembers_the_last_export_after_its_snapshot_is_gone():
    c = Clients()
    c.bucket_has(name_at(NOW - HOUR))
    c.snapshots()
    assert c.run() == []


def test_snapshot_still_being_created_or_exported_is_left_alone():
    c = Clients()
    c.bucket_has()
    c.snapshots((name_at(NOW - 3 * HOUR), "exporting"), (name_at(NOW - 10 * dt.timedelta(minutes=1)), "creating"))
    assert c.run() == []


def test_export_already_running_is_not_an_error():
    c = Clients()
    busy = name_at(NOW - HOUR)
    c.bucket_has()
    c.snapshots((busy, "available"))
    c.ec_stub.add_client_error(
        "copy_snapshot",
        service_error_code="InvalidSnapshotState",
        expected_params={"SourceSnapshotName": busy, "TargetSnapshotName": busy, "TargetBucket": BUCKET},
    )
    assert c.run() == [f"{busy} is busy (an export is running)"]


def test_failing_exports_stop_new_snapshots_and_fail_the_run():
    c = Clients()
    stuck = [name_at(NOW - k * 3 * HOUR) for k in (3, 2, 1)]
    c.bucket_has()
    c.snapshots(*((n, "failed") for n in stuck))
    with pytest.raises(RuntimeError, match="3 snapshots not exported"):
        c.run()


def test_one_failing_group_does_not_stop_the_others(monkeypatch):
    calls: list[str] = []

    def reconcile(ec, s3, group, bucket, interval, now):
        calls.append(group)
        if group == "a":
            raise RuntimeError("broken")
        return [f"ok {group}"]

    monkeypatch.setattr(fn, "reconcile", reconcile)
    with pytest.raises(RuntimeError, match="a: broken"):
        fn.run(None, None, ["a", "b"], BUCKET, INTERVAL, NOW)
    assert calls == ["a", "b"]


def test_interval_keeps_under_elasticache_daily_manual_snapshot_limit():
    recovery = load_platform("prod", ROOT).stack_config.recovery
    assert 24 * 60 / recovery.redis_export_minutes <= 20


# --- the prod plan ---------------------------------------------------------------------------------

FUNCTION = "aws:lambda/function:Function"
BUCKET_TYPE = "aws:s3/bucket:Bucket"


def in_export(cap, type_: str):
    return [r for r in cap.of_type(type_) if cap.top_component(r.urn) == "redis-export"]


def test_only_stacks_with_a_dr_region_export(plans):
    assert not in_export(plans["dev"], FUNCTION) and not in_export(plans["staging"], FUNCTION)
    assert len(in_export(plans["prod"], FUNCTION)) == 1


def test_function_exports_every_cache_of_the_stack(prod):
    env = prod.one(FUNCTION).inputs["environment"]["variables"]
    groups = {r.inputs["replicationGroupId"] for r in prod.of_type("aws:elasticache/replicationGroup:ReplicationGroup")}
    assert set(env["REPLICATION_GROUPS"].split(",")) == groups
    export_bucket = prod.one(BUCKET_TYPE, "redis-export-export")
    assert env["BUCKET"].startswith("redis-export-export") and export_bucket.inputs["region"] == "us-east-1"
    assert env["INTERVAL_MINUTES"] == "120"
    code = prod.one(FUNCTION).inputs["code"]["assets"]
    assert list(code) == ["redis_export.py"] and code["redis_export.py"]["path"] == "components/lambdas/redis_export.py"
    assert prod.one(FUNCTION).inputs["handler"] == "redis_export.handler" and hasattr(fn, "handler")


def test_copies_land_in_the_dr_region(prod):
    dr = prod.one(BUCKET_TYPE, "redis-export-dr")
    assert dr.inputs["region"] == "us-west-2" and dr.options["protect"] is True
    replication = prod.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    rule = replication.inputs["rules"][0]
    assert rule["status"] == "Enabled" and rule["deleteMarkerReplication"]["status"] == "Disabled"
    assert replication.property_dependencies["rules"] == [dr.urn]
    # S3 refuses replication until both buckets are versioned
    versioning = {r.urn for r in in_export(prod, "aws:s3/bucketVersioning:BucketVersioning")}
    assert len(versioning) == 2 and versioning <= set(prod.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig").dependencies)


def test_buckets_private_tls_only_and_expiring(prod):
    for name, region in (("redis-export-export", "us-east-1"), ("redis-export-dr", "us-west-2")):
        block = prod.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{name}-private").inputs
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
        policy = json.loads(prod.one("aws:s3/bucketPolicy:BucketPolicy", f"{name}-policy").inputs["policy"])
        deny, allow = policy["Statement"]
        assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        assert allow["Principal"] == {"Service": f"{region}.elasticache-snapshot.amazonaws.com"}
        acl = prod.one("aws:s3/bucketAcl:BucketAcl", f"{name}-acl").inputs["accessControlPolicy"]
        granted = {g["permission"] for g in acl["grants"] if g["grantee"]["id"] == redis_export.ELASTICACHE_CANONICAL_ID}
        assert granted == {"READ", "WRITE", "READ_ACP"}
        life = prod.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", f"{name}-lifecycle").inputs["rules"][0]
        assert life["expiration"]["days"] == 7 and life["noncurrentVersionExpiration"]["noncurrentDays"] == 1


def test_function_role_reaches_only_our_snapshots_and_bucket(prod):
    role_policy = next(r for r in in_export(prod, "aws:iam/rolePolicy:RolePolicy") if r.name == "redis-export-function")
    statements = {s["Sid"]: s for s in json.loads(role_policy.inputs["policy"])["Statement"]}
    wildcard = {sid for sid, s in statements.items() if s["Resource"] == "*"}
    assert wildcard == {"List", "ExportCaller"}
    assert statements["List"]["Action"] == "elasticache:DescribeSnapshots"
    assert set(statements["ExportCaller"]["Action"]) == {"s3:GetBucketLocation", "s3:ListAllMyBuckets"}
    assert statements["ExportAndDelete"]["Resource"].endswith(":snapshot:dr-*")
    groups = {r.rsplit(":", 1)[-1] for r in statements["Snapshot"]["Resource"] if ":replicationgroup:" in r}
    assert groups == {r.inputs["replicationGroupId"] for r in prod.of_type("aws:elasticache/replicationGroup:ReplicationGroup")}
    assert statements["SnapshotKey"]["Condition"] == {"StringEquals": {"kms:ViaService": "elasticache.us-east-1.amazonaws.com"}}


def test_a_failing_export_alarms(prod):
    alarm = next(r for r in in_export(prod, "aws:cloudwatch/metricAlarm:MetricAlarm"))
    assert alarm.inputs["metricName"] == "Errors" and alarm.inputs["namespace"] == "AWS/Lambda"
    assert alarm.inputs["alarmActions"] == alarm.inputs["okActions"] and alarm.inputs["alarmActions"][0].startswith("arn:aws:sns:")
    schedule = prod.one("aws:scheduler/schedule:Schedule").inputs
    assert schedule["scheduleExpression"] == f"rate({redis_export.RUN_EVERY_MINUTES} minutes)"
    assert schedule["target"]["retryPolicy"]["maximumRetryAttempts"] == 0


def test_function_reserves_no_concurrency(prod):
    # accounts with a low concurrency quota (new ones often have 10) refuse any reservation: 100 stay unreserved
    inputs = prod.one(FUNCTION).inputs
    assert inputs.get("reservedConcurrentExecutions") in (None, -1)
    assert inputs["timeout"] == redis_export.TIMEOUT_SECONDS


def test_runs_are_kept_apart_by_timing_instead(prod):
    # GIVEN the schedule fires on the dot, and neither the scheduler nor Lambda retries a run
    schedule = prod.one("aws:scheduler/schedule:Schedule").inputs
    assert schedule["flexibleTimeWindow"] == {"mode": "OFF"} and schedule["target"]["retryPolicy"]["maximumRetryAttempts"] == 0
    invoke = in_export(prod, "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig")
    assert len(invoke) == 1 and invoke[0].inputs["maximumRetryAttempts"] == 0
    assert invoke[0].inputs["functionName"] == prod.one(FUNCTION).inputs["name"]
    # THEN the latest a run can start (queued for the maximum event age) plus its timeout ends before the next one
    age = invoke[0].inputs["maximumEventAgeInSeconds"]
    assert age + prod.one(FUNCTION).inputs["timeout"] < redis_export.RUN_EVERY_MINUTES * 60
    # and Lambda accepts the event age (PutFunctionEventInvokeConfig's model: 60 s to 6 h)
    limits = botocore.session.get_session().get_service_model("lambda").operation_model("PutFunctionEventInvokeConfig").input_shape.members
    assert limits["MaximumEventAgeInSeconds"].metadata["min"] <= age <= limits["MaximumEventAgeInSeconds"].metadata["max"]
