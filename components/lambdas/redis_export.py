"""Lambda: export ElastiCache snapshots to S3, from where S3 replication copies them to the DR region.

ElastiCache cannot copy a snapshot to another region; it can export one (``CopySnapshot`` with
``TargetBucket``) to a bucket in its own region. Each run, for every replication group:

1. a snapshot of ours (``dr-<group>-<UTC yyyymmddhhmm>``) that is ``available`` and already in the
   bucket is deleted; one that is not yet there is exported;
2. a new snapshot is taken when the newest one (in ElastiCache or the bucket) is older than the interval.

The state lives in ElastiCache and S3 only, so a failed or skipped run is repaired by the next one.
Manual snapshots are limited to 20 per node group per day; the interval's lower bound (2 hours, 12 a
day) keeps us under it. Should exports keep failing, at most ``MAX_PENDING`` snapshots pile up before the
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


def snapshot_name(group: str, now: dt.datetime) -> str:
    return f"{PREFIX}{group}-{now.strftime(STAMP)}"


def _taken_at(group: str, name: str) -> dt.datetime | None:
    stamp = name.removeprefix(f"{PREFIX}{group}-")
    try:
        return dt.datetime.strptime(stamp, STAMP).replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def _exported(s3: Any, bucket: str, group: str) -> set[str]:
    names: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{PREFIX}{group}-"):
        names.update(o["Key"].removesuffix(EXPORT_SUFFIX) for o in page.get("Contents", []) if o["Key"].endswith(EXPORT_SUFFIX))
    return names


def reconcile(elasticache: Any, s3: Any, group: str, bucket: str, interval: dt.timedelta, now: dt.datetime) -> list[str]:
    """One pass for one replication group; returns what it did, one line per action."""
    done: list[str] = []
    exported = _exported(s3, bucket, group)
    snapshots = elasticache.describe_snapshots(ReplicationGroupId=group, SnapshotSource="manual", MaxRecords=50)["Snapshots"]
    ours = sorted((s for s in snapshots if _taken_at(group, s["SnapshotName"]) is not None), key=lambda s: s["SnapshotName"])
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
        name = snapshot_name(group, now)
        elasticache.create_snapshot(ReplicationGroupId=group, SnapshotName=name)
        done.append(f"creating {name}")
    return done


def run(elasticache: Any, s3: Any, groups: list[str], bucket: str, interval: dt.timedelta, now: dt.datetime) -> list[str]:
    """Reconcile every group; a failure in one does not stop the others, but fails the run."""
    done, failed = [], []
    for group in groups:
        try:
            done += reconcile(elasticache, s3, group, bucket, interval, now)
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
    done = run(boto3.client("elasticache"), boto3.client("s3"), groups, os.environ["BUCKET"], interval, dt.datetime.now(dt.UTC))
    return {"actions": done}
