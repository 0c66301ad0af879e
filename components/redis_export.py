"""Copies of every Redis cache's snapshots in the DR region (prod, with ``platform:recovery``).

ElastiCache can neither copy a snapshot to another region nor replicate a cluster-mode-disabled
``cache.t4g`` group across regions (Global Datastore needs ``r``/``m`` nodes and a VPC in the DR
region). What it can do is export a snapshot as an ``.rdb`` file to an S3 bucket in its own region. So:

1. a scheduled Lambda (``components/lambdas/redis_export.py``) takes a manual snapshot of each group
   every ``redis_export_minutes`` and exports it to the *export* bucket, then deletes the snapshot. As
   ElastiCache's guide does for a cluster-mode-disabled group, the snapshot is of one node, a read
   replica when the group has one, and none is taken inside the group's backup window or while the
   group is not ``available`` (the function's docstring has the sources);
2. S3 replication copies each ``.rdb`` to the *DR* bucket in ``dr_region``;
3. restoring is creating a replication group there with ``snapshot_arns`` pointing at the file
   (README, "Recovery").

RPO: the interval plus the time to snapshot, export and replicate (minutes for our cache sizes), so
about 2 h 30 min at the default. RTO: creating a replication group in the DR region (about 15-20
minutes, plus the network and services there).

Permissions: ElastiCache writes to the bucket as a service. AWS documents two mechanisms, the
bucket ACL grant to ElastiCache's canonical user in regions enabled by default and the regional
service principal ``<region>.elasticache-snapshot.amazonaws.com`` in opt-in regions. Both are
configured (the one a region does not use grants nothing), which needs ACLs enabled:
``BucketOwnerPreferred`` ownership instead of ``BucketOwnerEnforced``. Public access stays blocked.
Objects are encrypted with SSE-S3 in both buckets (the exported files are RDB, encrypted at rest by S3).

Monitoring, each alarm to the alarm topic (on alarm and on OK):

* ``-errors``: the function failed two runs in a row (``AWS/Lambda`` ``Errors``);
* ``-not-running``: the schedule invoked nothing for ``SILENT_PERIOD_SECONDS`` (an hour, four
  scheduled runs): ``AWS/Lambda`` ``Invocations`` below 1, missing data breaching (Lambda publishes no
  data point for a function nobody invokes);
* ``-stale-<group>``, one per cache: the newest export is older than ``stale_after_minutes`` (twice
  the interval plus an hour: a snapshot the backup window delays, or one lost, passes; two lost in a
  row alarm). The
  function publishes ``Platform/RedisExport`` ``NewestExportAgeMinutes`` per ``ReplicationGroupId``
  each run from what the bucket holds, so a function that runs without error and exports nothing is
  seen; missing data is breaching, so a cache with no export at all (or no run) alarms too. On the
  first deploy the last two alarm until the first run and the first export (about half an hour).

Permissions of the function: list snapshots (``DescribeSnapshots`` has nothing to scope to); describe
our groups only; snapshot our groups' nodes into ``snapshot:dr-*`` only; export and delete
``snapshot:dr-*`` only; write the export bucket; publish metrics in ``Platform/RedisExport`` only
(``PutMetricData`` has no resource type, so ``"*"`` with the ``cloudwatch:namespace`` condition key,
as CloudWatch's "Using condition keys to limit access to CloudWatch namespaces" does); its own logs.

Children: ``aws:s3/bucket:Bucket`` ``-export`` and ``-dr`` (the latter in ``dr_region``), each with
versioning, encryption, public access block, ownership controls, ACL, policy and lifecycle;
``aws:s3/bucketReplicationConfig:BucketReplicationConfig`` and its ``aws:iam/role:Role``; the
function's ``aws:cloudwatch/logGroup:LogGroup``, ``aws:iam/role:Role`` and
``aws:lambda/function:Function`` with its ``aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig``;
an ``aws:scheduler/schedule:Schedule`` with the role it invokes with; the alarms above, each an
``aws:cloudwatch/metricAlarm:MetricAlarm`` (2 + one per cache).

One run at a time without reserved concurrency: reserving any is refused in accounts whose concurrency
quota is low (new accounts often have 10, and Lambda keeps 100 unreserved), so runs are kept apart by
timing. The schedule fires every ``RUN_EVERY_MINUTES`` exactly (flexible window off, no scheduler
retries); Lambda runs the asynchronous invocation within ``MAX_EVENT_AGE_SECONDS`` or drops it, never
retries it, and stops it after ``TIMEOUT_SECONDS``; the sum is shorter than the interval, so one run has
ended before the next can start. Should Lambda still deliver an event twice (its queue is at least
once), the handler is idempotent: the state lives in ElastiCache and S3, a second export of a busy
snapshot is reported as busy, and at worst one run fails (a snapshot name taken in the same minute, a
snapshot the other run just deleted) and the next run repairs it; the alarm needs two failing periods.

Cost note: S3 storage for ``retention_days`` of exports in two regions plus cross-region transfer
($0.02/GB), a few cents a month for our cache sizes; the function runs 96 times a day, within the
Lambda free tier. One custom metric per cache ($0.30 a month each) and 2 + one alarm per cache
($0.10 a month each): $1.80 a month for prod's four caches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from .iam import service_trust
from .lambdas import redis_export as handler
from .storage import lock_down, tls_only

HANDLER_FILE = Path(handler.__file__)
# ElastiCache's canonical user for export ACL grants in regions enabled by default (not GovCloud).
ELASTICACHE_CANONICAL_ID = "540804c33a284a299d2547575ce1010f2312ef3da9b3a053c8bc45bf233e4353"
RUN_EVERY_MINUTES = 15
TIMEOUT_SECONDS = 120
# Lambda drops a scheduled invocation it could not start within this (60 s is its minimum), and retries none.
MAX_EVENT_AGE_SECONDS = 300
# ``CopySnapshot`` to a bucket needs these on the caller, ``ListAllMyBuckets`` on ``*`` (AWS documents
# that scoping it to the bucket fails with "unable to validate the authenticated user has access").
EXPORT_CALLER_S3 = ["s3:GetBucketLocation", "s3:ListAllMyBuckets"]
SERVICE_S3_ACTIONS = ["s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:GetBucketAcl", "s3:ListMultipartUploadParts", "s3:ListBucketMultipartUploads"]
# The "not running" alarm's period: longer than the schedule's interval (four runs), so one late or
# dropped invocation does not page.
SILENT_PERIOD_SECONDS = 3600
# The "stale export" alarm evaluates the age's maximum over an hour (four runs publish in it).
STALE_PERIOD_SECONDS = 3600


def stale_after_minutes(interval_minutes: int) -> int:
    """Age of the newest export past which its alarm fires.

    Normally the newest export is at most the interval plus the export's lag old (up to a run until
    the next snapshot is taken, a run to see it available, minutes to write it); the backup window can
    delay a snapshot by its hour. Twice the interval plus an hour: one late or lost snapshot does not
    page, a second one in a row does.
    """
    return 2 * interval_minutes + 60


@dataclass(frozen=True, kw_only=True)
class RedisExportArgs:
    env: str
    region: str
    dr_region: str
    account_id: pulumi.Input[str]
    replication_group_ids: Sequence[str]
    kms_key_arn: pulumi.Input[str]
    """The environment key, which encrypts the caches and their snapshots."""
    topic_arn: pulumi.Input[str]
    interval_minutes: int
    retention_days: int
    log_retention_days: int


class RedisExport(pulumi.ComponentResource):
    """Scheduled snapshot export of every cache, replicated to the DR region."""

    dr_bucket: pulumi.Output[str]
    """The bucket in the DR region that holds the ``.rdb`` copies."""

    def __init__(self, name: str, args: RedisExportArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:data:RedisExport", name, None, opts)
        owner = aws.s3.get_canonical_user_id_output(opts=pulumi.InvokeOutputOptions(parent=self)).id
        export, export_versioning = self._bucket(f"{name}-export", args, args.region, owner)
        dr, dr_versioning = self._bucket(f"{name}-dr", args, args.dr_region, owner)
        self._replication(name, export, export_versioning, dr, dr_versioning)
        function = self._function(name, args, export)
        self._schedule(name, args, function)
        self._alarms(name, args, function)
        self.dr_bucket = dr.bucket
        self.register_outputs({"dr_bucket": self.dr_bucket})

    def _alarms(self, name: str, args: RedisExportArgs, function: aws.lambda_.Function) -> None:
        child = pulumi.ResourceOptions(parent=self)
        notify = {"alarm_actions": [args.topic_arn], "ok_actions": [args.topic_arn]}
        aws.cloudwatch.MetricAlarm(
            f"{name}-errors",
            alarm_description=f"Redis snapshot export to {args.dr_region} failed twice running: the DR copy is getting stale",
            namespace="AWS/Lambda",
            metric_name="Errors",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            period=RUN_EVERY_MINUTES * 60,
            evaluation_periods=2,
            datapoints_to_alarm=2,
            comparison_operator="GreaterThanOrEqualToThreshold",
            threshold=1,
            treat_missing_data="notBreaching",
            **notify,
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-not-running",
            alarm_description=(
                f"The Redis snapshot export was not invoked in {SILENT_PERIOD_SECONDS // 60} min (scheduled every {RUN_EVERY_MINUTES} min): "
                f"no new copy reaches {args.dr_region}. Check the schedule platform-{args.env}-redis-export and the function's throttles"
            ),
            namespace="AWS/Lambda",
            metric_name="Invocations",
            dimensions={"FunctionName": function.name},
            statistic="Sum",
            period=SILENT_PERIOD_SECONDS,
            evaluation_periods=1,
            comparison_operator="LessThanThreshold",
            threshold=1,
            # Lambda publishes no Invocations data point for a period without any
            treat_missing_data="breaching",
            **notify,
            opts=child,
        )
        stale_after = stale_after_minutes(args.interval_minutes)
        for group in args.replication_group_ids:
            aws.cloudwatch.MetricAlarm(
                f"{name}-stale-{group}",
                alarm_description=(
                    f"The newest export of {group} is over {stale_after} min old (one every {args.interval_minutes} min expected), "
                    f"or none is reported: the {args.dr_region} copy is getting stale. The function's log group says why"
                ),
                namespace=handler.NAMESPACE,
                metric_name=handler.AGE_METRIC,
                dimensions={handler.DIMENSION: group},
                statistic="Maximum",
                period=STALE_PERIOD_SECONDS,
                evaluation_periods=1,
                comparison_operator="GreaterThanThreshold",
                threshold=stale_after,
                # no data point: no export at all, or no run published one
                treat_missing_data="breaching",
                **notify,
                opts=child,
            )

    def _bucket(self, name: str, args: RedisExportArgs, region: str, owner: pulumi.Output[str]) -> tuple[aws.s3.Bucket, aws.s3.BucketVersioning]:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(name, region=region, opts=pulumi.ResourceOptions(parent=self, protect=True))
        versioning = aws.s3.BucketVersioning(
            f"{name}-versioning",
            bucket=bucket.id,
            region=region,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        ownership = lock_down(name, bucket, child, ownership="BucketOwnerPreferred", region=region)
        grant = aws.s3.BucketAclAccessControlPolicyGrantGranteeArgs
        aws.s3.BucketAcl(
            f"{name}-acl",
            bucket=bucket.id,
            region=region,
            access_control_policy=aws.s3.BucketAclAccessControlPolicyArgs(
                owner=aws.s3.BucketAclAccessControlPolicyOwnerArgs(id=owner),
                grants=[
                    aws.s3.BucketAclAccessControlPolicyGrantArgs(grantee=grant(type="CanonicalUser", id=owner), permission="FULL_CONTROL"),
                    *(
                        aws.s3.BucketAclAccessControlPolicyGrantArgs(grantee=grant(type="CanonicalUser", id=ELASTICACHE_CANONICAL_ID), permission=p)
                        for p in ("READ", "WRITE", "READ_ACP")
                    ),
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ownership]),
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            region=region,
            policy=bucket.arn.apply(lambda arn: json.dumps(bucket_policy(arn, region))),
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-lifecycle",
            bucket=bucket.id,
            region=region,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-exports",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args.retention_days),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(noncurrent_days=1),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(days_after_initiation=1),
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        return bucket, versioning

    def _replication(
        self, name: str, source: aws.s3.Bucket, source_versioning: aws.s3.BucketVersioning, dest: aws.s3.Bucket, dest_versioning: aws.s3.BucketVersioning
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-replication", assume_role_policy=service_trust("s3.amazonaws.com"), opts=child)
        aws.iam.RolePolicy(
            f"{name}-replication",
            role=role.id,
            policy=pulumi.Output.all(source.arn, dest.arn).apply(lambda v: json.dumps(replication_policy(*v))),
            opts=child,
        )
        aws.s3.BucketReplicationConfig(
            f"{name}-replication",
            bucket=source.id,
            role=role.arn,
            rules=[
                aws.s3.BucketReplicationConfigRuleArgs(
                    id="to-dr-region",
                    status="Enabled",
                    filter=aws.s3.BucketReplicationConfigRuleFilterArgs(prefix=""),
                    delete_marker_replication=aws.s3.BucketReplicationConfigRuleDeleteMarkerReplicationArgs(status="Disabled"),
                    destination=aws.s3.BucketReplicationConfigRuleDestinationArgs(bucket=dest.arn, storage_class="STANDARD"),
                )
            ],
            # S3 refuses a replication configuration until both buckets have versioning on.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[source_versioning, dest_versioning]),
        )

    def _function(self, name: str, args: RedisExportArgs, bucket: aws.s3.Bucket) -> aws.lambda_.Function:
        child = pulumi.ResourceOptions(parent=self)
        function_name = f"platform-{args.env}-redis-export"
        logs = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/aws/lambda/{function_name}", retention_in_days=args.log_retention_days, kms_key_id=args.kms_key_arn, opts=child
        )
        role = aws.iam.Role(f"{name}-function", assume_role_policy=service_trust("lambda.amazonaws.com"), opts=child)
        policy = pulumi.Output.all(args.account_id, bucket.arn, logs.arn, args.kms_key_arn).apply(
            lambda v: json.dumps(function_policy(args.region, *v, args.replication_group_ids))
        )
        role_policy = aws.iam.RolePolicy(f"{name}-function", role=role.id, policy=policy, opts=child)
        function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description=f"Export Redis snapshots every {args.interval_minutes} min for the {args.dr_region} copy",
            runtime="python3.12",
            architectures=["arm64"],
            handler=f"{HANDLER_FILE.stem}.handler",
            # relative to the project directory, where Pulumi runs the program: the same path on every machine
            code=pulumi.AssetArchive({HANDLER_FILE.name: pulumi.FileAsset(os.path.relpath(HANDLER_FILE))}),
            role=role.arn,
            timeout=TIMEOUT_SECONDS,
            memory_size=128,
            # no reserved_concurrent_executions: low-quota accounts reject it; runs are kept apart by timing
            # (module docstring: the schedule, the event age and the timeout add up to less than the interval)
            environment=aws.lambda_.FunctionEnvironmentArgs(
                variables={
                    "REPLICATION_GROUPS": ",".join(args.replication_group_ids),
                    "BUCKET": bucket.bucket,
                    "INTERVAL_MINUTES": str(args.interval_minutes),
                }
            ),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=logs.name),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[role_policy]),
        )
        # the scheduler invokes asynchronously: no late or retried run may overlap the next scheduled one
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-invoke",
            function_name=function.name,
            maximum_event_age_in_seconds=MAX_EVENT_AGE_SECONDS,
            maximum_retry_attempts=0,
            opts=child,
        )
        return function

    def _schedule(self, name: str, args: RedisExportArgs, function: aws.lambda_.Function) -> None:
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-scheduler", assume_role_policy=service_trust("scheduler.amazonaws.com"), opts=child)
        aws.iam.RolePolicy(
            f"{name}-scheduler",
            role=role.id,
            policy=function.arn.apply(
                lambda arn: json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": arn}]})
            ),
            opts=child,
        )
        aws.scheduler.Schedule(
            f"{name}-schedule",
            name=f"platform-{args.env}-redis-export",
            description="Runs the Redis snapshot export; each run decides whether a snapshot is due",
            schedule_expression=f"rate({RUN_EVERY_MINUTES} minutes)",
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            target=aws.scheduler.ScheduleTargetArgs(
                arn=function.arn,
                role_arn=role.arn,
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(maximum_retry_attempts=0),
            ),
            opts=child,
        )


def bucket_policy(bucket_arn: str, region: str) -> dict:
    """TLS only; ElastiCache (opt-in regions' mechanism) may write exports and read them for a restore."""
    resources = [bucket_arn, f"{bucket_arn}/*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            tls_only(bucket_arn),
            {
                "Sid": "ElastiCacheSnapshots",
                "Effect": "Allow",
                "Principal": {"Service": f"{region}.elasticache-snapshot.amazonaws.com"},
                "Action": SERVICE_S3_ACTIONS,
                "Resource": resources,
            },
        ],
    }


def replication_policy(source_arn: str, dest_arn: str) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": source_arn},
            {
                "Effect": "Allow",
                "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
                "Resource": f"{source_arn}/*",
            },
            {"Effect": "Allow", "Action": ["s3:ReplicateObject", "s3:ReplicateTags"], "Resource": f"{dest_arn}/*"},
        ],
    }


def function_policy(region: str, account: str, bucket_arn: str, log_group_arn: str, key_arn: str, groups: Sequence[str]) -> dict:
    """Snapshots of our groups only, named ``dr-*``; export to our bucket; metrics in our namespace; its own log group."""
    ec = f"arn:aws:elasticache:{region}:{account}"
    snapshots = f"{ec}:snapshot:{handler.PREFIX}*"
    replication_groups = [f"{ec}:replicationgroup:{g}" for g in groups]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "List", "Effect": "Allow", "Action": "elasticache:DescribeSnapshots", "Resource": "*"},
            # resource type replicationgroup (Service Authorization Reference, Amazon ElastiCache)
            {"Sid": "Describe", "Effect": "Allow", "Action": "elasticache:DescribeReplicationGroups", "Resource": replication_groups},
            {
                "Sid": "Snapshot",
                "Effect": "Allow",
                "Action": "elasticache:CreateSnapshot",
                # a snapshot of a cluster-mode-disabled group is taken of one of its nodes (``<group>-001``, ...);
                # the replication group is named too, the source of a cluster-mode-enabled group's snapshot
                "Resource": [*replication_groups, *(f"{ec}:cluster:{g}-*" for g in groups), snapshots],
            },
            {"Sid": "ExportAndDelete", "Effect": "Allow", "Action": ["elasticache:CopySnapshot", "elasticache:DeleteSnapshot"], "Resource": snapshots},
            {"Sid": "ExportCaller", "Effect": "Allow", "Action": EXPORT_CALLER_S3, "Resource": "*"},
            {
                "Sid": "ExportBucket",
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:PutObject", "s3:GetObject"],
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
            },
            {
                "Sid": "SnapshotKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*", "kms:CreateGrant"],
                "Resource": key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"elasticache.{region}.amazonaws.com"}},
            },
            {
                "Sid": "Metrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": handler.NAMESPACE}},
            },
            {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{log_group_arn}:*"},
        ],
    }
