"""The catalog: what each of the five systems needs, one YAML file per system in ``stacks/apps/``.

The catalog says what an app needs (ports, health paths, secrets, env, data stores, start order); the
stack file says which systems an environment deploys and which image each service runs; the presets
say how big and how safe each environment is. Every fact here comes from the system's own deployment
guide in ``shared/seeds/``; where a guide is silent the YAML says so in a comment.
"""

from __future__ import annotations

import posixpath
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from policy.rules import SECRET_NAME, SECRET_VALUE

from .errors import ConfigError, Problem, from_validation_error
from .yamlio import read_yaml

APPS_DIR = Path(__file__).parent / "apps"

ENVIRONMENTS = ("dev", "staging", "prod")
NAME_RE = r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$"
ENV_VAR_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")

Name = Annotated[str, Field(pattern=NAME_RE, max_length=20)]
"""A system or service name: lower-case kebab, at most 20 characters (it ends up in AWS names)."""

# Fargate's task sizes: CPU units -> allowed memory (MiB). Source: ECS developer guide, "Task CPU and memory".
FARGATE_SIZES: dict[int, range] = {
    256: range(512, 2049, 512),
    512: range(1024, 4097, 1024),
    1024: range(2048, 8193, 1024),
    2048: range(4096, 16385, 1024),
    4096: range(8192, 30721, 1024),
    8192: range(16384, 61441, 4096),
    16384: range(32768, 122881, 8192),
}


# The ports the OTEL collector sidecar listens on inside every task (a task shares one network namespace,
# so an app on one of them cannot bind it): OTLP gRPC and HTTP (components/otel.py), and the collector's
# own metrics, which the OpenTelemetry Collector serves on 8888 unless its configuration turns them off
# (opentelemetry.io/docs/collector/internal-telemetry: "exposes them for scraping at
# http://127.0.0.1:8888/metrics"; components/otel.py leaves service.telemetry at its default).
COLLECTOR_TELEMETRY_PORT = 8888


_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s@]*@")


def collector_ports() -> dict[int, str]:
    """Port -> what the collector sidecar serves there."""
    from components.otel import OTLP_GRPC_PORT, OTLP_HTTP_PORT  # components.otel imports this module: import when called

    return {OTLP_GRPC_PORT: "OTLP gRPC", OTLP_HTTP_PORT: "OTLP HTTP", COLLECTOR_TELEMETRY_PORT: "its own metrics"}


def url_with_credentials(value: str) -> bool:
    """``scheme://user[:password]@host...``: a URL that carries a credential in its user part (RFC 3986
    userinfo: everything before an ``@`` in the authority)."""
    return _USERINFO.search(value) is not None


# A key in a URL: a query parameter named like one, or a path segment that looks like a generated key (the
# RPC providers' form: Alchemy https://<net>.g.alchemy.com/v2/<key>, Infura https://<net>.infura.io/v3/<key>,
# QuickNode https://<name>.quiknode.pro/<key>/, Slack https://hooks.slack.com/services/T../B../<token>).
_KEY_PARAM = re.compile(r"[?&](api[-_]?key|key|token|access[-_]?token|secret|auth)=[^&#\s]+", re.IGNORECASE)
_KEY_SEGMENT = re.compile(r"^(?!0x)(?=[A-Za-z0-9_-]*[0-9])(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{24,}$")


def url_with_key(value: str) -> bool:
    """An http(s) or ws(s) URL that carries what looks like an API key in its path or query."""
    if not re.match(r"(https?|wss?)://", value, re.IGNORECASE):
        return False
    rest = value.split("://", 1)[1]
    path = rest.split("?", 1)[0].split("#", 1)[0]
    return bool(_KEY_PARAM.search(value)) or any(_KEY_SEGMENT.match(seg) for seg in path.split("/")[1:])


def plain_env_problem(name: str, value: str) -> str | None:
    """Why ``name=value`` must not be a plain (non-secret) environment variable, or None.

    The same rules as the policy pack's ``no-secret-in-plain-env`` (``policy/rules.py``: SECRET_NAME,
    SECRET_VALUE), applied where the value is written instead of in CI, plus any URL with a user part
    (``https://user:token@...``, ``postgres://app:pw@...``) or a key in its path or query (:func:`url_with_key`).
    The value is never repeated in the message."""
    if SECRET_NAME.search(name):
        return f"'{name}' is named like a secret (the policy pack refuses it in plain env); make it a secret"
    if url_with_credentials(value):
        return "the value is a URL with credentials in it ('scheme://user:password@host'); make it a secret, or drop the user part"
    if url_with_key(value):
        return "the value is a URL with what looks like a key in its path or query (a keyed RPC endpoint); make it a secret"
    if SECRET_VALUE.search(value):
        return (
            "the value looks like a credential (a private key, an API or access key, or credentials in a URL; the policy pack refuses it "
            "in plain env); make it a secret"
        )
    return None


def env_values(value: EnvValue) -> list[tuple[str, str]]:
    """``[(where, text)]`` for a plain or per-environment value: ``("", "x")`` or ``(".prod", "x")``."""
    if isinstance(value, str):
        return [("", value)]
    return [(f".{env}", text) for env in (*ENVIRONMENTS, "default") if (text := getattr(value, env)) is not None]


def fargate_pair_problem(cpu: int, memory: int) -> str | None:
    """None when ``cpu``/``memory`` is a Fargate size, else what is allowed."""
    if cpu not in FARGATE_SIZES:
        return f"cpu {cpu} is not a Fargate size; allowed: {', '.join(map(str, FARGATE_SIZES))}"
    allowed = FARGATE_SIZES[cpu]
    if memory not in allowed:
        step = allowed.step
        return f"memory {memory} does not pair with cpu {cpu} on Fargate; allowed: {allowed.start} to {allowed.stop - 1} MiB in steps of {step}"
    return None


class Environment(StrEnum):
    dev = "dev"
    staging = "staging"
    prod = "prod"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class PerEnv(Strict):
    """A value that differs by environment. Missing environments fall back to ``default``."""

    dev: str | None = None
    staging: str | None = None
    prod: str | None = None
    default: str | None = None
    """Used for every environment not named. Default: none (the variable is not set there)."""

    def for_env(self, env: str) -> str | None:
        value = getattr(self, env)
        return self.default if value is None else value


EnvValue = str | PerEnv
"""A plain string, or per-environment values: ``{dev: debug, staging: info, prod: warn}``."""


PLACEHOLDER_PREFIX = "to-do:"
"""A value that stands in for one nobody has given yet (``"to-do: MarketFactory address on Base"``). The
offline plan accepts it and lists it under "Before you run up"; a real preview or up refuses it."""


def is_placeholder(value: str) -> bool:
    return value.strip().lower().startswith(PLACEHOLDER_PREFIX)


class Setting(Strict):
    """A non-secret setting the app reads at start and cannot guess (contract addresses, a chain id, an
    origin). The stack file gives the value under ``platform:systems.<system>.env.<NAME>``; ``default``
    (per environment where the guide varies it) fills it where the stack gives none. A setting that may
    hold a key (a keyed RPC URL) is declared in ``secrets`` instead, never here."""

    description: str = Field(min_length=1)
    """What it is, in the guide's words (shown when a stack lacks it)."""
    required: bool = True
    """The app cannot start without it: a stack (for its environment) must give a value or the default
    must cover that environment. Default: true."""
    default: EnvValue | None = None
    """Value where the stack gives none: a string, or per environment (``{dev: "84532"}``). Default: none."""
    pattern: str | None = None
    """Regular expression a value must match in full (an address, a number, a URL). Default: any text."""
    services: list[Name] = []
    """Services that receive it. Default: every service of the system."""
    source: str = Field(min_length=1)
    """Where the requirement comes from: the guide's section or line, or "our choice" and why."""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as err:
                raise ValueError(f"not a regular expression: {err}") from None
        return value

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not acceptable for this setting, or None (placeholders are accepted here)."""
        if is_placeholder(value):
            return None
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"{value!r} is not a valid value: {self.description} (must match {self.pattern})"
        return None


class SecretSource(StrEnum):
    generated = "generated"
    """Random, made by pulumi-random and stored in Secrets Manager."""
    external = "external"
    """Supplied by an operator: ``pulumi config set --secret`` or set out of band in Secrets Manager."""
    derived = "derived"
    """Composed from what we provision: DATABASE_URL from Postgres, REDIS_URL from Redis."""


class SecretSpec(Strict):
    """One secret a system declares. Services list the names they receive."""

    source: SecretSource
    description: str = ""
    """What the secret is for; shown in docs and in the Secrets Manager description."""
    length: int | None = Field(default=None, ge=16, le=4096)
    """generated only: random bytes (base64/hex) or characters (alphanumeric). Default: 32."""
    encoding: Literal["base64", "hex", "alphanumeric"] | None = None
    """generated only: how the random value is written. Default: ``alphanumeric``."""
    derived_from: Literal["postgres", "redis"] | None = None
    """derived only: which data store composes the URL."""
    per_service: bool = False
    """external only: each service gets its own value (e.g. one RPC key per service). Default: false."""

    @model_validator(mode="after")
    def _fits_source(self) -> SecretSpec:
        if self.source is SecretSource.generated:
            if self.derived_from or self.per_service:
                raise ValueError("a generated secret takes only 'length' and 'encoding'")
        elif self.source is SecretSource.external:
            if self.length or self.encoding or self.derived_from:
                raise ValueError("an external secret takes only 'description' and 'per_service'")
        elif self.derived_from is None:
            raise ValueError("a derived secret needs 'derived_from': postgres or redis")
        elif self.length or self.encoding or self.per_service:
            raise ValueError("a derived secret takes only 'derived_from'")
        return self


class ServiceKind(StrEnum):
    web = "web"
    """Behind the ALB on a host rule, health-checked by the target group."""
    worker = "worker"
    """No port; may run several copies."""
    singleton = "singleton"
    """Exactly one task, and a deploy never runs two at once (indexers, cron executors)."""


class HealthCheck(Strict):
    path: str = Field(pattern=r"^/[\x21-\x7e]*$", max_length=1024)
    """HTTP path the load balancer probes. Required for web services."""
    matcher: str = Field(default="200", pattern=r"^[2-4]\d\d([-,][2-4]\d\d)*$")
    """HTTP codes counted as healthy. Default: ``"200"``."""
    interval_seconds: int = Field(default=10, ge=5, le=300)
    """Seconds between probes. Default: 10 (ELB default is 30; shorter makes deploys faster)."""
    timeout_seconds: int = Field(default=5, ge=2, le=120)
    """Seconds before a probe fails. Default: 5."""
    healthy_threshold: int = Field(default=2, ge=2, le=10)
    """Passing probes before a target takes traffic. Default: 2."""
    unhealthy_threshold: int = Field(default=3, ge=2, le=10)
    """Failing probes before a target is out. Default: 3 (offerhub's "health check fails 3x")."""
    grace_period_seconds: int = Field(default=60, ge=0, le=2_147_483_647)
    """ECS ignores failing health checks this long after a task starts. Default: 60."""

    @model_validator(mode="after")
    def _timeout_below_interval(self) -> HealthCheck:
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError("timeout_seconds must be less than interval_seconds (an ELB rule)")
        return self


class MetricsEndpoint(Strict):
    """A Prometheus endpoint the OTEL collector scrapes."""

    path: str = Field(default="/metrics", pattern=r"^/")
    port: int = Field(ge=1, le=65535)


class Scaling(Strict):
    """Task counts. Unset values come from the environment preset."""

    min_tasks: int | None = Field(default=None, ge=1, le=100)
    """Floor of running tasks; in prod this is also the floor the preset cannot go under. Default: preset."""
    max_tasks: int | None = Field(default=None, ge=1, le=100)
    """Ceiling for autoscaling. Default: preset."""
    cpu_target_percent: int = Field(default=70, ge=10, le=95)
    """Target CPU for autoscaling. Default: 70 (offerhub's "CPU > 70 % sustained: add replicas")."""
    autoscale: bool = True
    """Scale on CPU and memory where the preset allows it. Default: true; singletons never autoscale."""


class PodResources(Strict):
    cpu: str = Field(pattern=r"^[1-9][0-9]*m$")
    """Millicores, e.g. ``250m``."""
    memory: str = Field(pattern=r"^[1-9][0-9]*Mi$")
    """Mebibytes, e.g. ``256Mi``."""


class Probe(Strict):
    initial_delay_seconds: int = Field(ge=0, le=600)
    period_seconds: int = Field(ge=1, le=300)


class KubernetesSpec(Strict):
    """How the service runs on Kubernetes (``compute: kubernetes``). ECS ignores it."""

    requests: PodResources | None = None
    """Default: the service's ``cpu``/``memory`` (1024 CPU units = 1000m)."""
    limits: PodResources | None = None
    """Default: twice the CPU request, memory equal to the request."""
    liveness: Probe = Probe(initial_delay_seconds=30, period_seconds=10)
    """Liveness probe on the health path. Default: after 30 s, every 10 s (darwin's guide)."""
    readiness: Probe = Probe(initial_delay_seconds=5, period_seconds=5)
    """Readiness probe on the health path. Default: after 5 s, every 5 s (darwin's guide)."""

    @model_validator(mode="after")
    def _limits_cover_requests(self) -> KubernetesSpec:
        if self.requests and self.limits:
            for key in ("cpu", "memory"):
                if int(getattr(self.limits, key)[: -2 if key == "memory" else -1]) < int(getattr(self.requests, key)[: -2 if key == "memory" else -1]):
                    raise ValueError(f"limits.{key} is below requests.{key}")
        return self

    def resources(self, cpu_units: int, memory_mib: int) -> dict[str, dict[str, str]]:
        requests = self.requests or PodResources(cpu=f"{cpu_units * 1000 // 1024}m", memory=f"{memory_mib}Mi")
        limits = self.limits or PodResources(cpu=f"{int(requests.cpu[:-1]) * 2}m", memory=requests.memory)
        return {"requests": requests.model_dump(), "limits": limits.model_dump()}


class WritablePath(Strict):
    """A path the app or its migration writes, on a root filesystem that is otherwise read-only."""

    source: Literal["tmpfs", "image"] = "tmpfs"
    """``tmpfs``: an in-memory mount, writable by any user (mode 1777), emptied when the task stops; its
    pages count against the task's memory. ``image``: a task volume at a path the image declares with
    ``VOLUME`` after a ``chown`` to the user it runs as; Fargate copies the image's content and owner
    into it, so it lives on the task's ephemeral storage instead of memory. Any other path on a Fargate
    volume is owned by root with mode 0755, which uid 1000 cannot write. Default: tmpfs."""
    size_mib: int = Field(default=64, ge=1, le=4096)
    """tmpfs only: the mount's size limit in MiB. Default: 64."""

    @model_validator(mode="after")
    def _size_is_for_tmpfs(self) -> WritablePath:
        if self.source == "image" and "size_mib" in self.model_fields_set:
            raise ValueError("size_mib applies to a tmpfs only; a path the image provides lives on the task's ephemeral storage: remove size_mib")
        return self


class ContainerHealth(Strict):
    """A health check ECS runs inside the app container (the task definition's ``healthCheck``; a Dockerfile
    HEALTHCHECK is ignored by ECS). While it has not passed, the task does not count as healthy, so the
    service's deploy is not finished and what starts after it waits (ECS API reference,
    DeploymentConfiguration.minimumHealthyPercent: "If a task has one or more essential containers with a
    health check defined, the service scheduler will wait for the task to reach a healthy status"). A
    container that fails it ``retries`` times in a row is replaced. Exactly one of ``http`` and ``heartbeat``."""

    http: str | None = Field(default=None, pattern=r"^/[\x21-\x7e]*$")
    """Path probed on 127.0.0.1:``port`` with Node's fetch (in every Node image; curl and wget are not): healthy on a 2xx."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port of ``http``."""
    heartbeat: str | None = Field(default=None, pattern=r"^/[\x21-\x7e]*$")
    """A file the app touches while it works: unhealthy when older than ``max_age_seconds``. Until the app
    first writes it the check passes (an image that predates the contract is not restarted in a loop)."""
    max_age_seconds: int = Field(default=180, ge=30, le=3600)
    """heartbeat only: the oldest the file may be. Default: 180."""
    interval_seconds: int = Field(default=30, ge=5, le=300)
    """Seconds between checks (ECS: 5 to 300). Default: 30."""
    timeout_seconds: int = Field(default=5, ge=2, le=60)
    """Seconds one check may take (ECS: 2 to 60). Default: 5."""
    retries: int = Field(default=3, ge=1, le=10)
    """Failures in a row, after the start period, before the container is unhealthy (ECS: 1 to 10). Default: 3."""
    start_period_seconds: int = Field(default=60, ge=0, le=300)
    """Failures in this window after start do not count (ECS: 0 to 300). Default: 60."""
    why: str = Field(min_length=1)
    """What the check proves, from the guide."""

    @model_validator(mode="after")
    def _one_kind(self) -> ContainerHealth:
        if (self.http is None) == (self.heartbeat is None):
            raise ValueError("give exactly one of 'http' (with 'port') and 'heartbeat'")
        if self.http is not None and self.port is None:
            raise ValueError("'http' needs the 'port' the app serves it on")
        if self.timeout_seconds >= self.interval_seconds:
            raise ValueError("timeout_seconds must be less than interval_seconds")
        return self

    @property
    def budget_seconds(self) -> int:
        """Longest a starting container may stay unhealthy before ECS replaces it."""
        return self.start_period_seconds + self.interval_seconds * self.retries

    def command(self) -> list[str]:
        """The ``healthCheck.command``: exec form (no shell), Node only."""
        if self.http is not None:
            script = f"fetch('http://127.0.0.1:{self.port}{self.http}').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
        else:
            script = (
                f"try{{process.exit(Date.now()-require('fs').statSync('{self.heartbeat}').mtimeMs<{self.max_age_seconds * 1000}?0:1)}}"
                "catch(e){process.exit(e.code==='ENOENT'?0:1)}"
            )
        return ["CMD", "node", "-e", script]


class Migration(Strict):
    """A one-off command run with the new image before the new version serves traffic."""

    command: list[str] = Field(min_length=1)
    service: str
    """Whose image, secrets and network the migration task borrows."""


class Service(Strict):
    kind: ServiceKind
    description: str = ""
    image: Name | None = None
    """Image name in the stack file's ``images`` map. Default: the service name. Two services may share one."""
    command: list[str] | None = Field(default=None, min_length=1)
    """Container command. Default: the image's own CMD."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port the app listens on. Required for web services."""
    health: HealthCheck | None = None
    """Load-balancer health check. Required for web services."""
    container_health: ContainerHealth | None = None
    """A health check inside the container (a readiness gate, a worker's heartbeat). Default: none."""
    deployment_schema_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    """Env var that receives a Postgres schema name unique to the image this deployment runs (Ponder's
    DATABASE_SCHEMA: "Each deployment must use a different schema"). Default: none."""
    metrics: MetricsEndpoint | None = None
    """Prometheus endpoint scraped by the collector. Default: none."""
    env: dict[str, EnvValue] = {}
    """Non-secret environment for this service; overrides the system's ``env``."""
    secrets: list[str] = []
    """Names from the system's ``secrets`` this service receives, as ECS secrets. Nothing else is readable."""
    start_after: list[str] = []
    """Services that must be healthy before this one starts (seed start order)."""
    shutdown_seconds: int = Field(default=10, ge=2, le=120)
    """How long the app takes to drain on SIGTERM (seeds: 10 s). Sets stop timeout and deregistration delay."""
    cpu: int = 256
    """Fargate CPU units. Default: 256 (0.25 vCPU)."""
    memory: int = 512
    """Fargate memory in MiB; must pair with ``cpu``. Default: 512."""
    scaling: Scaling = Scaling()
    user: str | None = Field(default=None, pattern=r"^[0-9]+(:[0-9]+)?$")
    """Numeric uid[:gid] to run as. Default: 1000:1000 (node images' ``node`` user); never root."""
    writable_paths: dict[str, WritablePath] = {"/tmp": WritablePath()}
    """Every path the app or its migration writes, each a tmpfs or a volume the image provides; the rest
    of the root filesystem is read-only. ``/tmp`` is required: the platform points ``HOME``, ``TMPDIR``,
    the XDG directories and npm's cache there. Default: ``/tmp`` as a 64 MiB tmpfs."""
    long_lived_connections: bool = False
    """WebSocket or SSE: needs a long ALB idle timeout. Default: false."""
    sticky: bool = False
    """ALB stickiness (aurum's WebSocket). Default: false."""
    hostname: str | None = Field(default=None, pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$", max_length=253)
    """Host label under the domain (lower-case DNS labels, e.g. ``api`` or ``api.twinkle``). Default: ``<service>.<system>``."""
    otel_sidecar: bool = True
    """Run the ADOT collector next to the app (OTLP on 127.0.0.1:4317/4318). Default: true."""
    public_url_env: str | None = Field(default=None, pattern=r"^[A-Z_][A-Z0-9_]*$")
    """web only: env var that receives this service's public URL (offerhub's PUBLIC_BASE_URL). Default: none."""
    webhooks: list[Annotated[str, Field(pattern=r"^/[\x21-\x7e]*$")]] = []
    """web only: paths third parties call back; their full URLs are stack outputs to register. Default: none."""
    strict_paths: list[Annotated[str, Field(pattern=r"^/[\x21-\x7e]*$", max_length=200)]] = []
    """web only: path prefixes with the stricter WAF rate limit (darwin's ``/admin``). Default: none."""
    kubernetes: KubernetesSpec = KubernetesSpec()
    """Requests, limits and probes on Kubernetes. Default: from ``cpu``/``memory``, darwin's probe timings."""

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, EnvValue]) -> dict[str, EnvValue]:
        for name in env:
            if not ENV_VAR_RE.match(name):
                raise ValueError(f"'{name}' is not an environment variable name (A-Z, 0-9, _)")
        return env

    @field_validator("user", mode="before")
    @classmethod
    def _not_root(cls, user: Any) -> Any:
        text = str(user).strip() if isinstance(user, str | int) and not isinstance(user, bool) else None
        if text is not None and (text in ("root", "root:root") or re.fullmatch(r"0+(:[0-9]+)?|root:[0-9a-z_]+", text)):
            raise ValueError(f"'{user}' runs the app as root; allowed: a numeric non-root uid[:gid], e.g. '1000:1000' (node images' node user)")
        return user

    @field_validator("writable_paths")
    @classmethod
    def _paths(cls, paths: dict[str, WritablePath]) -> dict[str, WritablePath]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"writable path '{path}' is relative; allowed: an absolute path, e.g. /tmp or /app/.next/cache")
            normal = "/" + posixpath.normpath(path).lstrip("/")
            if normal != path:
                also = f" (and '{normal}' is listed too: the same directory twice)" if normal in paths else ""
                raise ValueError(f"writable path '{path}' is not normalised; write '{normal}'{also}")
            if path == "/":
                raise ValueError("writable path '/' makes the whole root filesystem writable; list the directories the app writes")
            if not re.fullmatch(r"(/[A-Za-z0-9._@-]+)+", path):
                raise ValueError(f"writable path '{path}' has characters other than A-Z, a-z, 0-9, '.', '_', '@', '-' in a name")
        for path in paths:
            outer = [other for other in paths if other != path and path.startswith(f"{other}/")]
            if outer:
                raise ValueError(f"writable path '{path}' is inside '{outer[0]}', which is already a mount of its own; keep one of the two")
        return paths

    @model_validator(mode="after")
    def _kind_rules(self) -> Service:
        if self.kind is ServiceKind.web:
            if self.port is None or self.health is None:
                raise ValueError("a web service needs 'port' and 'health'")
        elif self.health is not None or self.sticky or self.long_lived_connections:
            raise ValueError(f"a {self.kind} service takes no 'health', 'sticky' or 'long_lived_connections'")
        if self.kind is ServiceKind.singleton and (self.scaling.min_tasks or self.scaling.max_tasks):
            raise ValueError("a singleton always runs exactly one task; remove 'scaling.min_tasks/max_tasks'")
        if self.scaling.min_tasks and self.scaling.max_tasks and self.scaling.min_tasks > self.scaling.max_tasks:
            raise ValueError("scaling.min_tasks is larger than scaling.max_tasks")
        if self.kind is not ServiceKind.web and (self.public_url_env or self.webhooks or self.strict_paths):
            raise ValueError(f"a {self.kind} service has no public URL: remove 'public_url_env', 'webhooks' and 'strict_paths'")
        problem = fargate_pair_problem(self.cpu, self.memory)
        if problem:
            raise ValueError(problem)
        if "/tmp" not in self.writable_paths:
            raise ValueError("writable_paths needs '/tmp': the platform points HOME, TMPDIR, the XDG directories and npm's cache there")
        tmpfs = sum(w.size_mib for w in self.writable_paths.values() if w.source == "tmpfs")
        if tmpfs * 2 > self.memory:
            raise ValueError(
                f"the tmpfs mounts take up to {tmpfs} MiB of the task's {self.memory} MiB (tmpfs pages are task memory); "
                "keep them under half of 'memory', raise 'memory', or let the image provide the path (source: image)"
            )
        return self

    @property
    def tmpfs_mib(self) -> int:
        """Task memory the tmpfs mounts may take when full."""
        return sum(w.size_mib for w in self.writable_paths.values() if w.source == "tmpfs")


class PostgresNeeds(Strict):
    min_major: int = Field(ge=12, le=17)
    """Oldest Postgres major the app supports (from its guide). A stack whose preset runs an older
    ``postgres.engine_major`` is refused."""
    database: str = Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")
    """Database name created in the instance."""
    runtime_ddl: list[Name] = []
    """Services that create their own schema and tables when they start (twinkle's Ponder indexer), so
    connect as the runtime-DDL role ``<database>_ddl`` instead of the DML-only app role. Each must read
    ``DATABASE_URL``. Default: none."""
    storage_gb: int | None = Field(default=None, ge=20, le=65536)
    """Storage the app's guide asks for (darwin: "100GB minimum"). In a production preset it is allocated
    from the start, with room to autoscale to twice that; elsewhere it is the autoscaling ceiling only,
    so dev and staging pay for what they use. Default: the preset's."""


class RedisNeeds(Strict):
    maxmemory_policy: Literal["noeviction", "allkeys-lru", "volatile-lru", "allkeys-lfu", "volatile-lfu", "allkeys-random", "volatile-random", "volatile-ttl"]
    """Eviction policy. BullMQ needs ``noeviction``; choose per app and say why in the catalog."""
    why: str
    """Why this policy (kept so reviewers do not have to re-derive it)."""
    when: Literal["always", "scaled_out"] = "always"
    """``scaled_out``: only where a web service of the system may run more than one task (aurum's guide,
    "Horizontal Scaling": "Use Redis for session storage"); elsewhere the system has no Redis and no
    service receives its ``REDIS_URL``. Default: always."""
    memory_gb: float | None = Field(default=None, gt=0, le=64)
    """GiB of data the app needs to keep in Redis (darwin: "1GB minimum"). A stack whose preset node type
    holds less (its ``maxmemory`` less the 25 % ElastiCache reserves by default) is refused. Default:
    none (whatever the preset's node type holds)."""
    own_cache: str | None = Field(default=None, min_length=10)
    """Why the system keeps a Redis of its own where the preset shares one (``data.shared``): its guide
    sets cache settings of its own (offerhub: BullMQ needs ``noeviction`` for its queues), or uses
    something logical databases do not separate (Pub/Sub channels are server-wide). A system with a
    ``memory_gb`` keeps its own too. Default: none (it may share)."""


class NotDeployed(Strict):
    name: str
    reason: str


class System(Strict):
    """One system's catalog entry (``stacks/apps/<system>.yaml``)."""

    name: Name
    description: str
    seed: str
    """The deployment guide every fact here comes from."""
    postgres: PostgresNeeds | None = None
    redis: RedisNeeds | None = None
    secrets: dict[str, SecretSpec] = {}
    env: dict[str, EnvValue] = {}
    """Non-secret environment shared by every service of the system."""
    settings: dict[str, Setting] = {}
    """Non-secret settings a stack must (or may) give: what the app cannot run without and the platform
    cannot know (contract addresses, RPC endpoint, chain id, origins). Values: ``platform:systems.<system>.env``."""
    services: dict[Name, Service] = Field(min_length=1)
    migration: Migration | None = None
    not_deployed: list[NotDeployed] = []
    """Parts of the system that are not deployed, with why (for the docs)."""

    @field_validator("secrets", "env", "settings")
    @classmethod
    def _var_names(cls, value: dict) -> dict:
        for name in value:
            if not ENV_VAR_RE.match(name):
                raise ValueError(f"'{name}' is not an environment variable name (A-Z, 0-9, _)")
        return value

    def reference_problems(self) -> list[tuple[str, str]]:
        """Cross-references pydantic cannot see: (key path, message) for each broken one."""
        problems: list[tuple[str, str]] = []
        declared = ", ".join(sorted(self.secrets)) or "none"
        for i, sname in enumerate(self.postgres.runtime_ddl if self.postgres else []):
            if sname not in self.services or "DATABASE_URL" not in self.services[sname].secrets:
                problems.append((f"postgres.runtime_ddl[{i}]", f"'{sname}' is not a service of this system that reads DATABASE_URL"))
        for sname, svc in self.services.items():
            for i, secret in enumerate(svc.secrets):
                if secret not in self.secrets:
                    problems.append((f"services.{sname}.secrets[{i}]", f"'{secret}' is not declared in this system's 'secrets' (declared: {declared})"))
            for i, dep in enumerate(svc.start_after):
                if dep not in self.services or dep == sname:
                    problems.append((f"services.{sname}.start_after[{i}]", f"'{dep}' is not another service of this system"))
            for name in sorted(set(svc.env) & set(svc.secrets)):
                problems.append((f"services.{sname}.env.{name}", "also listed in 'secrets'; a variable is either plain or secret"))
            for name in sorted((set(svc.env) & set(self.secrets)) - set(svc.secrets)):
                problems.append((f"services.{sname}.env.{name}", "the system declares it a secret; a plain value would shadow it: remove it here"))
            problems += _plain_env_problems({n: v for n, v in svc.env.items() if n not in self.secrets}, f"services.{sname}.env")
            problems += self._port_problems(sname, svc)
        for name in sorted(set(self.env) & set(self.secrets)):
            problems.append((f"env.{name}", "also declared in 'secrets'; a plain value would shadow the secret: remove it from 'env'"))
        problems += self._setting_problems()
        problems += _plain_env_problems({n: v for n, v in self.env.items() if n not in self.secrets}, "env")
        for name, spec in self.secrets.items():
            if spec.derived_from and getattr(self, spec.derived_from) is None:
                problems.append((f"secrets.{name}.derived_from", f"the system declares no {spec.derived_from}"))
            if not any(name in svc.secrets for svc in self.services.values()):
                problems.append((f"secrets.{name}", "declared but no service receives it"))
        if self.migration and self.migration.service not in self.services:
            problems.append(("migration.service", f"'{self.migration.service}' is not a service of this system"))
        if not problems:
            cycle = _find_cycle(self)
            if cycle:
                problems.append((f"services.{cycle[0]}.start_after", f"start order has a cycle: {' -> '.join(cycle)}"))
        return problems

    def _setting_problems(self) -> list[tuple[str, str]]:
        out = []
        for name, setting in self.settings.items():
            key = f"settings.{name}"
            other = [part for part, names in (("env", self.env), ("secrets", self.secrets)) if name in names]
            other += [f"services.{s}.env" for s, svc in self.services.items() if name in svc.env]
            if other:
                out.append((key, f"also set in {', '.join(other)}; a setting's value comes from the stack file or its default: remove it there"))
            for i, sname in enumerate(setting.services):
                if sname not in self.services:
                    out.append((f"{key}.services[{i}]", f"'{sname}' is not a service of this system ({', '.join(self.services)})"))
            for where, text in env_values(setting.default) if setting.default is not None else []:
                if problem := plain_env_problem(name, text) or setting.problem(text):
                    out.append((f"{key}.default{where}", problem))
        return out

    def without_redis(self) -> System:
        """This system where its Redis is not needed: no Redis, no secret derived from it."""
        gone = {n for n, spec in self.secrets.items() if spec.derived_from == "redis"}
        return self.model_copy(
            update={
                "redis": None,
                "secrets": {n: spec for n, spec in self.secrets.items() if n not in gone},
                "services": {n: svc.model_copy(update={"secrets": [x for x in svc.secrets if x not in gone]}) for n, svc in self.services.items()},
            }
        )

    def setting_receivers(self, name: str) -> list[str]:
        """Services that receive setting ``name``."""
        return list(self.settings[name].services) or list(self.services)

    def _port_problems(self, sname: str, svc: Service) -> list[tuple[str, str]]:
        """A PORT that contradicts the service's port, and an app port the collector sidecar already uses."""
        out = []
        if svc.kind is ServiceKind.web and svc.port is not None:
            where, value = (f"services.{sname}.env.PORT", svc.env["PORT"]) if "PORT" in svc.env else ("env.PORT", self.env.get("PORT"))
            for env, text in env_values(value) if value is not None else []:
                if text != str(svc.port):
                    out.append(
                        (
                            where + env,
                            f"{text!r} contradicts services.{sname}.port ({svc.port}), where the load balancer and its health check connect; make them equal",
                        )
                    )
        if svc.otel_sidecar:
            taken = collector_ports()
            for key, port in ((f"services.{sname}.port", svc.port), (f"services.{sname}.metrics.port", svc.metrics.port if svc.metrics else None)):
                if port in taken:
                    out.append(
                        (
                            key,
                            f"{port} is taken by the collector sidecar in the same task ({taken[port]}; it uses "
                            f"{', '.join(map(str, sorted(taken)))}); choose another port",
                        )
                    )
        return out

    def image_of(self, service: str) -> str:
        return self.services[service].image or service

    @property
    def images(self) -> list[str]:
        return sorted({self.image_of(s) for s in self.services})

    def waits_for(self, service: str) -> list[str]:
        """Services that must be running before ``service`` starts: its ``start_after``, plus the
        migration's service for every other service that reads DATABASE_URL (never new code on an old schema)."""
        deps = list(self.services[service].start_after)
        m = self.migration
        if m and service != m.service and "DATABASE_URL" in self.services[service].secrets and m.service not in deps:
            deps.append(m.service)
        return deps

    def start_rank(self, service: str) -> int:
        """Place in the start order: 0 for services that wait on nothing."""
        deps = self.waits_for(service)
        return 0 if not deps else 1 + max(self.start_rank(d) for d in deps)


def _plain_env_problems(env: dict[str, EnvValue], prefix: str) -> list[tuple[str, str]]:
    return [
        (f"{prefix}.{name}{where}", problem) for name, value in env.items() for where, text in env_values(value) if (problem := plain_env_problem(name, text))
    ]


def _find_cycle(system: System) -> list[str] | None:
    """A start_after cycle as a list of names, or None."""
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> list[str] | None:
        if state.get(name) == 1:
            return [*trail[trail.index(name) :], name]
        if state.get(name) == 2:
            return None
        state[name] = 1
        for dep in system.waits_for(name):
            found = visit(dep, [*trail, name])
            if found:
                return found
        state[name] = 2
        return None

    for name in system.services:
        found = visit(name, [])
        if found:
            return found
    return None


def load_system(path: Path) -> System:
    display = f"stacks/apps/{path.name}"
    raw = read_yaml(path, display)
    if not isinstance(raw, dict):
        raise ConfigError([Problem(display, "", "expected a mapping at the top level")])
    if raw.get("name") != path.stem:
        raise ConfigError([Problem(display, "name", f"must equal the file name '{path.stem}' (got {raw.get('name')!r})")])
    try:
        system = System.model_validate(raw)
    except ValidationError as err:
        raise from_validation_error(err, display, "", System) from None
    problems = system.reference_problems()
    if problems:
        raise ConfigError([Problem(display, key, msg) for key, msg in problems])
    return system


def load_catalog(apps_dir: Path = APPS_DIR) -> dict[str, System]:
    """Every system in ``apps_dir``, by name. All files are checked and all problems reported together."""
    systems: dict[str, System] = {}
    problems: list[Problem] = []
    for path in sorted(apps_dir.glob("*.yaml")):
        try:
            system = load_system(path)
        except ConfigError as err:
            problems.extend(err.problems)
            continue
        systems[system.name] = system
    if problems:
        raise ConfigError(problems)
    return systems
