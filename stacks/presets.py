"""Environment presets: how big and how safe dev, staging and prod are (DESIGN.md, "Environments").

A stack file picks a preset (``platform:preset``, default: the stack name) and may override any key
under ``platform:overrides``, key by key: ``overrides: {postgres: {instance_class: db.t4g.small}}``.
Environment differences live here as data; components never branch on the environment's name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from .catalog import Strict

# Instance classes RDS offers for PostgreSQL (families and sizes), and ElastiCache node types.
RDS_POSTGRES_CLASSES = (
    r"^db\.(t3\.(micro|small|medium|large|xlarge|2xlarge)|t4g\.(micro|small|medium|large|xlarge|2xlarge)"
    r"|(m5|m6i|m7i|r5|r6i|r7i)\.(large|xlarge|2xlarge|4xlarge|8xlarge|12xlarge|16xlarge|24xlarge)"
    r"|(m6g|m7g|r6g|r7g)\.(large|xlarge|2xlarge|4xlarge|8xlarge|12xlarge|16xlarge))$"
)
CACHE_NODE_TYPES = (
    r"^cache\.(t3\.(micro|small|medium)|t4g\.(micro|small|medium)"
    r"|(m5|m6g|m7g|r5|r6g|r7g)\.(large|xlarge|2xlarge|4xlarge|8xlarge|12xlarge|16xlarge))$"
)

# Memory (GiB) of the instance classes RDS_POSTGRES_CLASSES allows: burstables by size; m-families by
# size, r-families twice that (Amazon RDS User Guide, "Hardware specifications for DB instance classes").
_BURSTABLE_GIB = {"micro": 1, "small": 2, "medium": 4, "large": 8, "xlarge": 16, "2xlarge": 32}
_GENERAL_GIB = {"large": 8, "xlarge": 16, "2xlarge": 32, "4xlarge": 64, "8xlarge": 128, "12xlarge": 192, "16xlarge": 256, "24xlarge": 384}

# The max_connections we set in every Postgres parameter group, by the class's memory. RDS's own default
# is LEAST({DBInstanceClassMemory/9531392}, 5000) (AWS Prescriptive Guidance, "Tuning PostgreSQL
# parameters: max_connections"), but DBInstanceClassMemory is the class's memory less what the OS and
# the RDS processes reserve, a number AWS does not publish per class: SHOW max_connections on a
# db.t3/t4g.micro is reported at about 80-87, not the 112 that 1 GiB gives. So we set the value and
# the connections alarm reads the same table. 80 per GiB stays at or under what every class gets by
# default (the reserve is proportionally smallest on big classes); 5000 is RDS's cap. The parameter is
# static (applied at a reboot), and a value above what the memory holds can keep Postgres from
# starting, so never raise a row above the RDS default for that memory.
#   GiB                  1    2    4    8     16    32    64+
#   RDS default (GiB)   112  225  450  901  1802  3604  5000
#   we set               80  160  320  640  1280  2560  5000
POSTGRES_CONNECTIONS_PER_GIB = 80
POSTGRES_MAX_CONNECTIONS_CAP = 5000

# CloudWatch Logs accepts only these retention values (PutRetentionPolicy).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


class NetworkPreset(Strict):
    az_count: int = Field(default=2, ge=2, le=6)
    """Availability zones to spread subnets over. Default: 2; prod uses 3."""
    nat: Literal["single", "per_az"] = "single"
    """One NAT gateway for the VPC, or one per AZ (no cross-AZ dependency). Default: ``single``."""
    flow_log_traffic: Literal["ALL", "REJECT"] = "REJECT"
    """Which traffic VPC flow logs record. Default: ``REJECT`` (cheap); prod records ``ALL``."""


class PostgresPreset(Strict):
    engine_major: Literal[16, 17] = 16
    """Postgres major version. Default: 16. Warning: changing it is a major-version upgrade."""
    instance_class: str = Field(default="db.t4g.micro", pattern=RDS_POSTGRES_CLASSES)
    """RDS instance class (a Postgres-capable family: t3, t4g, m5, m6g/i, m7g/i, r5, r6g/i, r7g/i). Default: ``db.t4g.micro``."""
    allocated_storage_gb: int = Field(default=20, ge=20, le=65536)
    """Initial gp3 storage. Default: 20 (the gp3 minimum)."""
    max_allocated_storage_gb: int = Field(default=100, ge=20, le=65536)
    """Storage-autoscaling ceiling. Default: 100."""
    multi_az: bool = False
    """Synchronous standby in another AZ. Default: false; prod: true."""
    backup_retention_days: int = Field(default=1, ge=0, le=35)
    """Automated backups and point-in-time recovery window. Default: 1; prod: 14."""
    deletion_protection: bool = True
    """RDS refuses deletes and Pulumi ``protect`` is set. Default: true; dev opts out."""
    final_snapshot: bool = True
    """Take a final snapshot on delete. Default: true; dev opts out."""
    performance_insights: bool = False
    """Performance Insights (7 days free). Default: false; prod: true."""
    monitoring_interval_seconds: Literal[0, 1, 5, 10, 15, 30, 60] = 0
    """Enhanced monitoring interval; 0 turns it off. Default: 0; prod: 60."""


class RedisPreset(Strict):
    node_type: str = Field(default="cache.t4g.micro", pattern=CACHE_NODE_TYPES)
    """ElastiCache node type (t3, t4g, m5, m6g, m7g, r5, r6g, r7g). Default: ``cache.t4g.micro``."""
    nodes: int = Field(default=1, ge=1, le=6)
    """Primary plus replicas. Default: 1; prod: 2 (automatic failover across AZs)."""
    snapshot_retention_days: int = Field(default=1, ge=0, le=35)
    """Daily snapshots kept. Default: 1; prod: 7."""
    multi_az: bool | None = None
    """Replica in another AZ with automatic failover. Default: on when ``nodes`` > 1."""
    final_snapshot: bool = True
    """Take a final snapshot when the replication group is deleted (``final_snapshot_identifier``),
    kept until deleted by hand. Default: true; dev opts out."""

    @model_validator(mode="after")
    def _multi_az_needs_a_replica(self) -> RedisPreset:
        if self.multi_az and self.nodes < 2:
            raise ValueError("multi_az needs a replica: set nodes to 2 or more")
        return self


class DataPreset(Strict):
    """Whether the environment's systems share one Postgres instance and one Redis (components/shared_data.py).

    Shared: one RDS instance ``shared-<env>`` holds a database and the roles of each system (its
    ``DATABASE_URL`` names its own database and its own ``<database>_app`` role; nobody else's role may
    connect to it), and one Redis ``shared-<env>`` gives each system a logical database of its own
    (``REDIS_URL`` ends in ``/<n>``). A system whose guide sets cache settings of its own (catalog
    ``redis.own_cache``, or a ``redis.memory_gb`` to size its node) keeps its own Redis. What is shared
    is printed by ``python -m tools.plan``. The isolation given up: one master user owns every database,
    one instance's CPU, memory, connections and storage serve all systems, and the shared cache's
    memory and eviction policy (``noeviction`` when the tenants' policies differ) are everyone's."""

    shared: bool = False
    """One Postgres instance and one Redis for the environment's systems. Default: false; dev: true."""
    redis_databases: dict[str, int] = Field(default_factory=dict)
    """Pins: system -> its logical Redis database (1-15) in the shared cache. Unpinned systems get one
    from a hash of their name, probing past the pins and each other (``stacks.edge.stable_slots``); pin
    a system when a new one's hash would take its number (the plan prints every number). Default: none."""

    @field_validator("redis_databases")
    @classmethod
    def _pins(cls, pins: dict[str, int]) -> dict[str, int]:
        bad = [f"{k}: {v}" for k, v in pins.items() if not 1 <= v <= 15]
        if bad:
            raise ValueError(f"a logical database is 1 to 15 (0 stays unused, 16 is the ElastiCache default count): {', '.join(bad)}")
        if len(set(pins.values())) != len(pins):
            raise ValueError("two systems pinned to one logical database")
        return pins


class ComputePreset(Strict):
    web_min_tasks: int = Field(default=1, ge=1, le=100)
    """Running tasks per web service (floor when autoscaling). Default: 1; staging 2; prod 2."""
    web_max_tasks: int = Field(default=1, ge=1, le=100)
    """Autoscaling ceiling per web service. Default: 1; prod 10."""
    worker_min_tasks: int = Field(default=1, ge=1, le=100)
    """Running tasks per worker. Default: 1."""
    worker_max_tasks: int = Field(default=1, ge=1, le=100)
    """Autoscaling ceiling per worker. Default: 1; prod 4."""
    autoscaling: bool = False
    """Scale on CPU and memory. Default: false; prod: true."""
    spot: bool = False
    """Run on Fargate Spot. Default: false; dev: true."""
    architecture: Literal["ARM64", "X86_64"] = "ARM64"
    """CPU architecture of every task. Default: ARM64 (about 20 % cheaper on Fargate)."""
    require_digests: bool = False
    """Accept only ``sha256:`` digests as images (what promotion writes). Default: false; prod: true."""
    exec_enabled: bool = False
    """ECS Exec for debugging. Default: false; dev: true. Its agent must write to the container's root
    filesystem, so with exec on the root filesystem is writable; staging keeps it read-only like prod
    so a write the app should not make is caught before prod. Not allowed in a production preset."""


class DeployPreset(Strict):
    """How a new revision of a web service replaces the old one, and what rolls it back
    (components/service.py, "Deploys"). Every web service, whatever the strategy, has two deployment
    alarms (5xx rate and p95 response time, the thresholds of ``observability``) that ECS watches
    during the deploy and its bake time and rolls the service back on. Workers and singletons have no
    load balancer: they roll, and only the circuit breaker rolls them back."""

    strategy: Literal["rolling", "blue_green", "canary"] = "rolling"
    """``rolling``: new tasks replace old ones behind the same target group, then ECS bakes for as long
    as its alarms need to evaluate (ECS derives it; fast). ``blue_green``: the new revision starts in
    the alternate target group, all traffic moves at once, the old tasks stay ``bake_minutes``.
    ``canary``: ``canary_percent`` of the traffic first, for ``canary_minutes``, then all of it, then
    ``bake_minutes`` before the old tasks go. Default: rolling (dev); staging and prod: canary."""
    canary_percent: float = Field(default=10, ge=0.1, le=100)
    """Share of the requests the new revision gets first (``canary`` only). Default: 10."""
    canary_minutes: int = Field(default=5, ge=0, le=1440)
    """Minutes the canary share runs before the rest of the traffic moves (``canary`` only). Default: 5; staging 3."""
    bake_minutes: int = Field(default=10, ge=0, le=1440)
    """Minutes the old revision keeps running, ready to take the traffic back, after all traffic has
    moved (``blue_green`` and ``canary``; a rolling deploy's bake is ECS's own). Default: 10; staging 5."""
    alarm_minutes: int = Field(default=3, ge=1, le=10)
    """Minutes in a row the deployment alarms must see a bad 5xx rate or p95 before ECS rolls back.
    Default: 3."""


class LogsPreset(Strict):
    retention_days: int = 7
    """CloudWatch Logs retention. Default: 7; staging 30; prod 365."""

    @field_validator("retention_days")
    @classmethod
    def _allowed(cls, days: int) -> int:
        if days not in LOG_RETENTION_DAYS:
            raise ValueError(f"must be one of {', '.join(map(str, LOG_RETENTION_DAYS))} (CloudWatch Logs)")
        return days


class SecurityPreset(Strict):
    kms_deletion_window_days: int = Field(default=7, ge=7, le=30)
    """Days a deleted environment key stays recoverable. Default: 7; prod: 30."""
    secret_recovery_days: int = 0
    """Days a deleted secret stays recoverable: 0 (delete at once) or 7-30. Default: 0; staging 7; prod 30."""
    protect_state: bool = True
    """Pulumi ``protect`` on what holds state or the keys to it: the environment keys (also kept in AWS
    when the stack deletes them, ``retain_on_delete``), Redis replication groups, secrets and, in the
    stack that creates them, the ECR repositories. A protected resource is neither deleted nor replaced
    until ``pulumi state unprotect`` (Postgres has its own ``postgres.deletion_protection``). Default:
    true; dev opts out."""
    break_glass_role_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+$", max_length=2048)
    """IAM role ARN that alone may schedule the deletion of, or disable, a protected environment key
    (``protect_state``): the key policy denies ``kms:ScheduleKeyDeletion`` and ``kms:DisableKey`` to every
    other principal, the account root included. Unset: nobody may, until the key policy is changed (the
    key administrators keep ``kms:PutKeyPolicy``). Default: unset."""
    redis_restore_role_arns: list[str] = Field(default_factory=list, max_length=10)
    """IAM role ARNs that may read the Redis exports (the ``.rdb`` copies of every cache) in the export
    and DR buckets, besides S3 replication: the roles that restore a cache from them (creating a
    replication group with ``snapshot_arns`` needs ``s3:GetObject`` on each file) or download one. The
    buckets deny ``s3:GetObject*`` to every other principal of the account, administrators included;
    the role still needs an IAM policy that allows the read. Only with ``platform:recovery``. Default:
    none (no principal of the account can read an export until one is named here)."""

    @field_validator("redis_restore_role_arns")
    @classmethod
    def _role_arns(cls, arns: list[str]) -> list[str]:
        import re  # the same form as break_glass_role_arn

        bad = [a for a in arns if len(a) > 2048 or not re.fullmatch(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]+", a)]
        if bad:
            raise ValueError(f"not an IAM role ARN (arn:aws:iam::<account>:role/<name>): {', '.join(bad)}")
        if len(set(arns)) != len(arns):
            raise ValueError("lists a role twice")
        return arns

    @field_validator("secret_recovery_days")
    @classmethod
    def _window(cls, days: int) -> int:
        if days != 0 and not 7 <= days <= 30:
            raise ValueError("must be 0 (delete at once) or 7 to 30 days (Secrets Manager)")
        return days


class EdgePreset(Strict):
    deletion_protection: bool = False
    """The load balancer refuses deletes. Default: false; prod: true."""
    rate_limit: int = Field(default=2000, ge=10, le=2_000_000_000)
    """Requests per client IP per 5 minutes before WAF blocks it. Default: 2000."""
    strict_rate_limit: int = Field(default=100, ge=10, le=2_000_000_000)
    """The same for a service's ``strict_paths`` (darwin's ``/admin``). Default: 100."""
    access_log_days: int = Field(default=30, ge=1, le=3650)
    """Days ALB access logs are kept in S3. Default: 30; prod: 365."""
    acknowledge_plain_http: bool = False
    """Serve web services without ``platform:domain``: plain HTTP on the internet, one listener port per
    service. Without it a stack with web services and no domain is refused. Default: false; dev: true
    (a first stack has no domain yet). A staging or prod stack that means it sets
    ``platform:overrides: {edge: {acknowledge_plain_http: true}}`` in its file."""
    ingress_cidrs: list[str] | None = None
    """IPv4 ranges (office, VPN exits) the load balancer admits on its open ports: 443 and 80 with a
    domain, else each web service's HTTP port (8000-8999). Each is a CIDR without host bits, /8 or
    narrower; none inside another; ``0.0.0.0/0`` only alone. Default: none (the internet, ``0.0.0.0/0``)."""

    @field_validator("ingress_cidrs")
    @classmethod
    def _ranges(cls, cidrs: list[str] | None) -> list[str] | None:
        from . import edge  # the rules live with the load balancer's other pure functions

        return None if cidrs is None else edge.ingress_cidrs([edge.ingress_cidr(c) for c in cidrs])


class ObservabilityPreset(Strict):
    node_env: str = "production"
    """``NODE_ENV`` where the catalog sets none. Default: production (staging and dev run production builds too)."""
    log_level: Literal["trace", "debug", "info", "warn", "error"] = "info"
    """``LOG_LEVEL`` where the catalog sets none. Default: info; dev: debug."""
    error_rate_percent: float = Field(default=5, gt=0, le=100)
    """Alarm when a web service's 5xx share of requests is above this (offerhub: "5xx > 5 %"). Default: 5."""
    latency_p95_seconds: float = Field(default=2, gt=0, le=60)
    """Alarm when a web service's p95 response time is above this (offerhub: "p95 > 2 s"). Default: 2."""
    evaluation_minutes: int = Field(default=5, ge=1, le=60)
    """Minutes a rate or latency must stay bad before its alarm fires. Default: 5; dev: 15 (less noise)."""
    db_cpu_percent: int = Field(default=80, ge=1, le=100)
    """Database CPU alarm. Default: 80."""
    db_connections_percent: int = Field(default=80, ge=1, le=100)
    """Connections as a share of the ``max_connections`` the parameter group sets for the instance
    class (80 per GiB of memory, at most 5000). Default: 80."""
    db_free_storage_percent: int = Field(default=10, ge=1, le=99)
    """Alarm when free storage falls under this share of allocated storage. Default: 10."""
    cache_cpu_percent: int = Field(default=80, ge=1, le=100)
    """Redis engine CPU alarm. Default: 80."""
    cache_memory_percent: int = Field(default=85, ge=1, le=100)
    """Redis memory alarm for caches that may evict. Default: 85."""
    cache_memory_noeviction_percent: int = Field(default=70, ge=1, le=100)
    """Redis memory alarm for ``noeviction`` caches: writes fail when full, so warn early. Default: 70."""


class BudgetPreset(Strict):
    """The environment's AWS Budget (components/budget.py) and the cost check of a pull request (tools/cost.py)."""

    enabled: bool = True
    """A monthly cost budget, filtered by the ``environment`` cost allocation tag, alerting the alarm topic. Default: true."""
    amount_usd: float | None = Field(default=None, gt=0, le=10_000_000)
    """The monthly budget in USD. Default: the stack's modeled monthly cost (``stacks/modeled-cost.json``,
    written by ``python -m tools.cost --write-model``) plus ``margin_percent``."""
    margin_percent: float = Field(default=25, ge=0, le=1000)
    """Added to the modeled cost for the default amount: the model leaves out usage charges (data
    transfer, log ingestion, KMS and WAF requests). Default: 25."""
    actual_alerts_percent: list[float] = Field(default_factory=lambda: [80.0, 100.0], max_length=5)
    """Alert when the month's actual cost passes these shares of the amount. Default: 80 and 100."""
    forecast_alerts_percent: list[float] = Field(default_factory=lambda: [100.0], max_length=5)
    """Alert when AWS's forecast of the month passes these shares of the amount. Default: 100."""
    change_percent: float | None = Field(default=20, gt=0, le=1000)
    """A pull request that raises this stack's modeled monthly cost by more than this share is marked as
    needing attention (never failed). None: no share limit. Default: 20."""
    change_usd: float | None = Field(default=200, gt=0)
    """The same in USD a month; whichever is passed first counts. None: no amount limit. Default: 200."""

    @field_validator("actual_alerts_percent", "forecast_alerts_percent")
    @classmethod
    def _thresholds(cls, values: list[float]) -> list[float]:
        if any(not 0 < v <= 1000 for v in values):
            raise ValueError("each threshold is a percentage of the amount, above 0 and at most 1000")
        if len(set(values)) != len(values):
            raise ValueError("lists a threshold twice")
        return values


class Preset(Strict):
    """Everything that differs between environments."""

    network: NetworkPreset = NetworkPreset()
    postgres: PostgresPreset = PostgresPreset()
    redis: RedisPreset = RedisPreset()
    data: DataPreset = DataPreset()
    compute: ComputePreset = ComputePreset()
    logs: LogsPreset = LogsPreset()
    security: SecurityPreset = SecurityPreset()
    edge: EdgePreset = EdgePreset()
    observability: ObservabilityPreset = ObservabilityPreset()
    budget: BudgetPreset = BudgetPreset()
    deploy: DeployPreset = DeployPreset()
    acknowledge_unprotected_data: bool = False
    """Must be true for a preset with ``require_digests`` (prod) to turn off Postgres deletion protection,
    a final snapshot (Postgres or Redis) or ``security.protect_state``."""

    @model_validator(mode="after")
    def _no_exec_in_production(self) -> Preset:
        if self.compute.require_digests and self.compute.exec_enabled:
            raise ValueError("compute.exec_enabled is not allowed in a production preset (one with require_digests)")
        return self

    @model_validator(mode="after")
    def _no_shared_data_in_production(self) -> Preset:
        if self.compute.require_digests and self.data.shared:
            raise ValueError("data.shared is not allowed in a production preset (one with require_digests): each system keeps its own data stores there")
        return self

    @model_validator(mode="after")
    def _prod_data_protected(self) -> Preset:
        if self.compute.require_digests and not self.acknowledge_unprotected_data:
            if not self.postgres.deletion_protection:
                raise ValueError("postgres.deletion_protection is off in a production preset; set overrides.acknowledge_unprotected_data: true if you mean it")
            if not self.postgres.final_snapshot:
                raise ValueError("postgres.final_snapshot is off in a production preset; set overrides.acknowledge_unprotected_data: true if you mean it")
            if not self.redis.final_snapshot:
                raise ValueError("redis.final_snapshot is off in a production preset; set overrides.acknowledge_unprotected_data: true if you mean it")
            if not self.security.protect_state:
                raise ValueError(
                    "security.protect_state is off in a production preset (keys, caches, secrets, repositories could be deleted by one "
                    "command); set overrides.acknowledge_unprotected_data: true if you mean it"
                )
        return self


# Only the differences from the model defaults are written here.
PRESETS: dict[str, dict] = {
    "dev": {
        "security": {"protect_state": False},
        "postgres": {"deletion_protection": False, "final_snapshot": False},
        "redis": {"final_snapshot": False},
        # one Postgres instance and one Redis for every system that can share them (components/shared_data.py)
        "data": {"shared": True},
        "compute": {"spot": True, "web_max_tasks": 2, "exec_enabled": True},
        "observability": {"log_level": "debug", "evaluation_minutes": 15},
        "edge": {"acknowledge_plain_http": True},
    },
    "staging": {
        "security": {"secret_recovery_days": 7},
        "postgres": {"instance_class": "db.t4g.small", "backup_retention_days": 7},
        "redis": {"node_type": "cache.t4g.small", "snapshot_retention_days": 3},
        "compute": {"web_min_tasks": 2, "web_max_tasks": 2},
        "logs": {"retention_days": 30},
        # the same path as prod, shorter, so a promotion exercises it before prod does
        "deploy": {"strategy": "canary", "canary_minutes": 3, "bake_minutes": 5},
    },
    "prod": {
        "network": {"az_count": 3, "nat": "per_az", "flow_log_traffic": "ALL"},
        "postgres": {
            "instance_class": "db.t4g.medium",
            "multi_az": True,
            "backup_retention_days": 14,
            "performance_insights": True,
            "monitoring_interval_seconds": 60,
        },
        "redis": {"node_type": "cache.t4g.small", "nodes": 2, "snapshot_retention_days": 7},
        "compute": {
            "web_min_tasks": 2,
            "web_max_tasks": 10,
            "worker_max_tasks": 4,
            "autoscaling": True,
            "require_digests": True,
        },
        "logs": {"retention_days": 365},
        "security": {"kms_deletion_window_days": 30, "secret_recovery_days": 30, "protect_state": True},
        "edge": {"deletion_protection": True, "access_log_days": 365},
        "deploy": {"strategy": "canary"},
    },
}


def instance_memory_gib(instance_class: str) -> int:
    """Memory of an RDS instance class we allow, e.g. 1 for ``db.t4g.micro``, 16 for ``db.r6g.large``."""
    _, family, size = instance_class.split(".")
    if family.startswith("t"):
        return _BURSTABLE_GIB[size]
    return _GENERAL_GIB[size] * (2 if family.startswith("r") else 1)


def postgres_max_connections(instance_class: str) -> int:
    """The ``max_connections`` our parameter group sets for ``instance_class`` (see the table above).

    One number for both users: the Postgres component writes it into the parameter group and the
    connections alarm fires at a share of it.
    """
    return min(instance_memory_gib(instance_class) * POSTGRES_CONNECTIONS_PER_GIB, POSTGRES_MAX_CONNECTIONS_CAP)


def deep_merge(base: dict, override: dict) -> dict:
    """Key-by-key merge: nested mappings merge, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
