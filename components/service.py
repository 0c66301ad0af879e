"""One service of a system on ECS/Fargate: task definition, roles, network access, ECS service, scaling.

Children (``<key>`` is ``<system>-<service>``): ``aws:cloudwatch/logGroup:LogGroup``
(``/platform/<env>/<system>/<service>``), ``aws:iam/role:Role`` ``-execution`` and ``-task`` with
inline ``aws:iam/rolePolicy:RolePolicy``, ``aws:ec2/securityGroup:SecurityGroup`` with one
``aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule`` per consumer relationship (load balancer
to service, service to its Postgres and Redis) and ``aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule``
for what the task may reach (:func:`egress_for`), ``aws:ecs/taskDefinition:TaskDefinition``,
``aws:ecs/service:Service``; web services add ``aws:lb/targetGroup:TargetGroup`` and
``aws:lb/listenerRule:ListenerRule`` and two ``aws:cloudwatch/metricAlarm:MetricAlarm`` ECS rolls
back on (``<key>-deploy-5xx``, ``<key>-deploy-p95``), plus a second target group ``<key>-tg2``
where the preset shifts traffic (blue/green, canary); autoscaled ones ``aws:appautoscaling/target:Target`` and two
target-tracking policies.

Decisions, each visible in the captured plan:

- **Secrets** reach the container only as ``secrets[].valueFrom`` ARNs; the execution role may read
  exactly those ARNs and decrypt with the environment key through Secrets Manager only. The docker
  label ``platform.secrets-revision`` hashes the version ids of the values we write and the rotation
  keys, so a new value is a new task definition revision and the service rolls.
- **Kinds.** web: minimum 100 % and maximum 200 % during a deploy (full capacity throughout);
  worker: the same; singleton: desired 1, minimum 0 %, maximum 100 %, never autoscaled, so a deploy
  stops the old task before the new one starts and two never run at once.
- **Deploys** (``deploy`` preset). A web service rolls back on what its users see, not only on tasks
  that fail to start: ECS watches its two deployment alarms (``alarms`` with ``rollback``), the 5xx
  rate and p95 response time of its target groups over ``deploy.alarm_minutes``, during the deploy
  and its bake, and puts the previous revision back if either fires. ``rolling`` (dev): the
  circuit breaker and the alarms, ECS's own bake ("How CloudWatch alarms detect Amazon ECS deployment
  failures": after the old tasks are gone ECS keeps watching for a time it derives from the alarms).
  ``canary``/``blue_green`` (staging, prod; ECS developer guide, "Amazon ECS blue/green deployments"
  and "Application Load Balancer resources for blue/green, linear, and canary deployments"): the
  listener rule forwards to both target groups (100/0), the service names the alternate one, that
  rule and the environment's ECS infrastructure role (``components/alb.py``), and ECS starts the new
  revision in the idle group, moves the canary share, then all traffic, and keeps the old tasks for
  ``bake_minutes``. ECS rewrites the rule's weights on every deploy, so the rule ignores changes to
  its ``actions`` (else the next ``pulumi up`` would put the weights back, and the traffic on the
  old, stopped revision). ``wait_for_steady_state`` waits for the service deployment to be
  ``SUCCESSFUL`` (the bake included), so ``pulumi up`` fails when ECS rolled back. Workers and
  singletons have no load balancer and only the circuit breaker.
- **Database roles**: the service that first uses Postgres (the migration's service, else the first
  in start order that reads ``DATABASE_URL``) runs the ``db-roles`` bootstrap (``components/postgres.py``)
  in a first container, from the pinned postgres image, as the owner; ``migrate`` and the app container
  start only when it exits 0. Its execution role, and no other, reads the owner secret; the app container
  never gets it (ECS passes a container only its own ``secrets``).
- **Migrations** (systems with a ``migration``): the task of the migration's service runs a
  ``migrate`` container with the new image next, connected as the owner (its ``DATABASE_URL`` is the
  owner's URL); the app container, connected as the app role, starts only when it exits 0
  (``dependsOn: SUCCESS``). A failed migration therefore never serves traffic: the new tasks fail,
  the deployment circuit breaker rolls back to the previous revision, and ``pulumi up`` fails. Nothing
  runs on the deployer's machine. Prisma and node-pg-migrate take a Postgres advisory lock, so tasks
  starting together apply each migration once. Other services of the system start after this one.
- **Egress**: HTTPS (443) anywhere, the data stores' ports to their security groups only, and a port more
  only with a written reason (:data:`EGRESS_BY_SECRET`: SMTP submission for a service that holds an SMTP
  password; the external OTLP endpoint's port). DNS to the VPC resolver, the task metadata and
  credentials endpoints and Amazon Time Sync are not filtered by security groups (VPC user guide,
  "Security group rules": "Security groups don't filter traffic destined to and from the following:
  Amazon Domain Name Services (DNS), Amazon DHCP, Amazon EC2 instance metadata, Amazon ECS task metadata
  endpoints, ... Amazon Time Sync Service"). The load balancer reaches a web task on its port through the
  ingress rule from the ALB's group; tasks call each other only through the load balancer (HTTPS).
- **Trust.** The task role trusts ``ecs-tasks.amazonaws.com`` only for this account's ECS
  (``aws:SourceAccount`` and ``aws:SourceArn`` ``arn:aws:ecs:<region>:<account>:*``, the confused-deputy
  guard of the ECS developer guide, "Amazon ECS task IAM role"). The execution role keeps the plain
  trust: the guide documents those keys for the task role only, and a key ECS does not send when it
  assumes the execution role would stop every task from starting.
- **Hardening.** Non-root user (default 1000:1000), read-only root filesystem with a scratch volume
  per writable path (unless ECS Exec is on, whose agent needs to write), all Linux capabilities
  dropped, init process (signals reach node, zombies are reaped), stop timeout = the app's shutdown
  time plus 5 s, awslogs non-blocking, latest Fargate platform, no public IP.

Cost note: Fargate ARM64 is about $0.0324 per vCPU-hour and $0.0036 per GB-hour (Spot about 70 % less);
a 0.25 vCPU / 0.5 GB task runs about $7/month on demand.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_aws as aws

from stacks.catalog import Migration, ServiceKind
from stacks.config import DeployedService
from stacks.presets import ComputePreset, DeployPreset, ObservabilityPreset

from . import otel, postgres
from .alb import Alb
from .cluster import capacity_provider
from .iam import service_trust
from .workload import DEFAULT_USER, listener_condition, revision_hash, steady_state_timeout, task_counts, volume_name
from .workload import target_group as workload_target_group

STOP_MARGIN_SECONDS = 5
MIGRATION_GRACE_SECONDS = 120
MEMORY_TARGET_PERCENT = 80


@dataclass(frozen=True)
class Connection:
    """Access this service needs to a data store: ingress on the store's security group."""

    role: str
    """``db`` or ``cache``: names the rule (``<key>-to-db``)."""
    security_group_id: pulumi.Input[str]
    port: int


@dataclass(frozen=True)
class Egress:
    """One outbound TCP port a task may open to ``cidr``, and why."""

    port: int
    reason: str
    cidr: str = "0.0.0.0/0"


HTTPS = Egress(
    443,
    "HTTPS through NAT: AWS APIs (ECR, S3 layers, Secrets Manager, CloudWatch Logs, X-Ray, SSM) and what the app calls"
    " (RPC over https and wss, webhooks, Sentry, external OTLP)",
)
EGRESS_BY_SECRET: Mapping[str, tuple[Egress, ...]] = {
    # starkdca's api sends mail (OTP codes) with SMTP_PASS, the "email service API key" of its guide. Mail
    # submission is 587 with STARTTLS (RFC 6409) or 465 with implicit TLS (RFC 8314), by provider; port 25
    # is not submission (and EC2 throttles it).
    "SMTP_PASS": (
        Egress(587, "SMTP submission with STARTTLS (RFC 6409): the service holds an SMTP password"),
        Egress(465, "SMTP submission over implicit TLS (RFC 8314): the service holds an SMTP password"),
    ),
}
"""Secret name -> the extra ports a service that receives it needs, each with its reason."""


def egress_for(secrets: Sequence[str], otlp_endpoint: str | None = None) -> list[Egress]:
    """Every internet port a task needs: HTTPS, plus a port per reason (data stores are separate rules)."""
    out = [HTTPS]
    for name in sorted(secrets):
        out += [e for e in EGRESS_BY_SECRET.get(name, ()) if e.port not in {o.port for o in out}]
    if otlp_endpoint:
        port = urlsplit(otlp_endpoint).port or 443
        if port not in {o.port for o in out}:
            out.append(Egress(port, "the external OTLP endpoint the collector exports to (platform:observability.otlp_endpoint)"))
    return out


@dataclass(frozen=True, kw_only=True)
class DatabaseBootstrap:
    """The ``db-roles`` bootstrap (``components/postgres.py``) in this service's task."""

    owner_secret_arn: pulumi.Input[str]
    """The owner secret (JSON): the bootstrap's credentials and the migration's URL."""
    database: str
    ddl: bool = False
    """Create the runtime-DDL role too."""
    create_database: bool = False
    """The database lives in a shared instance: the bootstrap creates it first (``postgres.shared_roles_sql``)."""


@dataclass(frozen=True, kw_only=True)
class Telemetry:
    """Where this environment's collectors export."""

    otlp_endpoint: str | None = None
    """External OTLP/HTTP endpoint; default: X-Ray and CloudWatch EMF."""
    auth_header: str = "Authorization"
    auth_secret_arn: pulumi.Input[str] | None = None
    """Secrets Manager ARN of the header value (external endpoint only)."""


@dataclass(frozen=True, kw_only=True)
class ServiceArgs:
    deployed: DeployedService
    env: str
    region: str
    account_id: pulumi.Input[str]
    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    """Private subnets."""
    kms_key_arn: pulumi.Input[str]
    image_uri: pulumi.Input[str]
    repository_arns: Sequence[pulumi.Input[str]]
    """ECR repositories the execution role may pull from (empty for images from elsewhere)."""
    secret_arns: Mapping[str, pulumi.Input[str]]
    """Env var -> Secrets Manager ARN: exactly the secrets this service declares."""
    secrets_revision: Sequence[pulumi.Input[str]] = field(default_factory=list)
    """Values whose change must roll the service (secret version ids, rotation keys)."""
    extra_env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Plain env computed at deploy time (a public URL); never a secret."""
    compute: ComputePreset
    log_retention_days: int
    alb: Alb | None = None
    """The load balancer, for web services."""
    connections: Sequence[Connection] = ()
    migration: Migration | None = None
    """Run this before the app container starts (only on the migration's own service)."""
    bootstrap: DatabaseBootstrap | None = None
    """Run the database-roles bootstrap before the migration and the app (one service per system)."""
    depends_on: Sequence[pulumi.Resource] = ()
    """Resources the ECS service waits for: its data stores and the services it starts after."""
    secret_versions: Sequence[pulumi.Resource] = ()
    """The secret values it reads that Pulumi writes: the ECS service waits for them."""
    telemetry: Telemetry = field(default_factory=Telemetry)
    exec_log_group_arn: pulumi.Input[str] | None = None
    """Where the cluster logs ECS Exec sessions (with ``compute.exec_enabled``): the task role writes there."""
    deploy: DeployPreset = field(default_factory=DeployPreset)
    """How a web service's new revision replaces the old one (see the module doc, "Deploys")."""
    thresholds: ObservabilityPreset = field(default_factory=ObservabilityPreset)
    """``error_rate_percent`` and ``latency_p95_seconds``: where the deployment alarms fire."""


class Service(pulumi.ComponentResource):
    """A web, worker or singleton service on Fargate."""

    deployed: DeployedService
    """What this service runs (catalog entry, image, host, plain env)."""
    service: aws.ecs.Service
    """The ECS service; later services of the start order depend on it."""
    service_name: pulumi.Output[str]
    url: pulumi.Output[str] | None
    """Public URL (web services)."""
    target_group_arn_suffix: pulumi.Output[str] | None
    alternate_target_group_arn_suffix: pulumi.Output[str] | None
    """The second target group, where the preset shifts traffic: after a deploy the traffic may be in either."""
    log_group_name: pulumi.Output[str]
    task_definition_arn: pulumi.Output[str]
    """The revision this ``pulumi up`` registered; a deploy is good only when the service runs it."""
    deploy_alarm_names: list[str]
    """The alarms ECS rolls a deploy back on (web services; empty otherwise)."""

    def __init__(self, name: str, args: ServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:compute:Service", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.deployed = d = args.deployed
        spec = d.spec
        c = args.compute
        web = spec.kind is ServiceKind.web

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=f"/platform/{args.env}/{d.system}/{d.name}",
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            opts=child,
        )
        sidecar = spec.otel_sidecar
        external = args.telemetry.otlp_endpoint is not None
        metrics_group = None
        if sidecar and not external:
            metrics_group = aws.cloudwatch.LogGroup(
                f"{name}-metrics",
                name=f"/platform/{args.env}/{d.system}/{d.name}/metrics",
                retention_in_days=args.log_retention_days,
                kms_key_id=args.kms_key_arn,
                opts=child,
            )
        # Everything a new task needs in place before it starts: IAM policies, network rules, secret
        # values. An update that adds a secret or a store changes these and the service together; without
        # the dependency ECS can start tasks before IAM or the rule exists, and they fail and roll back.
        self._ready: list[pulumi.Resource] = []
        execution_role, task_role = self._roles(name, args, log_group, metrics_group)

        sg = aws.ec2.SecurityGroup(f"{name}-sg", vpc_id=args.vpc_id, description=f"{d.key} tasks", opts=child)
        # no all-traffic rule: HTTPS, the stores' ports to the stores, and each further port with its reason
        for egress in egress_for(spec.secrets, args.telemetry.otlp_endpoint if spec.otel_sidecar else None):
            self._ready.append(
                aws.vpc.SecurityGroupEgressRule(
                    f"{name}-out" if egress.port == HTTPS.port else f"{name}-out-{egress.port}",
                    security_group_id=sg.id,
                    cidr_ipv4=egress.cidr,
                    ip_protocol="tcp",
                    from_port=egress.port,
                    to_port=egress.port,
                    description=egress.reason[:255],
                    opts=child,
                )
            )
        for conn in args.connections:
            self._ready += [
                _tcp_rule(aws.vpc.SecurityGroupIngressRule, f"{name}-to-{conn.role}", conn.security_group_id, sg.id, conn.port, f"from {d.key}", child),
                _tcp_rule(
                    aws.vpc.SecurityGroupEgressRule, f"{name}-to-{conn.role}-out", sg.id, conn.security_group_id, conn.port, f"to its {conn.role}", child
                ),
            ]

        target_group = alternate = rule = None
        self.url = self.target_group_arn_suffix = self.alternate_target_group_arn_suffix = None
        self.deploy_alarm_names = []
        self._alarms: list[pulumi.Resource] = []
        if web:
            assert args.alb is not None and spec.port is not None and spec.health is not None
            alb = args.alb
            self._ready += [
                _tcp_rule(aws.vpc.SecurityGroupIngressRule, f"{name}-from-alb", sg.id, alb.security_group_id, spec.port, "from the load balancer", child),
                _tcp_rule(aws.vpc.SecurityGroupEgressRule, f"{name}-alb-out", alb.security_group_id, sg.id, spec.port, f"to {d.key}", child),
            ]
            shifting = args.deploy.strategy != "rolling"

            def group(suffix: str) -> aws.lb.TargetGroup:
                return workload_target_group(f"{name}-{suffix}", d, args.vpc_id, child)

            target_group = group("tg")
            # "tg2": ELB allows 32 characters in a target group name; with Pulumi's 8-character suffix this fits
            # keys of up to 20 (twinkle-facilitator is 19)
            alternate = group("tg2") if shifting else None
            condition = listener_condition(alb, d)
            rule = aws.lb.ListenerRule(
                f"{name}-rule",
                listener_arn=alb.listener_arn(d.key),
                priority=alb.priority(d.key),
                conditions=[condition],
                actions=[_forward(target_group, alternate, sticky=spec.sticky)],
                # ECS owns the weights of a traffic-shifting rule: every blue/green or canary deploy
                # rewrites them (100/0 -> canary -> 0/100 on the first one, and back on the next), so the
                # program ignores the rule's actions once it exists instead of putting 100/0 back, which
                # would send all traffic to the stopped revision's empty group. ECS developer guide,
                # "Application Load Balancer resources for blue/green, linear, and canary deployments"
                # (https://docs.aws.amazon.com/AmazonECS/latest/developerguide/alb-resources-for-blue-green.html);
                # the drift the weights cause otherwise: terraform-aws-modules/terraform-aws-alb#409.
                opts=pulumi.ResourceOptions(parent=self, ignore_changes=["actions"] if alternate is not None else None),
            )
            self.deploy_alarm_names = self._deploy_alarms(name, args, [target_group, *([alternate] if alternate else [])])
            self.url = alb.url(d.key)
            self.target_group_arn_suffix = target_group.arn_suffix
            self.alternate_target_group_arn_suffix = alternate.arn_suffix if alternate is not None else None

        task = aws.ecs.TaskDefinition(
            f"{name}-task",
            family=f"{args.env}-{d.key}",
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            cpu=str(spec.cpu),
            memory=str(spec.memory),
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(operating_system_family="LINUX", cpu_architecture=c.architecture),
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name=volume_name(p)) for p, w in spec.writable_paths.items() if w.source == "image"] or None,
            container_definitions=self._containers(args, log_group.name, metrics_group.name if metrics_group else None),
            # Keep the replaced revision ACTIVE: every change replaces the task definition, and without this
            # the provider deregisters the old revision, which ECS then refuses for new deployments
            # (DeregisterTaskDefinition: an INACTIVE revision cannot run new tasks or services), so
            # `tools.ops rollback` and the console's "update to the previous revision" could not go back.
            skip_destroy=True,
            opts=child,
        )

        singleton = spec.kind is ServiceKind.singleton
        desired, maximum = task_counts(d, c)
        autoscaled = maximum > desired
        grace = None
        if web:
            grace = spec.health.grace_period_seconds + (MIGRATION_GRACE_SECONDS if args.migration else 0)
        self.service = aws.ecs.Service(
            f"{name}-service",
            cluster=args.cluster_arn,
            task_definition=task.arn,
            desired_count=desired,
            capacity_provider_strategies=[aws.ecs.ServiceCapacityProviderStrategyArgs(capacity_provider=capacity_provider(c.spot), weight=1)],
            platform_version="LATEST",
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(subnets=args.subnet_ids, security_groups=[sg.id], assign_public_ip=False),
            load_balancers=[
                aws.ecs.ServiceLoadBalancerArgs(
                    target_group_arn=target_group.arn,
                    container_name=d.name,
                    container_port=spec.port,
                    advanced_configuration=aws.ecs.ServiceLoadBalancerAdvancedConfigurationArgs(
                        alternate_target_group_arn=alternate.arn,
                        production_listener_rule=rule.arn,
                        role_arn=args.alb.infrastructure_role_arn,
                    )
                    if alternate is not None and rule is not None and args.alb is not None
                    else None,
                )
            ]
            if target_group
            else None,
            health_check_grace_period_seconds=grace,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            deployment_controller=aws.ecs.ServiceDeploymentControllerArgs(type="ECS"),  # traffic shifting needs ECS's own controller
            deployment_configuration=aws.ecs.ServiceDeploymentConfigurationArgs(**deployment_configuration(args.deploy if web else DeployPreset())),
            alarms=aws.ecs.ServiceAlarmsArgs(alarm_names=self.deploy_alarm_names, enable=True, rollback=True) if self.deploy_alarm_names else None,
            deployment_minimum_healthy_percent=0 if singleton else 100,
            deployment_maximum_percent=100 if singleton else 200,
            availability_zone_rebalancing="DISABLED" if singleton else "ENABLED",
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            enable_execute_command=c.exec_enabled,
            wait_for_steady_state=True,
            opts=pulumi.ResourceOptions(
                parent=self,
                # the alarms ECS watches and the role it shifts traffic with exist before the service names them
                depends_on=[
                    *([rule] if rule else []),
                    *self._alarms,
                    *(args.alb.infrastructure_ready if alternate is not None and args.alb is not None else []),
                    *self._ready,
                    *args.secret_versions,
                    *args.depends_on,
                ],
                # the autoscaler owns the running count; pulumi sets only the first one
                ignore_changes=["desiredCount"] if autoscaled else None,
                custom_timeouts=pulumi.CustomTimeouts(create=(wait := steady_state_timeout(spec)), update=wait, delete="20m"),
            ),
        )
        if autoscaled:
            self._autoscaling(name, args, desired, maximum)

        self.service_name = self.service.name
        self.task_definition_arn = task.arn
        self.log_group_name = log_group.name
        self.register_outputs({"service_name": self.service_name})

    # ------------------------------------------------------------ children

    def _roles(
        self, name: str, args: ServiceArgs, log_group: aws.cloudwatch.LogGroup, metrics_group: aws.cloudwatch.LogGroup | None
    ) -> tuple[aws.iam.Role, aws.iam.Role]:
        child = pulumi.ResourceOptions(parent=self)
        d = args.deployed
        source_arn = pulumi.Output.concat("arn:aws:ecs:", args.region, ":", args.account_id, ":*")
        trust = service_trust("ecs-tasks.amazonaws.com", source_account=args.account_id, source_arn=source_arn)
        execution = aws.iam.Role(
            f"{name}-execution",
            description=f"ECS pulls, logs and reads secrets for {d.key}",
            assume_role_policy=service_trust("ecs-tasks.amazonaws.com"),  # see the module doc, "Trust"
            opts=child,
        )
        readable = [args.secret_arns[n] for n in sorted(args.secret_arns)]
        if args.deployed.spec.otel_sidecar and args.telemetry.auth_secret_arn is not None:
            readable.append(args.telemetry.auth_secret_arn)  # the collector's credential for the external endpoint
        if args.bootstrap is not None:
            readable.append(args.bootstrap.owner_secret_arn)  # db-roles and migrate only (ECS gives each container its own secrets)
        policy = pulumi.Output.all(
            log_group.arn,
            args.kms_key_arn,
            pulumi.Output.all(*args.repository_arns),
            pulumi.Output.all(*readable),
        ).apply(lambda v: json.dumps(execution_policy(v[0], v[1], v[2], v[3], args.region)))
        self._ready.append(aws.iam.RolePolicy(f"{name}-execution-policy", role=execution.id, policy=policy, opts=child))
        task = aws.iam.Role(f"{name}-task-role", description=f"{d.key} application identity", assume_role_policy=trust, opts=child)
        if args.compute.exec_enabled:
            exec_policy = pulumi.Output.from_input(args.exec_log_group_arn).apply(lambda arn: json.dumps(ecs_exec_policy(arn)))
            self._ready.append(aws.iam.RolePolicy(f"{name}-task-exec", role=task.id, policy=exec_policy, opts=child))
        if metrics_group is not None:
            collector = metrics_group.arn.apply(lambda arn: json.dumps(otel.task_role_policy(arn)))
            self._ready.append(aws.iam.RolePolicy(f"{name}-task-otel", role=task.id, policy=collector, opts=child))
        return execution, task

    def _containers(self, args: ServiceArgs, log_group_name: pulumi.Output[str], metrics_group_name: pulumi.Output[str] | None) -> pulumi.Output[str]:
        d = args.deployed
        extra_names = sorted(args.extra_env)
        t = args.telemetry
        inputs = pulumi.Output.all(
            args.image_uri,
            log_group_name,
            pulumi.Output.all(*[args.extra_env[n] for n in extra_names]),
            pulumi.Output.all(*[args.secret_arns[n] for n in sorted(args.secret_arns)]),
            pulumi.Output.all(*args.secrets_revision),
            metrics_group_name if metrics_group_name is not None else "",
            t.auth_secret_arn if t.auth_secret_arn is not None else "",
            args.bootstrap.owner_secret_arn if args.bootstrap is not None else "",
        )

        def render(v: list[Any]) -> str:
            image, group, extra, arns, revision, metrics_group, auth_arn, owner_arn = v
            collector = None
            if d.spec.otel_sidecar:
                config = otel.collector_config(
                    env=args.env,
                    system=d.system,
                    service_key=d.key,
                    metrics=d.spec.metrics,
                    metrics_log_group=metrics_group,
                    region=args.region,
                    otlp_endpoint=t.otlp_endpoint,
                    auth_header=t.auth_header,
                )
                collector = {"config": otel.render(config), "auth_secret_arn": auth_arn or None}
            env = {**d.env, **dict(zip(extra_names, extra, strict=True))}
            secrets = dict(zip(sorted(args.secret_arns), arns, strict=True))
            return json.dumps(
                container_definitions(
                    d,
                    image=image,
                    env=env,
                    secrets=secrets,
                    log_group=group,
                    region=args.region,
                    writable_root=args.compute.exec_enabled,
                    migration=args.migration,
                    secrets_revision=revision_hash(revision),
                    collector=collector,
                    bootstrap=dataclasses.replace(args.bootstrap, owner_secret_arn=owner_arn) if args.bootstrap is not None else None,
                )
            )

        return inputs.apply(render)

    def _deploy_alarms(self, name: str, args: ServiceArgs, groups: Sequence[aws.lb.TargetGroup]) -> list[str]:
        """The two alarms ECS rolls a deploy back on, over every target group of the service: during a
        canary both serve, and after a blue/green or canary deploy the traffic lives in the group the last
        one moved it to. Each group's rate or p95 counts on its own (``MAX``), so a canary failing its
        share of the requests fires even while the old revision keeps the overall rate low.

        Named (``<env>-<key>-deploy-...``), since ECS takes alarm names, and created before the service.
        They notify no one: ECS acts on them, the deployment fails (``pulumi up`` with it) and the
        service's own alarms (components/observability.py) page. Metrics that are not reported in a
        minute (no request, no error) count as 0, and no data at all as OK, so an idle group never
        blocks a deploy."""
        assert args.alb is not None
        d, t = args.deployed, args.thresholds
        minutes = args.deploy.alarm_minutes
        lb = args.alb.arn_suffix

        def metric(id_: str, group: aws.lb.TargetGroup, metric_name: str, stat: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=id_,
                return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace="AWS/ApplicationELB",
                    metric_name=metric_name,
                    dimensions={"TargetGroup": group.arn_suffix, "LoadBalancer": lb},
                    period=60,
                    stat=stat,
                ),
            )

        errors, latency, rates, p95s = [], [], [], []
        for i, group in enumerate(groups):
            errors += [
                metric(f"e{i}", group, "HTTPCode_Target_5XX_Count", "Sum"),
                metric(f"c{i}", group, "TargetConnectionErrorCount", "Sum"),
                metric(f"r{i}", group, "RequestCount", "Sum"),
            ]
            rates.append(f"IF(FILL(r{i}, 0) > 0, 100 * (FILL(e{i}, 0) + FILL(c{i}, 0)) / FILL(r{i}, 0), 0)")
            latency.append(metric(f"p{i}", group, "TargetResponseTime", "p95"))
            p95s.append(f"FILL(p{i}, 0)")
        signals = {
            "5xx": (errors, rates, t.error_rate_percent, f"5xx above {t.error_rate_percent} % of a target group's requests"),
            "p95": (latency, p95s, t.latency_p95_seconds, f"p95 response time above {t.latency_p95_seconds} s in a target group"),
        }
        names = []
        for signal, (queries, series, threshold, what) in signals.items():
            expression = series[0] if len(series) == 1 else f"MAX([{', '.join(series)}])"
            alarm_name = f"{args.env}-{d.key}-deploy-{signal}"
            self._alarms.append(
                aws.cloudwatch.MetricAlarm(
                    f"{name}-deploy-{signal}",
                    name=alarm_name,
                    alarm_description=f"{d.key} deploy: {what} for {minutes} min; ECS rolls the deployment back",
                    comparison_operator="GreaterThanThreshold",
                    threshold=threshold,
                    evaluation_periods=minutes,
                    datapoints_to_alarm=minutes,
                    treat_missing_data="notBreaching",
                    metric_queries=[*queries, aws.cloudwatch.MetricAlarmMetricQueryArgs(id="signal", label=signal, return_data=True, expression=expression)],
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
            names.append(alarm_name)
        return names

    def _autoscaling(self, name: str, args: ServiceArgs, minimum: int, maximum: int) -> None:
        child = pulumi.ResourceOptions(parent=self)
        resource_id = pulumi.Output.concat("service/", args.cluster_name, "/", self.service.name)
        target = aws.appautoscaling.Target(
            f"{name}-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=resource_id,
            min_capacity=minimum,
            max_capacity=maximum,
            opts=child,
        )
        targets = {
            "cpu": ("ECSServiceAverageCPUUtilization", args.deployed.spec.scaling.cpu_target_percent),
            "memory": ("ECSServiceAverageMemoryUtilization", MEMORY_TARGET_PERCENT),
        }
        for role, (metric, value) in targets.items():
            aws.appautoscaling.Policy(
                f"{name}-scale-{role}",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                scalable_dimension=target.scalable_dimension,
                resource_id=target.resource_id,
                target_tracking_scaling_policy_configuration=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                    target_value=value,
                    predefined_metric_specification=aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs(
                        predefined_metric_type=metric
                    ),
                    scale_in_cooldown=300,
                    scale_out_cooldown=60,
                ),
                opts=child,
            )


GROUP_STICKINESS_SECONDS = 60
"""How long a sticky service's client stays on one target group of a weighted forward. Shorter than any
bake: once ECS moves the weights to the new group and the bake ends, the old group is empty, and
"stickiness takes precedence over adjusting weight" (re:Post, ELB weighted target groups), so a
day-long group cookie would send its client to an empty group (503) for the rest of the day. The
target-level cookie keeps a WebSocket client on its task."""


def _forward(primary: aws.lb.TargetGroup, alternate: aws.lb.TargetGroup | None, *, sticky: bool) -> aws.lb.ListenerRuleActionArgs:
    """The listener rule's action: forward to the service's group, or, where ECS shifts traffic, to both
    groups weighted 100/0 (the production listener rule must name both: ECS developer guide,
    "Application Load Balancer resources for blue/green, linear, and canary deployments"). A sticky
    service keeps a client on one group for :data:`GROUP_STICKINESS_SECONDS`, less than any bake."""
    if alternate is None:
        return aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=primary.arn)
    return aws.lb.ListenerRuleActionArgs(
        type="forward",
        forward=aws.lb.ListenerRuleActionForwardArgs(
            target_groups=[
                aws.lb.ListenerRuleActionForwardTargetGroupArgs(arn=primary.arn, weight=100),
                aws.lb.ListenerRuleActionForwardTargetGroupArgs(arn=alternate.arn, weight=0),
            ],
            stickiness=aws.lb.ListenerRuleActionForwardStickinessArgs(enabled=True, duration=GROUP_STICKINESS_SECONDS) if sticky else None,
        ),
    )


def _tcp_rule(
    kind: type, name: str, group: pulumi.Input[str], peer: pulumi.Input[str], port: int, description: str, opts: pulumi.ResourceOptions
) -> pulumi.Resource:
    """One TCP port between two security groups: ``kind`` is the ingress or egress rule resource of ``group``."""
    return kind(
        name,
        security_group_id=group,
        referenced_security_group_id=peer,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        description=description,
        opts=opts,
    )


# ---------------------------------------------------------------- pure functions (tested directly)


ECS_STRATEGY = {"rolling": "ROLLING", "blue_green": "BLUE_GREEN", "canary": "CANARY"}


def deployment_configuration(deploy: DeployPreset) -> dict[str, Any]:
    """``deployment_configuration`` of the ECS service, as the provider takes it. Minutes are strings:
    the provider's schema holds them as nullable integers (terraform-provider-aws
    ``internal/service/ecs/service.go``, ``bake_time_in_minutes``: ``nullable.TypeNullableInt``), and
    reads back what ECS stores, so the same values give no difference on the next ``pulumi up``.
    ``rolling`` sends the strategy alone: ECS derives that bake from the alarms."""
    out: dict[str, Any] = {"strategy": ECS_STRATEGY[deploy.strategy]}
    if deploy.strategy == "rolling":
        return out
    out["bake_time_in_minutes"] = str(deploy.bake_minutes)
    if deploy.strategy == "canary":
        out["canary_configuration"] = aws.ecs.ServiceDeploymentConfigurationCanaryConfigurationArgs(
            canary_percent=float(deploy.canary_percent), canary_bake_time_in_minutes=str(deploy.canary_minutes)
        )
    return out


def container_definitions(
    d: DeployedService,
    *,
    image: str,
    env: Mapping[str, str],
    secrets: Mapping[str, str],
    log_group: str,
    region: str,
    writable_root: bool,
    migration: Migration | None,
    secrets_revision: str,
    collector: Mapping[str, Any] | None = None,
    bootstrap: DatabaseBootstrap | None = None,
) -> list[dict[str, Any]]:
    """The task's containers as ECS ``RegisterTaskDefinition`` takes them (camelCase), in start order:
    the collector, ``db-roles``, ``migrate``, the app. ``bootstrap.owner_secret_arn`` is a resolved ARN."""
    spec = d.spec

    def log(prefix: str) -> dict[str, Any]:
        return {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": log_group,
                "awslogs-region": region,
                "awslogs-stream-prefix": prefix,
                "mode": "non-blocking",
                "max-buffer-size": "25m",
            },
        }

    writable = spec.writable_paths
    if "DATABASE_URL" in secrets:
        env = {**postgres.client_env(), **env}  # the app and its migration verify TLS against the RDS CAs
    common = {
        "image": image,
        "user": spec.user or DEFAULT_USER,
        "readonlyRootFilesystem": not writable_root,
        "privileged": False,
        "linuxParameters": linux_parameters(
            [{"containerPath": p, "size": w.size_mib, "mountOptions": list(TMPFS_OPTIONS)} for p, w in writable.items() if w.source == "tmpfs"]
        ),
        "mountPoints": [{"sourceVolume": volume_name(p), "containerPath": p, "readOnly": False} for p, w in writable.items() if w.source == "image"],
        "environment": [{"name": k, "value": env[k]} for k in sorted(env)],
    }
    app: dict[str, Any] = {
        "name": d.name,
        "essential": True,
        **common,
        "secrets": [{"name": k, "valueFrom": secrets[k]} for k in sorted(secrets)],
        "stopTimeout": min(120, spec.shutdown_seconds + STOP_MARGIN_SECONDS),
        "logConfiguration": log(d.name),
        "dockerLabels": {"platform.service": d.key, "platform.secrets-revision": secrets_revision},
    }
    if spec.command:
        app["command"] = list(spec.command)
    if spec.container_health:
        h = spec.container_health
        app["healthCheck"] = {
            "command": h.command(),
            "interval": h.interval_seconds,
            "timeout": h.timeout_seconds,
            "retries": h.retries,
            "startPeriod": h.start_period_seconds,
        }
    if spec.port:
        # awsvpc: ECS stores hostPort = containerPort (and the provider compares it so, container_definitions.go)
        app["portMappings"] = [{"containerPort": spec.port, "hostPort": spec.port, "protocol": "tcp", "name": "http"}]
    sidecars: list[dict[str, Any]] = []
    if collector is not None:
        sidecar: dict[str, Any] = {
            "name": otel.CONTAINER,
            "image": otel.IMAGE,
            "essential": False,  # a collector crash loses telemetry, never the app
            "user": otel.USER,
            "readonlyRootFilesystem": True,
            "privileged": False,
            "linuxParameters": linux_parameters([]),
            "command": ["--config=env:AOT_CONFIG_CONTENT"],
            "environment": [{"name": "AOT_CONFIG_CONTENT", "value": collector["config"]}],
            "logConfiguration": log(otel.CONTAINER),
        }
        if collector.get("auth_secret_arn"):
            sidecar["secrets"] = [{"name": otel.AUTH_ENV, "valueFrom": collector["auth_secret_arn"]}]
        sidecars.append(sidecar)
        app["dependsOn"] = [{"containerName": otel.CONTAINER, "condition": "START"}]
    before: list[dict[str, Any]] = []
    if bootstrap is not None:
        owner = str(bootstrap.owner_secret_arn)
        bootstrap_env = postgres.bootstrap_env(bootstrap.database, ddl=bootstrap.ddl, create_database=bootstrap.create_database)
        before.append(
            {
                "name": postgres.BOOTSTRAP_CONTAINER,
                "image": postgres.BOOTSTRAP_IMAGE,
                "essential": False,
                "user": postgres.BOOTSTRAP_USER,
                "readonlyRootFilesystem": True,
                "privileged": False,
                "linuxParameters": linux_parameters([]),
                "command": list(postgres.bootstrap_command(bootstrap.create_database)),
                "environment": [{"name": k, "value": bootstrap_env[k]} for k in sorted(bootstrap_env)],
                # a JSON key of the owner secret each (ECS developer guide, "Pass Secrets Manager secrets
                # through Amazon ECS environment variables": arn:...:secret:name:json-key:version-stage:version-id)
                "secrets": [{"name": env, "valueFrom": f"{owner}:{key}::"} for env, key in sorted(postgres.bootstrap_secrets(bootstrap.ddl).items())],
                "logConfiguration": log(postgres.BOOTSTRAP_CONTAINER),
            }
        )
    if migration is not None:
        # the owner's URL (it creates and alters tables); without a bootstrap (no Postgres of ours) the app's
        url = f"{bootstrap.owner_secret_arn}:{postgres.OWNER_URL_KEY}::" if bootstrap is not None else secrets["DATABASE_URL"]
        migrate: dict[str, Any] = {
            "name": "migrate",
            "essential": False,
            **common,
            "command": list(migration.command),
            "secrets": [{"name": "DATABASE_URL", "valueFrom": url}],
            "logConfiguration": log("migrate"),
        }
        if bootstrap is not None:
            migrate["dependsOn"] = [{"containerName": postgres.BOOTSTRAP_CONTAINER, "condition": "SUCCESS"}]
        before.append(migrate)
    if before:
        # the app starts once the last step before it succeeded (each step waits for the one before)
        app["dependsOn"] = [*app.get("dependsOn", []), {"containerName": before[-1]["name"], "condition": "SUCCESS"}]
    return [*sidecars, *before, app]


# tmpfs mounts: no device files, no setuid binaries. Mode stays the tmpfs default 1777, so any uid writes.
TMPFS_OPTIONS = ("nodev", "nosuid")


def linux_parameters(tmpfs: list[dict[str, Any]]) -> dict[str, Any]:
    """``linuxParameters`` in the form ECS stores and returns it, so a second ``up`` finds no difference.

    ECS returns ``capabilities`` as ``{"add": [], "drop": [...]}`` even when ``add`` was not sent, and the
    provider's equivalence check (terraform-provider-aws ``internal/service/ecs/container_definitions.go``,
    ``containerDefinitionsAreEquivalent``) normalises only top-level lists: without ``add: []`` every
    ``up`` registers a new revision of every task definition and rolls every service.
    Fargate supports ``tmpfs`` since January 2026 (aws/containers-roadmap#736); its ``size`` is MiB.
    """
    params: dict[str, Any] = {"initProcessEnabled": True, "capabilities": {"add": [], "drop": ["ALL"]}}
    if tmpfs:
        params["tmpfs"] = tmpfs
    return params


def execution_policy(log_group_arn: str, kms_key_arn: str, repository_arns: Sequence[str], secret_arns: Sequence[str], region: str) -> dict:
    """Pull its images, write its log group, read exactly its secrets."""
    statements: list[dict[str, Any]] = [
        {"Sid": "Logs", "Effect": "Allow", "Action": ["logs:CreateLogStream", "logs:PutLogEvents"], "Resource": f"{log_group_arn}:*"},
    ]
    if repository_arns:
        statements += [
            {"Sid": "EcrLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {
                "Sid": "Pull",
                "Effect": "Allow",
                "Action": ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"],
                "Resource": list(repository_arns),
            },
        ]
    if secret_arns:
        statements += [
            {"Sid": "Secrets", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": sorted(set(secret_arns))},
            {
                "Sid": "DecryptSecrets",
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": kms_key_arn,
                "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}


def ecs_exec_policy(exec_log_group_arn: str | None) -> dict:
    """The task role's ECS Exec permissions: the agent's Session Manager channels and, where the cluster
    logs sessions (components/cluster.py), writing them to that log group. ECS developer guide,
    "Monitor Amazon ECS containers with ECS Exec", IAM permissions required for ECS Exec and for
    logging to CloudWatch Logs (``logs:DescribeLogGroups`` names no group; the agent checks the group's
    encryption with it before a session starts)."""
    statements: list[dict] = [
        {
            "Sid": "EcsExec",
            "Effect": "Allow",
            "Action": ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"],
            "Resource": "*",
        }
    ]
    if exec_log_group_arn:
        statements += [
            {"Sid": "EcsExecFindLogGroup", "Effect": "Allow", "Action": "logs:DescribeLogGroups", "Resource": "*"},
            {
                "Sid": "EcsExecLogSessions",
                "Effect": "Allow",
                "Action": ["logs:CreateLogStream", "logs:DescribeLogStreams", "logs:PutLogEvents"],
                "Resource": f"{exec_log_group_arn}:*",
            },
        ]
    return {"Version": "2012-10-17", "Statement": statements}
