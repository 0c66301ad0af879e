"""A private, encrypted RDS Postgres instance for one system, and its ``DATABASE_URL``.

Children: ``aws:ec2/securityGroup:SecurityGroup`` (no rules: each consuming service adds its own
ingress), ``aws:rds/subnetGroup:SubnetGroup`` (isolated subnets), ``aws:rds/parameterGroup:ParameterGroup``
(``rds.force_ssl=1``, slow-query logging, ``max_connections`` for the class),
``random:index/randomPassword:RandomPassword`` (master password), one ``aws:cloudwatch/logGroup:LogGroup``
per exported log (``/aws/rds/instance/<identifier>/postgresql`` and ``.../upgrade``, created before the
instance), ``aws:rds/instance:Instance``, with enhanced monitoring an IAM role, and with a DR region
``aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication`` (created in that region).

TLS that every client verifies. ``DATABASE_URL`` ends in ``?sslmode=require&sslaccept=strict&sslrootcert=``
:data:`RDS_CA_BUNDLE`, and every container that reads it also gets :func:`client_env`
(``NODE_EXTRA_CA_CERTS``). What each client makes of that query:

- node-postgres 8 (aurum, Ponder in twinkle's indexer, Prisma 7's ``@prisma/adapter-pg``):
  pg-connection-string's ``parse`` reads the ``sslrootcert`` file into ``ssl.ca`` and treats ``require``
  as ``verify-full`` (chain and host name checked against the RDS CA only; it prints a one-time
  "SECURITY WARNING" that ``require`` is an alias). When pg 9 adopts libpq's meaning of ``require``, the
  ``sslrootcert`` keeps it verifying (libpq: ``require`` with a root CA file behaves as ``verify-ca``).
  ``sslaccept`` is ignored (only known keys reach the startup packet). Source: brianc/node-postgres,
  packages/pg-connection-string/index.js (2.14.0) and packages/pg/lib/client.js ``getStartupConf``.
  ``sslcert`` would be a *client* certificate there, so it is never in the URL.
- Prisma's Rust engines (the Prisma 5 and 6 Client; ``prisma migrate deploy``, whose schema engine is
  still Rust in Prisma 7 and reads the URL from ``prisma.config.ts``): quaint knows ``sslmode``
  ``disable``/``prefer``/``require`` only (anything else, ``verify-full`` included, silently becomes
  ``prefer``, which goes on in plaintext when the answer to its TLS request is "no": tokio-postgres
  connect_tls.rs), and verifies the server only with ``sslaccept=strict`` (the default is
  ``accept_invalid_certs``); ``sslrootcert`` is discarded and ``sslcert`` is its CA file. Its trust
  store is native-tls on OpenSSL: ``SSL_CERT_FILE`` if set, else the system's CA file, so the image adds
  the RDS bundle to the OS trust store (``SSL_CERT_FILE`` would *replace* the system CAs for every
  OpenSSL user in the container). Source: prisma/prisma-engines quaint/src/connector/postgres/url.rs
  ``parse_query_params`` and native/mod.rs ``PostgreSql::new``; sfackler/rust-native-tls
  src/imp/openssl.rs and alexcrichton/openssl-probe src/lib.rs ``probe``.
- The image contract: the RDS global bundle (https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem)
  at :data:`RDS_CA_BUNDLE`, readable by the app user (mode 0644), and the same certificates added to
  the OS trust store (``update-ca-certificates``). Without the file node-postgres fails at connect
  (ENOENT) and Prisma fails the handshake: no client falls back to an unverified connection.

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

from stacks.presets import LogsPreset, PostgresPreset, postgres_max_connections

from .iam import service_trust

PORT = 5432
RDS_CA_BUNDLE = "/etc/ssl/certs/rds-global-bundle.pem"
"""Where the image bakes the RDS global CA bundle (global-bundle.pem from the RDS trust store)."""
LOG_EXPORTS = ("postgresql", "upgrade")
"""Logs the instance publishes to CloudWatch Logs, each into ``/aws/rds/instance/<identifier>/<log>``."""
TLS_QUERY = f"sslmode=require&sslaccept=strict&sslrootcert={RDS_CA_BUNDLE}"
"""The query of ``DATABASE_URL``: encrypted and verified by node-postgres and by Prisma (module docstring)."""


def client_env() -> dict[str, str]:
    """Plain environment every container that reads ``DATABASE_URL`` needs (app and migration alike).

    ``NODE_EXTRA_CA_CERTS`` adds the RDS CAs to Node's own store, read once at process start: a Node
    client that verifies TLS from ``sslmode`` alone (not from ``sslrootcert``) then accepts RDS too.
    Prisma's engine needs no variable: it reads the OS trust store the image extends.
    """
    return {"NODE_EXTRA_CA_CERTS": RDS_CA_BUNDLE}


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
    log_retention_days: int = LogsPreset().retention_days
    """Retention of the exported-log groups (the preset's ``logs.retention_days``). Default: the preset model's (7)."""
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
    """``postgresql://user:pass@host:5432/db?`` :data:`TLS_QUERY`, a secret."""
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
                # Static: RDS refuses apply_method "immediate" for it, and reads "pending-reboot" back, so
                # stating it keeps the next preview empty (terraform-provider-aws parameter_group.go hashes
                # name, apply_method and value into the set; flex.go flattenParameters reads ApplyMethod from
                # DescribeDBParameters). A new instance boots with it; an existing one at its next reboot.
                aws.rds.ParameterGroupParameterArgs(
                    name="max_connections", value=str(postgres_max_connections(s.instance_class)), apply_method="pending-reboot"
                ),
            ],
            opts=child,
        )
        # RDS creates /aws/rds/instance/<id>/<log> on first export, without a retention or a key. Ours
        # exist first (the instance depends on them), with the environment key and the preset's retention.
        # The key policy (components/kms.py) already admits CloudWatch Logs for every log group of the
        # account and region (kms:EncryptionContext:aws:logs:arn ArnLike ...:log-group:*).
        log_groups = [
            aws.cloudwatch.LogGroup(
                f"{name}-{log}-logs",
                name=f"/aws/rds/instance/{args.identifier}/{log}",
                retention_in_days=args.log_retention_days,
                kms_key_id=args.kms_key_arn,
                opts=child,
            )
            for log in LOG_EXPORTS
        ]
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
            enabled_cloudwatch_logs_exports=list(LOG_EXPORTS),
            iam_database_authentication_enabled=True,
            performance_insights_enabled=s.performance_insights,
            performance_insights_kms_key_id=args.kms_key_arn if s.performance_insights else None,
            performance_insights_retention_period=7 if s.performance_insights else None,
            monitoring_interval=s.monitoring_interval_seconds,
            monitoring_role_arn=monitoring_role.arn if monitoring_role else None,
            tags={"Name": args.identifier},
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=log_groups,
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
                lambda v: f"postgresql://{username}:{v[1]}@{v[0]}:{PORT}/{args.database}?{TLS_QUERY}"
            )
        )
        self.register_outputs({"security_group_id": self.security_group_id, "address": self.address})
