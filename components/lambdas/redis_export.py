"""Lambda: export ElastiCache snapshots to S3, from where S3 replication copies them to the DR region.

ElastiCache cannot copy a snapshot to another region; it can export one (``CopySnapshot`` with
``TargetBucket``) to a bucket in its own region. Each run, for every replication group:

1. the age of the newest export in the bucket is published as the CloudWatch metric
   ``Platform/RedisExport`` ``NewestExportAgeMinutes`` (dimension ``ReplicationGroupId``); its alarm
   sees a function that runs without error but exports nothing. No export yet: no data point, which
   the alarm treats as breaching;
2. a snapshot of ours (``dr-<group>-<UTC yyyymmddhhmm>``) that is ``available`` and already in the
   bucket is deleted; one that is not yet there is exported;
3. a new snapshot is taken when the newest one (in ElastiCache or the bucket) is older than the interval,
   of one node of the group, a read replica when there is one (below), unless the group is busy.

Which node: ElastiCache's guide takes a manual snapshot of a cluster-mode-disabled group from a node
(``CreateSnapshot`` with ``CacheClusterId``, "the name of the node in the cluster you want to use for
the backup, e.g. mycluster-002"; ``ReplicationGroupId`` only for cluster mode enabled), and recommends
a read replica so that the primary is spared the BGSAVE ("Taking manual backups"; "Snapshot and
restore", performance impact: "we recommend that you create backups from one of the read replicas").
The replica is the member whose ``NodeGroups[].NodeGroupMembers[].CurrentRole`` is ``replica`` in
``DescribeReplicationGroups``; a group of one node has only its primary to snapshot.

Which snapshots are ours: the node that is the replica changes on every failover, so a snapshot of
ours may be of either node. They are found by name (``dr-<group>-<stamp>``) among the manual
snapshots: ``DescribeSnapshots`` with ``SnapshotSource="user"`` (the API documents ``system``, the
automatic ones, and ``user``, the manual ones; not ``manual``), every page (``Marker``).

When not to take one (it would fail, or make a ``pulumi up`` fail):

* inside the group's backup window (``SnapshotWindow``, UTC, which may cross midnight), while
  automatic backups are on: the automatic backup starts then, and "during the backup process you
  cannot perform any additional API or CLI operations on the cluster" ("Backup constraints");
* while the group is not ``available`` (``modifying`` during a ``pulumi up``, ``snapshotting``);
  should it change between the check and the call, ``InvalidReplicationGroupState`` and
  ``InvalidCacheClusterState`` ("not in the available state", CreateSnapshot's errors) are logged and
  the next run tries again. ``SnapshotQuotaExceededFault`` is a quota, not a state: it fails the run.

The converse, our snapshot delaying a ``pulumi up``: the provider waits for a ``snapshotting`` group
to become ``available`` and a change made meanwhile can fail (hashicorp/terraform-provider-aws#30493,
#44811); a snapshot of our small caches lasts minutes, so rerun the update (README, "Recovery").

The state lives in ElastiCache and S3 only, so a failed or skipped run is repaired by the next one.
Manual snapshots are limited to 20 per node per day; the interval's lower bound (2 hours, 12 a day)
keeps us under it. Should exports keep failing, at most ``MAX_PENDING`` snapshots pile up before the
function raises (its alarm fires) instead of taking more.

Runs with the Lambda runtime's boto3; the logic takes clients as arguments so it is tested offline with
botocore's Stubber, which checks every request against the service model.
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

PREFIX = "dr-"
STAMP = "%Y%m%d%H%M"
MAX_PENDING = 3
# ElastiCache appends the node group number and .rdb to an exported snapshot's name.
EXPORT_SUFFIX = "-0001.rdb"
# DescribeSnapshotsMessage.SnapshotSource: "system" (automatic snapshots) or "user" (manual ones).
USER_SNAPSHOTS = "user"
# DescribeSnapshots MaxRecords: 20 to 50; the paginator follows Marker to the last page
# (botocore's elasticache paginators-1.json: input_token and output_token "Marker").
PAGE_SIZE = 50
# The custom metric the function publishes and the component alarms on.
NAMESPACE = "Platform/RedisExport"
AGE_METRIC = "NewestExportAgeMinutes"
DIMENSION = "ReplicationGroupId"


def snapshot_name(group: str, now: dt.datetime) -> str:
    return f"{PREFIX}{group}-{now.strftime(STAMP)}"


def _taken_at(group: str, name: str) -> dt.datetime | None:
    stamp = name.removeprefix(f"{PREFIX}{group}-")
    if stamp == name:
        return None
    try:
        return dt.datetime.strptime(stamp, STAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def in_window(window: str, now: dt.datetime) -> bool:
    """Whether ``now`` is inside a daily ``hh24:mi-hh24:mi`` UTC window; ``23:30-00:30`` crosses midnight."""
    start, end = (dt.datetime.strptime(t, "%H:%M").time() for t in window.split("-"))
    t = now.astimezone(dt.UTC).time()
    return start <= t < end if start <= end else (t >= start or t < end)


def snapshot_source(group: dict) -> dict[str, str]:
    """``CreateSnapshot``'s source for a ``DescribeReplicationGroups`` entry, as the guide takes it."""
    if group.get("ClusterEnabled"):
        return {"ReplicationGroupId": group["ReplicationGroupId"]}
    members = [m for node_group in group.get("NodeGroups", []) for m in node_group.get("NodeGroupMembers", [])]
    replicas = sorted(m["CacheClusterId"] for m in members if m.get("CurrentRole") == "replica")
    nodes = replicas or sorted(group.get("MemberClusters", []))
    if not nodes:
        raise RuntimeError(f"{group['ReplicationGroupId']} lists no node to take a snapshot of")
    return {"CacheClusterId": nodes[0]}


def _exported(s3: Any, bucket: str, group: str) -> set[str]:
    names: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}{group}-"):
        names.update(o["Key"].removesuffix(EXPORT_SUFFIX) for o in page.get("Contents", []) if o["Key"].endswith(EXPORT_SUFFIX))
    return names


def _ours(elasticache: Any, group: str) -> list[dict]:
    """Our manual snapshots of ``group``, of whichever node, from every page."""
    pages = elasticache.get_paginator("describe_snapshots").paginate(SnapshotSource=USER_SNAPSHOTS, PaginationConfig={"PageSize": PAGE_SIZE})
    found = [s for page in pages for s in page.get("Snapshots", []) if _taken_at(group, s["SnapshotName"]) is not None]
    return sorted(found, key=lambda s: s["SnapshotName"])


def publish_age(cloudwatch: Any, group: str, age: dt.timedelta, now: dt.datetime) -> None:
    cloudwatch.put_metric_data(
        Namespace=NAMESPACE,
        MetricData=[
            {
                "MetricName": AGE_METRIC,
                "Dimensions": [{"Name": DIMENSION, "Value": group}],
                "Timestamp": now,
                "Value": round(age.total_seconds() / 60, 1),
                "Unit": "None",
            }
        ],
    )


def take_snapshot(elasticache: Any, group: str, now: dt.datetime) -> str:
    """Take a snapshot of one node of ``group`` unless the group is busy; returns what it did."""
    described = elasticache.describe_replication_groups(ReplicationGroupId=group)["ReplicationGroups"][0]
    status = described.get("Status")
    if status != "available":
        return f"{group} is {status}: no snapshot this run"
    window = described.get("SnapshotWindow")
    if window and described.get("SnapshotRetentionLimit") != 0 and in_window(window, now):
        return f"{group} is in its backup window ({window} UTC): no snapshot this run"
    source = snapshot_source(described)
    name = snapshot_name(group, now)
    errors = elasticache.exceptions
    try:
        elasticache.create_snapshot(SnapshotName=name, **source)
    except (errors.InvalidReplicationGroupStateFault, errors.InvalidCacheClusterStateFault) as err:
        return f"{group} is busy ({err.response['Error']['Code']}): no snapshot this run"
    except errors.SnapshotAlreadyExistsFault:
        return f"{name} already exists (another run took it)"
    return f"creating {name} of {next(iter(source.values()))}"


def reconcile(elasticache: Any, s3: Any, cloudwatch: Any, group: str, bucket: str, interval: dt.timedelta, now: dt.datetime) -> list[str]:
    """One pass for one replication group; returns what it did, one line per action."""
    done: list[str] = []
    exported = _exported(s3, bucket, group)
    newest_export = max(filter(None, (_taken_at(group, n) for n in exported)), default=None)
    if newest_export is None:
        done.append(f"{group} has no export yet")
    else:
        publish_age(cloudwatch, group, now - newest_export, now)
    ours = _ours(elasticache, group)
    for snap in ours:
        name = snap["SnapshotName"]
        if snap["SnapshotStatus"] != "available":
            continue
        if name in exported:
            elasticache.delete_snapshot(SnapshotName=name)
            done.append(f"deleted {name} (exported)")
        else:
            try:
                elasticache.copy_snapshot(SourceSnapshotName=name, TargetSnapshotName=name, TargetBucket=bucket)
                done.append(f"exporting {name} to s3://{bucket}")
            except elasticache.exceptions.InvalidSnapshotStateFault:
                done.append(f"{name} is busy (an export is running)")
    pending = [s["SnapshotName"] for s in ours if s["SnapshotName"] not in exported]
    if len(pending) >= MAX_PENDING:
        raise RuntimeError(f"{group}: {len(pending)} snapshots not exported ({', '.join(pending)}); not taking another")
    taken = [t for t in (_taken_at(group, n) for n in [*exported, *(s["SnapshotName"] for s in ours)]) if t is not None]
    if not taken or now - max(taken) >= interval:
        done.append(take_snapshot(elasticache, group, now))
    return done


def run(elasticache: Any, s3: Any, cloudwatch: Any, groups: list[str], bucket: str, interval: dt.timedelta, now: dt.datetime) -> list[str]:
    """Reconcile every group; a failure in one does not stop the others, but fails the run."""
    done, failed = [], []
    for group in groups:
        try:
            done += reconcile(elasticache, s3, cloudwatch, group, bucket, interval, now)
        except Exception as err:  # reported below, after the other groups had their turn
            failed.append(f"{group}: {err}")
    for line in done:
        print(line)
    if failed:
        raise RuntimeError("; ".join(failed))
    return done


def handler(event: dict, context: Any) -> dict:  # pragma: no cover - the entry point on Lambda
    import boto3

    groups = [g for g in os.environ["REPLICATION_GROUPS"].split(",") if g]
    interval = dt.timedelta(minutes=int(os.environ["INTERVAL_MINUTES"]))
    clients = boto3.client("elasticache"), boto3.client("s3"), boto3.client("cloudwatch")
    done = run(*clients, groups, os.environ["BUCKET"], interval, dt.datetime.now(dt.UTC))
    return {"actions": done}
