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

Permissions: ElastiCache writes to the export bucket and reads from the DR bucket (a restore) as a
service. AWS documents two mechanisms, the bucket ACL grant to ElastiCache's canonical user in regions
enabled by default and the regional service principal ``<region>.elasticache-snapshot.amazonaws.com``
in opt-in regions ("Exporting a backup", step 2; "Seeding a new cluster with an externally created
backup", step 4). Both are configured (the one a region does not use grants nothing), which needs ACLs
enabled: ``BucketOwnerPreferred`` ownership instead of ``BucketOwnerEnforced``. The export bucket lets
ElastiCache write (ACL ``READ``, ``WRITE``, ``READ_ACP``); the DR bucket only read (``READ``,
``READ_ACP``; ``s3:GetObject``, ``s3:ListBucket``, ``s3:GetBucketAcl`` for the service principal, the
seeding guide's list). Public access stays blocked. Objects are encrypted with SSE-S3 in both buckets:
ElastiCache exports to, and seeds from, SSE-S3 only.

Confidentiality: each ``.rdb`` is a full copy of a cache. Both buckets deny ``s3:GetObject*`` to every
principal of the account (``aws:PrincipalAccount``) whose ``aws:PrincipalArn`` is not the replication
role or one of ``security.redis_restore_role_arns``: an administrator with ``s3:*`` cannot read them.
ElastiCache is not of the account (its canonical user is AWS's) or is a service principal
(``aws:PrincipalServiceName``, exempt), so exports and restores go on. A restore names its files in
``snapshot_arns``, which needs ``s3:GetObject`` on each of them for the caller (ElastiCache's "API
permissions" reference, CreateReplicationGroup): the caller is a restore role. A Deny with a condition
rather than ``NotPrincipal`` (IAM policy elements reference: ``NotPrincipal`` with ``Deny`` is
discouraged); no anonymous request gets past the public access block.

Access logs: S3 server access logging of each bucket to an access-log bucket of its own region (S3
delivers only to a bucket in the source's region and account): ``<bucket>-access-logs``, written by
``logging.s3.amazonaws.com`` for that source bucket only (``aws:SourceArn``, ``aws:SourceAccount``, the
S3 user guide's policy), SSE-S3 (the only default encryption a log target may have), versioned, kept
``log_retention_days``. A log bucket is not logged itself (S3: "Your target bucket should not have
server access logging enabled"). Not the load balancer's log bucket (``alb.py``): it is in the primary
region only, a DR bucket cannot log there, and its policy admits ELB's delivery alone.

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

Permissions of the function, what its calls need and no more: list snapshots (``DescribeSnapshots``
lists the account's, so ``*``); describe our groups only; snapshot our groups' nodes into
``snapshot:dr-<group>-*`` only; export and delete ``snapshot:dr-<group>-*`` only; for the export
(``CopySnapshot`` with ``TargetBucket``) ``s3:ListAllMyBuckets`` (no resource type) and
``s3:GetBucketLocation`` on the export bucket, the two S3 permissions ElastiCache's API permissions
reference lists for it (ElastiCache writes the file itself); ``s3:ListBucket`` on the export bucket
(its own listing); the environment key through ElastiCache only (``kms:ViaService``: ElastiCache's guide
names ``elasticache.<region>`` and ``dax.<region>``), ``kms:CreateGrant`` only for a grant to an AWS
resource (``kms:GrantIsForAWSResource``), one grant per snapshot; metrics in ``Platform/RedisExport``
only (``PutMetricData`` has no resource type, so ``"*"`` with the ``cloudwatch:namespace`` condition
key, as CloudWatch's "Using condition keys to limit access to CloudWatch namespaces" does); X-Ray
(``xray:PutTraceSegments``, ``xray:PutTelemetryRecords``, Lambda's "active tracing" permissions, no
resource type); its own logs. No ``s3:GetObject`` or ``s3:PutObject``: the buckets deny it the read
anyway.

The function's environment variables are encrypted with the environment key (``kms_key_arn``; Lambda
creates its grant with the deployer's permissions, the execution role needs none) and its invocations
are traced (``tracing_config`` ``Active``). The schedule encrypts its payload with the same key
(``kms_key_arn``): the scheduler decrypts it as the execution role, which may ``kms:Decrypt`` with the
schedule's ARN as encryption context (``aws:scheduler:schedule:arn``) only.

Trust: the scheduler's role trusts ``scheduler.amazonaws.com`` for our account's schedule group only
(``aws:SourceAccount``, ``aws:SourceArn`` of the group; EventBridge Scheduler's "Confused deputy
prevention": the group's ARN, never a schedule's). The replication role and the function's role trust
their service without those keys: neither S3's replication guide nor Lambda's execution-role guide says
the service sends them when it assumes the role (Lambda's says ``aws:SourceArn`` is for policies where
the function is the resource), and a key a service does not send makes the role unusable.

Children: ``aws:s3/bucket:Bucket`` ``-export`` and ``-dr`` (the latter in ``dr_region``), each with
versioning, encryption, public access block, ownership controls, ACL, policy, lifecycle and
``aws:s3/bucketLogging:BucketLogging`` to its ``-access-logs`` bucket (encryption, public access block,
ownership, versioning, lifecycle, policy); ``aws:s3/bucketReplicationConfig:BucketReplicationConfig``
and its ``aws:iam/role:Role``; the function's ``aws:cloudwatch/logGroup:LogGroup``,
``aws:iam/role:Role`` and ``aws:lambda/function:Function`` with its
``aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig``; an ``aws:scheduler/schedule:Schedule``
with the role it invokes with; the alarms above, each an ``aws:cloudwatch/metricAlarm:MetricAlarm``
(2 + one per cache).

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
($0.10 a month each): $1.80 a month for prod's four caches. Access logs: a few hundred small records a
day (the function lists the bucket each run), cents a year; X-Ray: about 2,900 traces a month, within its
free tier (100,000); KMS: a decrypt of the function's environment per cold start and of the schedule's
payload per run, some 3,000 requests a month ($0.03 a 10,000).
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
# The schedule's group, named so that the scheduler role's trust can name its ARN (a schedule created
# without a group is in "default", the provider's docs for group_name).
SCHEDULE_GROUP = "default"
# What ElastiCache does as a service in each bucket: write exports (and check them) in the export bucket
# ("Exporting a backup"); only read in the DR bucket, to seed a new group ("Seeding a new cluster with
# an externally created backup", step 4, opt-in regions: GetObject, ListBucket, GetBucketAcl).
EXPORT_SERVICE_S3 = ["s3:PutObject", "s3:GetObject", "s3:ListBucket", "s3:GetBucketAcl", "s3:ListMultipartUploadParts", "s3:ListBucketMultipartUploads"]
RESTORE_SERVICE_S3 = ["s3:GetObject", "s3:ListBucket", "s3:GetBucketAcl"]
# The same through the ACL grant to ElastiCache's canonical user (regions enabled by default): READ lists
# the bucket, WRITE writes objects, READ_ACP reads the bucket's ACL.
EXPORT_SERVICE_ACL = ("READ", "WRITE", "READ_ACP")
RESTORE_SERVICE_ACL = ("READ", "READ_ACP")
# Every object read (GetObject, GetObjectVersion, ...ForReplication, ...Acl, ...Attributes, ...).
OBJECT_READS = "s3:GetObject*"
# The "not running" alarm's period: longer than the schedule's interval (four runs), so one late or
# dropped invocation does not page.
SILENT_PERIOD_SECONDS = 3600
# The "stale export" alarm evaluates the age's maximum over an hour (four runs publish in it).
STALE_PERIOD_SECONDS = 3600
# Versions of an access-log object someone deleted or overwrote stay this long (the logs are append-only).
ACCESS_LOG_NONCURRENT_DAYS = 30


def stale_after_minutes(interval_minutes: int) -> int:
    """Age of the newest export past which its alarm fires.

    Normally the newest export is at most the interval plus the export's lag old (up to a run until
    the next snapshot is taken, a run to see it available, minutes to write it); the backup window can
    delay a snapshot by its hour. Twice the interval plus an hour: one late or lost snapshot does not
    page, a second one in a row does.
    """
    return 2 * interval_minutes + 60


def elasticache_service(region: str) -> str:
    """The service principal ElastiCache writes and reads exports as in ``region`` (opt-in regions)."""
    return f"{region}.elasticache-snapshot.amazonaws.com"


@dataclass(frozen=True, kw_only=True)
class RedisExportArgs:
    env: str
    region: str
    dr_region: str
    account_id: pulumi.Input[str]
    replication_group_ids: Sequence[str]
    kms_key_arn: pulumi.Input[str]
    """The environment key, which encrypts the caches and their snapshots, the function's environment
    and the schedule's payload."""
    topic_arn: pulumi.Input[str]
    interval_minutes: int
    retention_days: int
    log_retention_days: int
    """Days the function's logs and the buckets' access logs are kept."""
    restore_role_arns: Sequence[str] = ()
    """Roles that may read the exports besides S3 replication (preset ``security.redis_restore_role_arns``)."""


class RedisExport(pulumi.ComponentResource):
    """Scheduled snapshot export of every cache, replicated to the DR region."""

    dr_bucket: pulumi.Output[str]
    """The bucket in the DR region that holds the ``.rdb`` copies."""

    def __init__(self, name: str, args: RedisExportArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:data:RedisExport", name, None, opts)
        owner = aws.s3.get_canonical_user_id_output(opts=pulumi.InvokeOutputOptions(parent=self)).id
        # S3 replication's role exists before the buckets: their policies name it as a reader
        replication_role = aws.iam.Role(f"{name}-replication", assume_role_policy=service_trust("s3.amazonaws.com"), opts=pulumi.ResourceOptions(parent=self))
        readers = pulumi.Output.all(replication_role.arn, *args.restore_role_arns).apply(list)
        export, export_versioning = self._bucket(f"{name}-export", args, args.region, owner, readers, restore=False)
        dr, dr_versioning = self._bucket(f"{name}-dr", args, args.dr_region, owner, readers, restore=True)
        self._replication(name, replication_role, export, export_versioning, dr, dr_versioning)
        function = self._function(name, args, export)
        self._schedule(name, args, function)
        self._alarms(name, args, function)
        self.dr_bucket = dr.bucket
        self.register_outputs({"dr_bucket": self.dr_bucket})

    def _alarms(self, name: str, args: RedisExportArgs, function: aws.lambda_.Function) -> None:
        child = pulumi.ResourceOptions(parent=self)
        # a stale DR copy is a warning (the warning topic, components/platform.py): nothing is down
        notify = {"alarm_actions": [args.topic_arn], "ok_actions": [args.topic_arn], "tags": {"priority": "warning"}}
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

    def _bucket(
        self, name: str, args: RedisExportArgs, region: str, owner: pulumi.Output[str], readers: pulumi.Output[list[str]], *, restore: bool
    ) -> tuple[aws.s3.Bucket, aws.s3.BucketVersioning]:
        """The export bucket (``restore`` false: ElastiCache writes) or the DR bucket (true: ElastiCache reads)."""
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
                        for p in (RESTORE_SERVICE_ACL if restore else EXPORT_SERVICE_ACL)
                    ),
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[ownership]),
        )
        aws.s3.BucketPolicy(
            f"{name}-policy",
            bucket=bucket.id,
            region=region,
            policy=pulumi.Output.all(bucket.arn, args.account_id, readers).apply(
                lambda v: json.dumps(bucket_policy(v[0], region, v[1], v[2], restore=restore))
            ),
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
        logs, logs_policy = self._access_logs(name, args, region, bucket)
        aws.s3.BucketLogging(
            f"{name}-logging",
            bucket=bucket.id,
            region=region,
            target_bucket=logs.bucket,
            target_prefix=f"{name}/",
            # S3 delivers only what the target's policy lets logging.s3.amazonaws.com write
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs_policy]),
        )
        return bucket, versioning

    def _access_logs(self, name: str, args: RedisExportArgs, region: str, source: aws.s3.Bucket) -> tuple[aws.s3.Bucket, aws.s3.BucketPolicy]:
        """The bucket that receives ``source``'s server access logs, in its region (S3 requires it)."""
        child = pulumi.ResourceOptions(parent=self)
        logs_name = f"{name}-access-logs"
        logs = aws.s3.Bucket(logs_name, region=region, opts=child)
        # SSE-S3 is the only default encryption a server-access-log target may have (S3 user guide)
        lock_down(logs_name, logs, child, ownership="BucketOwnerEnforced", region=region)
        versioning = aws.s3.BucketVersioning(
            f"{logs_name}-versioning",
            bucket=logs.id,
            region=region,
            versioning_configuration=aws.s3.BucketVersioningVersioningConfigurationArgs(status="Enabled"),
            opts=child,
        )
        aws.s3.BucketLifecycleConfiguration(
            f"{logs_name}-lifecycle",
            bucket=logs.id,
            region=region,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-access-logs",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=args.log_retention_days),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=ACCESS_LOG_NONCURRENT_DAYS
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(days_after_initiation=1),
                )
            ],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[versioning]),
        )
        policy = aws.s3.BucketPolicy(
            f"{logs_name}-policy",
            bucket=logs.id,
            region=region,
            policy=pulumi.Output.all(logs.arn, source.arn, args.account_id).apply(lambda v: json.dumps(access_log_policy(v[0], v[1], v[2], f"{name}/"))),
            opts=child,
        )
        return logs, policy

    def _replication(
        self,
        name: str,
        role: aws.iam.Role,
        source: aws.s3.Bucket,
        source_versioning: aws.s3.BucketVersioning,
        dest: aws.s3.Bucket,
        dest_versioning: aws.s3.BucketVersioning,
    ) -> None:
        child = pulumi.ResourceOptions(parent=self)
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
            # the environment at rest under the environment key; Lambda's grant on it is made with the
            # deployer's kms:CreateGrant (Lambda developer guide, "Securing environment variables")
            kms_key_arn=args.kms_key_arn,
            # each run a trace in X-Ray (the role's Tracing statement)
            tracing_config=aws.lambda_.FunctionTracingConfigArgs(mode="Active"),
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
        schedule_name = f"platform-{args.env}-redis-export"
        account = pulumi.Output.from_input(args.account_id)
        trust = service_trust(
            "scheduler.amazonaws.com",
            source_account=account,
            source_arn=account.apply(lambda a: schedule_group_arn(args.region, a)),
        )
        role = aws.iam.Role(f"{name}-scheduler", assume_role_policy=trust, opts=child)
        aws.iam.RolePolicy(
            f"{name}-scheduler",
            role=role.id,
            policy=pulumi.Output.all(function.arn, args.kms_key_arn, account).apply(
                lambda v: json.dumps(scheduler_policy(v[0], v[1], schedule_arn(args.region, v[2], schedule_name)))
            ),
            opts=child,
        )
        aws.scheduler.Schedule(
            f"{name}-schedule",
            name=schedule_name,
            group_name=SCHEDULE_GROUP,
            description="Runs the Redis snapshot export; each run decides whether a snapshot is due",
            schedule_expression=f"rate({RUN_EVERY_MINUTES} minutes)",
            flexible_time_window=aws.scheduler.ScheduleFlexibleTimeWindowArgs(mode="OFF"),
            # the payload under the environment key; the scheduler decrypts it as the execution role
            kms_key_arn=args.kms_key_arn,
            target=aws.scheduler.ScheduleTargetArgs(
                arn=function.arn,
                role_arn=role.arn,
                retry_policy=aws.scheduler.ScheduleTargetRetryPolicyArgs(maximum_retry_attempts=0),
            ),
            opts=child,
        )


def schedule_group_arn(region: str, account: str) -> str:
    return f"arn:aws:scheduler:{region}:{account}:schedule-group/{SCHEDULE_GROUP}"


def schedule_arn(region: str, account: str, schedule_name: str) -> str:
    """What the scheduler passes as ``aws:scheduler:schedule:arn`` encryption context (EventBridge
    Scheduler, "Encryption at rest": ``arn:aws:scheduler:<region>:<account>:schedule/<group>/<name>``)."""
    return f"arn:aws:scheduler:{region}:{account}:schedule/{SCHEDULE_GROUP}/{schedule_name}"


def bucket_policy(bucket_arn: str, region: str, account: str, readers: Sequence[str], *, restore: bool) -> dict:
    """TLS only; no object read by the account's principals but ``readers``; ElastiCache (opt-in regions'
    mechanism) may write exports (``restore`` false) or read them for a restore (true)."""
    service = elasticache_service(region)
    return {
        "Version": "2012-10-17",
        "Statement": [
            tls_only(bucket_arn),
            {
                "Sid": "OnlyNamedRolesReadExports",
                "Effect": "Deny",
                "Principal": "*",
                "Action": OBJECT_READS,
                "Resource": f"{bucket_arn}/*",
                "Condition": {
                    # for an assumed role the role's ARN (IAM global condition keys, aws:PrincipalArn)
                    "ArnNotEquals": {"aws:PrincipalArn": list(readers)},
                    # the account's principals: ElastiCache's canonical user (ACL grants) is AWS's, not ours
                    "StringEquals": {"aws:PrincipalAccount": account},
                    # present only for a service principal's own request: ElastiCache in opt-in regions
                    "StringNotEqualsIfExists": {"aws:PrincipalServiceName": service},
                },
            },
            {
                "Sid": "ElastiCacheRestores" if restore else "ElastiCacheExports",
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": RESTORE_SERVICE_S3 if restore else EXPORT_SERVICE_S3,
                "Resource": [bucket_arn, f"{bucket_arn}/*"],
            },
        ],
    }


def access_log_policy(logs_arn: str, source_arn: str, account: str, prefix: str) -> dict:
    """TLS only; S3 log delivery writes ``source_arn``'s access logs under ``prefix`` (S3 user guide,
    "Enabling Amazon S3 server access logging": the logging service principal, aws:SourceArn, aws:SourceAccount)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            tls_only(logs_arn),
            {
                "Sid": "S3ServerAccessLogs",
                "Effect": "Allow",
                "Principal": {"Service": "logging.s3.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": f"{logs_arn}/{prefix}*",
                "Condition": {"ArnLike": {"aws:SourceArn": source_arn}, "StringEquals": {"aws:SourceAccount": account}},
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


def scheduler_policy(function_arn: str, key_arn: str, schedule: str) -> dict:
    """Invoke the function; decrypt the schedule's payload (EventBridge Scheduler, "Encryption at rest":
    the execution role calls kms:Decrypt with the schedule's ARN as encryption context)."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "Invoke", "Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": function_arn},
            {
                "Sid": "DecryptPayload",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": key_arn,
                "Condition": {"StringEquals": {"kms:EncryptionContext:aws:scheduler:schedule:arn": schedule}},
            },
        ],
    }


def function_policy(region: str, account: str, bucket_arn: str, log_group_arn: str, key_arn: str, groups: Sequence[str]) -> dict:
    """What the function's calls need (module docstring, "Permissions of the function")."""
    ec = f"arn:aws:elasticache:{region}:{account}"
    snapshots = [f"{ec}:snapshot:{handler.PREFIX}{g}-*" for g in groups]
    replication_groups = [f"{ec}:replicationgroup:{g}" for g in groups]
    # ElastiCache's at-rest encryption guide: kms:ViaService for ElastiCache takes both names
    through_elasticache = {"kms:ViaService": [f"elasticache.{region}.amazonaws.com", f"dax.{region}.amazonaws.com"]}
    return {
        "Version": "2012-10-17",
        "Statement": [
            # DescribeSnapshots authorizes resource type snapshot* (Service Authorization Reference, Amazon
            # ElastiCache; parliament's copy of it agrees): every snapshot of this account and region, which is
            # what the unfiltered listing reads, and nothing of another service
            {"Sid": "List", "Effect": "Allow", "Action": "elasticache:DescribeSnapshots", "Resource": f"{ec}:snapshot:*"},
            # resource type replicationgroup (Service Authorization Reference, Amazon ElastiCache)
            {"Sid": "Describe", "Effect": "Allow", "Action": "elasticache:DescribeReplicationGroups", "Resource": replication_groups},
            {
                "Sid": "Snapshot",
                "Effect": "Allow",
                "Action": "elasticache:CreateSnapshot",
                # a snapshot of a cluster-mode-disabled group is taken of one of its nodes (``<group>-001``, ...);
                # the replication group is named too, the source of a cluster-mode-enabled group's snapshot
                "Resource": [*replication_groups, *(f"{ec}:cluster:{g}-*" for g in groups), *snapshots],
            },
            # CopySnapshot authorizes its source and its target snapshot, here the same name
            {"Sid": "ExportAndDelete", "Effect": "Allow", "Action": ["elasticache:CopySnapshot", "elasticache:DeleteSnapshot"], "Resource": snapshots},
            # CopySnapshot to S3: ElastiCache's API permissions reference lists s3:ListAllMyBuckets (no
            # resource type) and s3:GetBucketLocation for the caller; ElastiCache writes the file itself
            {"Sid": "ExportCaller", "Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"},
            # ListObjectsV2 (the function's own listing) is s3:ListBucket
            {"Sid": "ExportBucket", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": bucket_arn},
            {
                "Sid": "SnapshotKey",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:DescribeKey", "kms:GenerateDataKey*"],
                "Resource": key_arn,
                "Condition": {"StringEquals": through_elasticache},
            },
            {
                # ElastiCache makes one grant per snapshot while it is taken (at-rest encryption guide)
                "Sid": "SnapshotKeyGrant",
                "Effect": "Allow",
                "Action": "kms:CreateGrant",
                "Resource": key_arn,
                "Condition": {"StringEquals": through_elasticache, "Bool": {"kms:GrantIsForAWSResource": "true"}},
            },
            {
                "Sid": "Metrics",
                "Effect": "Allow",
                "Action": "cloudwatch:PutMetricData",
                "Resource": "*",
                "Condition": {"StringEquals": {"cloudwatch:namespace": handler.NAMESPACE}},
            },
            # Lambda active tracing (Lambda developer guide, "Execution role permissions" for X-Ray); no resource type
            {"Sid": "Tracing", "Effect": "Allow", "Action": ["xray:PutTraceSegments", "xray:PutTelemetryRecords"], "Resource": "*"},
            {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{log_group_arn}:*"},
        ],
    }
