"""One Postgres instance and one Redis for an environment's systems (preset ``data.shared``: dev).

The environment's core declares the two stores once (:class:`SharedData`, resource names ``shared-db``
and ``shared-cache``, physical identifier ``shared-<env>`` for both) with the same components a system's
own stores use (:class:`components.postgres.Postgres` without a database of its own,
:class:`components.redis.Redis`), and their alarms once (:func:`monitoring`). Each system then gets a
*tenant* view (:class:`PostgresTenant`, :class:`RedisTenant`) with the attributes ``_data_tier`` and
the services read from a system's own stores: its ``DATABASE_URL``, owner secret, security group and
port (each service adds its own ingress rule to the shared group), the resource to wait for (none in a
split layout's system stack: its core is up before it), and its
``REDIS_URL``. A split layout's core exports what a tenant needs as one plain object
(:meth:`SharedData.export`, stack output :data:`OUTPUT`); a system stack rebuilds its tenant from it
(:func:`tenant_from_outputs`).

Postgres. Per system a database (the catalog's ``postgres.database``; names must differ between the
systems of a shared instance) and that system's roles as on its own instance (``<database>_app``,
``<database>_ddl``; components/postgres.py, "Roles inside the database"), created by the system's own
``db-roles`` bootstrap, which creates its database first when it is missing
(:func:`components.postgres.shared_roles_sql`). Each system's ``DATABASE_URL`` names its own database
and its own app role, whose CONNECT covers that database only: ``PUBLIC`` loses CONNECT on each tenant
database, so no tenant's role can open another's. Its owner secret (``<env>/<system>/DATABASE_OWNER``)
names its own database too, with the instance's master password: the one owner of every database
(the isolation given up). The role passwords are the system's own (its ``rotate.DATABASE_URL``
renews them); the master password is the instance's.

Redis. One replication group (cluster mode disabled), a logical database per system: ``REDIS_URL``
ends in ``/<n>``, which node-redis, ioredis and the other clients read as the database to ``SELECT``
(redis.io, "Connection URLs": "Select the database with the path"). Numbers are 1-15: Redis runs 16
databases unless its ``databases`` parameter says otherwise, and ours leaves it alone (that
ElastiCache's ``redis7`` family keeps 16 and allows ``SELECT`` with cluster mode disabled is from its
parameter reference, not checked offline); 0, where a client that ignores the path lands, stays
empty. Each number comes from a hash of the system's name (``stacks.sharing.redis_databases``, the
probing of ``stacks.edge.stable_slots``), so adding a system leaves the others' numbers alone, except
when the new name hashes onto a taken number and sorts first: pin numbers in ``data.redis_databases``
then (the plan prints them). Logical databases separate keys, not the rest: Pub/Sub channels are
server-wide ("Pub/Sub has no relation to the key space", redis.io, Pub/Sub), ``FLUSHALL`` empties
every tenant, and memory, CPU, connections and the eviction policy are shared. So a system keeps a
Redis of its own when its catalog entry says why (``redis.own_cache``: offerhub's BullMQ queues,
darwin's Pub/Sub and 1 GB) or when it sizes its node (``redis.memory_gb``). The shared cache's
``maxmemory-policy`` is the tenants' common one, or ``noeviction`` when they differ: the only policy
under which one tenant's memory use cannot evict another tenant's keys (starkdca's locks and
idempotency keys); a tenant that chose eviction (twinkle's ``allkeys-lru``, aurum's ``volatile-lru``)
then sees writes refused when the cache is full, and the lower ``noeviction`` memory alarm fires first.

Alarms: the shared instance's and cache's (CPU, storage, connections, memory) exist once, in the core
(``shared-data-monitoring``, dashboard ``<env>-shared``), not per system.

Not shared: the secrets (each system's own, in Secrets Manager), the services and their security
groups, and the stores of every system this leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pulumi
from pulumi.runtime.sync_await import _sync_await

from stacks.config import DeployedSystem, PlatformConfig
from stacks.sharing import own_cache_reason, redis_databases, shared_policy

from . import postgres as pg
from . import redis as rd
from .observability import Cache, Database, SystemMonitoring, SystemMonitoringArgs

SHARED = "shared"
"""Head of every shared resource's name (``shared-db``, ``shared-cache``): the cost model files them under ``shared``."""
POSTGRES_TENANT = "platform:data:PostgresTenant"
REDIS_TENANT = "platform:data:RedisTenant"
OUTPUT = "platform_shared_data"
"""The core stack's output a system stack reads its tenant from (split layout): :meth:`SharedData.export`
without its two secrets, which are outputs of their own (:data:`SECRETS`), so this one stays readable
(``pulumi stack output``) and a StackReference reads it before anything is declared."""
SECRETS = {("postgres", "master_password"): f"{OUTPUT}_postgres_master_password", ("redis", "url"): f"{OUTPUT}_redis_url"}
"""(part, key) of :meth:`SharedData.export` -> the secret stack output that carries it."""


def identifier(env: str) -> str:
    """The shared instance's RDS identifier and the shared cache's replication group id."""
    return f"{SHARED}-{env}"


@dataclass(frozen=True)
class Tenancy:
    """Who shares what in one environment (plain values: the plan prints it, the tests read it)."""

    env: str
    postgres: dict[str, str]
    """System -> its database in the shared instance."""
    redis: dict[str, int]
    """System -> its logical database in the shared cache."""
    own_cache: dict[str, str]
    """System -> why it keeps a Redis of its own."""
    policies: dict[str, str]
    """Redis tenant -> the ``maxmemory-policy`` its catalog entry asks for."""

    @property
    def identifier(self) -> str:
        return identifier(self.env)

    @property
    def policy(self) -> str | None:
        """The shared cache's ``maxmemory-policy`` (None: no cache is shared)."""
        return shared_policy(self.policies.values()) if self.redis else None

    def lines(self) -> list[str]:
        """What is shared, in words (``tools.plan``)."""
        out = []
        if self.postgres:
            dbs = ", ".join(f"{n} (db {d})" for n, d in self.postgres.items())
            out.append(f"  Postgres {self.identifier}: {dbs}; one master user owns every database, each system's roles reach its own only")
        if self.redis:
            own = ", ".join(f"{n} {p}" for n, p in self.policies.items() if p != self.policy)
            dbs = ", ".join(f"{n} (db {d})" for n, d in self.redis.items())
            out.append(f"  Redis {self.identifier}: {dbs}; maxmemory-policy {self.policy}" + (f" (their own: {own})" if own else ""))
        for name, why in self.own_cache.items():
            out.append(f"  own Redis: {name}, because {why}")
        return out


def tenancy(cfg: PlatformConfig) -> Tenancy | None:
    """The environment's sharing (None: ``data.shared`` is off). ``cfg`` lists every system the shared
    stores serve: the all-in-one stack, or the split layout's core."""
    data = cfg.preset.data
    if not data.shared:
        return None
    systems = {name: deployed.system for name, deployed in cfg.systems.items()}
    own = {name: why for name, s in systems.items() if (why := own_cache_reason(s))}
    cached = [name for name, s in systems.items() if s.redis is not None and name not in own]
    return Tenancy(
        env=cfg.env,
        postgres={name: s.postgres.database for name, s in systems.items() if s.postgres is not None},
        redis=redis_databases(cached, data.redis_databases),
        own_cache=own,
        policies={name: systems[name].redis.maxmemory_policy for name in sorted(cached)},  # type: ignore[union-attr]
    )


def store_names(cfg: PlatformConfig, system: str) -> tuple[str, ...]:
    """The names of the resources ``system``'s data lives in: ``<system>-db-instance`` and
    ``<system>-cache-group``, or the shared ones (``tools/deploytime.py``: a service is ready after its stores)."""
    t = tenancy(cfg)
    spec = cfg.systems[system].system
    out = []
    if spec.postgres is not None:
        out.append(f"{SHARED}-db-instance" if t and system in t.postgres else f"{system}-db-instance")
    if spec.redis is not None:
        out.append(f"{SHARED}-cache-group" if t and system in t.redis else f"{system}-cache-group")
    return tuple(out)


# ---------------------------------------------------------------- tenant views


@dataclass(frozen=True)
class PostgresShare:
    """What a tenant needs of the shared instance."""

    address: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    master_password: pulumi.Input[str]
    """A secret."""
    identifier: str
    databases: Mapping[str, str]
    """System -> database: the instance's tenants."""
    instance: pulumi.Resource | None = None
    """The instance (same stack); None when read from the core's output."""


@dataclass(frozen=True)
class RedisShare:
    """What a tenant needs of the shared cache."""

    url: pulumi.Input[str]
    """``rediss://:token@primary:6379``, a secret."""
    security_group_id: pulumi.Input[str]
    replication_group_id: str
    databases: Mapping[str, int]
    """System -> its logical database."""
    group: pulumi.Resource | None = None


class PostgresTenant(pulumi.ComponentResource):
    """One system's database in the shared instance: its role passwords (children, as on its own
    instance) and the attributes of :class:`components.postgres.Postgres` that the data tier and the
    services read."""

    port: int = pg.PORT
    creates_database: bool = True
    """Its ``db-roles`` bootstrap creates the database (components/postgres.py, ``shared_roles_sql``)."""

    def __init__(self, name: str, share: PostgresShare, database: str, *, ddl: bool, rotation: int = 0, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(POSTGRES_TENANT, name, None, opts)
        self.database = database
        self.ddl = ddl
        self.identifier = share.identifier
        self.security_group_id = pulumi.Output.from_input(share.security_group_id)
        self.address = pulumi.Output.from_input(share.address)
        self.instance: pulumi.Resource | None = share.instance
        """What a service waits for: the shared instance; None when read from the core, whose ``pulumi up``
        finished before (a ``depends_on`` entry of None is skipped by the SDK)."""
        keepers = {"rotation": str(rotation)}
        app_password, app_verifier = pg.role_password(self, f"{name}-app", keepers)
        host, master = self.address, pulumi.Output.secret(share.master_password)
        self.database_url = pulumi.Output.secret(pulumi.Output.all(host, app_password).apply(lambda v: pg._url(pg.app_role(database), v[1], v[0], database)))
        self.ddl_url: pulumi.Output[str] | None = None
        ddl_verifier: pulumi.Output[str] | None = None
        if ddl:
            ddl_password, ddl_verifier = pg.role_password(self, f"{name}-ddl", keepers)
            self.ddl_url = pulumi.Output.secret(pulumi.Output.all(host, ddl_password).apply(lambda v: pg._url(pg.ddl_role(database), v[1], v[0], database)))
        self.owner_secret = pulumi.Output.secret(
            pulumi.Output.all(host, master, app_verifier, ddl_verifier if ddl_verifier is not None else "").apply(
                lambda v: pg.owner_json(v[0], v[1], database, v[2], v[3] or None)
            )
        )
        self.register_outputs({"database": database})


class RedisTenant(pulumi.ComponentResource):
    """One system's logical database in the shared cache, with the attributes of :class:`components.redis.Redis`."""

    port: int = rd.PORT

    def __init__(self, name: str, share: RedisShare, system: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(REDIS_TENANT, name, None, opts)
        self.replication_group_id = share.replication_group_id
        self.security_group_id = pulumi.Output.from_input(share.security_group_id)
        self.database = pulumi.Output.from_input(share.databases).apply(lambda d: int(d[system]))
        self.group: pulumi.Resource | None = share.group
        """What a service waits for: the shared group; None when read from the core."""
        self.redis_url = pulumi.Output.secret(pulumi.Output.all(share.url, self.database).apply(lambda v: f"{v[0]}/{v[1]}"))
        self.register_outputs({"database": self.database})


@dataclass
class Tenant:
    """A system's view of the shared stores: None where it keeps (or has) no shared one."""

    postgres: PostgresTenant | None = None
    redis: RedisTenant | None = None


@dataclass
class SharedStores:
    """The shared stores as a system sees them: declared in this stack (:class:`SharedData`) or read
    from the core's output (:func:`from_outputs`)."""

    postgres: PostgresShare | None = None
    redis: RedisShare | None = None
    tenants: dict[str, Tenant] = field(default_factory=dict)

    def tenant(self, deployed: DeployedSystem) -> Tenant:
        """``deployed``'s tenant view (one per system: its role passwords are children of it)."""
        name = deployed.name
        if name in self.tenants:
            return self.tenants[name]
        system = deployed.system
        view = Tenant()
        if self.postgres is not None and system.postgres is not None and name in self.postgres.databases:
            view.postgres = PostgresTenant(
                f"{name}-db",
                self.postgres,
                system.postgres.database,
                ddl=bool(pg.runtime_ddl_services(system)),
                rotation=deployed.rotate.get("DATABASE_URL", 0),
            )
        if self.redis is not None and system.redis is not None and name in self.redis.databases:
            view.redis = RedisTenant(f"{name}-cache", self.redis, name)
        self.tenants[name] = view
        return view


class SharedData(SharedStores):
    """The environment's shared Postgres instance and Redis, declared in the core."""

    def __init__(
        self,
        cfg: PlatformConfig,
        tenancy_: Tenancy,
        *,
        vpc_id: pulumi.Input[str],
        subnet_ids: pulumi.Input[list[str]],
        kms_key_arn: pulumi.Input[str],
        account_id: pulumi.Input[str] | None = None,
        topic_arn: pulumi.Input[str] | None = None,
        dr: pg.DrCopy | None = None,
    ) -> None:
        super().__init__()
        self.tenancy = tenancy_
        preset = cfg.preset
        physical = tenancy_.identifier
        self.db: pg.Postgres | None = None
        self.cache: rd.Redis | None = None
        if tenancy_.postgres:
            # the largest storage ceiling any tenant asks for (darwin's 100 GB)
            ceiling = max(cfg.postgres_settings(n).max_allocated_storage_gb for n in tenancy_.postgres)
            self.db = pg.Postgres(
                f"{SHARED}-db",
                pg.PostgresArgs(
                    identifier=physical,
                    database=None,
                    vpc_id=vpc_id,
                    subnet_ids=subnet_ids,
                    kms_key_arn=kms_key_arn,
                    settings=preset.postgres.model_copy(update={"max_allocated_storage_gb": ceiling}),
                    max_storage_gb=ceiling,
                    log_retention_days=preset.logs.retention_days,
                    dr=dr,
                    account_id=account_id,
                    alarm_topic_arn=topic_arn,
                ),
            )
            self.postgres = PostgresShare(
                self.db.address, self.db.security_group_id, self.db.master_password, physical, dict(tenancy_.postgres), self.db.instance
            )
        if tenancy_.redis and tenancy_.policy:
            self.cache = rd.Redis(
                f"{SHARED}-cache",
                rd.RedisArgs(
                    replication_group_id=physical,
                    vpc_id=vpc_id,
                    subnet_ids=subnet_ids,
                    kms_key_arn=kms_key_arn,
                    settings=preset.redis,
                    maxmemory_policy=tenancy_.policy,
                    protect=preset.security.protect_state,
                ),
            )
            self.redis = RedisShare(self.cache.redis_url, self.cache.security_group_id, physical, dict(tenancy_.redis), self.cache.group)

    def export(self) -> dict[str, Any]:
        """What a system stack needs to rebuild its tenant (:func:`tenant_from_outputs`): one plain object
        of Outputs, the master password and the cache's URL secret."""
        out: dict[str, Any] = {"postgres": None, "redis": None}
        if self.postgres is not None:
            p = self.postgres
            out["postgres"] = {
                "address": p.address,
                "security_group_id": p.security_group_id,
                "master_password": pulumi.Output.secret(p.master_password),
                "identifier": p.identifier,
                "databases": dict(p.databases),
            }
        if self.redis is not None:
            r = self.redis
            out["redis"] = {
                "url": pulumi.Output.secret(r.url),
                "security_group_id": r.security_group_id,
                "replication_group_id": r.replication_group_id,
                "databases": dict(r.databases),
            }
        return out


def stack_outputs(export: Mapping[str, Any]) -> dict[str, Any]:
    """:meth:`SharedData.export` as the core's stack outputs: :data:`OUTPUT` (plain values) and one
    secret output per :data:`SECRETS` entry."""
    plain: dict[str, Any] = {part: (dict(value) if value else None) for part, value in export.items()}
    out: dict[str, Any] = {}
    for (part, key), name in SECRETS.items():
        if plain.get(part):
            out[name] = pulumi.Output.secret(plain[part].pop(key))
    return {OUTPUT: plain, **out}


def from_outputs(outputs: Mapping[str, Any] | None) -> SharedStores:
    """The shared stores from :meth:`SharedData.export`'s object, as a system stack reads it from its
    core: plain values or Outputs (the secrets are made secret again)."""
    stores = SharedStores()
    if not outputs:
        return stores
    if p := outputs.get("postgres"):
        stores.postgres = PostgresShare(
            p["address"], p["security_group_id"], pulumi.Output.secret(p["master_password"]), str(p["identifier"]), dict(p["databases"])
        )
    if r := outputs.get("redis"):
        stores.redis = RedisShare(
            pulumi.Output.secret(r["url"]), r["security_group_id"], str(r["replication_group_id"]), {k: int(v) for k, v in dict(r["databases"]).items()}
        )
    return stores


def tenant_from_outputs(outputs: Mapping[str, Any] | None, deployed: DeployedSystem) -> Tenant:
    """``deployed``'s tenant view, rebuilt from the core's :data:`OUTPUT` (split layout)."""
    return from_outputs(outputs).tenant(deployed)


def read_core(cfg: PlatformConfig, reference: pulumi.StackReference) -> SharedStores:
    """A system stack's view of its core's shared stores (:data:`OUTPUT`, read as ``components/core.py``
    reads the core's other output: synchronously, before anything of the system is declared). Empty
    when the core shares nothing."""
    details = _sync_await(reference.get_output_details(OUTPUT))
    value = details.value if details.value is not None else details.secret_value
    if not isinstance(value, Mapping):
        return SharedStores()
    outputs: dict[str, Any] = {part: (dict(v) if isinstance(v, Mapping) else None) for part, v in value.items()}
    for (part, key), name in SECRETS.items():
        if outputs.get(part) is not None:
            secret = _sync_await(reference.get_output_details(name))  # as plain values, like the core's other output: no dependency
            outputs[part][key] = secret.secret_value if secret.secret_value is not None else secret.value  # from_outputs makes it secret again
    return from_outputs(outputs)


def monitoring(
    cfg: PlatformConfig, data: SharedData, *, topic_arn: pulumi.Input[str], warning_topic_arn: pulumi.Input[str] | None, cluster_name: pulumi.Input[str]
) -> SystemMonitoring | None:
    """The shared instance's and cache's alarms and dashboard, once for the environment."""
    if data.db is None and data.cache is None:
        return None
    t = data.tenancy
    # the instance allocates the preset's storage (a tenant's storage_gb only raises the ceiling outside
    # production presets, and production presets share nothing)
    database = Database(t.identifier, cfg.preset.postgres.instance_class, cfg.preset.postgres.allocated_storage_gb) if data.db is not None else None
    cache = Cache(t.identifier, cfg.preset.redis.nodes, t.policy == "noeviction") if data.cache is not None else None
    return SystemMonitoring(
        f"{SHARED}-data-monitoring",
        SystemMonitoringArgs(
            env=cfg.env,
            system=SHARED,
            region=cfg.region,
            topic_arn=topic_arn,
            warning_topic_arn=warning_topic_arn,
            cluster_name=cluster_name,
            settings=cfg.preset.observability,
            database=database,
            cache=cache,
        ),
    )
