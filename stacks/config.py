"""The stack file (``Pulumi.<stack>.yaml``), validated once into plain values for the components.

Keys (all in the project namespace ``platform:``; ``aws:region`` is read too):

=====================  ========================================================================
``preset``             ``dev``, ``staging`` or ``prod``. Default: the stack name.
``domain``             Public domain; web services get ``<service>.<system>.<domain>``. Default: none.
``network``            VPC CIDR, AZs, explicit subnets, or an existing VPC to adopt.
``systems``            Which systems this stack deploys, the image each runs, env and host overrides.
``overrides``          Key-by-key overrides of the preset (see ``stacks/presets.py``).
``secrets``            External secret values, each set with ``pulumi config set --secret --path``.
``alarm_emails``       Addresses subscribed to the alarm topic. Default: none.
=====================  ========================================================================

The loader reads the stack file itself rather than the engine's config so that every error can name
the file and the exact key, and so that a secret pasted in plain text (no ``secure:``) is caught per
key. Secret values are never read here; the program gets them from the engine as ``Output``s.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from . import edge, sharing, subnets
from . import placeholders as stack_placeholders
from .catalog import (
    PLACEHOLDER_PREFIX,
    EnvValue,
    Name,
    SecretSource,
    ServiceKind,
    Strict,
    System,
    is_placeholder,
    load_catalog,
    plain_env_problem,
    url_with_credentials,
)
from .engine import EngineConfig, from_files
from .errors import ConfigError, Problem, closest, did_you_mean, from_validation_error
from .presets import PRESETS, PostgresPreset, Preset, RedisPreset, deep_merge
from .regions import AWS_REGIONS, region_problem
from .yamlio import Secure, read_yaml

PROJECT = "platform"  # the Pulumi project name: config namespace of our keys
CERTIFICATES_PER_LISTENER = 25  # ELB quotas: "Certificates per Application Load Balancer (excluding default certificates)": 25
# The tightest default quotas one ALB meets as web services are added: each web service takes a rule on
# the load balancer's security group (egress to it; without a domain also an ingress port), and without
# a domain a listener of its own. Security groups: 60 rules per direction. ALB: 50 listeners.
WEB_SERVICES_PER_ALB = 60
LISTENERS_PER_ALB = 50

# distribution/reference grammar (the one `docker pull` uses), anchored.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN = r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?)"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"sha256:[a-f0-9]{64}"
_FULL_REF = re.compile(rf"^(?:{_DOMAIN}/)?{_COMPONENT}(?:/{_COMPONENT})*(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
_SHORT_REF = re.compile(rf"^(?:(?P<digest>{_DIGEST})|(?P<tag>{_TAG}))$")
# Config namespaces this program or its providers read. A key in another namespace is left alone (an
# environment may carry other projects' settings) unless the namespace is a likely typo of one of these.
NAMESPACES = (PROJECT, "aws", "kubernetes", "random", "pulumi")
# What the AWS provider reads in its namespace besides these is listed by its SDK (pulumi_aws/config/vars.py).
_AWS_KEYS_USED = ("region", "defaultTags")

# Memory for data (Redis ``maxmemory``, bytes) of each ElastiCache node type the presets allow (ElastiCache
# user guide, "Engine specific parameters", Redis OSS node-type specific parameters; 1 GiB = 2**30).
# The regex in presets.CACHE_NODE_TYPES also matches sizes a family does not have (cache.m5.8xlarge):
# a node type missing here is refused.
CACHE_NODE_MAXMEMORY = {
    "cache.t3.micro": 536870912,
    "cache.t3.small": 1471026299,
    "cache.t3.medium": 3317862236,
    "cache.t4g.micro": 536870912,
    "cache.t4g.small": 1471026299,
    "cache.t4g.medium": 3317862236,
    **{
        f"cache.{f}.{size}": b
        for f in ("m5", "m6g", "m7g")
        for size, b in (("large", 6854542746), ("xlarge", 13891921715), ("2xlarge", 27966669210), ("4xlarge", 56116178125), ("12xlarge", 168715971994))
    },
    "cache.m5.24xlarge": 337500562842,
    **{f"cache.{f}.{size}": b for f in ("m6g", "m7g") for size, b in (("8xlarge", 111325552312), ("16xlarge", 225000375228))},
    **{
        f"cache.{f}.{size}": b
        for f in ("r5", "r6g", "r7g")
        for size, b in (("large", 14037181030), ("xlarge", 28261849702), ("2xlarge", 56711183565), ("4xlarge", 113609865216), ("12xlarge", 341206346547))
    },
    "cache.r5.24xlarge": 682485973811,
    **{f"cache.{f}.{size}": b for f in ("r6g", "r7g") for size, b in (("8xlarge", 225000375228), ("16xlarge", 450000750456))},
}
# ElastiCache keeps reserved-memory-percent (default 25, unchanged by our parameter group) of maxmemory for
# backups, replication and failover ("Managing reserved memory": "reserve 25% of a node type's maxmemory
# value ... This is the default value"); the rest holds data.
CACHE_RESERVED_MEMORY_PERCENT = 25
# RDS: "You must set the maximum storage threshold to at least 10% more than the current allocated
# storage" (RDS user guide, "Managing capacity automatically with Amazon RDS storage autoscaling").
STORAGE_CEILING_HEADROOM = 1.10
_HOST_LABELS = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*$")


# A host override is a full name or a name under the domain (``api``, ``api.twinkle``). One that ends with
# the domain's own top-level label or with a common one (``app.example.org`` on ``example.com``) is a
# full name outside the domain, not a label to put under it. Most used TLDs (IANA root zone), not all.
_COMMON_TLDS = frozenset(
    "com net org io dev app co ai cloud xyz info biz tech me us uk eu de fr nl es it ch at be se no dk fi pl cz ca au nz in jp kr cn br mx ar".split()
)


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference. ``repository`` is None for our own ECR repository."""

    repository: str | None
    tag: str | None
    digest: str | None

    @property
    def version(self) -> str:
        """What ``service.version`` and ``SENTRY_RELEASE`` report: the digest if pinned, else the tag."""
        return self.digest or self.tag or ""

    def schema_name(self, prefix: str) -> str:
        """A Postgres schema name for what this image runs: ``<prefix>_<first 12 hex of the digest>`` (or the
        tag, lower-cased, other characters as ``_``). Unquoted identifiers: a-z, 0-9, _; at most 63 bytes."""
        version = self.digest.removeprefix("sha256:")[:12] if self.digest else (self.tag or "latest")
        return re.sub(r"[^a-z0-9_]", "_", f"{prefix}_{version}".lower())[:63]

    def __str__(self) -> str:
        base = self.repository or ""
        return base + (f":{self.tag}" if self.tag and base else self.tag or "") + (f"@{self.digest}" if self.digest and base else self.digest or "")


def parse_image(value: str) -> ImageRef:
    """Parse ``value`` or raise ``ValueError`` saying what is allowed."""
    allowed = (
        "allowed: a tag or 'sha256:<64 hex>' digest of our ECR repository (e.g. '1.4.2'), or a full reference "
        "with a tag or digest (e.g. 'ghcr.io/org/app@sha256:...')"
    )
    if "/" in value:
        m = _FULL_REF.match(value)
        if not m or not (m["tag"] or m["digest"]):
            raise ValueError(f"'{value}' is not a valid image reference; {allowed}")
        if m["tag"] == "latest" and not m["digest"]:
            raise ValueError(f"'{value}': {_LATEST}")
        repo = value.split("@")[0]
        if m["tag"]:
            repo = repo[: -(len(m["tag"]) + 1)]
        return ImageRef(repo, m["tag"], m["digest"])
    m = _SHORT_REF.match(value)
    if not m:
        raise ValueError(f"'{value}' is not a valid image reference; {allowed}")
    if m["tag"] == "latest":
        raise ValueError(_LATEST)
    return ImageRef(None, m["tag"], m["digest"])


CORE_IMAGE = ImageRef(None, "none-in-the-core", None)
"""What a core stack's services carry as their image: the core serves their hosts and never runs them."""

_LATEST = "'latest' is not allowed: repositories are immutable and a moving tag defeats promotion; pin a version or digest"


class ExistingVpc(Strict):
    """Adopt a VPC built elsewhere instead of creating one. Its subnets must follow our three tiers."""

    vpc_id: str = Field(pattern=r"^vpc-[0-9a-f]{8,17}$")
    public_subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]] = Field(min_length=2)
    private_subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]] = Field(min_length=2)
    isolated_subnet_ids: list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]] = Field(min_length=2)


class ExplicitSubnets(Strict):
    """Subnet CIDRs per tier, one per AZ, in AZ order. Default: computed from the VPC CIDR."""

    public: list[IPv4Network]
    private: list[IPv4Network]
    isolated: list[IPv4Network]


class NetworkConfig(Strict):
    cidr: IPv4Network = IPv4Network("10.0.0.0/16")
    """VPC IPv4 CIDR, /16 to /22 when subnets are computed. Default: ``10.0.0.0/16``."""
    availability_zones: list[str] | None = None
    """AZ names, as many as the preset's ``az_count``. Default: the region's first ones (``a``, ``b``, ``c``)."""
    subnets: ExplicitSubnets | None = None
    """Explicit subnet CIDRs. Default: computed (private /19, public and isolated /22 in a /16)."""
    existing: ExistingVpc | None = None
    """Adopt an existing VPC by ids; ``cidr`` and ``subnets`` are then unused. Default: create one."""

    @field_validator("cidr")
    @classmethod
    def _vpc_size(cls, cidr: IPv4Network) -> IPv4Network:
        if not 16 <= cidr.prefixlen <= 28:
            raise ValueError(f"{cidr}: a VPC CIDR must be between /16 and /28")
        return cidr


def _engine_scalar(value: Any) -> Any:
    """A number where a string is expected: ``pulumi config set --path ... 8453`` stores an integer, which
    is taken as its digits; a float or a boolean would lose how it was written, so it is refused."""
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(f"{value!r} is stored as a {type(value).__name__}; store it as text: `pulumi config set --path <key> '{value}' --type string`")
    return str(value) if isinstance(value, int) else value


class ExternalHost(Strict):
    """A web service's host outside the platform domain (aurum's guide: ``api.aurumlabs.io``), served on the
    same HTTPS listener with a certificate of its own (by SNI). Exactly one of ``hosted_zone_id`` and
    ``certificate_arn``."""

    name: str = Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$", max_length=253)
    """The full host name, e.g. ``api.aurumlabs.io``."""
    hosted_zone_id: str | None = Field(default=None, pattern=r"^Z[A-Z0-9]{1,32}$")
    """Route 53 zone of that name: a certificate for exactly this name is requested and DNS-validated there,
    and an alias record to the load balancer is written there. Default: none."""
    certificate_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[0-9a-f-]{36}$")
    """An issued ACM certificate (this stack's region) that names this host; its DNS is yours: point it at the
    stack output ``load_balancer_dns`` (CNAME, or an alias). Default: none."""

    @model_validator(mode="after")
    def _one_source(self) -> ExternalHost:
        if (self.hosted_zone_id is None) == (self.certificate_arn is None):
            raise ValueError("give exactly one of 'hosted_zone_id' (the program requests the certificate and writes the record) and 'certificate_arn'")
        return self


class SystemDeployment(Strict):
    """One system in this stack."""

    @field_validator("images", "env", "hostnames", mode="before")
    @classmethod
    def _strings(cls, value: Any) -> Any:
        return {k: _engine_scalar(v) for k, v in value.items()} if isinstance(value, dict) else value

    images: dict[Name, str] = {}
    """Image per image name of the catalog entry: a tag or digest of our ECR repository, or a full reference.
    Required for every image, except in a split layout's core (which runs none)."""
    env: dict[str, str] = {}
    """Non-secret env overrides for every service of the system (e.g. aurum's contract addresses)."""
    hostnames: dict[Name, str | ExternalHost] = {}
    """Host per web service, overriding ``<service>.<system>``: a full name or a label under the domain, or
    ``{name, hosted_zone_id | certificate_arn}`` for a name outside it (with its own certificate)."""
    set_out_of_band: list[Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]*(\.[a-z][a-z0-9-]*)?$")]] = []
    """External secrets whose value an operator put into Secrets Manager directly (console, CLI), one
    per line: ``NAME``, or ``NAME.<service>`` for a per-service one. The program never reads them; it
    only knows they are set, so the services that read them may start. Default: none."""
    rotate: dict[str, Annotated[int, Field(ge=0)]] = {}
    """Rotation key per generated or derived secret (DATABASE_URL rotates all database passwords: owner, app role and DDL role;
    REDIS_URL the AUTH token). Bump a number and ``pulumi up``: new value, services roll. For REDIS_URL
    that is step 1 of 2: the old token stays valid until ``revoke``."""
    paused: dict[Name, Annotated[int, Field(ge=0)]] = {}
    """Services an operator holds at zero tasks (``python -m tools.ops pause <system>/<service>`` writes
    it), each with the task count ``resume`` restores. A paused service runs no task and is not
    autoscaled, so a ``pulumi up`` keeps it stopped instead of undoing the pause; unlike a held service
    it does not hold the services that start after it. Default: none."""
    load_balancer: Annotated[int, Field(ge=1, le=20)] | None = None
    """Which of the environment's load balancers serves the system's web services (1, 2, ...). Default:
    the first one with room, in the order the systems are listed here (README "Layouts", "Past one load
    balancer"). A system added at the end never moves another; pin a system here to keep it where it is
    when a system listed before it is removed."""
    revoke: dict[str, Annotated[int, Field(ge=1)]] = {}
    """Step 2 of a Redis AUTH token rotation, in a later ``pulumi up`` than step 1: ``REDIS_URL: N`` (the
    number ``rotate`` has) once every service runs on rotation N's token; the older tokens stop working.
    Only REDIS_URL has two valid values during a rotation. Default: none (old tokens stay valid)."""


class RegistryConfig(Strict):
    """Where the ECR repositories of our images live."""

    create: bool = True
    """This stack creates the repositories (``<system>/<image>``). Default: true. Set false in every other
    stack that shares an account or registry with the creating one (repository names are per account)."""
    account_id: str | None = Field(default=None, pattern=r"^\d{12}$")
    """Account that owns the repositories when ``create`` is false. Default: this stack's account."""
    only: bool = False
    """Removed: refused with how the first deploy works now (a service whose image is not pushed yet is
    held at zero tasks; nothing is left out of the stack)."""
    pull_accounts: list[Annotated[str, Field(pattern=r"^\d{12}$")]] = []
    """With ``create``: other accounts (staging, prod) allowed to pull, for promotion across accounts. Default: none."""


class RecoveryConfig(Strict):
    """Copies of backups in a second region, for a regional disaster (darwin's RTO 15 min / RPO 5 min)."""

    dr_region: str = Field(json_schema_extra={"enum": list(AWS_REGIONS)})
    """Region that receives the copies, e.g. ``us-west-2``. Must differ from ``aws:region``."""
    backup_retention_days: int = Field(default=7, ge=1, le=35)
    """Days of replicated Postgres backups (point-in-time restore) and of Redis exports kept in the DR region. Default: 7."""
    redis_export_minutes: int = Field(default=120, ge=120, le=1440)
    """How often each Redis cache is snapshotted and exported for the DR copy (the Redis RPO for a region loss).
    At least 120: ElastiCache allows 20 manual snapshots per node group per day. Default: 120."""

    @field_validator("dr_region")
    @classmethod
    def _region(cls, region: str) -> str:
        if problem := region_problem(region):
            raise ValueError(problem)
        return region


class ObservabilityConfig(Strict):
    """Where the OTEL collectors send telemetry. Default: X-Ray (traces) and CloudWatch EMF (metrics)."""

    otlp_endpoint: str | None = Field(default=None, pattern=r"^https://[^\s]+$")
    """An external OTLP/HTTP endpoint (Honeycomb, Grafana Cloud, ...) instead of AWS. Default: none."""
    otlp_auth_header: str = Field(default="Authorization", pattern=r"^[A-Za-z0-9-]+$")
    """Header that carries the credential; its value is the secret ``<env>/platform/OTLP_AUTH``. Default: Authorization."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _no_credentials(cls, endpoint: str | None) -> str | None:
        if endpoint and url_with_credentials(endpoint):
            raise ValueError(
                "has credentials in the URL ('https://user:token@...'), which would sit in plain text in every collector's configuration; "
                "remove them and put the credential in the secret OTLP_AUTH, sent as the header otlp_auth_header"
            )
        return endpoint


class KubernetesConfig(Strict):
    """Where and how the services run with ``compute: kubernetes``. The data tier and secrets stay on AWS."""

    kubeconfig: Literal["environment", "config"] = "environment"
    """``environment``: the provider reads ``KUBECONFIG`` (or ``~/.kube/config``); ``config``: the encrypted
    stack value ``kubernetes:kubeconfig`` (``pulumi config set --secret kubernetes:kubeconfig < file``). Default: environment."""
    context: str | None = Field(default=None, min_length=1, max_length=253)
    """Context in the kubeconfig. Default: its current context."""
    cluster_security_group_id: str = Field(pattern=r"^sg-[0-9a-f]{8,17}$")
    """Security group the pods carry: the nodes' (with the VPC CNI's default), or the pods' own (security
    groups for pods). Postgres and Redis admit it, and with ``ingress_class: alb`` it admits the load
    balancer on each web port (the ALB sends to pod IPs). Required."""
    ingress_class: str = Field(default="alb", pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=63)
    """``alb``: web services sit behind the program's own ALB, WAF and alarms (as on ECS), and the cluster's AWS
    Load Balancer Controller binds each Service to its target group (``TargetGroupBinding``). Another
    class: an ``Ingress`` of that class per web service, and no ALB. Default: alb."""
    secrets: Literal["external-secrets", "kubernetes"] = "external-secrets"
    """``external-secrets``: an External Secrets Operator ``ExternalSecret`` per service reads Secrets Manager
    through the service's IAM role (IRSA); ``kubernetes``: a plain Secret written by Pulumi from the values
    it knows (every external secret then needs a value in the stack file). Default: external-secrets."""
    oidc_provider_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/[^\s]+$")
    """The cluster's IAM OIDC provider, for IAM roles for service accounts. Required with external-secrets."""
    otel_endpoint: str = Field(default="http://$(HOST_IP):4318", pattern=r"^https?://[^\s]+$")
    """OTLP/HTTP collector the apps send to. Default: a node agent on each node (``$(HOST_IP)`` is the node's IP)."""

    @field_validator("otel_endpoint")
    @classmethod
    def _no_credentials(cls, endpoint: str) -> str:
        if url_with_credentials(endpoint):
            raise ValueError("has credentials in the URL ('http://user:token@...'), which every pod would get in plain env; remove them")
        return endpoint


class LayoutConfig(Strict):
    """Which part of the split layout a stack is (README "Layouts"). Absent: the all-in-one layout, one
    stack holding the environment and every system.

    - ``{core: true}``: the environment's core: network, KMS key, ECS cluster, image repositories, the
      load balancer with its listeners, certificates and WAF, the alarm topics. ``platform:systems`` lists
      the systems it serves (their hosts; images are not needed here).
    - ``{system: <name>, core: <stack>}``: one system (its data stores, secrets, services, listener
      rules, alarms, dashboard) on the core ``<stack>`` (``core-dev``, or ``<org>/platform/core-dev``),
      read through a StackReference. ``platform:systems`` holds that system only.
    """

    core: bool | Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")] = False
    """``true`` for a core stack; in a system stack, the core stack it reads."""
    system: Name | None = None
    """The one system of a system stack."""
    environment: Annotated[str, Field(pattern=r"^pr-[0-9]{1,6}$")] | None = None
    """An ephemeral environment on the core (``pr-<n>``, a pull request's preview): physical names use it
    instead of the preset's name, and its web services get listeners of their own. Default: none."""

    @property
    def is_core(self) -> bool:
        return self.core is True

    @property
    def core_stack(self) -> str | None:
        """The core a system stack reads; None for a core or an all-in-one stack."""
        return self.core if isinstance(self.core, str) else None


class StackConfig(Strict):
    """Everything under ``platform:`` in ``Pulumi.<stack>.yaml``."""

    compute: Literal["ecs", "kubernetes"] = "ecs"
    """Where the services run: ECS on Fargate, or an existing Kubernetes cluster (``platform:kubernetes``). Default: ecs."""
    kubernetes: KubernetesConfig | None = None
    """The cluster, with ``compute: kubernetes``. Default: none."""

    preset: str | None = None
    """``dev``, ``staging`` or ``prod``. Default: the stack name."""
    domain: str | None = None
    """Public domain. Default: none (web services are served over HTTP on the ALB's name)."""
    certificate_arn: str | None = Field(default=None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[0-9a-f-]+$")
    """An existing ACM certificate for ``domain``. Default: request one (DNS-validated in ``hosted_zone_id``)."""
    hosted_zone_id: str | None = Field(default=None, pattern=r"^Z[0-9A-Z]{1,32}$")
    """Route 53 zone for DNS validation and records. Default: none."""
    network: NetworkConfig = NetworkConfig()
    registry: RegistryConfig = RegistryConfig()
    """ECR repositories: create them here, or use the ones another stack created."""
    systems: dict[str, SystemDeployment] = Field(min_length=1)
    """The systems this stack deploys, by catalog name."""
    overrides: dict[str, Any] = {}
    """Preset overrides, key by key."""
    observability: ObservabilityConfig = ObservabilityConfig()
    """Telemetry destination of the collectors."""
    recovery: RecoveryConfig | None = None
    """Replicate Postgres automated backups to a DR region. Default: none (prod sets one)."""
    alarm_emails: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]] = []
    """Email addresses subscribed to the alarm topic. Default: none."""
    layout: LayoutConfig | None = None
    """Split layout: this stack is an environment's core or one system on a core. Default: none (all-in-one)."""

    @field_validator("domain")
    @classmethod
    def _domain(cls, domain: str | None) -> str | None:
        if domain and (not _HOST_LABELS.match(domain) or "." not in domain):
            raise ValueError(f"'{domain}' is not a DNS domain (lower-case labels separated by dots)")
        return domain or None

    @field_validator("preset")
    @classmethod
    def _preset_name(cls, preset: str | None) -> str | None:
        if preset and preset not in PRESETS:
            raise ValueError(f"preset '{preset}' is unknown; allowed: {', '.join(PRESETS)}")
        return preset or None


# ---------------------------------------------------------------- the validated result


@dataclass(frozen=True)
class Secret:
    """A secret one service receives: the env var name and the catalog declaration."""

    name: str
    source: SecretSource
    per_service: bool


@dataclass(frozen=True)
class DeployedService:
    system: str
    name: str
    spec: Any  # catalog.Service
    image: ImageRef
    image_name: str
    hostname: str | None
    """Fully qualified host (with a domain) or the host label (without); None for non-web services."""
    env: dict[str, str]
    """Plain environment for this environment: system env, then service env, then stack overrides."""
    missing_secrets: tuple[str, ...] = ()
    """Config paths of the external secrets it reads that have no value yet (not in the stack file,
    not declared ``set_out_of_band``). ECS cannot start a task whose secret has no value."""
    waits_for_held: tuple[str, ...] = ()
    """Services it starts after (or whose migration it needs) that are held themselves."""
    missing_image: str | None = None
    """``<system>/<image>:<tag or digest>`` when that image is not in our repository yet."""
    external: ExternalHost | None = None
    """Its host is outside the platform domain, with its own certificate (``hostnames`` object form)."""
    paused: bool = False
    """An operator paused it (``platform:systems.<s>.paused``): no task, no autoscaling, nothing else held."""

    @property
    def key(self) -> str:
        return f"{self.system}-{self.name}"

    @property
    def held(self) -> bool:
        """Held at zero tasks until its secrets have values and what it waits for runs."""
        return bool(self.missing_secrets or self.waits_for_held or self.missing_image)

    def released(self) -> DeployedService:
        """This service once nothing holds it: what it runs in steady state."""
        return dataclasses.replace(self, missing_secrets=(), waits_for_held=(), missing_image=None)


@dataclass(frozen=True)
class DeployedSystem:
    system: System
    services: dict[str, DeployedService]
    external_secrets: dict[str, list[str]]
    """External secret name -> config paths that have a value (``secrets.<system>.<NAME>[.<service>]``)."""
    images: dict[str, ImageRef]
    rotate: dict[str, int]
    placeholders: dict[str, str] = dataclasses.field(default_factory=dict)
    """Setting name -> its ``to-do:`` value: stands in for a value nobody has given yet (offline only)."""

    @property
    def name(self) -> str:
        return self.system.name


def cache_usable_gib(node_type: str) -> float | None:
    """GiB of data a node type holds: its ``maxmemory`` less what ElastiCache reserves."""
    memory = CACHE_NODE_MAXMEMORY.get(node_type)
    return None if memory is None else memory * (100 - CACHE_RESERVED_MEMORY_PERCENT) / 100 / 2**30


def cache_node_type(preset_node_type: str, memory_gb: float | None) -> str | None:
    """The node type a system's cache gets: the preset's, or, when that holds less than the system's
    ``redis.memory_gb``, the smallest node type that holds it, the preset's family first. ``None`` when
    no node type does."""
    usable = cache_usable_gib(preset_node_type)
    if not memory_gb or (usable is not None and usable >= memory_gb):
        return preset_node_type
    enough = [t for t in CACHE_NODE_MAXMEMORY if (cache_usable_gib(t) or 0) >= memory_gb]
    family = preset_node_type.split(".")[1] if preset_node_type.count(".") == 2 else ""
    return min(enough, key=lambda t: (t.split(".")[1] != family, CACHE_NODE_MAXMEMORY[t])) if enough else None


@dataclass(frozen=True)
class PlatformConfig:
    """What the program builds, validated. Plain values only: no ``Output`` in here."""

    stack: str
    env: str
    region: str
    preset: Preset
    stack_config: StackConfig
    availability_zones: tuple[str, ...]
    subnet_plan: subnets.SubnetPlan | None
    systems: dict[str, DeployedSystem]
    file: str
    idle_timeout: int = edge.DEFAULT_IDLE_TIMEOUT_SECONDS
    """The load balancer's idle timeout (:func:`idle_timeout_seconds`)."""
    load_balancers: dict[str, int] = dataclasses.field(default_factory=dict)
    """System -> its load balancer (1, 2, ...; :func:`assign_load_balancers`); a system absent is on the first."""
    preset_name: str = ""
    """The preset (``dev``, ``staging``, ``prod``): per-environment defaults and rules follow it. ``env``
    is the same except in an ephemeral environment (``layout.environment``)."""

    @property
    def layout(self) -> LayoutConfig | None:
        """The split layout's part this stack is; None: all-in-one."""
        return self.stack_config.layout

    @property
    def is_core(self) -> bool:
        return self.layout is not None and self.layout.is_core

    @property
    def core_stack(self) -> str | None:
        """The core stack a system stack reads (split layout); None otherwise."""
        return self.layout.core_stack if self.layout else None

    @property
    def domain(self) -> str | None:
        return self.stack_config.domain

    @property
    def idle_timeout_seconds(self) -> int:
        """The load balancer's idle timeout; every web service keeps connections open longer."""
        return self.idle_timeout

    @property
    def network(self) -> NetworkConfig:
        return self.stack_config.network

    def services(self) -> list[DeployedService]:
        return [svc for system in self.systems.values() for svc in system.services.values()]

    def web_by_load_balancer(self) -> dict[int, list[DeployedService]]:
        """Each load balancer's web services (:attr:`load_balancers`), the first one first."""
        out: dict[int, list[DeployedService]] = {}
        for svc in self.services():
            if svc.spec.kind is ServiceKind.web:
                out.setdefault(self.load_balancers.get(svc.system, 1), []).append(svc)
        return dict(sorted(out.items()))

    def postgres_settings(self, system: str) -> PostgresPreset:
        """The preset's Postgres settings for one system. A guide's storage minimum (catalog
        ``postgres.storage_gb``, darwin's "100GB minimum") is allocated in a production preset (one with
        ``require_digests``), with an autoscaling ceiling of twice that; elsewhere it only raises the
        ceiling."""
        spec = self.systems[system].system.postgres
        pg = self.preset.postgres
        want = spec.storage_gb if spec else None
        if not want:
            return pg
        if self.preset.compute.require_digests and want > pg.allocated_storage_gb:
            return pg.model_copy(update={"allocated_storage_gb": want, "max_allocated_storage_gb": max(pg.max_allocated_storage_gb, 2 * want)})
        return pg.model_copy(update={"max_allocated_storage_gb": max(pg.max_allocated_storage_gb, want)})

    def redis_settings(self, system: str) -> RedisPreset:
        """The preset's Redis settings for one system, its node type sized to the catalog's
        ``redis.memory_gb`` (darwin: "1GB minimum"): a system that needs more memory than the preset's
        node type holds gets a larger node, the others keep the preset's (the loader refused the case
        no node type meets)."""
        spec = self.systems[system].system.redis
        node_type = cache_node_type(self.preset.redis.node_type, spec.memory_gb if spec else None) or self.preset.redis.node_type
        return self.preset.redis if node_type == self.preset.redis.node_type else self.preset.redis.model_copy(update={"node_type": node_type})


def idle_timeout_seconds(catalog: dict[str, System]) -> int:
    """An environment's load balancer idle timeout: long as soon as a web service of the catalog keeps
    connections open (offerhub's SSE, aurum's WebSocket). From the catalog, not from the systems a stack
    lists: in the split layout a system stack sees only its own system, yet its services' keep-alive must
    outlast the idle timeout of the core's load balancer, which any catalog system may join."""
    web = [svc for system in catalog.values() for svc in system.services.values() if svc.kind is ServiceKind.web]
    return edge.idle_timeout_seconds(any(svc.long_lived_connections for svc in web))


# ---------------------------------------------------------------- loading


def stack_file(project_dir: Path, stack: str) -> Path:
    return project_dir / f"Pulumi.{stack}.yaml"


def load_platform(stack: str, project_dir: Path, catalog: dict[str, System] | None = None, engine: EngineConfig | None = None) -> PlatformConfig:
    """Validate the configuration the engine passes for ``stack`` (default: what the CLI would pass for
    ``Pulumi.<stack>.yaml``) against the catalog. Raises :class:`ConfigError`; each problem names the
    stack file when the key is written there, else the stack's environment or config file."""
    engine = engine or from_files(stack, project_dir)
    try:
        return _load(stack, engine, catalog)
    except ConfigError as err:
        raise ConfigError([dataclasses.replace(p, file=engine.source(p.key)) if p.file == engine.file else p for p in err.problems]) from None


def _load(stack: str, engine: EngineConfig, catalog: dict[str, System] | None) -> PlatformConfig:
    file = engine.file
    config = {key: engine.decoded(key) for key in engine.values}
    catalog = catalog if catalog is not None else load_catalog()

    region = config.get("aws:region")
    meant_region = False
    ours: dict[str, Any] = {}
    problems: list[Problem] = []
    for key, value in config.items():
        namespace, _, name = str(key).partition(":")
        if namespace == PROJECT:
            ours[name] = value
        elif not name:
            problems.append(Problem(file, str(key), "configuration keys look like '<namespace>:<name>', e.g. 'platform:systems'"))
        elif namespace not in NAMESPACES and (meant := closest(namespace, NAMESPACES)):
            problems.append(
                Problem(file, str(key), f"unknown namespace '{namespace}'; did you mean '{meant}:{name}'? (namespaces read here: {', '.join(NAMESPACES)})")
            )
        elif namespace == "aws" and name not in _AWS_KEYS_USED and name not in (aws_keys := _aws_provider_keys()) and aws_keys:
            problems.append(Problem(file, str(key), f"the AWS provider has no setting '{name}'{did_you_mean(name, aws_keys, 'aws:')}"))
            meant_region = meant_region or closest(name, aws_keys) == "region"
    if region is None and not meant_region:  # after a typo (aws:regoin), that key's message says where the region went
        problems.append(Problem(file, "aws:region", "required: an AWS region such as 'us-east-1' (`pulumi config set aws:region us-east-1`)"))
    elif region is not None and (problem := region_problem(region)):
        problems.append(Problem(file, "aws:region", problem))

    secrets_tree = ours.pop("secrets", {}) or {}
    if f"{PROJECT}:secrets" in engine.file_config:
        problems.extend(_plaintext_secrets(engine.file_config[f"{PROJECT}:secrets"], file))
    elif secrets_tree and f"{PROJECT}:secrets" not in engine.secret_keys:
        problems.extend(_plaintext_secrets(secrets_tree, file))  # from an environment, in plain text
    if problems:
        raise ConfigError(problems)

    # Any other key of ours that the engine marks secret is a secret where none is expected.
    for key in ours:
        if f"{PROJECT}:{key}" in engine.secret_keys:
            problems.append(Problem(file, f"{PROJECT}:{key}", "holds an encrypted value; only 'platform:secrets' takes secrets"))
    if problems:
        raise ConfigError(problems)
    ours = {k: v for k, v in ours.items() if v != ""}  # an empty project default means "not set"

    try:
        sc = StackConfig.model_validate(ours)
    except ValidationError as err:
        raise from_validation_error(err, file, f"{PROJECT}:", StackConfig) from None

    problems = _stack_rules(sc, file, region) + _layout_rules(sc, file)
    if problems:
        raise ConfigError(problems)
    preset_name = sc.preset or stack
    if preset_name not in PRESETS:
        raise ConfigError([Problem(file, f"{PROJECT}:preset", f"stack '{stack}' has no preset of its name; set one of: {', '.join(PRESETS)}")])
    env = sc.layout.environment if sc.layout and sc.layout.environment else preset_name
    try:
        preset = Preset.model_validate(deep_merge(PRESETS[preset_name], sc.overrides))
    except ValidationError as err:
        raise from_validation_error(err, file, f"{PROJECT}:overrides", Preset) from None

    if sc.recovery and preset.postgres.backup_retention_days == 0:
        raise ConfigError(
            [Problem(file, f"{PROJECT}:recovery", "replicating backups needs automated backups: set overrides.postgres.backup_retention_days to 1 or more")]
        )
    data_problems = _data_rules(sc, catalog, preset, file)
    if data_problems:
        raise ConfigError(data_problems)
    azs, plan = _network(sc.network, preset, region, file)
    systems = _deploy_systems(sc, catalog, secrets_tree, preset, preset_name, file)
    if sc.compute == "kubernetes" and sc.kubernetes is not None:
        _kubernetes_rules(sc.kubernetes, engine.secret_keys, systems, file)
    web = [svc for system in systems.values() for svc in system.services.values() if svc.hostname]
    hosts = [svc.hostname for svc in web if not svc.external]  # under the domain (or labels without one)
    load_balancers = assign_load_balancers(sc, systems, file)
    exposure = edge.exposure_problems(domain=sc.domain, web_services=len(web), compute=sc.compute, settings=preset.edge)
    if exposure:
        raise ConfigError([Problem(file, key, message) for key, message in exposure])
    if sc.domain and sc.certificate_arn and not sc.hosted_zone_id:
        deep = [h for h in hosts if not edge.default_certificate_covers(h, sc.domain)]
        zone = "Set 'platform:hosted_zone_id' (the program then requests one certificate per host parent beside yours), or give"
        if deep:
            raise ConfigError(
                [
                    Problem(
                        file,
                        f"{PROJECT}:certificate_arn",
                        f"the certificate must cover {sc.domain} and *.{sc.domain}, and a wildcard covers one label only: it cannot cover "
                        f"{', '.join(sorted(deep))}. {zone} these services hostnames one label under the domain "
                        f"(platform:systems.<system>.hostnames.<service>: <label>)",
                    )
                ]
            )
    return PlatformConfig(
        stack=stack,
        env=env,
        region=region,
        preset=preset,
        stack_config=sc,
        availability_zones=azs,
        subnet_plan=plan,
        systems=systems,
        file=file,
        idle_timeout=idle_timeout_seconds(catalog),
        preset_name=preset_name,
        load_balancers=load_balancers,
    )


def certificates_needed(sc: StackConfig, web: list[DeployedService]) -> int:
    """Certificates the HTTPS listener of a load balancer serving ``web`` holds beside its default one: one
    per host parent (``edge.certificate_scopes``, with a zone) and one per host outside the domain."""
    if not sc.domain:
        return 0
    scopes = edge.certificate_scopes(sc.domain, [s.hostname for s in web if s.hostname and not s.external]) if sc.hosted_zone_id else []
    return len(scopes) + sum(1 for s in web if s.external)


def assign_load_balancers(sc: StackConfig, systems: dict[str, DeployedSystem], file: str) -> dict[str, int]:
    """System -> the load balancer (1, 2, ...) serving its web services, each within one ALB's default
    quotas: with a domain 60 web services (each takes a rule in each direction of the ALB's security group,
    60 per direction) and 25 certificates beside the default one; without one, 50 listeners (one per
    service). A system goes to its ``load_balancer`` if pinned, else to the first load balancer, in the
    order systems are listed, that still has room for it, never before the one the previous unpinned
    system went to: so a system added at the end moves no other system's rules."""
    limit, why = (WEB_SERVICES_PER_ALB, "security group rules per direction (60)") if sc.domain else (LISTENERS_PER_ALB, "listeners per ALB (50)")
    key = f"{PROJECT}:systems"
    web = {name: [s for s in d.services.values() if s.hostname] for name, d in systems.items()}
    load: dict[int, list[DeployedService]] = {}
    out: dict[str, int] = {}
    problems = []
    current = 1

    def fits(index: int, services: list[DeployedService]) -> bool:
        together = [*load.get(index, []), *services]
        return len(together) <= limit and certificates_needed(sc, together) <= CERTIFICATES_PER_LISTENER

    for name, services in web.items():
        pinned = sc.systems[name].load_balancer
        if not fits(0, services):  # too big even alone on a load balancer of its own
            need = (
                f"its {len(services)} web services exceed what one load balancer takes ({limit}: {why}"
                if len(services) > limit
                else f"its web services need {certificates_needed(sc, services)} certificates beside the default one (one HTTPS listener takes "
                f"{CERTIFICATES_PER_LISTENER}"
            )
            problems.append(Problem(file, f"{key}.{name}", f"{need}, AWS default quotas), and a system's services share one. Raise the quota"))
            continue
        if pinned is not None:
            index = pinned
            if not fits(index, services):
                problems.append(
                    Problem(
                        file,
                        f"{key}.{name}.load_balancer",
                        f"load balancer {index} has no room for its {len(services)} web services ({limit}: {why}); pin another",
                    )
                )
                continue
        else:
            while not fits(current, services):
                current += 1
            index = current
        if services:
            load.setdefault(index, []).extend(services)
        out[name] = index
    if problems:
        raise ConfigError(problems)
    return out


@functools.cache
def _aws_provider_keys() -> tuple[str, ...]:
    """The AWS provider's configuration keys (``aws:<key>``), as its Python SDK reads them; empty if the
    SDK's layout is not the one expected (then no key is refused)."""
    import importlib.util

    spec = importlib.util.find_spec("pulumi_aws")
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / "config" / "vars.py"
        if path.exists():
            return tuple(sorted(set(re.findall(r"__config__\.get\w*\('(\w+)'", path.read_text(encoding="utf-8")))))
    return ()


def secret_config_path(system: str, name: str, service: str | None = None) -> str:
    """Where an external secret's value sits in the stack's encrypted config: ``secrets.<system>.<NAME>[.<service>]``."""
    return f"secrets.{system}.{name}" + (f".{service}" if service else "")


def _kubernetes_rules(k8s: KubernetesConfig, secret_keys: frozenset[str], systems: dict[str, DeployedSystem], file: str) -> None:
    """What ``compute: kubernetes`` needs beyond the model: the kubeconfig secret, and secret values Pulumi can write."""
    problems = []
    if k8s.kubeconfig == "config" and "kubernetes:kubeconfig" not in secret_keys:
        problems.append(
            Problem(
                file,
                "kubernetes:kubeconfig",
                "required, encrypted, with 'kubeconfig: config': run `pulumi config set --secret kubernetes:kubeconfig < kubeconfig.yaml`",
            )
        )
    if k8s.secrets == "kubernetes":
        missing: dict[str, list[str]] = {}
        for system in systems.values():
            have = {p for paths in system.external_secrets.values() for p in paths}
            for svc in system.services.values():
                for path in _external_paths(system.system, svc.name):
                    if path not in have:
                        missing.setdefault(path, []).append(svc.key)
        for path, users in missing.items():
            problems.append(
                Problem(
                    file,
                    f"{PROJECT}:{path}",
                    f"needed by {', '.join(users)}: with 'kubernetes.secrets: kubernetes' Pulumi writes the Secret, so it needs the value; "
                    f"run `pulumi config set --secret --path '{path}' <value>`, or use 'secrets: external-secrets'",
                )
            )
    if problems:
        raise ConfigError(problems)


def _data_rules(sc: StackConfig, catalog: dict[str, System], preset: Preset, file: str) -> list[Problem]:
    """What the catalog entries of the deployed systems ask of the preset's data stores: a Postgres
    major at least their ``postgres.min_major``, Redis memory for their ``redis.memory_gb``, and a
    storage ceiling RDS accepts over the allocated storage."""
    problems: list[Problem] = []
    key = f"{PROJECT}:overrides"
    deployed = [catalog[name] for name in sc.systems if name in catalog]
    pg, cache = preset.postgres, preset.redis
    memory = CACHE_NODE_MAXMEMORY.get(cache.node_type)
    if memory is None and any(system.redis for system in deployed):
        problems.append(
            Problem(file, f"{key}.redis.node_type", f"'{cache.node_type}' is not an ElastiCache node type; allowed: {', '.join(CACHE_NODE_MAXMEMORY)}")
        )
    floor = math.ceil(pg.allocated_storage_gb * STORAGE_CEILING_HEADROOM)
    low: list[str] = []
    for system in deployed:
        source = f"stacks/apps/{system.name}.yaml"
        if system.postgres and system.postgres.min_major > pg.engine_major:
            problems.append(
                Problem(
                    file,
                    f"{key}.postgres.engine_major",
                    f"Postgres {pg.engine_major} is older than {system.name} supports (postgres.min_major: {system.postgres.min_major} in {source}); "
                    f"set overrides.postgres.engine_major to {system.postgres.min_major} or later (a major-version upgrade of every database)",
                )
            )
        if system.postgres and max(pg.max_allocated_storage_gb, system.postgres.storage_gb or 0) < floor:
            low.append(f"{system.name} {max(pg.max_allocated_storage_gb, system.postgres.storage_gb or 0)} GB")
        # redis.memory_gb sizes the system's own node (PlatformConfig.redis_settings); the catalog caps it
        # at 64 GiB, which the largest node types we allow hold
    if low:
        ceiling = "max_allocated_storage_gb" if "max_allocated_storage_gb" in (sc.overrides.get("postgres") or {}) else "allocated_storage_gb"
        problems.append(
            Problem(
                file,
                f"{key}.postgres.{ceiling}",
                f"the storage ceiling ({', '.join(low)}) must be at least 10 % above the allocated storage ({pg.allocated_storage_gb} GB), as RDS "
                f"requires; raise max_allocated_storage_gb to {floor} or more, or lower allocated_storage_gb",
            )
        )
    if preset.data.shared:
        problems += _shared_data_rules(sc, deployed, preset, file)
    return problems


def _shared_data_rules(sc: StackConfig, deployed: list[System], preset: Preset, file: str) -> list[Problem]:
    """A shared data tier (components/shared_data.py): one database name per system in the one instance,
    at most 15 systems in the one cache, pins that name a system of it, and what it does not cover yet."""
    key = f"{PROJECT}:overrides.data"
    problems: list[Problem] = []
    names: dict[str, list[str]] = {}
    for system in deployed:
        if system.postgres:
            names.setdefault(system.postgres.database, []).append(system.name)
    for database, owners in names.items():
        if len(owners) > 1:
            problems.append(
                Problem(
                    file,
                    f"{key}.shared",
                    f"{' and '.join(owners)} both name the database '{database}' (postgres.database in their catalog entries): one shared instance "
                    "holds one database per system; rename one, or set overrides.data.shared: false",
                )
            )
    tenants = [s.name for s in deployed if s.redis and sharing.own_cache_reason(s) is None]
    if len(tenants) > len(sharing.REDIS_DATABASES):
        problems.append(Problem(file, f"{key}.shared", f"{len(tenants)} systems would share one cache of {len(sharing.REDIS_DATABASES)} logical databases"))
    split_system = sc.layout is not None and not sc.layout.is_core
    for name in preset.data.redis_databases:
        if not split_system and name not in tenants:
            problems.append(
                Problem(file, f"{key}.redis_databases.{name}", f"'{name}' shares no cache in this stack (sharing: {', '.join(sorted(tenants)) or 'none'})")
            )
    if sc.compute == "kubernetes":
        problems.append(
            Problem(file, f"{key}.shared", "a shared data tier runs on ECS only: the Kubernetes migration Job's db-roles does not create its database yet")
        )
    if sc.recovery is not None:
        problems.append(
            Problem(file, f"{key}.shared", "platform:recovery copies each system's own stores; a shared data tier is for dev: set overrides.data.shared: false")
        )
    return problems


def _stack_rules(sc: StackConfig, file: str, region: str) -> list[Problem]:
    """Rules across keys of the stack file."""
    problems = []
    if sc.certificate_arn and (cert_region := sc.certificate_arn.split(":")[3]) != region:
        problems.append(
            Problem(
                file,
                f"{PROJECT}:certificate_arn",
                f"the certificate is in {cert_region}; a load balancer uses certificates of its own region ({region}): request or import it there",
            )
        )
    if sc.recovery and sc.recovery.dr_region == region:
        problems.append(Problem(file, f"{PROJECT}:recovery.dr_region", f"must be another region than aws:region ({region})"))
    own_alb = sc.compute == "ecs" or sc.kubernetes is None or sc.kubernetes.ingress_class == "alb"  # the program's ALB serves the hosts
    if sc.domain and own_alb and not (sc.hosted_zone_id or sc.certificate_arn):
        problems.append(
            Problem(
                file,
                f"{PROJECT}:domain",
                "HTTPS needs a certificate: also set 'platform:hosted_zone_id' (we request and DNS-validate one) "
                "or 'platform:certificate_arn' (an issued ACM certificate)",
            )
        )
    for key in ("hosted_zone_id", "certificate_arn"):
        if getattr(sc, key) and not sc.domain:
            problems.append(Problem(file, f"{PROJECT}:{key}", "only applies with 'platform:domain'; set the domain or remove this key"))
    if sc.compute == "kubernetes":
        if sc.kubernetes is None:
            problems.append(Problem(file, f"{PROJECT}:kubernetes", "required with 'compute: kubernetes': at least cluster_security_group_id"))
        elif sc.kubernetes.secrets == "external-secrets" and not sc.kubernetes.oidc_provider_arn:
            problems.append(
                Problem(
                    file,
                    f"{PROJECT}:kubernetes.oidc_provider_arn",
                    "required with 'secrets: external-secrets' (each service reads its secrets through an IAM role for its service account)",
                )
            )
        if sc.network.existing is None:
            problems.append(Problem(file, f"{PROJECT}:network.existing", "required with 'compute: kubernetes': the ids of the cluster's VPC and subnets"))
        # With ingress_class alb the program's own ALB serves the hosts, as on ECS: the domain rules above
        # apply (a zone for certificates and records, or an issued certificate). Another class: the
        # cluster's ingress controller serves them, so neither a zone nor a certificate is used here.
        if sc.hosted_zone_id and not own_alb:
            problems.append(
                Problem(
                    file,
                    f"{PROJECT}:hosted_zone_id",
                    "only applies with 'kubernetes.ingress_class: alb' (the program's load balancer); the cluster's ingress controller "
                    "serves the hosts of another class, and its records come from the cluster's external-dns or by hand. Remove this key",
                )
            )
        if sc.certificate_arn and not own_alb:
            problems.append(
                Problem(
                    file,
                    f"{PROJECT}:certificate_arn",
                    "only applies with 'kubernetes.ingress_class: alb'; other controllers terminate TLS with the Secret "
                    "'<service>-tls' in each namespace (e.g. from cert-manager). Remove this key",
                )
            )
    elif sc.kubernetes is not None:
        problems.append(Problem(file, f"{PROJECT}:kubernetes", "only applies with 'compute: kubernetes'; set it or remove this key"))
    if sc.registry.only:
        problems.append(
            Problem(
                file,
                f"{PROJECT}:registry.only",
                "no longer exists: it planned to delete everything but the repositories of a stack that already runs. Remove it; "
                "`pulumi up` creates the repositories with everything else and holds each service whose image is not pushed yet "
                "at zero tasks (`pulumi config rm --path 'registry.only'`)",
            )
        )
    if sc.registry.account_id and sc.registry.create:
        problems.append(Problem(file, f"{PROJECT}:registry.account_id", "names another account's repositories; set 'registry.create: false' with it"))
    return problems


# What a system stack of the split layout takes from its core instead of its own file.
CORE_KEYS = ("network", "registry", "certificate_arn", "hosted_zone_id", "recovery", "observability", "alarm_emails")


def _layout_rules(sc: StackConfig, file: str) -> list[Problem]:
    """The split layout: a core deploys no system of its own, a system stack names its core and holds
    one system, and what the core owns is set in the core's file only."""
    layout = sc.layout
    if layout is None:
        return []
    key = f"{PROJECT}:layout"
    problems = []
    if layout.core is True and layout.system:
        problems.append(Problem(file, f"{key}.system", "a core stack deploys no system of its own; remove 'system', or set 'core' to the core stack's name"))
    elif layout.system and not layout.core_stack:
        problems.append(Problem(file, f"{key}.core", "required: the core stack this system stack runs on, e.g. 'core-dev' or '<org>/platform/core-dev'"))
    elif layout.core_stack and not layout.system:
        problems.append(Problem(file, f"{key}.system", "required: the one system this stack deploys on the core (a name of platform:systems)"))
    elif not layout.core and not layout.system:
        problems.append(Problem(file, key, "either {core: true} (an environment's core) or {system: <name>, core: <core stack>} (one system on a core)"))
    if layout.environment and not layout.system:
        problems.append(Problem(file, f"{key}.environment", "only a system stack runs as an ephemeral environment on a core"))
    if sc.compute != "ecs":
        problems.append(Problem(file, f"{PROJECT}:compute", "the split layout runs on ECS; a Kubernetes environment uses the all-in-one layout"))
    if layout.system:
        if list(sc.systems) != [layout.system]:
            problems.append(
                Problem(file, f"{PROJECT}:systems", f"a system stack holds its own system only: '{layout.system}' (found: {', '.join(sc.systems)})")
            )
        if (dep := sc.systems.get(layout.system)) is not None and dep.load_balancer is not None:
            problems.append(
                Problem(file, f"{PROJECT}:systems.{layout.system}.load_balancer", f"belongs to the core stack ({layout.core_stack}); pin it in the core's file")
            )
        given = sc.model_dump(exclude_defaults=True)  # not the project's defaults (Pulumi.yaml), which every stack gets
        for name in CORE_KEYS:
            if name in given:
                problems.append(Problem(file, f"{PROJECT}:{name}", f"belongs to the core stack ({layout.core_stack}); set it in the core's stack file"))
    return problems


def _plaintext_secrets(tree: Any, file: str, path: str = f"{PROJECT}:secrets") -> list[Problem]:
    """Every leaf under ``platform:secrets`` must be encrypted."""
    if isinstance(tree, Secure):
        return []
    if isinstance(tree, dict):
        return [p for k, v in tree.items() for p in _plaintext_secrets(v, file, f"{path}.{k}")]
    dotted = path.removeprefix(f"{PROJECT}:")
    return [
        Problem(
            file,
            path,
            "a secret must be stored encrypted, not in plain text; remove it and run "
            f"`pulumi config set --secret --path '{dotted}' <value>` (then rotate the leaked value)",
        )
    ]


def _network(net: NetworkConfig, preset: Preset, region: str, file: str) -> tuple[tuple[str, ...], subnets.SubnetPlan | None]:
    count = preset.network.az_count
    key = f"{PROJECT}:network"
    if net.availability_zones is None:
        azs = tuple(f"{region}{chr(ord('a') + i)}" for i in range(count))
    else:
        azs = tuple(net.availability_zones)
        problems = [
            Problem(file, f"{key}.availability_zones[{i}]", f"'{az}' is not an AZ of {region} (e.g. '{region}a')")
            for i, az in enumerate(azs)
            if not re.fullmatch(rf"{re.escape(region)}[a-z]", az)
        ]
        if len(azs) != count or len(set(azs)) != len(azs):
            problems.append(Problem(file, f"{key}.availability_zones", f"needs {count} distinct AZs (the preset's az_count); got {len(azs)}"))
        if problems:
            raise ConfigError(problems)
    if net.existing is not None:
        problems = [
            Problem(file, f"{key}.existing.{tier}_subnet_ids", f"needs {count} subnets, one per AZ (got {len(ids)})")
            for tier in subnets.TIERS
            if len(ids := getattr(net.existing, f"{tier}_subnet_ids")) != count
        ]
        if problems:
            raise ConfigError(problems)
        return azs, None
    if net.subnets is not None:
        tiers = {t: getattr(net.subnets, t) for t in subnets.TIERS}
        problems = subnets.check_explicit(net.cidr, tiers, count)
        if problems:
            raise ConfigError([Problem(file, f"{key}.subnets.{k}", m) for k, m in problems])
        return azs, subnets.SubnetPlan(**{t: tuple(v) for t, v in tiers.items()})
    try:
        return azs, subnets.plan_subnets(net.cidr, count)
    except ValueError as err:
        raise ConfigError([Problem(file, f"{key}.cidr", str(err))]) from None


def _resolve_env(values: dict[str, EnvValue], env: str) -> dict[str, str]:
    out = {}
    for name, value in values.items():
        resolved = value if isinstance(value, str) else value.for_env(env)
        if resolved is not None:
            out[name] = resolved
    return out


def task_range(spec: Any, compute: Any) -> tuple[int, int]:
    """(floor, ceiling) of a service's running tasks in this preset when nothing holds or pauses it: the
    app's own floor (darwin: three instances) over the preset's, a singleton always 1, the autoscaling
    ceiling where the preset and the service autoscale (``components/workload.py`` ``task_counts``)."""
    if spec.kind is ServiceKind.singleton:
        return 1, 1
    web = spec.kind is ServiceKind.web
    minimum = spec.scaling.min_tasks or (compute.web_min_tasks if web else compute.worker_min_tasks)
    if not (compute.autoscaling and spec.scaling.autoscale):
        return minimum, minimum
    return minimum, max(minimum, spec.scaling.max_tasks or (compute.web_max_tasks if web else compute.worker_max_tasks))


def scales_out(system: System, preset: Preset) -> bool:
    """True when a web service of ``system`` may run more than one task in ``preset``."""
    return any(task_range(svc, preset.compute)[1] > 1 for svc in system.services.values() if svc.kind is ServiceKind.web)


def _settings(system: System, dep: SystemDeployment, env: str, key: str, file: str, problems: list[Problem]) -> tuple[dict[str, str], dict[str, str]]:
    """The system's declared settings for this environment: (name -> value, name -> placeholder). A
    required setting with neither a stack value nor a default for ``env`` is a problem naming the guide."""
    values: dict[str, str] = {}
    placeholders: dict[str, str] = {}
    for name, setting in system.settings.items():
        default = setting.default if setting.default is None or isinstance(setting.default, str) else setting.default.for_env(env)
        value = dep.env.get(name, default)
        if value is None:
            if setting.required:
                problems.append(
                    Problem(
                        file,
                        f"{key}.{name}",
                        f"required: {setting.description} (source: {setting.source}; declared in stacks/apps/{system.name}.yaml settings.{name}). "
                        f"Give it here, or write '{PLACEHOLDER_PREFIX} <what is missing>' to plan offline until it is known",
                    )
                )
            continue
        if problem := setting.problem(value):
            problems.append(Problem(file, f"{key}.{name}", problem))
            continue
        if is_placeholder(value):
            placeholders[name] = value
        values[name] = value
    return values, placeholders


def placeholders(cfg: PlatformConfig, project_dir: Path) -> list[tuple[str, str, str]]:
    """``(key, value, why)`` for every value of the stack that stands in for a real one (:mod:`stacks.placeholders`):
    ``to-do:`` settings, example domains, zones and emails, the documentation's account, made-up digests."""
    config = {f"{PROJECT}:{k}": v for k, v in cfg.stack_config.model_dump(mode="json", exclude_defaults=True).items()}
    tags = []
    for path in sorted(project_dir.glob("Pulumi.*.yaml")):
        try:
            systems = (read_yaml(path) or {}).get("config", {}).get(f"{PROJECT}:systems") or {}
        except ConfigError:
            continue  # another stack's broken file is that stack's problem
        tags += [ref for dep in systems.values() if isinstance(dep, dict) for ref in (dep.get("images") or {}).values() if isinstance(ref, str)]
    found = []
    for key, value, why in stack_placeholders.find(config, tags):
        m = re.fullmatch(rf"{PROJECT}:systems\.([a-z0-9-]+)\.env\.([A-Z0-9_]+)", key)
        setting = cfg.systems[m[1]].system.settings.get(m[2]) if m and m[1] in cfg.systems else None
        found.append((key, value, f"{why}: {setting.description}" if setting else why))
    return found


def placeholder_problems(cfg: PlatformConfig, project_dir: Path) -> list[Problem]:
    """Every placeholder of the stack, as the problem a real preview or up stops on."""
    return [
        Problem(cfg.file, key, f"{value!r} is {why}. Give the real value before a real run; the offline plan lists every placeholder")
        for key, value, why in placeholders(cfg, project_dir)
    ]


def _deploy_systems(sc: StackConfig, catalog: dict[str, System], secrets_tree: dict, preset: Preset, env: str, file: str) -> dict[str, DeployedSystem]:
    problems: list[Problem] = []
    key = f"{PROJECT}:systems"
    if not isinstance(secrets_tree, dict):
        secrets_tree = {}
    for name in secrets_tree:
        if name not in sc.systems:
            problems.append(Problem(file, f"{PROJECT}:secrets.{name}", f"'{name}' is not a system this stack deploys ({', '.join(sc.systems)})"))

    deployed: dict[str, DeployedSystem] = {}
    hosts: dict[str, str] = {}
    keep_alive = edge.keep_alive_ms(idle_timeout_seconds(catalog))
    core = sc.layout is not None and sc.layout.is_core  # the hosts of the systems it serves; their images and settings are theirs
    for sname, dep in sc.systems.items():
        system = catalog.get(sname)
        if system is None:
            problems.append(Problem(file, f"{key}.{sname}", f"unknown system '{sname}'; the catalog has: {', '.join(sorted(catalog))}"))
            continue
        if system.redis and system.redis.when == "scaled_out" and not scales_out(system, preset):
            system = system.without_redis()
        images: dict[str, ImageRef] = {}
        for image_name in system.images:
            if core and image_name not in dep.images:
                images[image_name] = CORE_IMAGE
            elif image_name not in dep.images:
                problems.append(
                    Problem(file, f"{key}.{sname}.images.{image_name}", "required: the image this stack runs (a tag, a digest or a full reference)")
                )
        for image_name, value in dep.images.items():
            ikey = f"{key}.{sname}.images.{image_name}"
            if image_name not in system.images:
                problems.append(Problem(file, ikey, f"'{image_name}' is not an image of {sname}; its images are: {', '.join(system.images)}"))
                continue
            try:
                ref = parse_image(value)
            except ValueError as err:
                problems.append(Problem(file, ikey, str(err)))
                continue
            if preset.compute.require_digests and not ref.digest:
                problems.append(
                    Problem(
                        file, ikey, f"this environment runs digests only ('sha256:<64 hex>'), got tag '{ref.tag}'; promote a digest from the previous stack"
                    )
                )
                continue
            images[image_name] = ref

        declared_secret = set(system.secrets)
        for var in dep.env:
            if var in declared_secret:
                problems.append(
                    Problem(
                        file,
                        f"{key}.{sname}.env.{var}",
                        f"{sname} declares {var} a secret; a plaintext value is not allowed here. "
                        f"Set it with `pulumi config set --secret --path 'secrets.{sname}.{var}' <value>`",
                    )
                )
            elif not re.fullmatch(r"[A-Z_][A-Z0-9_]*", var):
                problems.append(Problem(file, f"{key}.{sname}.env.{var}", "not an environment variable name (A-Z, 0-9, _)"))
            elif problem := plain_env_problem(var, dep.env[var]):
                problems.append(
                    Problem(
                        file,
                        f"{key}.{sname}.env.{var}",
                        f"{problem}: declare it in stacks/apps/{sname}.yaml 'secrets' and set it with `pulumi config set --secret`",
                    )
                )
            elif var == "PORT" and (
                ports := {f"{n} listens on {s.port}" for n, s in system.services.items() if s.kind is ServiceKind.web and str(s.port) != dep.env[var]}
            ):
                problems.append(
                    Problem(
                        file,
                        f"{key}.{sname}.env.PORT",
                        f"'{dep.env[var]}' contradicts the catalog ({', '.join(sorted(ports))}: stacks/apps/{sname}.yaml), where the load balancer "
                        "and its health check connect; remove PORT here (the catalog sets it)",
                    )
                )

        settings, placeholders = _settings(system, dep, env, f"{key}.{sname}.env", file, [] if core else problems)

        for svc_name, host in dep.hostnames.items():
            hkey = f"{key}.{sname}.hostnames.{svc_name}"
            svc = system.services.get(svc_name)
            if isinstance(host, ExternalHost):
                if svc is None or svc.kind is not ServiceKind.web:
                    problems.append(Problem(file, hkey, f"'{svc_name}' is not a web service of {sname}; only web services have a hostname"))
                elif not sc.domain or sc.compute != "ecs":
                    problems.append(
                        Problem(
                            file,
                            hkey,
                            "a host outside the platform domain is served on the HTTPS listener, which needs 'platform:domain' (and ECS "
                            "compute); set the domain, or give a label",
                        )
                    )
                elif edge.is_under(host.name, sc.domain):
                    problems.append(Problem(file, f"{hkey}.name", f"'{host.name}' is under '{sc.domain}': write it as a label, '{host.name}'"))
                continue
            if svc is None:
                problems.append(Problem(file, hkey, f"unknown service '{svc_name}' of {sname}; its services are: {', '.join(system.services)}"))
            elif svc.kind is not ServiceKind.web:
                problems.append(Problem(file, hkey, f"{svc_name} is a {svc.kind} service; only web services have a hostname"))
            elif host.endswith(".") and _HOST_LABELS.match(host[:-1]):
                problems.append(Problem(file, hkey, f"'{host}' ends with a dot; write '{host[:-1]}'"))
            elif not _HOST_LABELS.match(host):
                problems.append(Problem(file, hkey, f"'{host}' is not a valid DNS name; allowed: lower-case labels of 1-63 a-z, 0-9 and '-' separated by dots"))
            elif sc.domain and not edge.is_under(host, sc.domain) and "." in host and host.rsplit(".", 1)[-1] in {sc.domain.rsplit(".", 1)[-1], *_COMMON_TLDS}:
                problems.append(
                    Problem(
                        file,
                        hkey,
                        f"'{host}' is not under the domain '{sc.domain}': a full name must end with '.{sc.domain}' (this stack's certificate "
                        f"and records cover nothing else); a label under the domain is written without it, e.g. '{svc_name}' or '{svc_name}.{sname}'",
                    )
                )

        for svc_name in dep.paused:
            if svc_name not in system.services:
                problems.append(
                    Problem(
                        file,
                        f"{key}.{sname}.paused.{svc_name}",
                        f"unknown service '{svc_name}' of {sname}{did_you_mean(svc_name, system.services)}; its services are: {', '.join(system.services)}",
                    )
                )

        for secret_name in dep.rotate:
            spec = system.secrets.get(secret_name)
            if spec is None or spec.source is SecretSource.external:
                rotatable = sorted(n for n, sp in system.secrets.items() if sp.source is not SecretSource.external)
                problems.append(
                    Problem(file, f"{key}.{sname}.rotate.{secret_name}", f"only generated and derived secrets rotate here; {sname}'s: {', '.join(rotatable)}")
                )
        for name, revoked in dep.revoke.items():
            rkey = f"{key}.{sname}.revoke.{name}"
            spec = system.secrets.get(name)
            if name != "REDIS_URL" or spec is None or spec.derived_from != "redis":
                problems.append(
                    Problem(
                        file,
                        rkey,
                        "only REDIS_URL (a system's Redis AUTH token) keeps its old value valid during a rotation, so only it is revoked "
                        "in a second step; every other rotation replaces the value at once" + ("" if system.redis else f" ({sname} has no Redis)"),
                    )
                )
            elif revoked > (rotation := dep.rotate.get(name, 0)):
                problems.append(
                    Problem(
                        file,
                        rkey,
                        f"revokes rotation {revoked}, but rotate.{name} is {rotation}: bump rotate first and `pulumi up` (both tokens "
                        "valid, services roll), then set revoke to the same number in a later `pulumi up`",
                    )
                )
        external = _external_secrets(system, secrets_tree.get(sname, {}), file, problems)
        have = {p for paths in external.values() for p in paths}
        have |= _out_of_band(system, dep.set_out_of_band, have, file, f"{key}.{sname}.set_out_of_band", problems)
        missing = {svc_name: tuple(path for path in _external_paths(system, svc_name) if path not in have) for svc_name in system.services}
        held = _held(system, {name: bool(paths) for name, paths in missing.items()})
        services: dict[str, DeployedService] = {}
        for svc_name, svc in system.services.items():
            hostname = outside = None
            if svc.kind is ServiceKind.web:
                given = dep.hostnames.get(svc_name)
                outside = given if isinstance(given, ExternalHost) else None
                label = outside.name if outside else given or svc.hostname or f"{svc_name}.{sname}"
                hostname = label if not sc.domain or outside or edge.is_under(label, sc.domain) else f"{label}.{sc.domain}"
                if len(hostname) > 253:
                    problems.append(
                        Problem(
                            file, f"{key}.{sname}.hostnames.{svc_name}", f"'{hostname}' is longer than a DNS name may be (253 characters); give a shorter host"
                        )
                    )
                owner = f"{sname}.{svc_name}"
                if hostname in hosts:
                    problems.append(
                        Problem(
                            file,
                            f"{key}.{sname}.hostnames.{svc_name}",
                            f"host '{hostname}' is already claimed by {hosts[hostname]}; each web service needs its own",
                        )
                    )
                hosts[hostname] = owner
            image_name = system.image_of(svc_name)
            if image_name in images:
                platform_env = _platform_env(f"{sname}-{svc_name}", env, preset, images[image_name], svc.otel_sidecar and sc.compute == "ecs")
                if svc.kind is ServiceKind.web:
                    platform_env["KEEP_ALIVE_TIMEOUT"] = str(keep_alive)
                if sc.kubernetes is not None and sc.compute == "kubernetes":
                    platform_env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": sc.kubernetes.otel_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
                given = {n: v for n, v in dep.env.items() if n not in system.settings}  # undeclared overrides: every service
                mine = {n: v for n, v in settings.items() if svc_name in system.setting_receivers(n)}
                if svc.deployment_schema_env:  # a new image is a new deployment: a fresh schema (Ponder)
                    platform_env[svc.deployment_schema_env] = images[image_name].schema_name(svc_name)
                env_vars = {**platform_env, **_resolve_env(system.env, env), **_resolve_env(svc.env, env), **given, **mine}
                services[svc_name] = DeployedService(
                    sname,
                    svc_name,
                    svc,
                    images[image_name],
                    image_name,
                    hostname,
                    env_vars,
                    missing[svc_name],
                    held[svc_name],
                    paused=svc_name in dep.paused,
                    external=outside,
                )
        deployed[sname] = DeployedSystem(system, services, external, images, dict(dep.rotate), placeholders)
    if problems:
        raise ConfigError(problems)
    return deployed


# The root filesystem is read-only and the user is not root: every tool that writes to HOME, a cache or a
# temp directory is pointed at /tmp (a tmpfs every service has). npm writes its cache and logs under
# npm_config_cache and checks for updates unless told not to; Prisma's CLI phones home for an update
# check unless CHECKPOINT_DISABLE is set (Prisma docs, "Telemetry"); XDG_* covers the rest (corepack,
# pnpm, node-gyp caches).
CONTAINER_TMP = "/tmp"  # noqa: S108 - inside the container: a tmpfs of its own, not this machine's /tmp
WRITABLE_HOME_ENV = {
    "HOME": CONTAINER_TMP,
    "TMPDIR": CONTAINER_TMP,
    "XDG_CACHE_HOME": f"{CONTAINER_TMP}/.cache",
    "XDG_CONFIG_HOME": f"{CONTAINER_TMP}/.config",
    "XDG_DATA_HOME": f"{CONTAINER_TMP}/.local/share",
    "XDG_STATE_HOME": f"{CONTAINER_TMP}/.local/state",
    "npm_config_cache": f"{CONTAINER_TMP}/.npm",
    "npm_config_update_notifier": "false",
    "CHECKPOINT_DISABLE": "1",
}


def _platform_env(key: str, env: str, preset: Preset, image: ImageRef, sidecar: bool) -> dict[str, str]:
    """What every service gets unless its catalog entry says otherwise: OTEL, Sentry, NODE_ENV, LOG_LEVEL."""
    out = {
        **WRITABLE_HOME_ENV,
        "NODE_ENV": preset.observability.node_env,
        "LOG_LEVEL": preset.observability.log_level,
        "OTEL_SERVICE_NAME": key,
        "OTEL_RESOURCE_ATTRIBUTES": f"deployment.environment={env},service.version={image.version}",
        "SENTRY_ENVIRONMENT": env,
        "SENTRY_RELEASE": image.version,
    }
    if sidecar:
        # the collector in the same task listens on 127.0.0.1; Node may resolve "localhost" to ::1 first
        out["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:4318"
        out["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    return out


def _external_paths(system: System, service: str) -> list[str]:
    """Config paths of the external secrets ``service`` reads (its own copy of a per-service one)."""
    return [
        secret_config_path(system.name, name, service if system.secrets[name].per_service else None)
        for name in system.services[service].secrets
        if system.secrets[name].source is SecretSource.external
    ]


def _held(system: System, blocked: dict[str, bool]) -> dict[str, tuple[str, ...]]:
    """Per service: the services it waits for that are held (``blocked``: a secret or image missing, or held in turn).

    A service that starts after a held one is held too: twinkle's api reads the schema the indexer
    creates, and every service that reads DATABASE_URL waits for its system's migration."""
    out: dict[str, tuple[str, ...]] = {}

    def is_held(name: str) -> bool:
        if name not in out:
            out[name] = tuple(f"{system.name}-{dep}" for dep in system.waits_for(name) if is_held(dep))
        return bool(blocked[name] or out[name])

    for name in system.services:
        is_held(name)
    return out


def _out_of_band(system: System, declared: list[str], have: set[str], file: str, key: str, problems: list[Problem]) -> set[str]:
    """Config paths of the secrets ``set_out_of_band`` declares, each checked against the catalog."""
    out: set[str] = set()
    for i, entry in enumerate(declared):
        name, _, service = entry.partition(".")
        spec = system.secrets.get(name)
        users = [s for s, svc in system.services.items() if name in svc.secrets]
        if spec is None or spec.source is not SecretSource.external:
            allowed = sorted(n for n, sp in system.secrets.items() if sp.source is SecretSource.external)
            problems.append(Problem(file, f"{key}[{i}]", f"'{name}' is not an external secret of {system.name}; its external secrets: {', '.join(allowed)}"))
            continue
        if spec.per_service and service not in users:
            problems.append(Problem(file, f"{key}[{i}]", f"{name} is set per service: write '{name}.<service>', one line for each of {', '.join(users)}"))
            continue
        if not spec.per_service and service:
            problems.append(Problem(file, f"{key}[{i}]", f"{name} is one value for the whole system: write '{name}'"))
            continue
        path = secret_config_path(system.name, name, service or None)
        if path in have:
            problems.append(
                Problem(
                    file,
                    f"{key}[{i}]",
                    f"'{entry}' also has a value in 'platform:{path}', which Pulumi writes over the one set out of band; keep one of the two",
                )
            )
            continue
        out.add(path)
    return out


def hold_missing_images(cfg: PlatformConfig, missing: dict[str, str]) -> PlatformConfig:
    """``cfg`` with each service in ``missing`` (key -> ``<system>/<image>:<ref>``) held until its image is
    pushed, and every service that starts after a held one held with it."""
    systems = {}
    for name, system in cfg.systems.items():
        services = {s: dataclasses.replace(svc, missing_image=missing.get(svc.key)) for s, svc in system.services.items()}
        blocked = {s: bool(svc.missing_secrets or svc.missing_image) for s, svc in services.items()}
        waits = _held(system.system, {s: blocked.get(s, False) for s in system.system.services})
        services = {s: dataclasses.replace(svc, waits_for_held=waits[s]) for s, svc in services.items()}
        systems[name] = dataclasses.replace(system, services=services)
    return dataclasses.replace(cfg, systems=systems)


def secrets_manager_name(env: str, system: str, name: str, service: str | None = None) -> str:
    """``<env>/<system>/[<service>/]<NAME>``: the secret's name in Secrets Manager."""
    return "/".join(p for p in (env, system, service, name) if p)


def hold_instructions(svc: DeployedService, env: str, stack: str) -> list[str]:
    """What an operator does to start a held service: one line per missing secret, the exact commands."""
    lines = []
    for path in svc.missing_secrets:
        _, system, name, *service = path.split(".")
        sm_name = secrets_manager_name(env, system, name, service[0] if service else None)
        entry = name + (f".{service[0]}" if service else "")
        lines.append(
            f"{path}: `pulumi config set --secret --path '{path}' <value> --stack {stack}`, or put it in Secrets Manager yourself "
            f"(`aws secretsmanager put-secret-value --secret-id {sm_name} --secret-string <value>`) and add '{entry}' to "
            f"platform:systems.{system}.set_out_of_band"
        )
    if svc.missing_image:
        repository, sep, ref = svc.missing_image.rpartition("@" if "@" in svc.missing_image else ":")
        how = f"`docker push <url>:{ref}`" if sep == ":" else f"push the image with digest {ref} under any tag"
        lines.append(
            f"image {svc.missing_image} is not in its repository yet: {how} (the url of {repository}: `pulumi stack output repository_urls --stack {stack}`)"
        )
    lines += [f"waits for {other}, which is held" for other in svc.waits_for_held]
    return lines


def _external_secrets(system: System, given: Any, file: str, problems: list[Problem]) -> dict[str, list[str]]:
    """Check ``platform:secrets.<system>`` against the catalog; return which values are set."""
    base = f"{PROJECT}:secrets.{system.name}"
    if not isinstance(given, dict):
        problems.append(Problem(file, base, "expected a mapping of secret names"))
        return {}
    out: dict[str, list[str]] = {}
    for name, value in given.items():
        spec = system.secrets.get(name)
        if spec is None or spec.source is not SecretSource.external:
            allowed = sorted(n for n, s in system.secrets.items() if s.source is SecretSource.external)
            what = "not declared by" if spec is None else f"a {spec.source} secret of"
            problems.append(Problem(file, f"{base}.{name}", f"'{name}' is {what} {system.name}; external secrets you can set: {', '.join(allowed)}"))
            continue
        users = [s for s, svc in system.services.items() if name in svc.secrets]
        if spec.per_service:
            if not isinstance(value, dict):
                problems.append(
                    Problem(file, f"{base}.{name}", f"{name} takes one value per service: set 'secrets.{system.name}.{name}.<service>' for {', '.join(users)}")
                )
                continue
            for svc in value:
                if svc not in users:
                    problems.append(Problem(file, f"{base}.{name}.{svc}", f"'{svc}' does not use {name}; services that do: {', '.join(users)}"))
            out[name] = [secret_config_path(system.name, name, svc) for svc in value if svc in users]
        elif isinstance(value, dict):
            problems.append(Problem(file, f"{base}.{name}", f"{name} is one value for the whole system, not per service"))
        else:
            out[name] = [secret_config_path(system.name, name)]
    return out
