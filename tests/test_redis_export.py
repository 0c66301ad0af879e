"""Redis snapshots copied to the DR region: the export function's logic (against botocore's service
models, through Stubber) and what the prod plan declares for it."""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import re
import shutil

import botocore.session
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from components import redis_export
from components.lambdas import redis_export as fn
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, load_stack_yaml, plan
from tools.harness import ACCOUNT

NOW = dt.datetime(2026, 11, 22, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
GROUP = "offerhub-prod"
PRIMARY, REPLICA = f"{GROUP}-001", f"{GROUP}-002"
BUCKET = "redis-export-export-abc"
INTERVAL = dt.timedelta(minutes=120)
LIST_SNAPSHOTS = {"SnapshotSource": "user", "MaxRecords": 50}


def client(service: str):
    return botocore.session.get_session().create_client(service, region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")


def documented_snapshot_sources() -> set[str]:
    """The values DescribeSnapshots' SnapshotSource filter takes, read from its documentation in the model
    (the model has no enum for it, so Stubber's validation lets any string through)."""
    model = botocore.session.get_session().get_service_model("elasticache")
    doc = model.shape_for("DescribeSnapshotsMessage").members["SnapshotSource"].documentation
    return set(re.findall(r"set to <code>(\w+)</code>", doc))


class Clients:
    """Stubbed ElastiCache, S3 and CloudWatch clients: every expected request is checked against the service
    model, and every DescribeSnapshots request sent against the SnapshotSource values the model documents."""

    def __init__(self) -> None:
        self.ec, self.s3, self.cw = client("elasticache"), client("s3"), client("cloudwatch")
        self.ec_stub, self.s3_stub, self.cw_stub = Stubber(self.ec), Stubber(self.s3), Stubber(self.cw)
        self.sent: list[tuple[str, dict]] = []
        self.ec.meta.events.register("before-parameter-build.elasticache", lambda params, model, **_: self.sent.append((model.name, dict(params))))

    def bucket_has(self, *names: str) -> None:
        contents = [{"Key": f"{n}{fn.EXPORT_SUFFIX}"} for n in names]
        self.s3_stub.add_response(
            "list_objects_v2", {"Contents": contents, "KeyCount": len(contents), "IsTruncated": False}, {"Bucket": BUCKET, "Prefix": f"dr-{GROUP}-"}
        )

    def publishes_age(self, minutes: float, group: str = GROUP) -> None:
        datum = {
            "MetricName": "NewestExportAgeMinutes",
            "Dimensions": [{"Name": "ReplicationGroupId", "Value": group}],
            "Timestamp": NOW,
            "Value": minutes,
            "Unit": "None",
        }
        self.cw_stub.add_response("put_metric_data", {}, {"Namespace": "Platform/RedisExport", "MetricData": [datum]})

    def snapshots(self, *snaps: tuple[str, str], marker: str | None = None, next_marker: str | None = None) -> None:
        """One DescribeSnapshots page; ``marker`` is the one the request carries, ``next_marker`` the one the page returns."""
        response: dict = {"Snapshots": [{"SnapshotName": n, "SnapshotStatus": s, "SnapshotSource": "manual"} for n, s in snaps]}
        if next_marker:
            response["Marker"] = next_marker
        self.ec_stub.add_response("describe_snapshots", response, {**LIST_SNAPSHOTS, **({"Marker": marker} if marker else {})})

    def group(
        self,
        members: tuple[tuple[str, str], ...] = ((PRIMARY, "primary"), (REPLICA, "replica")),
        status: str = "available",
        window: str = "03:30-04:30",
        retention: int = 7,
        cluster_enabled: bool = False,
    ) -> None:
        nodes = [{"CacheClusterId": c, "CacheNodeId": "0001", "CurrentRole": role} for c, role in members]
        group = {
            "ReplicationGroupId": GROUP,
            "Status": status,
            "MemberClusters": [c for c, _ in members],
            "NodeGroups": [{"NodeGroupId": "0001", "Status": status, "NodeGroupMembers": nodes}],
            "SnapshotWindow": window,
            "SnapshotRetentionLimit": retention,
            "ClusterEnabled": cluster_enabled,
        }
        self.ec_stub.add_response("describe_replication_groups", {"ReplicationGroups": [group]}, {"ReplicationGroupId": GROUP})

    def expect(self, operation: str, params: dict) -> None:
        self.ec_stub.add_response(operation, {}, params)

    def run(self, now: dt.datetime = NOW) -> list[str]:
        with self.ec_stub, self.s3_stub, self.cw_stub:
            done = fn.reconcile(self.ec, self.s3, self.cw, GROUP, BUCKET, INTERVAL, now)
            self.ec_stub.assert_no_pending_responses()
            self.s3_stub.assert_no_pending_responses()
            self.cw_stub.assert_no_pending_responses()
        allowed = documented_snapshot_sources()
        for operation, params in self.sent:
            if operation == "DescribeSnapshots":
                assert params.get("SnapshotSource") in allowed, f"SnapshotSource {params.get('SnapshotSource')!r}: the model documents {sorted(allowed)}"
        return done


def name_at(t: dt.datetime) -> str:
    return fn.snapshot_name(GROUP, t)


NO_EXPORT = f"{GROUP} has no export yet"


def test_snapshot_source_filter_is_a_value_the_api_documents():
    # GIVEN the values DescribeSnapshotsMessage.SnapshotSource documents: "system" (automatic), "user" (manual)
    assert documented_snapshot_sources() == {"system", "user"}
    # WHEN a run lists the snapshots THEN it asks for the manual ones by a documented value (Clients.run checks
    # every request of every test here the same way)
    c = Clients()
    c.bucket_has(name_at(NOW - HOUR))
    c.publishes_age(60.0)
    c.snapshots()
    c.run()
    assert [p["SnapshotSource"] for op, p in c.sent if op == "DescribeSnapshots"] == ["user"]


def test_first_run_takes_a_snapshot_of_the_replica():
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group()
    c.expect("create_snapshot", {"CacheClusterId": REPLICA, "SnapshotName": "dr-offerhub-prod-202611221000"})
    assert c.run() == [NO_EXPORT, f"creating dr-offerhub-prod-202611221000 of {REPLICA}"]


def test_after_a_failover_the_new_replica_is_snapshotted():
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group(members=((PRIMARY, "replica"), (REPLICA, "primary")))
    c.expect("create_snapshot", {"CacheClusterId": PRIMARY, "SnapshotName": name_at(NOW)})
    assert c.run()[-1] == f"creating {name_at(NOW)} of {PRIMARY}"


def test_a_group_of_one_node_is_snapshotted_from_that_node():
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group(members=((PRIMARY, "primary"),))
    c.expect("create_snapshot", {"CacheClusterId": PRIMARY, "SnapshotName": name_at(NOW)})
    assert c.run()[-1] == f"creating {name_at(NOW)} of {PRIMARY}"


def test_a_cluster_mode_enabled_group_is_snapshotted_as_a_whole():
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group(cluster_enabled=True)
    c.expect("create_snapshot", {"ReplicationGroupId": GROUP, "SnapshotName": name_at(NOW)})
    assert c.run()[-1] == f"creating {name_at(NOW)} of {GROUP}"


def test_every_page_of_snapshots_is_read():
    # GIVEN our snapshot is on the second page of the manual snapshots
    c = Clients()
    ours = name_at(NOW - HOUR)
    c.bucket_has()
    c.snapshots(("someone-elses-manual-backup", "available"), next_marker="page-2")
    c.snapshots((ours, "available"), marker="page-2")
    c.expect("copy_snapshot", {"SourceSnapshotName": ours, "TargetSnapshotName": ours, "TargetBucket": BUCKET})
    # THEN it is exported (and, being recent, no other is taken)
    assert c.run() == [NO_EXPORT, f"exporting {ours} to s3://{BUCKET}"]


def test_available_snapshot_is_exported_and_no_new_one_before_the_interval():
    c = Clients()
    recent = name_at(NOW - HOUR)
    c.bucket_has()
    c.snapshots((recent, "available"))
    c.expect("copy_snapshot", {"SourceSnapshotName": recent, "TargetSnapshotName": recent, "TargetBucket": BUCKET})
    assert c.run() == [NO_EXPORT, f"exporting {recent} to s3://{BUCKET}"]


def test_exported_snapshot_is_deleted_and_the_next_one_taken_when_due():
    c = Clients()
    old = name_at(NOW - 2 * HOUR)
    c.bucket_has(name_at(NOW - 4 * HOUR), old)
    c.publishes_age(120.0)
    # a snapshot of ours of either node (the replica before a failover), among others' manual snapshots
    c.snapshots((old, "available"), ("someone-elses-manual-backup", "available"), (f"dr-{GROUP}-x-202611220800", "available"))
    c.expect("delete_snapshot", {"SnapshotName": old})
    c.group()
    c.expect("create_snapshot", {"CacheClusterId": REPLICA, "SnapshotName": name_at(NOW)})
    assert c.run() == [f"deleted {old} (exported)", f"creating {name_at(NOW)} of {REPLICA}"]


def test_newest_export_age_is_published_in_minutes():
    c = Clients()
    c.bucket_has(name_at(NOW - 5 * HOUR), name_at(NOW - 150 * dt.timedelta(minutes=1)), "dr-offerhub-prod-x-202611220955")
    c.publishes_age(150.0)
    c.snapshots()
    c.group()
    c.expect("create_snapshot", {"CacheClusterId": REPLICA, "SnapshotName": name_at(NOW)})
    c.run()


def test_the_bucket_remembers_the_last_export_after_its_snapshot_is_gone():
    c = Clients()
    c.bucket_has(name_at(NOW - HOUR))
    c.publishes_age(60.0)
    c.snapshots()
    assert c.run() == []


def test_snapshot_still_being_created_or_exported_is_left_alone():
    c = Clients()
    c.bucket_has()
    c.snapshots((name_at(NOW - 3 * HOUR), "exporting"), (name_at(NOW - 10 * dt.timedelta(minutes=1)), "creating"))
    assert c.run() == [NO_EXPORT]


@pytest.mark.parametrize(
    ("window", "hhmm", "inside"),
    [
        ("03:30-04:30", "03:29", False),
        ("03:30-04:30", "03:30", True),
        ("03:30-04:30", "04:29", True),
        ("03:30-04:30", "04:30", False),
        ("23:30-00:30", "23:29", False),
        ("23:30-00:30", "23:45", True),
        ("23:30-00:30", "00:10", True),
        ("23:30-00:30", "00:30", False),
    ],
)
def test_backup_window_is_utc_and_may_cross_midnight(window, hhmm, inside):
    hour, minute = map(int, hhmm.split(":"))
    assert fn.in_window(window, NOW.replace(hour=hour, minute=minute)) is inside
    # an aware time in another zone is the same instant
    assert fn.in_window(window, NOW.replace(hour=hour, minute=minute).astimezone(dt.timezone(dt.timedelta(hours=-3)))) is inside


def test_no_snapshot_inside_the_backup_window():
    at = NOW.replace(hour=3, minute=45)
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group(window="03:30-04:30")
    assert c.run(at) == [NO_EXPORT, f"{GROUP} is in its backup window (03:30-04:30 UTC): no snapshot this run"]


def test_backup_window_does_not_matter_without_automatic_backups():
    at = NOW.replace(hour=3, minute=45)
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group(window="03:30-04:30", retention=0)
    c.expect("create_snapshot", {"CacheClusterId": REPLICA, "SnapshotName": name_at(at)})
    assert c.run(at)[-1] == f"creating {name_at(at)} of {REPLICA}"


@pytest.mark.parametrize("status", ["modifying", "snapshotting"])
def test_no_snapshot_while_the_group_is_not_available(status):
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group(status=status)
    assert c.run() == [NO_EXPORT, f"{GROUP} is {status}: no snapshot this run"]


@pytest.mark.parametrize("code", ["InvalidReplicationGroupState", "InvalidCacheClusterState"])
def test_a_group_or_node_that_became_busy_is_not_an_error(code):
    # GIVEN CreateSnapshot's two "not in the available state" errors (a pulumi up, an automatic backup)
    errors = {e.metadata["error"]["code"] for e in client("elasticache").meta.service_model.operation_model("CreateSnapshot").error_shapes}
    assert code in errors
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group()
    c.ec_stub.add_client_error("create_snapshot", service_error_code=code, expected_params={"CacheClusterId": REPLICA, "SnapshotName": name_at(NOW)})
    assert c.run() == [NO_EXPORT, f"{GROUP} is busy ({code}): no snapshot this run"]


def test_a_snapshot_name_another_run_took_is_not_an_error():
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group()
    c.ec_stub.add_client_error(
        "create_snapshot", service_error_code="SnapshotAlreadyExistsFault", expected_params={"CacheClusterId": REPLICA, "SnapshotName": name_at(NOW)}
    )
    assert c.run() == [NO_EXPORT, f"{name_at(NOW)} already exists (another run took it)"]


def test_snapshot_quota_fails_the_run():
    # a quota does not pass with the next run as a state does: the run fails and the errors alarm fires
    c = Clients()
    c.bucket_has()
    c.snapshots()
    c.group()
    c.ec_stub.add_client_error(
        "create_snapshot", service_error_code="SnapshotQuotaExceededFault", expected_params={"CacheClusterId": REPLICA, "SnapshotName": name_at(NOW)}
    )
    with pytest.raises(ClientError, match="SnapshotQuotaExceeded"):
        c.run()


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
    assert c.run() == [NO_EXPORT, f"{busy} is busy (an export is running)"]


def test_failing_exports_stop_new_snapshots_and_fail_the_run():
    c = Clients()
    stuck = [name_at(NOW - k * 3 * HOUR) for k in (3, 2, 1)]
    c.bucket_has()
    c.snapshots(*((n, "failed") for n in stuck))
    with pytest.raises(RuntimeError, match="3 snapshots not exported"):
        c.run()


def test_one_failing_group_does_not_stop_the_others(monkeypatch):
    calls: list[str] = []

    def reconcile(ec, s3, cw, group, bucket, interval, now):
        calls.append(group)
        if group == "a":
            raise RuntimeError("broken")
        return [f"ok {group}"]

    monkeypatch.setattr(fn, "reconcile", reconcile)
    with pytest.raises(RuntimeError, match="a: broken"):
        fn.run(None, None, None, ["a", "b"], BUCKET, INTERVAL, NOW)
    assert calls == ["a", "b"]


def test_the_role_allows_every_call_the_function_makes():
    # GIVEN one run that makes every call: publish, list, delete, export, describe the group, snapshot
    c = Clients()
    old, recent = name_at(NOW - 3 * HOUR), name_at(NOW - 2 * HOUR)
    c.bucket_has(old)
    c.publishes_age(180.0)
    c.snapshots((old, "available"), (recent, "available"))
    c.expect("delete_snapshot", {"SnapshotName": old})
    c.expect("copy_snapshot", {"SourceSnapshotName": recent, "TargetSnapshotName": recent, "TargetBucket": BUCKET})
    c.group()
    c.expect("create_snapshot", {"CacheClusterId": REPLICA, "SnapshotName": name_at(NOW)})
    c.run()
    calls = {f"elasticache:{op}" for op, _ in c.sent} | {"s3:ListBucket", "cloudwatch:PutMetricData"}  # ListObjectsV2 is s3:ListBucket
    assert {op for op, _ in c.sent} == {"DescribeSnapshots", "DeleteSnapshot", "CopySnapshot", "DescribeReplicationGroups", "CreateSnapshot"}
    # CopySnapshot to a bucket also needs these on the caller (ElastiCache API permissions reference), and
    # Lambda's active tracing these (Lambda developer guide, X-Ray execution role permissions)
    calls |= {"s3:GetBucketLocation", "s3:ListAllMyBuckets", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    # THEN the role's policy allows each of them
    policy = redis_export.function_policy("us-east-1", "123456789012", "arn:aws:s3:::b", "arn:aws:logs:us-east-1:123456789012:log-group:l", "arn:k", [GROUP])
    granted = {a for s in policy["Statement"] if s["Effect"] == "Allow" for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert calls <= granted, calls - granted


def test_interval_keeps_under_elasticache_daily_manual_snapshot_limit():
    recovery = load_platform("prod", ROOT).stack_config.recovery
    assert 24 * 60 / recovery.redis_export_minutes <= 20


# --- the prod plan ---------------------------------------------------------------------------------

FUNCTION = "aws:lambda/function:Function"
BUCKET_TYPE = "aws:s3/bucket:Bucket"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"


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
    versioning = {prod.one("aws:s3/bucketVersioning:BucketVersioning", f"{b}-versioning").urn for b in ("redis-export-export", "redis-export-dr")}
    assert versioning <= set(prod.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig").dependencies)


def test_buckets_private_tls_only_and_expiring(prod):
    for name, region in (("redis-export-export", "us-east-1"), ("redis-export-dr", "us-west-2")):
        block = prod.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{name}-private").inputs
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
        policy = bucket_statements(prod, name)
        assert policy["TlsOnly"]["Effect"] == "Deny" and policy["TlsOnly"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
        service = next(s for sid, s in policy.items() if sid.startswith("ElastiCache"))
        assert service["Effect"] == "Allow" and service["Principal"] == {"Service": f"{region}.elasticache-snapshot.amazonaws.com"}
        life = prod.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", f"{name}-lifecycle").inputs["rules"][0]
        assert life["expiration"]["days"] == 7 and life["noncurrentVersionExpiration"]["noncurrentDays"] == 1


def test_function_role_reaches_only_our_snapshots_and_bucket(prod):
    statements = function_statements(prod)
    wildcard = {sid for sid, s in statements.items() if s["Resource"] == "*"}
    # none of these has a resource type to scope to (Service Authorization Reference)
    assert wildcard == {"ExportCaller", "Metrics", "Tracing"}
    # the listing reads snapshots only (resource type snapshot*), of this account and region (checkov CKV_AWS_355)
    assert statements["List"]["Action"] == "elasticache:DescribeSnapshots"
    assert statements["List"]["Resource"] == "arn:aws:elasticache:us-east-1:123456789012:snapshot:*"
    assert statements["ExportCaller"]["Action"] == "s3:ListAllMyBuckets"
    assert set(statements["Tracing"]["Action"]) == {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
    ours = {r.inputs["replicationGroupId"] for r in prod.of_type("aws:elasticache/replicationGroup:ReplicationGroup")}
    groups = {r.rsplit(":", 1)[-1] for r in statements["Snapshot"]["Resource"] if ":replicationgroup:" in r}
    assert groups == ours
    # the nodes the snapshots are taken of, <group>-001, <group>-002: each group's and no other's
    nodes = [r for r in statements["Snapshot"]["Resource"] if ":cluster:" in r]
    assert sorted(nodes) == sorted(f"arn:aws:elasticache:us-east-1:{ACCOUNT}:cluster:{g}-*" for g in ours)
    assert statements["Describe"]["Action"] == "elasticache:DescribeReplicationGroups"
    assert {r.rsplit(":", 1)[-1] for r in statements["Describe"]["Resource"]} == ours
    assert all(":replicationgroup:" in r for r in statements["Describe"]["Resource"])
    # custom metrics in the export's namespace only (PutMetricData has no resource type)
    assert statements["Metrics"]["Action"] == "cloudwatch:PutMetricData"
    assert statements["Metrics"]["Condition"] == {"StringEquals": {"cloudwatch:namespace": "Platform/RedisExport"}}


def test_function_role_names_each_groups_snapshots_and_only_its_bucket(prod):
    """Issue 15 part 3: the policy keeps what the calls need, scoped to the bucket and to snapshot:dr-<group>-*."""
    statements = function_statements(prod)
    ours = sorted(r.inputs["replicationGroupId"] for r in prod.of_type("aws:elasticache/replicationGroup:ReplicationGroup"))
    snapshots = [f"arn:aws:elasticache:us-east-1:{ACCOUNT}:snapshot:dr-{g}-*" for g in ours]
    assert sorted(statements["ExportAndDelete"]["Resource"]) == snapshots
    assert sorted(r for r in statements["Snapshot"]["Resource"] if ":snapshot:" in r) == snapshots
    # S3: its own listing and the export's bucket check, on the export bucket only; no object read or write
    bucket_arn = bucket_statements(prod, "redis-export-export")["TlsOnly"]["Resource"][0]
    assert statements["ExportBucket"] == {"Sid": "ExportBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": bucket_arn}
    s3_actions = {a for s in statements.values() for a in actions(s) if a.startswith("s3:")}
    assert s3_actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:ListAllMyBuckets"}


def test_function_uses_the_key_only_through_elasticache_and_grants_only_to_aws_resources(prod):
    statements = function_statements(prod)
    through_elasticache = {"kms:ViaService": ["elasticache.us-east-1.amazonaws.com", "dax.us-east-1.amazonaws.com"]}
    assert statements["SnapshotKey"]["Condition"] == {"StringEquals": through_elasticache}
    assert "kms:CreateGrant" not in actions(statements["SnapshotKey"])
    grant = statements["SnapshotKeyGrant"]
    assert actions(grant) == ["kms:CreateGrant"]
    assert grant["Condition"] == {"StringEquals": through_elasticache, "Bool": {"kms:GrantIsForAWSResource": "true"}}
    # no other statement lets it make a grant
    assert [sid for sid, s in statements.items() if any(a.startswith("kms:CreateGrant") or a in ("kms:*", "*") for a in actions(s))] == ["SnapshotKeyGrant"]


def export_alarms(prod) -> dict[str, dict]:
    """The export's alarms by name, each checked to be a warning (a stale DR copy: nothing is down) that
    notifies the warning topic on alarm and on OK."""
    topic = prod.one("aws:sns/topic:Topic", "alarms-warning-topic").urn
    alarms = {}
    for r in in_export(prod, ALARM):
        assert r.inputs["alarmActions"] == r.inputs["okActions"] == [prod.outputs["alarm_topic_arns"]["warning"]], r.name
        assert r.property_dependencies["alarmActions"] == [topic], r.name
        assert r.inputs["tags"] == {"priority": "warning"}, r.name
        alarms[r.name] = r.inputs
    return alarms


def test_a_failing_export_alarms(prod):
    alarm = export_alarms(prod)["redis-export-errors"]
    assert alarm["metricName"] == "Errors" and alarm["namespace"] == "AWS/Lambda"
    schedule = prod.one("aws:scheduler/schedule:Schedule").inputs
    assert schedule["scheduleExpression"] == f"rate({redis_export.RUN_EVERY_MINUTES} minutes)"
    assert schedule["target"]["retryPolicy"]["maximumRetryAttempts"] == 0


def test_a_schedule_that_stops_invoking_alarms(prod):
    alarm = export_alarms(prod)["redis-export-not-running"]
    assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == ("AWS/Lambda", "Invocations", "Sum")
    assert alarm["dimensions"] == {"FunctionName": prod.one(FUNCTION).inputs["name"]}
    # fewer than one invocation over a period longer than the schedule's interval; no data point at all is breaching
    assert (alarm["comparisonOperator"], alarm["threshold"]) == ("LessThanThreshold", 1)
    assert alarm["period"] > redis_export.RUN_EVERY_MINUTES * 60 and alarm["evaluationPeriods"] == 1
    assert alarm["treatMissingData"] == "breaching"


def test_each_cache_alarms_when_its_newest_export_gets_old(prod):
    # GIVEN the export interval of prod (120 min) and its caches, one per system (aurum's session store too)
    interval = int(prod.one(FUNCTION).inputs["environment"]["variables"]["INTERVAL_MINUTES"])
    groups = {r.inputs["replicationGroupId"] for r in prod.of_type("aws:elasticache/replicationGroup:ReplicationGroup")}
    assert groups == {f"{s}-prod" for s in ("twinkle", "offerhub", "starkdca", "aurum", "darwin")}
    alarms = export_alarms(prod)
    # THEN one alarm per cache reads the metric the function publishes (test_newest_export_age_is_published_in_minutes)
    stale = {a["dimensions"]["ReplicationGroupId"]: a for name, a in alarms.items() if name.startswith("redis-export-stale-")}
    assert set(stale) == groups
    for alarm in stale.values():
        assert (alarm["namespace"], alarm["metricName"], alarm["statistic"]) == ("Platform/RedisExport", "NewestExportAgeMinutes", "Maximum")
        # older than twice the interval plus an hour, or nothing reported at all (no export, no run)
        assert (alarm["comparisonOperator"], alarm["threshold"]) == ("GreaterThanThreshold", 2 * interval + 60)
        assert alarm["treatMissingData"] == "breaching"


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


# --- issue 15: who may read the exports, trust, logs, keys and tracing --------------------------------

POLICY = "aws:s3/bucketPolicy:BucketPolicy"
ROLE = "aws:iam/role:Role"
SCHEDULE = "aws:scheduler/schedule:Schedule"
KEY = "aws:kms/key:Key"
EXPORT_BUCKETS = (("redis-export-export", "us-east-1"), ("redis-export-dr", "us-west-2"))
RESTORE_ROLES = [
    "arn:aws:iam::123456789012:role/platform-redis-restore",
    "arn:aws:iam::123456789012:role/aws-reserved/sso.amazonaws.com/AWSReservedSSO_Ops_0123",
]
ADMIN = "arn:aws:iam::123456789012:role/platform-admin"
ELASTICACHE_ACCOUNT = "999988887777"  # AWS's account behind ElastiCache's canonical user (not ours)


def actions(statement: dict) -> list[str]:
    return [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]


def statements_of(resource, field: str = "policy") -> dict[str, dict]:
    return {s.get("Sid", ""): s for s in json.loads(resource.inputs[field])["Statement"]}


def bucket_statements(cap, bucket: str) -> dict[str, dict]:
    return statements_of(cap.one(POLICY, f"{bucket}-policy"))


def function_statements(cap) -> dict[str, dict]:
    return statements_of(next(r for r in in_export(cap, "aws:iam/rolePolicy:RolePolicy") if r.name == "redis-export-function"))


def _condition_holds(operator: str, key: str, wanted, context: dict[str, str]) -> bool:
    """One condition of a statement, as IAM evaluates it ("IAM JSON policy elements: Condition operators"):
    a key the request lacks matches no positive operator, every negated one, and any ...IfExists."""
    base = operator.removesuffix("IfExists")
    values = wanted if isinstance(wanted, list) else [wanted]
    if key not in context:
        return operator.endswith("IfExists") or base in ("StringNotEquals", "ArnNotEquals", "ArnNotLike")
    value = context[key]
    arn_match = any(fnmatch.fnmatchcase(value, v) for v in values)  # ArnEquals and ArnLike both take wildcards
    outcomes = {
        "StringEquals": value in values,
        "StringNotEquals": value not in values,
        "ArnEquals": arn_match,
        "ArnLike": arn_match,
        "ArnNotEquals": not arn_match,
        "ArnNotLike": not arn_match,
        "Bool": value.lower() in [v.lower() for v in values],
    }
    return outcomes[base]


def denies(policy: dict[str, dict], action: str, resource: str, context: dict[str, str]) -> list[str]:
    """The Sids of the Deny statements of a bucket policy that refuse ``action`` on ``resource`` to the request."""
    return [
        sid
        for sid, s in policy.items()
        if s["Effect"] == "Deny"
        and s["Principal"] in ("*", {"AWS": "*"})
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in actions(s))
        and any(fnmatch.fnmatchcase(resource, r) for r in ([s["Resource"]] if isinstance(s["Resource"], str) else s["Resource"]))
        and all(_condition_holds(op, key, wanted, context) for op, keys in s.get("Condition", {}).items() for key, wanted in keys.items())
    ]


def principal(arn: str, account: str = ACCOUNT) -> dict[str, str]:
    """The request context of a call signed by a role of ``account`` (assumed-role sessions carry the role's ARN)."""
    return {"aws:PrincipalArn": arn, "aws:PrincipalAccount": account, "aws:PrincipalIsAWSService": "false", "aws:SecureTransport": "true"}


@pytest.fixture(scope="module")
def with_restore_roles(tmp_path_factory):
    """The prod stack file with two restore roles named in ``security.redis_restore_role_arns``."""
    project_dir = tmp_path_factory.mktemp("restore-roles")
    data = load_stack_yaml("prod")
    data["config"]["platform:preset"] = "prod"
    overrides = data["config"].setdefault("platform:overrides", {})
    overrides.setdefault("security", {})["redis_restore_role_arns"] = RESTORE_ROLES
    (project_dir / "Pulumi.test.yaml").write_text(json.dumps(data))  # JSON is YAML
    shutil.copy(ROOT / "Pulumi.yaml", project_dir / "Pulumi.yaml")
    return plan("test", project_dir)


def test_exports_are_readable_only_by_replication_and_the_restore_roles(with_restore_roles):
    """Issue 15 part 3: an ``.rdb`` is a full copy of a cache. Both buckets refuse every object read to the
    account's principals but S3 replication's role and the named restore roles, an administrator with
    s3:* included; ElastiCache still exports and restores."""
    cap = with_restore_roles
    replication_role = cap.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig").inputs["role"]
    function_role = cap.one(FUNCTION).inputs["role"]
    for bucket, region in EXPORT_BUCKETS:
        policy = bucket_statements(cap, bucket)
        obj = policy["TlsOnly"]["Resource"][1].replace("*", "dr-offerhub-prod-202611221000-0001.rdb")
        for action in ("s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectAttributes"):
            # WHEN an administrator of the account, or the export function, reads an export THEN the bucket refuses
            assert denies(policy, action, obj, principal(ADMIN)) == ["OnlyNamedRolesReadExports"], (bucket, action)
            assert denies(policy, action, obj, principal(function_role)) == ["OnlyNamedRolesReadExports"], (bucket, action)
            # the restore roles (which a CreateReplicationGroup with snapshot_arns needs) and replication may
            for reader in (*RESTORE_ROLES, replication_role):
                assert denies(policy, action, obj, principal(reader)) == [], (bucket, action, reader)
        assert denies(policy, "s3:GetObjectVersionForReplication", obj, principal(replication_role)) == []
        # ElastiCache as a service principal (opt-in regions), whatever account the request context names,
        # and as its own AWS account (the canonical user's ACL grant, regions enabled by default)
        service = {"aws:PrincipalServiceName": f"{region}.elasticache-snapshot.amazonaws.com", "aws:PrincipalIsAWSService": "true"}
        assert denies(policy, "s3:GetObject", obj, {**service, "aws:PrincipalAccount": ACCOUNT}) == []
        assert denies(policy, "s3:GetObject", obj, service) == []
        assert denies(policy, "s3:GetObject", obj, principal(f"arn:aws:iam::{ELASTICACHE_ACCOUNT}:root", ELASTICACHE_ACCOUNT)) == []
        # writes are not this statement's business: ElastiCache and replication still write
        assert denies(policy, "s3:PutObject", obj, principal(ADMIN)) == []
        # a Deny with conditions on the principal, not NotPrincipal
        assert all("NotPrincipal" not in s for s in policy.values())


def test_without_restore_roles_only_replication_may_read(prod):
    replication_role = prod.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig").inputs["role"]
    for bucket, _ in EXPORT_BUCKETS:
        deny = bucket_statements(prod, bucket)["OnlyNamedRolesReadExports"]
        assert deny["Condition"]["ArnNotEquals"] == {"aws:PrincipalArn": [replication_role]}
        assert deny["Condition"]["StringEquals"] == {"aws:PrincipalAccount": ACCOUNT}
    # the policies wait for the role they name
    role = prod.one(ROLE, "redis-export-replication")
    assert role.urn in prod.one(POLICY, "redis-export-dr-policy").dependencies


def test_restore_roles_must_be_role_arns(tmp_path):
    def stack_with(arns) -> None:
        data = load_stack_yaml("prod")
        data["config"]["platform:preset"] = "prod"
        data["config"].setdefault("platform:overrides", {}).setdefault("security", {})["redis_restore_role_arns"] = arns
        (tmp_path / "Pulumi.test.yaml").write_text(json.dumps(data))
        shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")

    stack_with(RESTORE_ROLES)
    assert load_platform("test", tmp_path).preset.security.redis_restore_role_arns == RESTORE_ROLES
    for bad in (["arn:aws:iam::123456789012:user/alice"], ["*"], [RESTORE_ROLES[0], RESTORE_ROLES[0]]):
        stack_with(bad)
        with pytest.raises(ConfigError, match="redis_restore_role_arns"):
            load_platform("test", tmp_path)


def test_the_dr_bucket_lets_elasticache_read_not_write(prod):
    """Issue 15 part 3: ElastiCache writes exports into the export bucket; from the DR bucket it only reads,
    to seed a group (its seeding guide: s3:GetObject, s3:ListBucket, s3:GetBucketAcl)."""
    service_acl = {}
    for bucket, _ in EXPORT_BUCKETS:
        acl = prod.one("aws:s3/bucketAcl:BucketAcl", f"{bucket}-acl").inputs["accessControlPolicy"]
        service_acl[bucket] = {g["permission"] for g in acl["grants"] if g["grantee"]["id"] == redis_export.ELASTICACHE_CANONICAL_ID}
    assert service_acl == {"redis-export-export": {"READ", "WRITE", "READ_ACP"}, "redis-export-dr": {"READ", "READ_ACP"}}
    export = bucket_statements(prod, "redis-export-export")["ElastiCacheExports"]
    assert "s3:PutObject" in export["Action"]
    dr = bucket_statements(prod, "redis-export-dr")["ElastiCacheRestores"]
    assert sorted(dr["Action"]) == ["s3:GetBucketAcl", "s3:GetObject", "s3:ListBucket"]
    assert dr["Principal"] == {"Service": "us-west-2.elasticache-snapshot.amazonaws.com"}


def test_each_export_bucket_logs_its_access_to_a_log_bucket_of_its_region(prod):
    """Issue 15 part 6 (checkov CKV_AWS_18): S3 server access logs of both buckets. S3 delivers only to a
    bucket of the source's region and account, so each region has its log bucket; only S3's log delivery
    writes there, for that one source (S3 user guide, "Enabling Amazon S3 server access logging")."""
    retention = load_platform("prod", ROOT).preset.logs.retention_days
    for bucket, region in EXPORT_BUCKETS:
        source = prod.one(BUCKET_TYPE, bucket)
        logs = prod.one(BUCKET_TYPE, f"{bucket}-access-logs")
        logging = prod.one("aws:s3/bucketLogging:BucketLogging", f"{bucket}-logging")
        assert logging.property_dependencies["bucket"] == [source.urn] and logging.property_dependencies["targetBucket"] == [logs.urn]
        assert logging.inputs["region"] == logs.inputs["region"] == source.inputs["region"] == region
        assert logging.inputs["targetPrefix"] == f"{bucket}/"
        # delivery is allowed before logging is turned on
        assert prod.one(POLICY, f"{bucket}-access-logs-policy").urn in logging.dependencies
        source_arn = bucket_statements(prod, bucket)["TlsOnly"]["Resource"][0]
        policy = bucket_statements(prod, f"{bucket}-access-logs")
        logs_arn = policy["TlsOnly"]["Resource"][0]
        assert policy["S3ServerAccessLogs"] == {
            "Sid": "S3ServerAccessLogs",
            "Effect": "Allow",
            "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject",
            "Resource": f"{logs_arn}/{bucket}/*",
            "Condition": {"ArnLike": {"aws:SourceArn": source_arn}, "StringEquals": {"aws:SourceAccount": ACCOUNT}},
        }
        # the log bucket: private, SSE-S3 (the only default encryption a log target may have), no ACLs,
        # versioned, expiring with the preset's log retention, and not logged itself
        name = f"{bucket}-access-logs"
        block = prod.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", f"{name}-private").inputs
        assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
        sse = prod.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", f"{name}-encryption").inputs
        assert sse["rules"][0]["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
        assert prod.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls", f"{name}-owner").inputs["rule"] == {"objectOwnership": "BucketOwnerEnforced"}
        assert prod.one("aws:s3/bucketVersioning:BucketVersioning", f"{name}-versioning").inputs["versioningConfiguration"] == {"status": "Enabled"}
        life = prod.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", f"{name}-lifecycle").inputs["rules"][0]
        assert life["expiration"]["days"] == retention and life["status"] == "Enabled"
    logged = {prod.by_urn(r.property_dependencies["bucket"][0]).name for r in in_export(prod, "aws:s3/bucketLogging:BucketLogging")}
    assert logged == {"redis-export-export", "redis-export-dr"}


def test_function_environment_is_under_the_environment_key_and_traced(prod):
    """Issue 15 part 6 (checkov CKV_AWS_173, CKV_AWS_50)."""
    key = prod.one(KEY, "key-key")
    function = prod.one(FUNCTION)
    assert function.property_dependencies["kmsKeyArn"] == [key.urn]
    assert function.inputs["tracingConfig"] == {"mode": "Active"}
    # X-Ray's two write actions, which have no resource type (Lambda developer guide)
    assert function_statements(prod)["Tracing"] == {
        "Sid": "Tracing",
        "Effect": "Allow",
        "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"],
        "Resource": "*",
    }


def test_schedule_payload_is_under_the_environment_key(prod):
    """Issue 15 part 6 (checkov CKV_AWS_297): the scheduler decrypts the payload as the execution role, with
    the schedule's ARN as encryption context (EventBridge Scheduler, "Encryption at rest")."""
    key = prod.one(KEY, "key-key")
    schedule = prod.one(SCHEDULE)
    assert schedule.property_dependencies["kmsKeyArn"] == [key.urn]
    assert schedule.inputs["groupName"] == "default"
    role = prod.one(ROLE, "redis-export-scheduler")
    policy = statements_of(next(r for r in in_export(prod, "aws:iam/rolePolicy:RolePolicy") if r.name == "redis-export-scheduler"))
    decrypt = policy["DecryptPayload"]
    assert decrypt["Action"] == "kms:Decrypt"
    schedule_arn = f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule/default/{schedule.inputs['name']}"
    assert decrypt["Condition"] == {"StringEquals": {"kms:EncryptionContext:aws:scheduler:schedule:arn": schedule_arn}}
    assert role.urn in set(schedule.property_dependencies["target"])


def test_scheduler_role_trusts_only_our_schedule_group(prod):
    """Issue 15 part 5: EventBridge Scheduler's "Confused deputy prevention" sets aws:SourceAccount and
    aws:SourceArn, the schedule group's ARN (never a schedule's), when it assumes the execution role."""
    schedule = prod.one(SCHEDULE).inputs
    trust = json.loads(prod.one(ROLE, "redis-export-scheduler").inputs["assumeRolePolicy"])["Statement"]
    assert trust == [
        {
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {
                "StringEquals": {"aws:SourceAccount": ACCOUNT},
                "ArnLike": {"aws:SourceArn": f"arn:aws:scheduler:us-east-1:{ACCOUNT}:schedule-group/{schedule['groupName']}"},
            },
        }
    ]


def test_replication_and_function_roles_trust_their_service_without_undocumented_keys(prod):
    """Issue 15 part 5, the other two service roles: neither S3's live-replication guide nor Lambda's
    execution-role guide documents aws:SourceAccount/aws:SourceArn on the AssumeRole (Lambda's reserves
    aws:SourceArn for policies where the function is the resource). A key the service does not send makes
    the condition false and the role unusable: replication would stop, the export would never run."""
    for role, service in (("redis-export-replication", "s3.amazonaws.com"), ("redis-export-function", "lambda.amazonaws.com")):
        trust = json.loads(prod.one(ROLE, role).inputs["assumeRolePolicy"])["Statement"]
        assert trust == [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}], role
