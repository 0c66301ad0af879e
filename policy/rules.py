"""The policies, as pure checks plus their pulumi-policy wrappers.

Each check takes ``(resource_type, props, urn, config)`` (``props`` as the engine has them: camelCase
inputs) and returns the violations as sentences. The tests run every check against resources from the
offline plans of dev, staging and prod, compliant and broken. ``__main__.py`` only serves
:data:`POLICIES`; building a ``PolicyPack`` starts a server, so nothing else does it.

This module imports nothing from the program: the CLI runs the pack from its own virtualenv.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import EnforcementLevel, PolicyConfigSchema, ReportViolation, ResourceValidationArgs, ResourceValidationPolicy

Props = Mapping[str, Any]
Check = Callable[[str, Props, str, Mapping[str, Any]], list[str]]

RDS = "aws:rds/instance:Instance"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
LISTENER = "aws:lb/listener:Listener"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
ALB_COMPONENT = "platform:edge:Alb"
WORLD = ("0.0.0.0/0", "::/0")
PROTECTED_STACKS = ["prod"]
PROTECTED_STACKS_SCHEMA = {"type": "array", "items": {"type": "string"}, "default": PROTECTED_STACKS}
"""Config of the prod-only policies: which stacks hold production data."""

SECRET_NAME = re.compile(r"^(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|ECS_ENGINE_AUTH_DATA)$|(SECRET|PASSWORD|PASS|TOKEN|API_KEY|PRIVATE_KEY|DSN)$")
SECRET_VALUE = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----|://[^/\s:@]+:[^/\s@]+@|^(sk|rk)_(live|test)_|^AKIA[0-9A-Z]{16}$|^0x[0-9a-fA-F]{64}$|^xox[abp]-")


def stack_of(urn: str) -> str:
    """``urn:pulumi:<stack>::<project>::<types>::<name>`` -> ``<stack>``."""
    return urn.split("::", 1)[0].removeprefix("urn:pulumi:")


def in_alb(urn: str) -> bool:
    """Whether the resource is a child of the load balancer component."""
    types = urn.split("::")[2] if urn.count("::") >= 3 else ""
    return ALB_COMPONENT in types.split("$")


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
    return [] if redirects else [f"HTTP listener on port {props.get('port')} serves traffic instead of redirecting to HTTPS"]


def prod_data_deletion_protection(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    if type_ != RDS or stack_of(urn) not in config.get("protectedStacks", PROTECTED_STACKS):
        return []
    out = []
    if props.get("deletionProtection") is not True:
        out.append("production database without deletion protection")
    if props.get("skipFinalSnapshot") is True:
        out.append("production database skips its final snapshot")
    return out


def world_ingress_only_on_alb(type_: str, props: Props, urn: str, config: Mapping[str, Any]) -> list[str]:
    low, high = (config.get("allowedPortRange") or [443, 443])[:2]

    def allowed(port: Any) -> bool:
        return port in (80, 443) or (isinstance(port, int | float) and low <= port <= high)

    if type_ == INGRESS_RULE and (props.get("cidrIpv4") in WORLD or props.get("cidrIpv6") in WORLD):
        if not in_alb(urn):
            return ["only the load balancer's security group may admit the internet"]
        if props.get("fromPort") != props.get("toPort") or not allowed(props.get("fromPort")):
            return [f"the internet may reach the load balancer on 80 and 443 only, not {props.get('fromPort')}-{props.get('toPort')}"]
    if type_ == SECURITY_GROUP:
        for rule in props.get("ingress") or []:
            if set(rule.get("cidrBlocks") or []) & set(WORLD) or set(rule.get("ipv6CidrBlocks") or []) & set(WORLD):
                return ["inline ingress open to the internet; the load balancer's rules are separate resources"]
    return []


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
    if type_ == RDS and stack_of(urn) in config.get("protectedStacks", PROTECTED_STACKS) and props.get("multiAz") is not True:
        return ["production database is single-AZ"]
    return []


# ---------------------------------------------------------------- the pack


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    check: Check
    level: EnforcementLevel
    types: tuple[str, ...]
    config: Mapping[str, Any] | None = None


RULES = [
    Rule("no-public-database", "Databases are never publicly accessible.", no_public_database, EnforcementLevel.MANDATORY, (RDS,)),
    Rule("storage-encrypted", "RDS and ElastiCache storage is encrypted.", storage_encrypted, EnforcementLevel.MANDATORY, (RDS, REDIS)),
    Rule("redis-tls-and-auth", "Redis uses TLS in transit and an AUTH token.", redis_tls_and_auth, EnforcementLevel.MANDATORY, (REDIS,)),
    Rule(
        "no-secret-in-plain-env",
        "No secret-looking name or value in a container's plain environment.",
        no_secret_in_plain_env,
        EnforcementLevel.MANDATORY,
        (TASK,),
    ),
    Rule("finite-log-retention", "Every log group has a retention.", finite_log_retention, EnforcementLevel.MANDATORY, (LOG_GROUP,)),
    Rule("alb-serves-https", "HTTP listeners redirect to HTTPS.", alb_serves_https, EnforcementLevel.MANDATORY, (LISTENER,)),
    Rule(
        "prod-data-deletion-protection",
        "Production databases have deletion protection and a final snapshot.",
        prod_data_deletion_protection,
        EnforcementLevel.MANDATORY,
        (RDS,),
        {"protectedStacks": PROTECTED_STACKS_SCHEMA},
    ),
    Rule(
        "world-ingress-only-on-alb",
        "Only the load balancer is open to the internet, on 80 and 443.",
        world_ingress_only_on_alb,
        EnforcementLevel.MANDATORY,
        (INGRESS_RULE, SECURITY_GROUP),
        {"allowedPortRange": {"type": "array", "items": {"type": "integer"}, "default": [443, 443]}},
    ),
    Rule("ecs-circuit-breaker", "Every ECS service rolls back a failed deployment.", ecs_circuit_breaker, EnforcementLevel.MANDATORY, (SERVICE,)),
    Rule("ecs-read-only-root", "Containers run with a read-only root filesystem.", ecs_read_only_root, EnforcementLevel.ADVISORY, (TASK,)),
    Rule(
        "prod-multi-az",
        "Production databases are Multi-AZ.",
        prod_multi_az,
        EnforcementLevel.ADVISORY,
        (RDS,),
        {"protectedStacks": PROTECTED_STACKS_SCHEMA},
    ),
]


def _validator(rule: Rule) -> Callable[[ResourceValidationArgs, ReportViolation], None]:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in rule.types:
            return
        for message in rule.check(args.resource_type, args.props, args.urn, args.get_config()):
            report_violation(message, None)

    return validate


POLICIES = [
    ResourceValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=_validator(rule),
        enforcement_level=rule.level,
        config_schema=PolicyConfigSchema(properties=dict(rule.config)) if rule.config else None,
    )
    for rule in RULES
]
