"""Builds one environment from a validated :class:`~stacks.config.PlatformConfig`.

Shared per environment: the KMS key, the network, the ECS cluster, the image repositories and one
load balancer. Per system: its Postgres and Redis where the catalog asks for them, its secrets and its
services, created in the system's start order. This module only wires components together; each
decision about a resource lives in its component.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws

from policy.local import enforce
from stacks import engine
from stacks.catalog import ServiceKind
from stacks.config import PROJECT, DeployedSystem, PlatformConfig, hold_instructions, hold_missing_images, load_platform, placeholder_problems
from stacks.errors import ConfigError

from . import core as core_ref
from . import shared_data
from .alb import Alb, AlbArgs
from .alerting import ROUTE53_METRICS_REGION, AppAlarms, app_alarms
from .budget import NO_BUDGET_WARNING, Budget, BudgetArgs, read_model
from .budget import amount as budget_amount
from .cluster import Cluster, ClusterArgs, ExecLog
from .kms import EnvironmentKey, EnvironmentKeyArgs
from .kubernetes import SystemWorkloads, WorkloadsArgs, provider
from .network import Network, NetworkArgs
from .observability import (
    AlarmTopic,
    AlarmTopicArgs,
    Cache,
    Database,
    EcsService,
    LoadBalancerMonitoring,
    LoadBalancerMonitoringArgs,
    SystemMonitoring,
    SystemMonitoringArgs,
    TelemetryCredential,
    Topics,
    WebTarget,
)
from .postgres import DrCopy, Postgres, PostgresArgs, bootstrap_service, runtime_ddl_services
from .redis import Redis, RedisArgs
from .redis_export import RedisExport, RedisExportArgs
from .registry import Registry, RegistryArgs
from .secrets import DatabaseSecrets, SystemSecrets, SystemSecretsArgs
from .service import Connection, DatabaseBootstrap, Service, ServiceArgs, Telemetry
from .shared_data import PostgresTenant, RedisTenant, SharedData, SharedStores
from .tags import check_default_tags, register_tag_transform

HELD_WARNING = " runs no task until: "
"""Between a held service's key and what it lacks, in the warning a preview and an update print."""


@dataclass
class SystemData:
    postgres: Postgres | None
    redis: Redis | None
    secrets: SystemSecrets
    services: dict[str, Service] = field(default_factory=dict)
    workloads: SystemWorkloads | None = None
    """With ``compute: kubernetes``: the system's namespace and workloads (``services`` is then empty)."""
    monitoring: SystemMonitoring | None = None
    alerting: AppAlarms | None = None


@dataclass
class Shared:
    """What every system's services use: the environment's core, declared in this stack (all-in-one, or
    the split layout's core) or read from the core stack (``components/core.py``)."""

    account_id: pulumi.Input[str]
    key: EnvironmentKey | core_ref.Key
    network: Network | core_ref.NetworkRef
    cluster: Cluster | core_ref.ClusterRef | None
    registry: Registry
    alb: Alb | core_ref.AlbRef | None
    telemetry: Telemetry
    topic: AlarmTopic | core_ref.Topic
    """The critical topic (pages); ``warning`` emails."""
    warning: AlarmTopic | core_ref.Topic | None = None
    route53_topics: Topics | None = None
    """us-east-1 copies of both topics, for the Route 53 health check alarms of a stack elsewhere."""
    dr: DrCopy | None = None
    """Where Postgres backups are copied (``platform:recovery``)."""
    albs: dict[int, Alb] = field(default_factory=dict)
    """Every load balancer of the environment by number; ``alb`` is a system's own (:meth:`for_system`)."""
    data: SharedData | SharedStores | None = None
    """The environment's shared Postgres and Redis (preset ``data.shared``), declared in this stack's core part."""

    def for_system(self, cfg: PlatformConfig, system: str) -> Shared:
        """What ``system``'s services use: the load balancer it is assigned (``PlatformConfig.load_balancers``)."""
        index = cfg.load_balancers.get(system, 1)
        return self if index not in self.albs else dataclasses.replace(self, alb=self.albs[index])


@dataclass
class Platform:
    key: EnvironmentKey | core_ref.Key
    network: Network | core_ref.NetworkRef
    cluster: Cluster | core_ref.ClusterRef | None
    """None with ``compute: kubernetes``."""
    alb: Alb | core_ref.AlbRef | None
    systems: dict[str, SystemData] = field(default_factory=dict)


def _lookup(tree: pulumi.Output[Any], path: str) -> pulumi.Output[str]:
    """One value out of the encrypted ``platform:secrets`` object, still a secret Output."""
    parts = path.split(".")[1:]  # drop the leading "secrets"

    def dig(node: Any) -> str:
        for part in parts:
            node = node[part]
        return str(node)

    return pulumi.Output.secret(tree.apply(dig))


def build(cfg: PlatformConfig, external_secrets: pulumi.Output[Any] | None = None, kubeconfig: pulumi.Output[str] | None = None) -> Platform | None:
    """Declare the stack's resources and export what users look for.

    All-in-one (no ``platform:layout``): the environment's core and every system. Split layout: a core
    stack declares the core and exports it (:data:`components.core.OUTPUT`); a system stack reads that
    export and declares its one system. Both call the same functions, so a resource has the same name
    and inputs in either layout (``tests/test_layouts.py``)."""
    register_tag_transform(cfg.systems)
    account_id = aws.get_caller_identity_output().account_id
    if cfg.core_stack:
        shared, cfg = _from_core(cfg)
    else:
        shared, cfg = _core(cfg, account_id)
    platform = Platform(key=shared.key, network=shared.network, cluster=shared.cluster, alb=shared.alb)
    if cfg.is_core:
        pulumi.export(core_ref.OUTPUT, core_ref.export(cfg, shared))
        _core_exports(cfg, shared)
        return platform
    kube = cfg.stack_config.kubernetes if cfg.stack_config.compute == "kubernetes" else None
    edge_rules = _alb_to_cluster(shared.alb, kube.cluster_security_group_id, _web_ports(cfg)) if kube and shared.alb else []
    cluster_provider = provider(kube, kubeconfig) if kube else None
    everything = shared
    for system in cfg.systems.values():
        shared = everything.for_system(cfg, system.name)
        data = _data_tier(
            cfg, system, shared.key, shared.network, external_secrets, shared.dr, account_id=shared.account_id, topic_arn=shared.topic.arn, tier=shared.data
        )
        if kube and cluster_provider:
            data.workloads = _workloads(cfg, system, data, shared, cluster_provider, edge_rules)
        else:
            data.services = _services(cfg, system, data, shared)
        data.monitoring = _monitoring(cfg, system, data, shared)
        if shared.cluster is not None:
            alb = shared.alb
            data.alerting = app_alarms(
                cfg, system, data.services, topics=Topics(shared.topic.arn, shared.warning.arn if shared.warning else shared.topic.arn),
                route53_topics=shared.route53_topics, cluster_name=shared.cluster.name, cluster_arn=shared.cluster.arn,
                load_balancer=alb.arn_suffix if alb else None, account_id=shared.account_id, kms_key_arn=shared.key.arn,
            )  # fmt: skip
        platform.systems[system.name] = data
    if cfg.core_stack is None:
        _core_exports(cfg, everything)
    _system_exports(cfg, everything, platform, kube is not None)
    return platform


def _web_ports(cfg: PlatformConfig) -> list[int]:
    return sorted({svc.spec.port for svc in cfg.services() if svc.spec.kind is ServiceKind.web and svc.spec.port})


def _core(cfg: PlatformConfig, account_id: pulumi.Output[str]) -> tuple[Shared, PlatformConfig]:
    """The environment's core: image repositories, KMS key, network, cluster, load balancer, alarm
    topics, budget, telemetry credential, DR key and the Redis export. Returns it and ``cfg`` with each
    service whose image is not pushed yet held."""
    preset = cfg.preset
    registry_cfg = cfg.stack_config.registry
    registry = Registry(
        "registry",
        RegistryArgs(
            repositories=sorted({f"{s.name}/{image}" for s in cfg.systems.values() for image in s.system.images}),
            create=registry_cfg.create,
            account_id=registry_cfg.account_id or account_id,
            region=cfg.region,
            registry_id=registry_cfg.account_id,
            pull_accounts=registry_cfg.pull_accounts,
            protect=preset.security.protect_state,
        ),
    )
    pulumi.export("repository_urls", registry.urls)
    if not cfg.is_core:  # a core runs no image
        cfg = _hold_unpushed(cfg, registry)
    key = EnvironmentKey(
        "key",
        EnvironmentKeyArgs(
            account_id=account_id,
            region=cfg.region,
            alias=f"platform-{cfg.env}",
            deletion_window_days=preset.security.kms_deletion_window_days,
            protect=preset.security.protect_state,
            break_glass_role_arn=preset.security.break_glass_role_arn,
        ),
    )
    network = Network(
        "network",
        NetworkArgs(
            region=cfg.region,
            availability_zones=cfg.availability_zones,
            cidr=str(cfg.network.cidr),
            subnets=cfg.subnet_plan,
            nat=preset.network.nat,
            flow_log_traffic=preset.network.flow_log_traffic,
            log_retention_days=preset.logs.retention_days,
            kms_key_arn=key.arn,
            existing=cfg.network.existing,
            account_id=account_id,
        ),
    )
    kube = cfg.stack_config.kubernetes if cfg.stack_config.compute == "kubernetes" else None
    exec_log = None
    if preset.compute.exec_enabled:
        exec_log = ExecLog(name=f"/platform/{cfg.env}/ecs-exec", kms_key_arn=key.arn, retention_days=preset.logs.retention_days)
    cluster = None if kube else Cluster("cluster", ClusterArgs(name=f"platform-{cfg.env}", spot=preset.compute.spot, exec_log=exec_log))
    albs: dict[int, Alb] = {}
    for index, web in cfg.web_by_load_balancer().items():
        if kube is not None and kube.ingress_class != "alb":
            break  # the cluster's ingress controller serves the hosts; otherwise pods join ours through TargetGroupBindings
        albs[index] = Alb(
            alb_name(index),
            AlbArgs(
                vpc_id=network.vpc_id,
                public_subnet_ids=network.public_subnet_ids,
                account_id=account_id,
                hosts={svc.key: svc.hostname for svc in web},
                domain=cfg.domain,
                hosted_zone_id=cfg.stack_config.hosted_zone_id,
                certificate_arn=cfg.stack_config.certificate_arn,
                outside_hosts={svc.key: (svc.external.hosted_zone_id, svc.external.certificate_arn) for svc in web if svc.external},
                strict_paths={svc.key: svc.spec.strict_paths for svc in web if svc.spec.strict_paths},
                webhooks={svc.key: svc.spec.webhooks for svc in web if svc.spec.webhooks},
                idle_timeout_seconds=cfg.idle_timeout_seconds,
                env=cfg.env,
                kms_key_arn=key.arn,
                log_retention_days=preset.logs.retention_days,
                settings=preset.edge,
                ecs_traffic_shifting=kube is None and preset.deploy.strategy != "rolling",
            ),
        )
    alb = albs.get(1)
    # two priorities (docs/operating.md, "Alarms"): critical pages, warning emails
    topic = AlarmTopic("alarms", AlarmTopicArgs(kms_key_arn=key.arn, emails=cfg.stack_config.alarm_emails, account_id=account_id))
    warning = AlarmTopic("alarms-warning", AlarmTopicArgs(kms_key_arn=key.arn, emails=cfg.stack_config.alarm_emails, account_id=account_id))
    route53_topics = None
    if cfg.region != ROUTE53_METRICS_REGION and cfg.domain and albs:
        # Route 53 health check metrics exist in us-east-1 only, and an alarm notifies topics of its own region
        east_key = EnvironmentKey(
            "alarms-key-us-east-1",
            EnvironmentKeyArgs(
                account_id=account_id,
                region=ROUTE53_METRICS_REGION,
                alias=f"platform-{cfg.env}-alarms",
                deletion_window_days=preset.security.kms_deletion_window_days,
                in_other_region=True,
                protect=preset.security.protect_state,
                break_glass_role_arn=preset.security.break_glass_role_arn,
            ),
        )
        east = {
            prio: AlarmTopic(f"alarms{suffix}-us-east-1", AlarmTopicArgs(kms_key_arn=east_key.arn, emails=cfg.stack_config.alarm_emails,
                                                                 account_id=account_id, region=ROUTE53_METRICS_REGION))
            for prio, suffix in (("critical", ""), ("warning", "-warning"))
        }  # fmt: skip
        route53_topics = Topics(east["critical"].arn, east["warning"].arn)
    if preset.budget.enabled:
        # the environment's monthly cost against the model (components/budget.py); after the topic, whose
        # policy must let AWS Budgets publish before a notification can name it
        # a split layout's core budgets the environment: what the all-in-one stack of its name models
        limit, basis = budget_amount(cfg.env if cfg.is_core else cfg.stack, preset.budget, read_model())
        if limit is None:
            pulumi.log.warn(NO_BUDGET_WARNING + basis)
        else:
            budget_args = BudgetArgs(
                env=cfg.env,
                account_id=account_id,
                amount_usd=limit,
                topic_arn=warning.arn,
                actual_alerts_percent=preset.budget.actual_alerts_percent,
                forecast_alerts_percent=preset.budget.forecast_alerts_percent,
            )
            Budget("budget", budget_args, opts=pulumi.ResourceOptions(depends_on=[warning]))
            pulumi.export("monthly_budget", {"usd": limit, "from": basis})
    for index, lb in albs.items():
        # the load balancer's own 502/503/504 are published per load balancer only
        LoadBalancerMonitoring(
            f"{alb_name(index)}-monitoring", LoadBalancerMonitoringArgs(load_balancer=lb.arn_suffix, topic_arn=topic.arn, settings=preset.observability)
        )
    obs = cfg.stack_config.observability
    telemetry = Telemetry()
    if obs.otlp_endpoint:
        credential = TelemetryCredential("otlp-auth", cfg.env, key.arn, preset.security.secret_recovery_days)
        telemetry = Telemetry(otlp_endpoint=obs.otlp_endpoint, auth_header=obs.otlp_auth_header, auth_secret_arn=credential.arn)
    dr = None
    if (recovery := cfg.stack_config.recovery) is not None:
        dr_key = EnvironmentKey(
            "dr-key",
            EnvironmentKeyArgs(
                account_id=account_id,
                region=recovery.dr_region,
                alias=f"platform-{cfg.env}-dr",
                deletion_window_days=preset.security.kms_deletion_window_days,
                in_other_region=True,
                protect=preset.security.protect_state,
                break_glass_role_arn=preset.security.break_glass_role_arn,
            ),
        )
        dr = DrCopy(region=recovery.dr_region, kms_key_arn=dr_key.arn, retention_days=recovery.backup_retention_days)
        # each cache of the environment, by its replication group id (components/redis.py: <system>-<env>)
        caches = [f"{s.name}-{cfg.env}" for s in cfg.systems.values() if s.system.redis]
        if caches:
            export = RedisExport(
                "redis-export",
                RedisExportArgs(
                    env=cfg.env,
                    region=cfg.region,
                    dr_region=recovery.dr_region,
                    account_id=account_id,
                    replication_group_ids=caches,
                    kms_key_arn=key.arn,
                    topic_arn=warning.arn,  # a stale DR copy is a warning: nothing is down
                    interval_minutes=recovery.redis_export_minutes,
                    retention_days=recovery.backup_retention_days,
                    log_retention_days=preset.logs.retention_days,
                    restore_role_arns=preset.security.redis_restore_role_arns,
                ),
            )
            pulumi.export("redis_dr_bucket", export.dr_bucket)
    # LAYOUT-REFACTOR-DONE: environment-wide data stores (dev's shared Postgres and Redis) are declared
    # here, in the core, and reach a split layout's system stacks through components/core.py (export/Core).
    data = None
    if (sharing := shared_data.tenancy(cfg)) is not None:
        # one Postgres instance and one Redis for the systems that can share them (components/shared_data.py)
        data = shared_data.SharedData(
            cfg, sharing, vpc_id=network.vpc_id, subnet_ids=network.isolated_subnet_ids, kms_key_arn=key.arn, account_id=account_id,
            topic_arn=topic.arn, dr=dr,
        )  # fmt: skip
        shared_data.monitoring(cfg, data, topic_arn=topic.arn, warning_topic_arn=warning.arn, cluster_name=cluster.name if cluster else "")
        # what is shared, by whom, with which Redis number (no secret); a split core adds the secrets its
        # system stacks rebuild their tenants from (shared_data.read_core)
        for output, value in shared_data.stack_outputs(data.export()).items():
            if cfg.is_core or output == shared_data.OUTPUT:
                pulumi.export(output, value)
    shared = Shared(
        account_id=account_id, key=key, network=network, cluster=cluster, registry=registry, alb=alb, telemetry=telemetry, topic=topic,
        warning=warning, route53_topics=route53_topics, dr=dr, data=data, albs=albs,
    )  # fmt: skip
    return shared, cfg


def alb_name(index: int) -> str:
    """The first load balancer keeps the name it always had; the next are ``alb-2``, ``alb-3``..."""
    return "alb" if index == 1 else f"alb-{index}"


def _hold_unpushed(cfg: PlatformConfig, registry: Registry) -> PlatformConfig:
    """``cfg`` with each service whose image is not in our repository yet held at zero tasks."""
    return hold_missing_images(
        cfg,
        {
            svc.key: f"{repository}{'@' if svc.image.digest else ':'}{svc.image.digest or svc.image.tag}"
            for svc in cfg.services()
            if not registry.pushed(repository := f"{svc.system}/{svc.image_name}", svc.image)
        },
    )


def _from_core(cfg: PlatformConfig) -> tuple[Shared, PlatformConfig]:
    """A system stack of the split layout: the core's export, read through a StackReference and checked
    against this stack before any resource of its own is declared; the system's image repositories
    referenced by name (the core created them)."""
    assert cfg.core_stack is not None
    core = core_ref.read(cfg)
    registry = Registry(
        "registry",
        RegistryArgs(
            repositories=sorted({f"{s.name}/{image}" for s in cfg.systems.values() for image in s.system.images}),
            create=False,
            account_id=core.registry_account_id,
            region=cfg.region,
            registry_id=core.registry_id,
        ),
    )
    cfg = _hold_unpushed(cfg, registry)
    alb = core.alb(cfg) if any(svc.spec.kind is ServiceKind.web for svc in cfg.services()) else None
    # the core's shared data stores (dev), through the same reference
    # never in an ephemeral environment: a pull request's roles and migrations would be dev's
    ephemeral = cfg.layout is not None and cfg.layout.environment is not None
    data = shared_data.read_core(cfg, core.reference) if cfg.preset.data.shared and core.reference is not None and not ephemeral else None
    shared = Shared(
        account_id=core.account_id, key=core.key, network=core.network, cluster=core.cluster, registry=registry, alb=alb,
        telemetry=core.telemetry, topic=core.critical, warning=core.warning, route53_topics=core.route53_topics, dr=core.dr, data=data,
    )  # fmt: skip
    return shared, cfg


def _core_exports(cfg: PlatformConfig, shared: Shared) -> None:
    """What users of the environment look for, from its core."""
    pulumi.export("environment", cfg.env)
    pulumi.export("vpc_id", shared.network.vpc_id)
    pulumi.export("private_subnet_ids", shared.network.private_subnet_ids)
    if shared.cluster is not None:
        pulumi.export("cluster_name", shared.cluster.name)
    pulumi.export("alarm_topic_arn", shared.topic.arn)
    pulumi.export("alarm_topic_arns", {"critical": shared.topic.arn, "warning": shared.warning.arn if shared.warning else shared.topic.arn})


def _system_exports(cfg: PlatformConfig, shared: Shared, platform: Platform, kube: bool) -> None:
    """What users of the systems look for: held services, images and digests, databases, dashboards, URLs."""
    if cfg.core_stack:
        pulumi.export("environment", cfg.env)
    services = {s.deployed.key: s for d in platform.systems.values() for s in d.services.values()}
    held = {svc.key: hold_instructions(svc, cfg.env, cfg.stack) for svc in cfg.services() if svc.held}
    for key_, lines in held.items():
        pulumi.log.warn(key_ + HELD_WARNING + "; ".join(lines))
    pulumi.export(
        "held_services",
        {
            svc.key: [*svc.missing_secrets, *([svc.missing_image] if svc.missing_image else []), *svc.waits_for_held]
            for svc in cfg.services()
            if svc.key in held
        },
    )
    registry = shared.registry
    pulumi.export("images", {svc.key: str(svc.image) for svc in cfg.services()})
    pulumi.export(
        "image_digests",
        {s.name: {image: registry.digest(f"{s.name}/{image}", ref) for image, ref in sorted(s.images.items())} for s in cfg.systems.values()},
    )
    pulumi.export("databases", {n: d.postgres.address for n, d in platform.systems.items() if d.postgres})
    pulumi.export("dashboards", {n: d.monitoring.dashboard.dashboard_name for n, d in platform.systems.items() if d.monitoring})
    if kube:
        workloads = {n: d.workloads for n, d in platform.systems.items() if d.workloads}
        pulumi.export("namespaces", {n: w.namespace for n, w in workloads.items()})
        pulumi.export("deployments", {svc.key: f"{workloads[n].namespace}/{svc.name}" for n in workloads for svc in cfg.systems[n].services.values()})
        pulumi.export("urls", {f"{n}-{svc}": url for n, w in workloads.items() for svc, url in w.urls.items()})
        hooks = {(n, svc): cfg.systems[n].services[svc].spec.webhooks for n, w in workloads.items() for svc in w.urls}
        pulumi.export(
            "webhook_urls",
            {
                f"{n}-{svc}": {p.rstrip("/").rsplit("/", 1)[-1]: pulumi.Output.from_input(workloads[n].urls[svc]).apply(lambda u, p=p: u + p) for p in paths}
                for (n, svc), paths in hooks.items()
                if paths
            },
        )
        return
    pulumi.export("service_names", {key: s.service_name for key, s in services.items()})
    pulumi.export("task_definitions", {key: s.task_definition_arn for key, s in services.items()})
    pulumi.export("urls", {key: s.url for key, s in services.items() if s.url is not None})
    pulumi.export(
        "webhook_urls",
        {
            key: {path.rstrip("/").rsplit("/", 1)[-1]: s.url.apply(lambda u, p=path: u + p) for path in s.deployed.spec.webhooks}
            for key, s in services.items()
            if s.url is not None and s.deployed.spec.webhooks
        },
    )


def _services(cfg: PlatformConfig, deployed: DeployedSystem, data: SystemData, shared: Shared) -> dict[str, Service]:
    """The system's services in start order; each waits for the ones it starts after."""
    system = deployed.system
    migration = system.migration
    order = sorted(deployed.services.values(), key=lambda svc: (system.start_rank(svc.name), svc.name))
    # the database roles exist before any service connects: one service runs the bootstrap, the other
    # Postgres users start after it (with a migration, they already wait for its service)
    roles_by = bootstrap_service(system, list(deployed.services)) if data.postgres else None
    built: dict[str, Service] = {}
    for svc in order:
        spec = svc.spec
        connections, stores = [], []
        for secret_name in spec.secrets:
            source = system.secrets[secret_name].derived_from
            if source == "postgres" and data.postgres:
                connections.append(Connection("db", data.postgres.security_group_id, data.postgres.port))
                stores += [data.postgres.instance] if data.postgres.instance is not None else []  # None: the core's, up before
            elif source == "redis" and data.redis:
                connections.append(Connection("cache", data.redis.security_group_id, data.redis.port))
                stores += [data.redis.group] if data.redis.group is not None else []
        waits_for = [built[name].service for name in system.waits_for(svc.name) if name in built]
        if roles_by in built and "DATABASE_URL" in spec.secrets and built[roles_by].service not in waits_for:
            waits_for.append(built[roles_by].service)
        bootstrap = None
        if svc.name == roles_by and data.postgres is not None:
            bootstrap = DatabaseBootstrap(
                owner_secret_arn=data.secrets.owner_arn, database=data.postgres.database, ddl=data.postgres.ddl, create_database=data.postgres.creates_database
            )
        runs_migration = migration is not None and migration.service == svc.name
        extra_env = {}
        if spec.public_url_env and shared.alb:
            extra_env[spec.public_url_env] = shared.alb.url(svc.key)
        repository = f"{system.name}/{svc.image_name}"
        built[svc.name] = Service(
            svc.key,
            ServiceArgs(
                deployed=svc,
                env=cfg.env,
                region=cfg.region,
                account_id=shared.account_id,
                cluster_arn=shared.cluster.arn,
                cluster_name=shared.cluster.name,
                exec_log_group_arn=shared.cluster.exec_log_group_arn,
                vpc_id=shared.network.vpc_id,
                subnet_ids=shared.network.private_subnet_ids,
                kms_key_arn=shared.key.arn,
                image_uri=shared.registry.image_uri(repository, svc.image),
                repository_arns=[] if svc.image.repository else shared.registry.arns([repository]),
                secret_arns=data.secrets.arns_for(svc.name),
                secrets_revision=data.secrets.versions_for(svc.name),
                secret_versions=[*data.secrets.version_resources_for(svc.name), *([data.secrets.owner_version] if bootstrap else [])],
                extra_env=extra_env,
                compute=cfg.preset.compute,
                log_retention_days=cfg.preset.logs.retention_days,
                alb=shared.alb if spec.kind is ServiceKind.web else None,
                connections=connections,
                migration=migration if runs_migration else None,
                bootstrap=bootstrap,
                depends_on=[*stores, *waits_for],
                telemetry=shared.telemetry,
                deploy=cfg.preset.deploy,
                thresholds=cfg.preset.observability,
            ),
        )
    return built


def _alb_to_cluster(alb: Alb, cluster_group: str, ports: list[int]) -> list[pulumi.Resource]:
    """With ``compute: kubernetes``: the load balancer reaches pod IPs on each web port. The pods carry the
    cluster's group (``kubernetes.cluster_security_group_id``: the nodes', or the pods' own with security
    groups for pods), so that group admits the ALB's and the ALB's may send there; one rule pair per port,
    since systems share ports and a group refuses a duplicate rule."""
    rules: list[pulumi.Resource] = []
    for port in ports:
        rules += [
            aws.vpc.SecurityGroupIngressRule(
                f"cluster-from-alb-{port}",
                security_group_id=cluster_group,
                referenced_security_group_id=alb.security_group_id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description="web pods from the platform load balancer",
            ),
            aws.vpc.SecurityGroupEgressRule(
                f"alb-to-cluster-{port}",
                security_group_id=alb.security_group_id,
                referenced_security_group_id=cluster_group,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                description="to web pods on the Kubernetes cluster",
            ),
        ]
    return rules


def _workloads(
    cfg: PlatformConfig, deployed: DeployedSystem, data: SystemData, shared: Shared, cluster: pulumi.ProviderResource, edge_rules: list[pulumi.Resource]
) -> SystemWorkloads:
    """The system on Kubernetes: its stores admit the cluster's security group, its services become workloads."""
    kube = cfg.stack_config.kubernetes
    assert kube is not None
    system = deployed.system
    for label, store in (("db", data.postgres), ("cache", data.redis)):
        if store is not None:
            aws.vpc.SecurityGroupIngressRule(
                f"{system.name}-{label}-from-cluster",
                security_group_id=store.security_group_id,
                referenced_security_group_id=kube.cluster_security_group_id,
                ip_protocol="tcp",
                from_port=store.port,
                to_port=store.port,
                description=f"{system.name} pods on the Kubernetes cluster",
            )
    public: dict[str, dict[str, pulumi.Input[str]]] = {}
    for svc in deployed.services.values():
        if svc.spec.public_url_env and shared.alb is not None:
            public[svc.name] = {svc.spec.public_url_env: shared.alb.url(svc.key)}  # as on ECS
        elif svc.spec.public_url_env and cfg.domain and svc.hostname:
            public[svc.name] = {svc.spec.public_url_env: f"https://{svc.hostname}"}
    return SystemWorkloads(
        f"{system.name}-k8s",
        WorkloadsArgs(
            system=deployed,
            env=cfg.env,
            region=cfg.region,
            settings=kube,
            compute=cfg.preset.compute,
            secrets=data.secrets,
            images={svc.name: shared.registry.image_uri(f"{system.name}/{svc.image_name}", svc.image) for svc in deployed.services.values()},
            kms_key_arn=shared.key.arn,
            domain=cfg.domain,
            alb=shared.alb,
            vpc_id=shared.network.vpc_id,
            edge_rules=edge_rules,
            extra_env=public,
        ),
        opts=pulumi.ResourceOptions(providers={"kubernetes": cluster}),
    )


def _monitoring(cfg: PlatformConfig, deployed: DeployedSystem, data: SystemData, shared: Shared) -> SystemMonitoring:
    system = deployed.system
    preset = cfg.preset
    web = [
        WebTarget(s.deployed.key, s.target_group_arn_suffix, shared.alb.arn_suffix, paused=s.deployed.paused, alternate=s.alternate_target_group_arn_suffix)
        for s in data.services.values()
        if s.target_group_arn_suffix is not None and shared.alb is not None
    ]
    if data.workloads is not None and shared.alb is not None:  # Kubernetes: the same alarms on its target groups
        web += [
            WebTarget(deployed.services[n].key, suffix, shared.alb.arn_suffix, paused=deployed.services[n].paused)
            for n, suffix in data.workloads.target_group_arn_suffixes.items()
        ]
    return SystemMonitoring(
        f"{system.name}-monitoring",
        SystemMonitoringArgs(
            env=cfg.env,
            system=system.name,
            region=cfg.region,
            topic_arn=shared.topic.arn,
            warning_topic_arn=shared.warning.arn if shared.warning else None,
            cluster_name=shared.cluster.name if shared.cluster else "",
            settings=preset.observability,
            web=web,
            services=[
                EcsService(s.deployed.key, s.service_name, s.deployed.spec.kind is ServiceKind.singleton, paused=s.deployed.paused)
                for s in data.services.values()
            ],
            # a shared instance's and cache's alarms exist once, in the core (components/shared_data.py, monitoring)
            database=Database(f"{system.name}-{cfg.env}", preset.postgres.instance_class, cfg.postgres_settings(system.name).allocated_storage_gb)
            if data.postgres and not isinstance(data.postgres, PostgresTenant)
            else None,
            cache=Cache(f"{system.name}-{cfg.env}", preset.redis.nodes, system.redis.maxmemory_policy == "noeviction")
            if data.redis and system.redis and not isinstance(data.redis, RedisTenant)
            else None,
        ),
    )


def _data_tier(
    cfg: PlatformConfig,
    deployed: DeployedSystem,
    key: EnvironmentKey,
    network: Network,
    external: pulumi.Output[Any] | None,
    dr: DrCopy | None,
    *,
    account_id: pulumi.Input[str] | None = None,
    topic_arn: pulumi.Input[str] | None = None,
    tier: SharedStores | None = None,
) -> SystemData:
    """The system's Postgres and Redis (its own, or its tenant view of the environment's shared ones:
    ``tier``, or in a split layout's system stack the core's, read from its output) and its secrets."""
    system = deployed.system
    physical = f"{system.name}-{cfg.env}"
    derived: dict[str, pulumi.Output[str]] = {}
    postgres: Postgres | PostgresTenant | None = None
    redis: Redis | RedisTenant | None = None
    tenant = tier.tenant(deployed) if tier is not None else shared_data.Tenant()
    if tenant.postgres is not None:
        postgres = tenant.postgres
        derived["DATABASE_URL"] = postgres.database_url
    elif system.postgres:
        postgres = Postgres(
            f"{system.name}-db",
            PostgresArgs(
                identifier=physical,
                database=system.postgres.database,
                vpc_id=network.vpc_id,
                subnet_ids=network.isolated_subnet_ids,
                kms_key_arn=key.arn,
                settings=cfg.postgres_settings(system.name),
                max_storage_gb=cfg.postgres_settings(system.name).max_allocated_storage_gb,
                rotation=deployed.rotate.get("DATABASE_URL", 0),
                log_retention_days=cfg.preset.logs.retention_days,
                dr=dr,
                ddl_role=bool(runtime_ddl_services(system)),
                account_id=account_id,
                alarm_topic_arn=topic_arn,
            ),
        )
        derived["DATABASE_URL"] = postgres.database_url
    if tenant.redis is not None:
        redis = tenant.redis
        derived["REDIS_URL"] = redis.redis_url
    elif system.redis:
        redis = Redis(
            f"{system.name}-cache",
            RedisArgs(
                replication_group_id=physical,
                vpc_id=network.vpc_id,
                subnet_ids=network.isolated_subnet_ids,
                kms_key_arn=key.arn,
                settings=cfg.redis_settings(system.name),
                maxmemory_policy=system.redis.maxmemory_policy,
                rotation=deployed.rotate.get("REDIS_URL", 0),
                revoked=cfg.stack_config.systems[system.name].revoke.get("REDIS_URL", 0),
                protect=cfg.preset.security.protect_state,
            ),
        )
        derived["REDIS_URL"] = redis.redis_url
    paths = [p for ps in deployed.external_secrets.values() for p in ps]
    secrets = SystemSecrets(
        f"{system.name}-secrets",
        SystemSecretsArgs(
            env=cfg.env,
            system=system,
            kms_key_arn=key.arn,
            recovery_window_days=cfg.preset.security.secret_recovery_days,
            replica_region=dr.region if dr else None,
            replica_kms_key_arn=dr.kms_key_arn if dr else None,
            external_values={p: _lookup(external, p) for p in paths} if external is not None else {},
            derived_values=derived,
            database=DatabaseSecrets(owner=postgres.owner_secret, ddl_url=postgres.ddl_url, ddl_services=frozenset(runtime_ddl_services(system)))
            if postgres
            else None,
            rotation=deployed.rotate,
            protect=cfg.preset.security.protect_state,
        ),
    )
    return SystemData(postgres=postgres, redis=redis, secrets=secrets)


PLACEHOLDER_WARNING = "placeholder (`pulumi up` stops on it): "


def offline() -> bool:
    """True under Pulumi's mock runtime (the offline plan and the tests), where no cloud is touched."""
    from pulumi.runtime.mocks import MockMonitor
    from pulumi.runtime.settings import SETTINGS

    return isinstance(SETTINGS.monitor, MockMonitor)


def run_stack(project_dir: Path) -> Platform | None:
    """The whole program: validate ``Pulumi.<stack>.yaml`` and the catalog, then build.

    A configuration mistake ends the run with ``pulumi.RunError``: one message, no traceback, and no
    resource declared, because validation finishes before the first resource is constructed.
    """
    try:
        config = load_platform(pulumi.get_stack(), project_dir, engine=engine.from_program(pulumi.get_stack(), project_dir))
    except ConfigError as err:
        raise pulumi.RunError(str(err)) from None
    if not offline() and (todo := placeholder_problems(config, project_dir)):
        # the offline plan lists them; a real preview shows them as warnings (and everything else it would
        # do); a real up stops here, before the first resource
        if not pulumi.runtime.is_dry_run():
            raise pulumi.RunError(str(ConfigError(todo)))
        for problem in todo:
            pulumi.log.warn(f"{PLACEHOLDER_WARNING}{problem}")
    check_default_tags(config.env)
    enforce(config.stack, config.env)  # the mandatory policies, also where no policy pack runs
    external = pulumi.Config(PROJECT).get_secret_object("secrets")
    kube = config.stack_config.kubernetes
    kubeconfig = pulumi.Config("kubernetes").require_secret("kubeconfig") if kube and kube.kubeconfig == "config" else None
    return build(config, external, kubeconfig)


__all__ = ["Platform", "build", "run_stack"]
