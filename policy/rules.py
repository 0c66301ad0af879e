"""The policies, as pure checks, and :func:`policies` wrapping them for pulumi-policy.

Each check takes ``(resource_type, props, urn, config)`` (``props`` as the engine has them: camelCase
inputs, numbers as floats) and returns the violations as sentences. Two things run them:

- the policy pack (``__main__.py`` serves :func:`policies`; building a ``PolicyPack`` starts a server,
  so nothing else does it), run by the CLI from its own virtualenv, ``policy/venv``;
- the program itself (``policy/local.py``), which refuses what a mandatory policy forbids before the
  resource is registered, so a ``pulumi up`` without the pack (a laptop, a self-managed backend)
  cannot deploy what CI would block.

So this module imports neither the program nor pulumi-policy at import time (the program's virtualenv
has no pulumi-policy); :func:`policies` imports it when the pack starts.

**Which stacks are "prod".** The prod-only policies follow the stack's preset (``platform:preset``,
default the stack name, as ``stacks/config.py`` resolves it), not the stack's name: a stack called
``prod-eu`` with preset ``prod`` is production. pulumi-policy hands a policy only its own config
(``args.get_config()``, pulumi_policy/policy.py ``ResourceValidationArgs``), not the stack's, so the
preset comes from two places and the stricter wins:

1. the policy config, ``{"<policy>": {"preset": "prod"}}`` in ``policy/config/<stack>.json`` (CI passes
   it per stack; a Cloud policy group passes the file given to ``pulumi policy enable --config``). The
   schema makes ``preset`` required, so a run without it fails the pack's config validation instead of
   treating the stack as non-prod (pulumi/pulumi pkg/resource/analyzer/config.go
   ``validatePolicyPackConfig``). A top-level ``"preset"`` key would be parsed as a policy name with an
   enforcement level and rejected (same file, ``parsePolicyPackConfig``), hence one per policy.
2. the stack's own configuration, which the Python language host gives a policy pack process as
   ``PULUMI_CONFIG``/``PULUMI_STACK`` since CLI v3.221.0 (pulumi/pulumi#21684,
   sdk/python/cmd/pulumi-language-python/main.go ``RunPlugin``: "For policy packs we also need to
   adjust the environment to include stack configuration"). Read by :func:`engine_preset`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

Props = Mapping[str, Any]
Check = Callable[[str, Props, str, Mapping[str, Any]], list[str]]

PROJECT = "platform"
RDS = "aws:rds/instance:Instance"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
LISTENER = "aws:lb/listener:Listener"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SECURITY_GROUP = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_TYPES = (INGRESS_RULE, SECURITY_GROUP_RULE, SECURITY_GROUP, DEFAULT_SECURITY_GROUP)
"""Every resource that can open a security group: the standalone rules of both APIs and inline ingress."""
ALB_COMPONENT = "platform:edge:Alb"
PREVIEW_EDGE_COMPONENT = "platform:edge:PreviewEdge"
"""A pull request's preview environment's listeners on the dev core's load balancer (components/core.py)."""
KMS_KEY = "aws:kms/key:Key"
SECRET = "aws:secretsmanager/secret:Secret"  # noqa: S105 - a resource type, not a password
ECR_REPOSITORY = "aws:ecr/repository:Repository"
STATE_TYPES = (KMS_KEY, REDIS, SECRET, ECR_REPOSITORY)
"""What holds prod state or the keys to it besides the database (which has its own rule): the
environment keys, the caches, the secrets, the image repositories."""

MANDATORY, ADVISORY = "mandatory", "advisory"
PROD = "prod"
PRESETS = ["dev", "staging", "prod"]
STACK_PRESET = "stackPreset"
"""Key the wrapper adds to a policy's config: the preset from the stack's configuration, if the CLI gave it."""
PROTECT = "resourceProtect"
"""Key the wrapper adds to a policy's config: the resource's Pulumi ``protect`` option. It is an option,
not an input, so it is not in ``props``; pulumi-policy hands it over as ``args.opts.protect``
(pulumi_policy/policy.py ``PolicyResourceOptions``), the program's transform as ``args.opts.protect``."""
PRESET_SCHEMA = {"type": "string", "enum": PRESETS, "description": "platform:preset of the stack (default: its name)"}

SECRET_NAME = re.compile(r"^(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|ECS_ENGINE_AUTH_DATA)$|(SECRET|PASSWORD|PASS|TOKEN|API_KEY|PRIVATE_KEY|DSN)$")
SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@|^(sk|rk)_(live|test)_|^AKIA[0-9A-Z]{16}$|^0x[0-9a-fA-F]{64}$|^xox[abp]-")


def stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::<types>::<name>`` -> ``<stack>``."""
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def in_alb(urn: str) -> bool:
    """Whether the resource is a child of the load balancer component (or of a preview environment's
    listeners on it)."""
    types = urn.split("::")[2] if urn.count("::") >= 3 else ""
    return bool({ALB_COMPONENT, PREVIEW_EDGE_COMPONENT} & set(types.split("$")))


def port(value: Any) -> str:
    """A port as people write it: the engine's numbers are floats (``443.0``)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def engine_preset(environ: Mapping[str, str] | None = None) -> str | None:
    """The stack's preset from the configuration the CLI hands the pack process (see the module doc).

    ``platform:preset``, or the stack's name when it is unset or empty (``Pulumi.yaml`` declares it with
    default ``""``), as ``stacks/config.py`` resolves it. ``None`` from a CLI older than v3.221.0.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("PULUMI_CONFIG")
    if not raw:
        return None
    try:
        values = json.loads(raw)
    except ValueError:
        return None
    project = environ.get("PULUMI_PROJECT") or PROJECT
    preset = values.get(f"{project}:preset") if isinstance(values, dict) else None
    return preset or environ.get("PULUMI_STACK") or None


def is_prod(config: Mapping[str, Any]) -> bool:
    """Production if either the policy config or the stack's configuration says preset ``prod``."""
    return PROD in (config.get("preset"), config.get(STACK_PRESET))


# ---------------------------------------------------------------- checks


def no_public_database(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ == RDS and props.get("publiclyAccessible"):
        return ["the database is publicly accessible; it must sit in isolated subnets only"]
    return []


def storage_encrypted(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ == RDS and props.get("storageEncrypted") is not True:
        return ["RDS storage is not encrypted (storageEncrypted)"]
    if type_ == REDIS and props.get("atRestEncryptionEnabled") is not True:
        return ["ElastiCache is not encrypted at rest (atRestEncryptionEnabled)"]
    return []


def redis_tls_and_auth(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ != REDIS:
        return []
    out = []
    if props.get("transitEncryptionEnabled") is not True:
        out.append("Redis without TLS in transit (transitEncryptionEnabled)")
    if not props.get("authToken"):
        out.append("Redis without an AUTH token")
    return out


def no_secret_in_plain_env(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ != TASK or not isinstance(props.get("containerDefinitions"), str):
        return []  # unknown during a preview until its inputs resolve
    out = []
    for container in json.loads(props["containerDefinitions"]):
        for variable in container.get("environment", []):
            name, value = variable.get("name", ""), str(variable.get("value", ""))
            if SECRET_NAME.search(name):
                out.append(f"container {container.get('name')}: {name} looks like a secret; pass it in 'secrets' (valueFrom)")
            elif SECRET_VALUE.search(value):
                out.append(f"container {container.get('name')}: the value of {name} looks like a credential; pass it in 'secrets'")
    return out


def finite_log_retention(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ == LOG_GROUP and not props.get("retentionInDays"):
        return ["log group keeps logs forever; set retentionInDays"]
    return []


def alb_serves_https(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ != LISTENER or props.get("protocol") != "HTTP":
        return []
    actions = props.get("defaultActions") or []
    redirects = any(a.get("type") == "redirect" and (a.get("redirect") or {}).get("protocol") == "HTTPS" for a in actions)
    return [] if redirects else [f"HTTP listener on port {port(props.get('port'))} serves traffic instead of redirecting to HTTPS"]


def prod_data_deletion_protection(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if not is_prod(config):
        return []
    if type_ == REDIS:
        return [] if props.get("finalSnapshotIdentifier") else ["production cache without a final snapshot (finalSnapshotIdentifier)"]
    if type_ != RDS:
        return []
    out = []
    if props.get("deletionProtection") is not True:
        out.append("production database without deletion protection")
    if props.get("skipFinalSnapshot") is True:
        out.append("production database skips its final snapshot")
    return out


def prod_state_protected(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    """Prod keys, caches, secrets and repositories carry Pulumi ``protect``: no ``pulumi destroy``, no
    replacement and no removal from the program deletes them until ``pulumi state unprotect``. Skipped
    when the caller does not know the option (``None``); the engine always passes it."""
    if type_ not in STATE_TYPES or not is_prod(config) or config.get(PROTECT) is not False:
        return []
    what = {KMS_KEY: "KMS key", REDIS: "ElastiCache replication group", SECRET: "secret", ECR_REPOSITORY: "ECR repository"}[type_]
    return [f"production {what} without Pulumi protect (preset security.protect_state)"]


def _is_world(cidr: Any) -> bool:
    return isinstance(cidr, str) and cidr.strip().endswith("/0")


def world_openings(type_: str, props: Props) -> Iterator[tuple[str, str, Any, Any]]:
    """``(cidr, protocol, fromPort, toPort)`` of every ingress entry of the resource that admits any
    address (a ``/0``), whichever of the four resource types declares it."""
    if type_ == INGRESS_RULE:  # aws.vpc.SecurityGroupIngressRule: one CIDR per rule
        for key in ("cidrIpv4", "cidrIpv6"):
            if _is_world(props.get(key)):
                yield props[key], str(props.get("ipProtocol", "")), props.get("fromPort"), props.get("toPort")
        return
    if type_ == SECURITY_GROUP_RULE:  # aws.ec2.SecurityGroupRule: type ingress or egress
        entries = [props] if props.get("type") == "ingress" else []
    elif type_ in (SECURITY_GROUP, DEFAULT_SECURITY_GROUP):  # inline ingress blocks
        entries = list(props.get("ingress") or [])
    else:
        return
    for entry in entries:
        for cidr in [*(entry.get("cidrBlocks") or []), *(entry.get("ipv6CidrBlocks") or [])]:
            if _is_world(cidr):
                yield cidr, str(entry.get("protocol", "")), entry.get("fromPort"), entry.get("toPort")


def world_ingress_only_on_alb(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    low, high = (config.get("allowedPortRange") or [443, 443])[:2]
    out = []
    for cidr, protocol, from_port, to_port in world_openings(type_, props):
        all_traffic = protocol in ("-1", "all")
        if all_traffic or from_port is None:
            ports = "all ports"
        else:
            ports = f"{protocol} {port(from_port)}" + ("" if from_port == to_port else f"-{port(to_port)}")
        if not in_alb(urn):
            out.append(f"only the load balancer's security group may admit the internet ({cidr} on {ports})")
            continue
        tcp = protocol in ("tcp", "6")
        web = tcp and from_port is not None and from_port == to_port and from_port in (80, 443)
        in_range = tcp and from_port is not None and to_port is not None and low <= from_port <= to_port <= high
        if all_traffic or not (web or in_range):
            out.append(f"the internet may reach the load balancer on tcp 80 and 443 only, not {ports} ({cidr})")
    return out


def ecs_circuit_breaker(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ != SERVICE:
        return []
    breaker = props.get("deploymentCircuitBreaker") or {}
    if breaker.get("enable") is not True or breaker.get("rollback") is not True:
        return ["ECS service without a deployment circuit breaker that rolls back"]
    return []


def ecs_read_only_root(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ != TASK or not isinstance(props.get("containerDefinitions"), str):
        return []
    writable = [c.get("name") for c in json.loads(props["containerDefinitions"]) if c.get("readonlyRootFilesystem") is not True]
    return [f"containers with a writable root filesystem: {', '.join(writable)} (fine with ECS Exec in dev)"] if writable else []


def prod_multi_az(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ == RDS and is_prod(config) and props.get("multiAz") is not True:
        return ["production database is single-AZ"]
    return []


# ---------------------------------------------------------------- the pack


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Check
    level: str
    """``mandatory`` or ``advisory`` (pulumi-policy's ``EnforcementLevel`` values)."""
    types: tuple[str, ...]
    config: Mapping[str, Any] | None = None
    required: tuple[str, ...] = ()


PRESET_CONFIG = {"preset": PRESET_SCHEMA}

RULES = [
    Rule("no-public-database", "Databases are never publicly accessible.", no_public_database, MANDATORY, (RDS,)),
    Rule("storage-encrypted", "RDS and ElastiCache storage is encrypted.", storage_encrypted, MANDATORY, (RDS, REDIS)),
    Rule("redis-tls-and-auth", "Redis uses TLS in transit and an AUTH token.", redis_tls_and_auth, MANDATORY, (REDIS,)),
    Rule("no-secret-in-plain-env", "No secret-looking name or value in a container's plain environment.", no_secret_in_plain_env, MANDATORY, (TASK,)),
    Rule("finite-log-retention", "Every log group has a retention.", finite_log_retention, MANDATORY, (LOG_GROUP,)),
    Rule("alb-serves-https", "HTTP listeners redirect to HTTPS.", alb_serves_https, MANDATORY, (LISTENER,)),
    Rule(
        "prod-data-deletion-protection",
        "Production databases (preset prod) have deletion protection and a final snapshot; production caches a final snapshot.",
        prod_data_deletion_protection,
        MANDATORY,
        (RDS, REDIS),
        PRESET_CONFIG,
        ("preset",),
    ),
    Rule(
        "prod-state-protected",
        "Production KMS keys, caches, secrets and ECR repositories (preset prod) have Pulumi protect.",
        prod_state_protected,
        MANDATORY,
        STATE_TYPES,
        PRESET_CONFIG,
        ("preset",),
    ),
    Rule(
        "world-ingress-only-on-alb",
        "Only the load balancer is open to the internet, on 80 and 443.",
        world_ingress_only_on_alb,
        MANDATORY,
        INGRESS_TYPES,
        {"allowedPortRange": {"type": "array", "items": {"type": "integer"}, "default": [443, 443]}},
    ),
    Rule("ecs-circuit-breaker", "Every ECS service rolls back a failed deployment.", ecs_circuit_breaker, MANDATORY, (SERVICE,)),
    Rule("ecs-read-only-root", "Containers run with a read-only root filesystem.", ecs_read_only_root, ADVISORY, (TASK,)),
    Rule("prod-multi-az", "Production databases (preset prod) are Multi-AZ.", prod_multi_az, ADVISORY, (RDS,), PRESET_CONFIG, ("preset",)),
]


def _validator(rule: Rule) -> Callable[[Any, Any], None]:
    def validate(args: Any, report_violation: Any) -> None:
        if args.resource_type not in rule.types:
            return
        protect = args.opts.protect if args.opts is not None else None
        config = {**args.get_config(), STACK_PRESET: engine_preset(), PROTECT: protect}
        for message in rule.check(args.resource_type, args.props, args.urn, config):
            report_violation(message, None)

    return validate


def policies() -> list[Any]:
    """The pulumi-policy ``ResourceValidationPolicy`` of every rule (imports pulumi-policy)."""
    from pulumi_policy import EnforcementLevel, PolicyConfigSchema, ResourceValidationPolicy

    return [
        ResourceValidationPolicy(
            name=rule.name,
            description=rule.description,
            validate=_validator(rule),
            enforcement_level=EnforcementLevel(rule.level),
            config_schema=PolicyConfigSchema(properties=dict(rule.config), required=list(rule.required) or None) if rule.config else None,
        )
        for rule in RULES
    ]
