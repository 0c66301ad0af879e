"""One system's services on an existing Kubernetes cluster (``compute: kubernetes``), from the same catalog.

The data tier and secrets stay on AWS (RDS, ElastiCache, Secrets Manager); only the services move.
Supported Kubernetes versions: :data:`SUPPORTED_VERSIONS` (every object is validated against both ends
in the tests, with ``kubernetes-validate`` in strict mode).

Children, in the namespace ``<system>-<env>`` (``kubernetes:core/v1:Namespace``, Pod Security
``restricted`` enforced; with web services behind the ALB also labelled
``elbv2.k8s.aws/pod-readiness-gate-inject: enabled``, see :data:`READINESS_GATE_INJECT`), per service:

- ``ServiceAccount`` (no API token mounted). With ``secrets: external-secrets`` it carries the IAM role
  (``aws:iam/role:Role``, trusted by the cluster's OIDC provider for this one service account) that may
  read exactly the service's secrets, and a ``SecretStore`` plus an ``ExternalSecret``
  (``external-secrets.io/v1``) copy them into a Kubernetes Secret. With ``secrets: kubernetes`` Pulumi
  writes that Secret itself (``immutable``), from the values it knows.
- The Secret's name ends with a hash of the secret versions and rotation keys (the ECS label
  ``platform.secrets-revision``), so a rotation is a new Secret and a new pod template: the pods roll,
  and a new pod waits for its Secret before it starts while the old ones keep serving.
- ``Deployment``: resources and probes from the catalog (darwin's guide: requests 256Mi/250m, limits
  512Mi/500m, liveness after 30 s every 10 s, readiness after 5 s every 5 s); non-root, read-only root
  filesystem with an ``emptyDir`` per writable path, all capabilities dropped, no privilege escalation,
  ``RuntimeDefault`` seccomp; spread across zones. Grace period = the app's shutdown time + 5 s; a web
  container first sleeps through its target group's deregistration delay (``preStop`` ``sleep``, see
  :func:`drain_seconds`), so its grace period is that sleep + shutdown + 5 s.
  Singletons run one replica with the ``Recreate`` strategy (never two at once); the rest roll with
  ``maxUnavailable: 0``.
- Database roles (``components/postgres.py``): the ``db-roles`` bootstrap runs as the migration Job's
  init container, before ``migrate``; a system without a migration gets a Job of its own
  (``<service>-db-roles-<hash>``, the first service in start order that reads ``DATABASE_URL``). Both
  read the owner's credentials from a Secret ``db-owner-<hash>`` that only they mount (with External
  Secrets: its own ServiceAccount ``db-owner``, IAM role and SecretStore, reading only the owner secret);
  ``migrate`` connects as the owner, every app pod as the app role (a runtime-DDL service, Ponder, as the
  DDL role). Every Deployment that reads ``DATABASE_URL`` waits for that Job.
- Migrations: a ``Job`` named from a hash of its whole spec (``<service>-migrate-<hash>``) that Pulumi
  waits on before it touches the Deployment; a failed migration fails ``pulumi up`` and the old pods
  keep serving. It carries ``pulumi.com/replaceUnready: "true"``, so the next ``up`` deletes and reruns
  a Job that failed instead of waiting on it again. A held service (``DeployedService.held``) has no
  Job yet, as on ECS, where the migration runs in the service's first task.
- Start order: a Deployment waits (``depends_on``) for the Deployments of the services it starts after
  (``start_after``, and the migration's service for every other reader of ``DATABASE_URL``:
  :meth:`~stacks.catalog.System.waits_for`), as the ECS services do. Pulumi creates or updates it only
  once those are rolled out and ready, so new code never starts before the service it needs.
- Web services behind the environment's ALB (``ingress_class: alb``): the ALB, its listeners, WAF and
  alarms are the program's own (``components/alb.py``, the same as on ECS). Per web service a target
  group and listener rule (``aws:lb/targetGroup:TargetGroup`` ``<key>-tg``, ``aws:lb/listenerRule:ListenerRule``
  ``<key>-rule``, from ``components/workload.py``), a ``Service`` and a ``TargetGroupBinding``
  (``elbv2.k8s.aws/v1beta1``, target type ``ip``): the cluster's AWS Load Balancer Controller registers
  the Service's ready pods in that target group and deregisters them as they go. The binding has no
  ``networking`` block, so the controller changes no security group: the platform admits the ALB to
  the cluster's group on each web port (``components/platform.py``). A web Deployment waits for its
  binding, so even the first pods get the readiness gate. With another Ingress class: a ``Service``
  and an ``Ingress`` of that class (TLS from the Secret ``<service>-tls``), and no ALB.
- Web services also get a ``PodDisruptionBudget`` and, where the preset autoscales, a
  ``HorizontalPodAutoscaler`` (``autoscaling/v2``) on CPU.

Every object carries ``app.kubernetes.io/name``, ``part-of``, ``version``, ``managed-by`` and
``platform/environment``. The Deployment sets no ``replicas`` when an HPA owns the count, so
``pulumi up`` never fights the autoscaler.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

from stacks.catalog import Migration, ServiceKind
from stacks.config import DeployedService, DeployedSystem, KubernetesConfig
from stacks.presets import ComputePreset

from . import postgres
from .alb import Alb
from .secrets import SystemSecrets
from .workload import DEFAULT_USER, listener_condition, revision_hash, steady_state_timeout, target_group, task_counts, volume_name

SUPPORTED_VERSIONS = ("1.33", "1.37")
"""Oldest and newest Kubernetes minor versions the objects are validated against."""
ESO_API = "external-secrets.io/v1"
TGB_API = "elbv2.k8s.aws/v1beta1"
"""The AWS Load Balancer Controller's ``TargetGroupBinding`` (served and stored version since v2.0; the
schema the tests check is ``tests/crds/``)."""
SERVICE_PORT = 80
"""A web service's ``Service`` port (to the container's ``http`` port), which its binding names."""
READINESS_GATE_INJECT = {"elbv2.k8s.aws/pod-readiness-gate-inject": "enabled"}
"""Namespace label: the AWS Load Balancer Controller's webhook adds a readiness gate to each new pod a
``TargetGroupBinding`` of target type ``ip`` reaches through its Service, true only once the target is
healthy in the ALB, so a rollout never ends with only initial or draining targets
(aws-load-balancer-controller docs/deploy/pod_readiness_gate.md)."""
REPLACE_UNREADY = {"pulumi.com/replaceUnready": "true"}
"""Job annotation: on the next ``up``, a Job that is not complete (failed, or never finished) is replaced
(deleted and created again under its name) instead of awaited again (pulumi-kubernetes
provider/pkg/provider/provider.go Diff: ``metadata.ReplaceUnready``, Jobs only, since v3.2.0)."""
GRACE_MARGIN_SECONDS = 5
OWNER_ACCOUNT = "db-owner"
"""ServiceAccount, SecretStore and Secret name prefix of the owner's credentials (bootstrap and migration only)."""


def provider(settings: KubernetesConfig, kubeconfig: pulumi.Output[str] | None) -> k8s.Provider:
    """The cluster, from the stack's encrypted ``kubernetes:kubeconfig`` or the environment's ``KUBECONFIG``."""
    return k8s.Provider("cluster", kubeconfig=kubeconfig, context=settings.context)


def drain_seconds(spec) -> int:
    """A web service's target-group deregistration delay, and the ``preStop`` sleep that covers it.

    The same as on ECS (``components/service.py``: ``deregistration_delay=spec.shutdown_seconds``). A
    deleted pod keeps serving for this long before it gets SIGTERM: the controller deregisters it when its
    endpoint goes, and the ALB drains it meanwhile ("Ensure Pods are Deregistered from Load Balancers
    before Termination", EKS best practices, load balancing). The ``sleep`` handler needs no shell or
    ``sleep`` binary in the read-only image (KEP-3960: beta and on by default from 1.30, GA in 1.34)."""
    return int(spec.shutdown_seconds)


def grace_seconds(spec, *, web: bool) -> int:
    """``terminationGracePeriodSeconds``: the ``preStop`` sleep (web) + the app's shutdown + a margin.

    The grace period counts from deletion and includes the ``preStop`` hook; SIGKILL follows it."""
    return (drain_seconds(spec) if web else 0) + int(spec.shutdown_seconds) + GRACE_MARGIN_SECONDS


def _plain(value: object) -> object:
    """A resolved input (args classes, lists, dicts, scalars) as JSON data, ``None`` fields dropped."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, pulumi.Output | pulumi.Resource):
        raise TypeError(f"not resolved: {value!r}")  # Output.from_input unwraps every nested input
    if hasattr(value, "__dict__"):  # a pulumi_kubernetes ``...Args`` class, unwrapped by Output.from_input
        return {k: _plain(v) for k, v in vars(value).items() if v is not None}
    return value


def spec_hash(spec: object) -> pulumi.Output[str]:
    """:func:`revision_hash` of a whole (resolved) spec: changes with any field of it."""
    return pulumi.Output.from_input(spec).apply(lambda s: revision_hash([json.dumps(_plain(s), sort_keys=True, separators=(",", ":"))]))


def version_label(version: str) -> str:
    """A label value (63 characters, alphanumerics, ``-_.``) for a tag or ``sha256:`` digest."""
    if version.startswith("sha256:"):
        return "sha256-" + version.removeprefix("sha256:")[:12]
    return re.sub(r"[^A-Za-z0-9_.-]", "-", version)[:63].strip("-_.") or "unknown"


@dataclass(frozen=True, kw_only=True)
class WorkloadsArgs:
    system: DeployedSystem
    env: str
    region: str
    settings: KubernetesConfig
    compute: ComputePreset
    secrets: SystemSecrets
    images: Mapping[str, pulumi.Input[str]]
    """Service name -> image URI (pinned by digest)."""
    kms_key_arn: pulumi.Input[str]
    domain: str | None = None
    """Web hosts are ``<service>.<system>.<domain>`` (or the stack's ``hostnames``). Default: none."""
    alb: Alb | None = None
    """The environment's load balancer (``ingress_class: alb``): each web service gets a target group, a
    listener rule on it and a ``TargetGroupBinding``. Default: none (an ``Ingress`` of ``ingress_class``)."""
    vpc_id: pulumi.Input[str] | None = None
    """The cluster's VPC, where the target groups are (required with ``alb``)."""
    edge_rules: Sequence[pulumi.Resource] = ()
    """The security-group rules that let the ALB reach the pods; web Deployments wait for them. Default: none."""
    extra_env: Mapping[str, Mapping[str, pulumi.Input[str]]] = field(default_factory=dict)
    """Service name -> more plain env (offerhub's public URL)."""


class SystemWorkloads(pulumi.ComponentResource):
    """A system's namespace and its services' workloads."""

    namespace: str
    """Every Deployment, Service and Ingress in it is named after its service."""
    urls: dict[str, pulumi.Input[str]]
    """Web service name -> public URL (behind the ALB, or with a domain)."""
    target_group_arn_suffixes: dict[str, pulumi.Output[str]]
    """Web service name -> its target group's ARN suffix (``TargetGroup`` dimension of its alarms)."""

    def __init__(self, name: str, args: WorkloadsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:kubernetes:SystemWorkloads", name, None, opts)
        self._args = args
        system = args.system
        self.namespace = f"{system.name}-{args.env}"
        self.urls = {}
        self.target_group_arn_suffixes = {}
        behind_alb = args.alb is not None and any(s.spec.kind is ServiceKind.web for s in system.services.values())
        ns = k8s.core.v1.Namespace(
            f"{name}-ns",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=self.namespace,
                labels={
                    **self._labels(None),
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                    # before any pod: the webhook adds gates at pod creation only
                    **(READINESS_GATE_INJECT if behind_alb else {}),
                },
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._child = pulumi.ResourceOptions(parent=self, depends_on=[ns])
        migration = system.system.migration
        prepared = {}
        for svc in system.services.values():
            account = self._service_account(svc)
            prepared[svc.name] = (account, self._secret(svc, account))
        # the Job that runs the database-roles bootstrap (and the migration, when there is one) gates every
        # Deployment that connects to Postgres; a held service runs none (it could never finish)
        roles_by = postgres.bootstrap_service(system.system, list(system.services)) if system.system.postgres else None
        db_gate = None
        migrated = False
        if roles_by is not None and not system.services[roles_by].held:
            svc = system.services[roles_by]
            owner = self._owner_secret(svc)
            if migration is not None and migration.service == roles_by:
                db_gate = self._migration(svc, migration, *prepared[roles_by][::-1], owner=owner)
                migrated = True
            else:
                db_gate = self._roles_job(svc, prepared[roles_by][0], owner)
        # in start order, so each Deployment can wait for the ones it starts after (as the ECS services do)
        deployments: dict[str, k8s.apps.v1.Deployment] = {}
        for svc in sorted(system.services.values(), key=lambda s: (system.system.start_rank(s.name), s.name)):
            gates: list[pulumi.Resource] = [deployments[name] for name in system.system.waits_for(svc.name) if name in deployments]
            if db_gate is not None and "DATABASE_URL" in svc.spec.secrets:
                gates.append(db_gate)
            elif migration is not None and migration.service == svc.name and not migrated and not svc.held:
                gates.append(self._migration(svc, migration, prepared[svc.name][1], prepared[svc.name][0]))
            deployments[svc.name] = self._service(svc, *prepared[svc.name], gates)
        self.register_outputs({"namespace": self.namespace})

    # ------------------------------------------------------------------ labels and metadata

    def _labels(self, svc: DeployedService | None) -> dict[str, str]:
        a = self._args
        labels = {
            "app.kubernetes.io/part-of": a.system.name,
            "app.kubernetes.io/managed-by": "pulumi",
            "platform/environment": a.env,
        }
        if svc is not None:
            labels |= {"app.kubernetes.io/name": svc.name, "app.kubernetes.io/version": version_label(svc.image.version)}
        return labels

    def _selector(self, svc: DeployedService) -> dict[str, str]:
        return {"app.kubernetes.io/name": svc.name, "app.kubernetes.io/part-of": self._args.system.name}

    def _meta(self, name: pulumi.Input[str], svc: DeployedService, annotations: Mapping[str, str] | None = None) -> k8s.meta.v1.ObjectMetaArgs:
        return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=self.namespace, labels=self._labels(svc), annotations=dict(annotations) if annotations else None)

    # ------------------------------------------------------------------ one service

    def _service(
        self, svc: DeployedService, account: k8s.core.v1.ServiceAccount, secret_name: pulumi.Input[str] | None, gates: Sequence[pulumi.Resource]
    ) -> k8s.apps.v1.Deployment:
        """The service's Deployment, after ``gates`` (the Job that migrates or bootstraps its database, the
        Deployments it starts after) and, for a web service, after its Service and target group binding."""
        a = self._args
        key = svc.key
        pod_spec = self._pod_spec(svc, secret_name, account)
        low, high = task_counts(svc, a.compute)
        singleton = svc.spec.kind is ServiceKind.singleton
        autoscaled = high > low
        strategy = (
            k8s.apps.v1.DeploymentStrategyArgs(type="Recreate")
            if singleton
            else k8s.apps.v1.DeploymentStrategyArgs(
                type="RollingUpdate", rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)
            )
        )
        if svc.spec.kind is ServiceKind.web:
            gates = [*gates, *self._web(svc)]
        deployment = k8s.apps.v1.Deployment(
            f"{key}-deployment",
            metadata=self._meta(svc.name, svc),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=None if autoscaled else low,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector(svc)),
                strategy=strategy,
                revision_history_limit=5,
                template=k8s.core.v1.PodTemplateSpecArgs(metadata=k8s.meta.v1.ObjectMetaArgs(labels=self._labels(svc)), spec=pod_spec),
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=[*self._child.depends_on, *gates],
                custom_timeouts=pulumi.CustomTimeouts(create=(wait := steady_state_timeout(svc.spec)), update=wait),
            ),
        )
        if autoscaled:
            self._autoscaler(svc, low, high, deployment)
        return deployment

    def _service_account(self, svc: DeployedService) -> k8s.core.v1.ServiceAccount:
        a = self._args
        annotations = None
        if a.settings.secrets == "external-secrets" and svc.spec.secrets:  # IAM refuses a statement with no resources
            role = self._irsa_role(svc.key, svc.name, list(a.secrets.arns_for(svc.name).values()))
            annotations = {"eks.amazonaws.com/role-arn": role}
        return k8s.core.v1.ServiceAccount(
            f"{svc.key}-sa",
            metadata=self._meta(svc.name, svc, annotations),
            automount_service_account_token=False,
            opts=self._child,
        )

    def _irsa_role(self, key: str, account_name: str, arns: Sequence[pulumi.Input[str]]) -> pulumi.Output[str]:
        """An IAM role only the service account ``account_name`` can assume, reading only ``arns``."""
        a = self._args
        provider_arn = a.settings.oidc_provider_arn or ""
        issuer = provider_arn.split(":oidc-provider/", 1)[1]
        trust = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {f"{issuer}:sub": f"system:serviceaccount:{self.namespace}:{account_name}", f"{issuer}:aud": "sts.amazonaws.com"}
                    },
                }
            ],
        }
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{key}-irsa", assume_role_policy=json.dumps(trust), opts=child)
        policy = pulumi.Output.all(a.kms_key_arn, *arns).apply(
            lambda v: json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], "Resource": sorted(v[1:])},
                        {
                            "Effect": "Allow",
                            "Action": "kms:Decrypt",
                            "Resource": v[0],
                            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{a.region}.amazonaws.com"}},
                        },
                    ],
                }
            )
        )
        aws.iam.RolePolicy(f"{key}-irsa", role=role.id, policy=policy, opts=child)
        return role.arn

    def _owner_secret(self, svc: DeployedService) -> pulumi.Output[str]:
        """The Kubernetes Secret with the owner's credentials, for the ``db-roles`` and ``migrate`` containers
        only: ``DATABASE_URL`` (the owner's URL) and the bootstrap's variables. Named after the rotation of
        ``DATABASE_URL``: a rotation is a new Secret, so a new Job."""
        a = self._args
        system = a.system.system
        ddl = bool(postgres.runtime_ddl_services(system))
        keys = {"DATABASE_URL": postgres.OWNER_URL_KEY, **postgres.bootstrap_secrets(ddl)}
        name = f"{OWNER_ACCOUNT}-{revision_hash([a.secrets.owner_revision])}"
        key = f"{system.name}-{OWNER_ACCOUNT}"
        if a.settings.secrets == "kubernetes":
            values = a.secrets.owner_value.apply(lambda raw: {env: json.loads(raw)[k] for env, k in keys.items()})
            secret = k8s.core.v1.Secret(
                f"{key}-secret",
                metadata=self._meta(name, svc),
                type="Opaque",
                immutable=True,
                string_data=pulumi.Output.secret(values),
                opts=self._child,
            )
            return secret.metadata.name
        role = self._irsa_role(key, OWNER_ACCOUNT, [a.secrets.owner_arn])
        account = k8s.core.v1.ServiceAccount(
            f"{key}-sa",
            metadata=self._meta(OWNER_ACCOUNT, svc, {"eks.amazonaws.com/role-arn": role}),
            automount_service_account_token=False,
            opts=self._child,
        )
        store = k8s.apiextensions.CustomResource(
            f"{key}-store",
            api_version=ESO_API,
            kind="SecretStore",
            metadata=self._meta(OWNER_ACCOUNT, svc),
            spec={"provider": {"aws": {"service": "SecretsManager", "region": a.region, "auth": {"jwt": {"serviceAccountRef": {"name": OWNER_ACCOUNT}}}}}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._child.depends_on, account]),
        )
        k8s.apiextensions.CustomResource(
            f"{key}-external-secret",
            api_version=ESO_API,
            kind="ExternalSecret",
            metadata=self._meta(name, svc),
            spec={
                "refreshInterval": "1h",
                "secretStoreRef": {"name": OWNER_ACCOUNT, "kind": "SecretStore"},
                "target": {"name": name, "creationPolicy": "Owner", "deletionPolicy": "Retain"},
                # one JSON key of the owner secret each (External Secrets, AWS Secrets Manager provider: remoteRef.property)
                "data": [{"secretKey": env, "remoteRef": {"key": a.secrets.owner_name, "property": k}} for env, k in sorted(keys.items())],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._child.depends_on, store]),
        )
        return pulumi.Output.from_input(name)

    def _secret(self, svc: DeployedService, account: k8s.core.v1.ServiceAccount) -> pulumi.Output[str] | None:
        """The Kubernetes Secret the service's secret env comes from; its name changes with any secret's revision."""
        a = self._args
        names = a.secrets.names_for(svc.name)
        if not names:
            return None
        secret_name = pulumi.Output.all(*a.secrets.versions_for(svc.name)).apply(lambda v: f"{svc.name}-{revision_hash(v)}")
        if a.settings.secrets == "kubernetes":
            values = a.secrets.values_for(svc.name)
            secret = k8s.core.v1.Secret(
                f"{svc.key}-secret",
                metadata=self._meta(secret_name, svc),
                type="Opaque",
                immutable=True,
                string_data=values,
                opts=self._child,
            )
            return secret.metadata.name
        store = k8s.apiextensions.CustomResource(
            f"{svc.key}-store",
            api_version=ESO_API,
            kind="SecretStore",
            metadata=self._meta(svc.name, svc),
            spec={"provider": {"aws": {"service": "SecretsManager", "region": a.region, "auth": {"jwt": {"serviceAccountRef": {"name": svc.name}}}}}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._child.depends_on, account]),
        )
        k8s.apiextensions.CustomResource(
            f"{svc.key}-external-secret",
            api_version=ESO_API,
            kind="ExternalSecret",
            metadata=self._meta(secret_name, svc),
            spec={
                "refreshInterval": "1h",
                "secretStoreRef": {"name": svc.name, "kind": "SecretStore"},
                "target": {"name": secret_name, "creationPolicy": "Owner", "deletionPolicy": "Retain"},
                "data": [{"secretKey": env, "remoteRef": {"key": path}} for env, path in sorted(names.items())],
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._child.depends_on, store]),
        )
        return secret_name

    # ------------------------------------------------------------------ pods

    def _container(
        self,
        svc: DeployedService,
        secret_name: pulumi.Input[str] | None,
        name: str,
        args: Sequence[str] | None,
        owner: pulumi.Input[str] | None = None,
    ) -> k8s.core.v1.ContainerArgs:
        """The app's container (or ``migrate``, with ``owner``: its ``DATABASE_URL`` is the owner's)."""
        a = self._args
        spec = svc.spec
        env: list[k8s.core.v1.EnvVarArgs] = []
        db_client = postgres.client_env() if "DATABASE_URL" in spec.secrets else {}
        plain = {**db_client, **svc.env, **a.extra_env.get(svc.name, {})}
        if any("$(HOST_IP)" in str(v) for v in plain.values()):
            # first, so later values can refer to it: the node agent collector listens on the node's IP
            env.append(
                k8s.core.v1.EnvVarArgs(
                    name="HOST_IP", value_from=k8s.core.v1.EnvVarSourceArgs(field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="status.hostIP"))
                )
            )
        env += [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(plain.items())]
        if secret_name is not None:
            env += [
                k8s.core.v1.EnvVarArgs(
                    name=n,
                    value_from=k8s.core.v1.EnvVarSourceArgs(
                        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=owner if owner is not None and n == "DATABASE_URL" else secret_name, key=n)
                    ),
                )
                for n in sorted(spec.secrets)
            ]
        probes = {}
        if spec.health is not None and name == svc.name:
            health, kube = spec.health, spec.kubernetes

            def probe(p) -> k8s.core.v1.ProbeArgs:
                return k8s.core.v1.ProbeArgs(
                    http_get=k8s.core.v1.HTTPGetActionArgs(path=health.path, port="http"),
                    initial_delay_seconds=p.initial_delay_seconds,
                    period_seconds=p.period_seconds,
                    timeout_seconds=health.timeout_seconds,
                    failure_threshold=health.unhealthy_threshold,
                )

            probes = {"liveness_probe": probe(kube.liveness), "readiness_probe": probe(kube.readiness)}
        elif spec.container_health is not None and name == svc.name:
            # the catalog's container check: a readiness gate (Ponder's /ready) holds the pod unready, and
            # the rollout with it, without restarting it; a heartbeat is a liveness check, as on ECS
            h = spec.container_health
            timing = {"period_seconds": h.interval_seconds, "timeout_seconds": h.timeout_seconds, "failure_threshold": h.retries}
            if h.http:
                probes = {"readiness_probe": k8s.core.v1.ProbeArgs(http_get=k8s.core.v1.HTTPGetActionArgs(path=h.http, port=h.port), **timing)}
            else:
                command = h.command()[1:]  # without ECS's "CMD"
                live = k8s.core.v1.ProbeArgs(exec_=k8s.core.v1.ExecActionArgs(command=command), initial_delay_seconds=h.start_period_seconds, **timing)
                probes = {"liveness_probe": live}
        lifecycle = None
        if spec.kind is ServiceKind.web and name == svc.name:
            lifecycle = k8s.core.v1.LifecycleArgs(pre_stop=k8s.core.v1.LifecycleHandlerArgs(sleep=k8s.core.v1.SleepActionArgs(seconds=drain_seconds(spec))))
        return k8s.core.v1.ContainerArgs(
            name=name,
            image=a.images[svc.name],
            args=list(args) if args else None,
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=spec.port, protocol="TCP")] if spec.port and name == svc.name else None,
            env=env,
            resources=k8s.core.v1.ResourceRequirementsArgs(**spec.kubernetes.resources(spec.cpu, spec.memory)),
            security_context=k8s.core.v1.SecurityContextArgs(
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                run_as_non_root=True,
                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
            ),
            volume_mounts=[k8s.core.v1.VolumeMountArgs(name=volume_name(p), mount_path=p) for p in spec.writable_paths],
            lifecycle=lifecycle,
            **probes,
        )

    def _roles_container(self, owner: pulumi.Input[str]) -> k8s.core.v1.ContainerArgs:
        """The ``db-roles`` bootstrap: psql from the pinned postgres image, as the image's own user."""
        system = self._args.system.system
        ddl = bool(postgres.runtime_ddl_services(system))
        assert system.postgres is not None
        plain = postgres.bootstrap_env(system.postgres.database, ddl=ddl)
        uid, _, gid = postgres.BOOTSTRAP_USER.partition(":")
        env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in sorted(plain.items())]
        env += [
            k8s.core.v1.EnvVarArgs(name=n, value_from=k8s.core.v1.EnvVarSourceArgs(secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=owner, key=n)))
            for n in sorted(postgres.bootstrap_secrets(ddl))
        ]
        return k8s.core.v1.ContainerArgs(
            name=postgres.BOOTSTRAP_CONTAINER,
            image=postgres.BOOTSTRAP_IMAGE,
            command=list(postgres.BOOTSTRAP_COMMAND),
            env=env,
            resources=k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": "50m", "memory": "64Mi"}, limits={"cpu": "250m", "memory": "128Mi"}),
            security_context=k8s.core.v1.SecurityContextArgs(
                allow_privilege_escalation=False,
                read_only_root_filesystem=True,
                run_as_non_root=True,
                run_as_user=int(uid),
                run_as_group=int(gid or uid),
                capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
            ),
        )

    def _pod_spec(
        self,
        svc: DeployedService,
        secret_name: pulumi.Input[str] | None,
        account: k8s.core.v1.ServiceAccount,
        *,
        migration: Migration | None = None,
        owner: pulumi.Input[str] | None = None,
        roles_only: bool = False,
    ) -> k8s.core.v1.PodSpecArgs:
        """The service's pods; with ``migration`` the migration Job's pod (with ``owner``, the bootstrap
        first, as an init container); with ``roles_only`` the bootstrap's own Job's pod."""
        spec = svc.spec
        user, _, group = (spec.user or DEFAULT_USER).partition(":")
        job = migration is not None or roles_only
        init = None
        if roles_only:
            assert owner is not None
            container = self._roles_container(owner)
        elif migration:
            container = self._container(svc, secret_name, "migrate", migration.command, owner=owner)
            init = [self._roles_container(owner)] if owner is not None else None
        else:
            container = self._container(svc, secret_name, svc.name, spec.command)
        return k8s.core.v1.PodSpecArgs(
            service_account_name=account.metadata.name,
            automount_service_account_token=False,
            restart_policy="Never" if job else None,
            termination_grace_period_seconds=grace_seconds(spec, web=spec.kind is ServiceKind.web and not job),
            security_context=k8s.core.v1.PodSecurityContextArgs(
                run_as_non_root=True,
                run_as_user=int(user),
                run_as_group=int(group or user),
                fs_group=int(group or user),
                seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
            ),
            topology_spread_constraints=None
            if job
            else [
                k8s.core.v1.TopologySpreadConstraintArgs(
                    max_skew=1,
                    topology_key="topology.kubernetes.io/zone",
                    when_unsatisfiable="ScheduleAnyway",
                    label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector(svc)),
                )
            ],
            init_containers=init,
            containers=[container],
            volumes=[
                k8s.core.v1.VolumeArgs(name=volume_name(p), empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="256Mi")) for p in spec.writable_paths
            ]
            if not roles_only
            else None,
        )

    def _migration(
        self,
        svc: DeployedService,
        migration: Migration,
        secret_name: pulumi.Input[str] | None,
        account: k8s.core.v1.ServiceAccount,
        owner: pulumi.Input[str] | None = None,
    ) -> k8s.batch.v1.Job:
        """Run once per Job spec, before the Deployment changes: Pulumi waits for the Job and fails with it.

        A Job's pod template is immutable, and Pulumi replaces a Job whose template changed; under the same
        name that is a delete-and-recreate. Named from a hash of the whole spec (image, command, env, the
        Secret's name, limits), any change is a new Job beside the old one, and an unchanged spec is the
        same Job, not run again. ``replaceUnready``: a Job that failed is run again on the next ``up``
        (deleted, then created under its name) rather than awaited again, which failed every later ``up``.
        That delete-before-replace does not replace the Deployment: it only ``depends_on`` the Job, and
        the engine replaces a dependent only through a property that depends on the replaced resource
        (pulumi/pulumi pkg/resource/deploy/step_generator.go, ``calculateDependentReplacements``).
        """
        # not the Service's selector (``app.kubernetes.io/name`` differs): no endpoint, no readiness gate
        labels = {**self._labels(svc), "app.kubernetes.io/name": f"{svc.name}-migrate", "app.kubernetes.io/component": "migration"}
        spec = k8s.batch.v1.JobSpecArgs(
            backoff_limit=1,
            active_deadline_seconds=900,
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                spec=self._pod_spec(svc, secret_name, account, migration=migration, owner=owner),
            ),
        )
        return self._job(svc, "migrate", spec)

    def _roles_job(self, svc: DeployedService, account: k8s.core.v1.ServiceAccount, owner: pulumi.Input[str]) -> k8s.batch.v1.Job:
        """The ``db-roles`` bootstrap on its own, for a system without a migration: the same Job rules."""
        labels = {**self._labels(svc), "app.kubernetes.io/name": f"{svc.name}-db-roles", "app.kubernetes.io/component": "migration"}
        spec = k8s.batch.v1.JobSpecArgs(
            backoff_limit=1,
            active_deadline_seconds=900,
            template=k8s.core.v1.PodTemplateSpecArgs(
                metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels),
                spec=self._pod_spec(svc, None, account, owner=owner, roles_only=True),
            ),
        )
        return self._job(svc, postgres.BOOTSTRAP_CONTAINER, spec)

    def _job(self, svc: DeployedService, what: str, spec: k8s.batch.v1.JobSpecArgs) -> k8s.batch.v1.Job:
        job_name = spec_hash(spec).apply(lambda h: f"{svc.name}-{what}-{h}")
        return k8s.batch.v1.Job(
            f"{svc.key}-{what}",
            metadata=self._meta(job_name, svc, REPLACE_UNREADY),
            spec=spec,
            # Pulumi waits for the Job to complete (10 minutes by default); the Job itself gives up at 15
            opts=pulumi.ResourceOptions.merge(self._child, pulumi.ResourceOptions(custom_timeouts=pulumi.CustomTimeouts(create="20m", update="20m"))),
        )

    # ------------------------------------------------------------------ web and scaling

    def _autoscaler(self, svc: DeployedService, low: int, high: int, deployment: k8s.apps.v1.Deployment) -> None:
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{svc.key}-hpa",
            metadata=self._meta(svc.name, svc),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(api_version="apps/v1", kind="Deployment", name=svc.name),
                min_replicas=low,
                max_replicas=high,
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization", average_utilization=svc.spec.scaling.cpu_target_percent),
                        ),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[deployment]),
        )

    def _web(self, svc: DeployedService) -> list[pulumi.Resource]:
        """The Service, its disruption budget and its way in: a target group binding on the ALB, or an Ingress.
        Returns what the Deployment waits for."""
        a = self._args
        service = k8s.core.v1.Service(
            f"{svc.key}-svc",
            metadata=self._meta(svc.name, svc),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=self._selector(svc),
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=SERVICE_PORT, target_port="http", protocol="TCP")],
            ),
            opts=self._child,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{svc.key}-pdb",
            metadata=self._meta(svc.name, svc),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self._selector(svc))),
            opts=self._child,
        )
        if a.alb is not None:
            return [self._binding(svc, a.alb, service), *a.edge_rules]
        host = svc.hostname if a.domain else None
        # other controllers (nginx, traefik) terminate TLS with a Secret, e.g. from cert-manager
        tls = [k8s.networking.v1.IngressTLSArgs(hosts=[host], secret_name=f"{svc.name}-tls")] if host else None
        backend = k8s.networking.v1.IngressBackendArgs(
            service=k8s.networking.v1.IngressServiceBackendArgs(name=svc.name, port=k8s.networking.v1.ServiceBackendPortArgs(name="http"))
        )
        k8s.networking.v1.Ingress(
            f"{svc.key}-ingress",
            metadata=self._meta(svc.name, svc),
            spec=k8s.networking.v1.IngressSpecArgs(
                ingress_class_name=a.settings.ingress_class,
                tls=tls,
                rules=[
                    k8s.networking.v1.IngressRuleArgs(
                        host=host,
                        http=k8s.networking.v1.HTTPIngressRuleValueArgs(
                            paths=[k8s.networking.v1.HTTPIngressPathArgs(path="/", path_type="Prefix", backend=backend)]
                        ),
                    )
                ],
            ),
            opts=self._child,
        )
        if host:
            self.urls[svc.name] = f"https://{host}"
        return [service]

    def _binding(self, svc: DeployedService, alb: Alb, service: k8s.core.v1.Service) -> pulumi.Resource:
        """The service's target group and listener rule on the ALB (the same as on ECS), and the
        ``TargetGroupBinding`` through which the AWS Load Balancer Controller puts its pods in that group.

        Target type, VPC and address type are written out: the controller's webhook would otherwise fill
        them in from the AWS API, a value the program did not send. The binding waits for the listener
        rule, so the group is in use (health-checked) when the first pod is registered."""
        a = self._args
        child = pulumi.ResourceOptions(parent=self)
        assert a.vpc_id is not None
        group = target_group(f"{svc.key}-tg", svc, a.vpc_id, child)
        rule = aws.lb.ListenerRule(
            f"{svc.key}-rule",
            listener_arn=alb.listener_arn(svc.key),
            priority=alb.priority(svc.key),
            conditions=[listener_condition(alb, svc)],
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=group.arn)],
            opts=child,
        )
        self.urls[svc.name] = alb.url(svc.key)
        self.target_group_arn_suffixes[svc.name] = group.arn_suffix
        return k8s.apiextensions.CustomResource(
            f"{svc.key}-tgb",
            api_version=TGB_API,
            kind="TargetGroupBinding",
            metadata=self._meta(svc.name, svc),
            spec={
                "serviceRef": {"name": svc.name, "port": SERVICE_PORT},
                "targetGroupARN": group.arn,
                "targetType": "ip",
                "ipAddressType": "ipv4",
                "vpcID": a.vpc_id,
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*self._child.depends_on, service, rule]),
        )
