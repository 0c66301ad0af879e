"""A private, encrypted RDS Postgres instance for one system, and its ``DATABASE_URL``.

Children: ``aws:ec2/securityGroup:SecurityGroup`` (no rules: each consuming service adds its own
ingress), ``aws:rds/subnetGroup:SubnetGroup`` (isolated subnets), ``aws:rds/parameterGroup:ParameterGroup``
(``rds.force_ssl=1``, slow-query logging), ``random:index/randomPassword:RandomPassword`` (master
password), ``aws:rds/instance:Instance``, with enhanced monitoring an IAM role, and with a DR region
``aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication`` (created in that region).

Master password: a pulumi-random password (letters and digits only, so it is URL-safe without
escaping) kept in Pulumi state as a secret, composed into ``DATABASE_URL`` here and stored in Secrets
Manager by the secrets component. We chose this over RDS-managed passwords
(``manage_master_user_password``) because the apps read one ``DATABASE_URL``: an RDS-managed secret
holds JSON with the password only and rotates on its own schedule, so a second process would have to
recompose the URL after every rotation and the services would not roll with it. The cost of our choice:
the password sits (encrypted) in Pulumi state, and rotation is explicit: bump the system's rotation key
for ``DATABASE_URL`` in the stack file and ``pulumi up`` (new password, new URL, services roll).

Cost note: db.t4g.micro single-AZ is about $12/month plus $0.115/GB-month of gp3; Multi-AZ doubles both.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from stacks.presets import PostgresPreset

from .iam import service_trust

PORT = 5432


@dataclass(frozen=True, kw_only=True)
class PostgresArgs:
    identifier: str
    """RDS identifier (``<system>-<env>``). Warning: changing it replaces the instance."""
    database: str
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    kms_key_arn: pulumi.Input[str]
    settings: PostgresPreset
    max_storage_gb: int
    """Storage-autoscaling ceiling: the larger of the preset's and the app's ask."""
    rotation: int = 0
    """Bump to generate a new master password."""
    dr: DrCopy | None = None
    """Replicate automated backups to another region. Default: none."""


@dataclass(frozen=True, kw_only=True)
class DrCopy:
    region: str
    kms_key_arn: pulumi.Input[str]
    """A key in ``region``: an encrypted instance's backups are re-encrypted there."""
    retention_days: int


class Postgres(pulumi.ComponentResource):
    """RDS Postgres in isolated subnets, TLS enforced, encrypted with the environment key."""

    security_group_id: pulumi.Output[str]
    """Add ingress from a consumer to this group (port :data:`PORT`)."""
    address: pulumi.Output[str]
    """Hostname clients connect to."""
    database_url: pulumi.Output[str]
    """``postgresql://user:pass@host:5432/db?sslmode=require``, a secret."""
    instance: aws.rds.Instance
    port: int = PORT

    def __init__(self, name: str, args: PostgresArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:data:Postgres", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        sg = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=args.vpc_id, description=f"Postgres {args.identifier}: ingress added per consuming service", egress=[], opts=child
        )
        subnets = aws.rds.SubnetGroup(f"{name}-subnets", subnet_ids=args.subnet_ids, description=f"{args.identifier} isolated subnets", opts=child)
        params = aws.rds.ParameterGroup(
            f"{name}-params",
            family=f"postgres{s.engine_major}",
            description=f"{args.identifier}: TLS only, slow queries logged",
            parameters=[
                aws.rds.ParameterGroupParameterArgs(name="rds.force_ssl", value="1"),
                aws.rds.ParameterGroupParameterArgs(name="log_min_duration_statement", value="1000"),
            ],
            opts=child,
        )
        password = random.RandomPassword(f"{name}-password", length=32, special=False, keepers={"rotation": str(args.rotation)}, opts=child)
        monitoring_role = None
        if s.monitoring_interval_seconds:
            monitoring_role = aws.iam.Role(
                f"{name}-monitoring",
                assume_role_policy=service_trust("monitoring.rds.amazonaws.com"),
                managed_policy_arns=["arn:aws:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"],
                opts=child,
            )
        username = "app"
        self.instance = aws.rds.Instance(
            f"{name}-instance",
            identifier=args.identifier,
            engine="postgres",
            engine_version=str(s.engine_major),
            auto_minor_version_upgrade=True,
            allow_major_version_upgrade=False,
            instance_class=s.instance_class,
            storage_type="gp3",
            allocated_storage=s.allocated_storage_gb,
            max_allocated_storage=args.max_storage_gb,
            storage_encrypted=True,
            kms_key_id=args.kms_key_arn,
            db_name=args.database,
            username=username,
            password=password.result,
            port=PORT,
            db_subnet_group_name=subnets.name,
            vpc_security_group_ids=[sg.id],
            publicly_accessible=False,
            parameter_group_name=params.name,
            multi_az=s.multi_az,
            backup_retention_period=s.backup_retention_days,
            backup_window="03:00-03:30",
            maintenance_window="sun:04:00-sun:05:00",
            copy_tags_to_snapshot=True,
            deletion_protection=s.deletion_protection,
            skip_final_snapshot=not s.final_snapshot,
            final_snapshot_identifier=f"{args.identifier}-final" if s.final_snapshot else None,
            enabled_cloudwatch_logs_exports=["postgresql", "upgrade"],
            iam_database_authentication_enabled=True,
            performance_insights_enabled=s.performance_insights,
            performance_insights_kms_key_id=args.kms_key_arn if s.performance_insights else None,
            performance_insights_retention_period=7 if s.performance_insights else None,
            monitoring_interval=s.monitoring_interval_seconds,
            monitoring_role_arn=monitoring_role.arn if monitoring_role else None,
            tags={"Name": args.identifier},
            opts=pulumi.ResourceOptions(
                parent=self,
                protect=s.deletion_protection,
                # Multi-AZ creation and storage modifications routinely take 20+ minutes.
                custom_timeouts=pulumi.CustomTimeouts(create="90m", update="120m", delete="60m"),
            ),
        )
        if args.dr:
            # Point-in-time restore in the DR region, from backups RDS copies continuously (RPO: minutes).
            aws.rds.InstanceAutomatedBackupsReplication(
                f"{name}-dr-backups",
                source_db_instance_arn=self.instance.arn,
                retention_period=args.dr.retention_days,
                kms_key_id=args.dr.kms_key_arn,
                region=args.dr.region,
                opts=child,
            )
        self.security_group_id = sg.id
        self.address = self.instance.address
        self.database_url = pulumi.Output.secret(
            pulumi.Output.all(self.instance.address, password.result).apply(
                lambda v: f"postgresql://{username}:{v[1]}@{v[0]}:{PORT}/{args.database}?sslmode=require"
            )
        )
        self.register_outputs({"security_group_id": self.security_group_id, "address": self.address})
