"""The policy pack, offline: every policy against compliant and broken resources from the real plans."""

from __future__ import annotations

import copy
import importlib.util
import json
import sys

import pytest
from pulumi_policy import EnforcementLevel, ResourceValidationArgs

from tests.conftest import ROOT

_spec = importlib.util.spec_from_file_location("policy_rules", ROOT / "policy" / "rules.py")
rules = importlib.util.module_from_spec(_spec)
sys.modules["policy_rules"] = rules  # dataclasses look their module up while the module loads
_spec.loader.exec_module(rules)

BY_NAME = {rule.name: rule for rule in rules.RULES}
POLICY_BY_NAME = {p.name: p for p in rules.POLICIES}


def stack_config(stack: str) -> dict:
    return json.loads((ROOT / "policy" / "config" / f"{stack}.json").read_text())


def rule_config(rule, stack: str) -> dict:
    """What the CLI hands the policy: schema defaults, overridden by the stack's config file."""
    defaults = {k: v["default"] for k, v in (rule.config or {}).items()}
    given = {k: v for k, v in stack_config(stack).get(rule.name, {}).items() if k != "enforcementLevel"}
    return {**defaults, **given}


def level(rule, stack: str) -> str:
    return stack_config(stack).get(rule.name, {}).get("enforcementLevel", rule.level.value)


def violations(name: str, resource, stack: str = "prod", inputs: dict | None = None) -> list[str]:
    """Run one policy through its real pulumi-policy wrapper, the way the engine calls it."""
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type=resource.type,
        props=inputs if inputs is not None else resource.inputs,
        urn=resource.urn,
        name=resource.name,
        opts=None,
        provider=None,
        config=rule_config(BY_NAME[name], stack),
    )
    POLICY_BY_NAME[name].validate(args, lambda message, urn=None: found.append(message))
    return found


def first(cap, type_: str, name_part: str = ""):
    return next(r for r in cap.of_type(type_) if name_part in r.name)


def broken(resource, **changes) -> dict:
    inputs = copy.deepcopy(resource.inputs)
    for key, value in changes.items():
        if value is None:
            inputs.pop(key, None)
        else:
            inputs[key] = value
    return inputs


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_each_stack_passes_every_mandatory_policy_with_its_config(plans, stack):
    cap = plans[stack]
    failures = []
    for rule in rules.RULES:
        if level(rule, stack) != EnforcementLevel.MANDATORY.value:
            continue
        for resource in cap.resources:
            if resource.custom and resource.type in rule.types:
                failures += [f"{rule.name} {resource.name}: {m}" for m in violations(rule.name, resource, stack)]
    assert failures == []


def test_dev_config_only_relaxes_what_a_domainless_stack_needs():
    assert stack_config("dev") == {"alb-serves-https": {"enforcementLevel": "advisory"}, "world-ingress-only-on-alb": {"allowedPortRange": [8000, 8999]}}
    assert stack_config("prod") == {} and stack_config("staging") == {}
    assert all(rule.name in BY_NAME for stack in ("dev", "staging", "prod") for rule_name in stack_config(stack) for rule in [BY_NAME[rule_name]])


def test_no_public_database(plans):
    db = first(plans["prod"], rules.RDS)
    assert violations("no-public-database", db) == []
    assert violations("no-public-database", db, inputs=broken(db, publiclyAccessible=True))


def test_storage_encrypted(plans):
    db, cache = first(plans["prod"], rules.RDS), first(plans["prod"], rules.REDIS)
    assert violations("storage-encrypted", db) == violations("storage-encrypted", cache) == []
    assert violations("storage-encrypted", db, inputs=broken(db, storageEncrypted=False))
    assert violations("storage-encrypted", cache, inputs=broken(cache, atRestEncryptionEnabled=None))


def test_redis_tls_and_auth(plans):
    cache = first(plans["prod"], rules.REDIS)
    assert violations("redis-tls-and-auth", cache) == []
    assert violations("redis-tls-and-auth", cache, inputs=broken(cache, transitEncryptionEnabled=False))
    assert violations("redis-tls-and-auth", cache, inputs=broken(cache, authToken=None))


def test_no_secret_in_plain_env(plans):
    task = first(plans["prod"], rules.TASK, "offerhub-api")
    assert violations("no-secret-in-plain-env", task) == []
    for name, value in (("AIRTM_API_KEY", "x"), ("DATABASE", "postgresql://app:hunter2@db:5432/x"), ("WALLET", "0x" + "ab" * 32)):
        defs = json.loads(task.inputs["containerDefinitions"])
        defs[-1]["environment"].append({"name": name, "value": value})
        assert violations("no-secret-in-plain-env", task, inputs=broken(task, containerDefinitions=json.dumps(defs))), name


def test_finite_log_retention(plans):
    group = first(plans["dev"], rules.LOG_GROUP)
    assert violations("finite-log-retention", group) == []
    assert violations("finite-log-retention", group, inputs=broken(group, retentionInDays=None))


def test_alb_serves_https(plans):
    http = next(r for r in plans["prod"].of_type(rules.LISTENER) if r.inputs["port"] == 80)
    assert violations("alb-serves-https", http) == []
    forward = [{"type": "fixed-response", "fixedResponse": {"statusCode": "200", "contentType": "text/plain"}}]
    assert violations("alb-serves-https", http, inputs=broken(http, defaultActions=forward))
    # dev serves plain HTTP by design (no domain): a violation, reported as advisory there
    assert violations("alb-serves-https", first(plans["dev"], rules.LISTENER), stack="dev")
    assert level(BY_NAME["alb-serves-https"], "dev") == "advisory" and level(BY_NAME["alb-serves-https"], "prod") == "mandatory"


def test_prod_data_deletion_protection(plans):
    db = first(plans["prod"], rules.RDS)
    assert violations("prod-data-deletion-protection", db) == []
    assert violations("prod-data-deletion-protection", db, inputs=broken(db, deletionProtection=False))
    assert violations("prod-data-deletion-protection", db, inputs=broken(db, skipFinalSnapshot=True))
    assert violations("prod-data-deletion-protection", first(plans["dev"], rules.RDS), stack="dev") == []  # dev may be destroyed


def test_world_ingress_only_on_alb(plans):
    prod = plans["prod"]
    https = next(r for r in prod.of_type(rules.INGRESS_RULE) if r.name == "alb-https-in")
    assert violations("world-ingress-only-on-alb", https) == []
    assert violations("world-ingress-only-on-alb", https, inputs=broken(https, fromPort=22, toPort=22))
    db_rule = next(r for r in prod.of_type(rules.INGRESS_RULE) if r.name.endswith("-to-db"))
    opened = broken(db_rule, referencedSecurityGroupId=None, cidrIpv4="0.0.0.0/0")
    assert violations("world-ingress-only-on-alb", db_rule, inputs=opened) == ["only the load balancer's security group may admit the internet"]
    sg = first(prod, rules.SECURITY_GROUP, "-db-sg")
    inline = broken(sg, ingress=[{"fromPort": 5432, "toPort": 5432, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]}])
    assert violations("world-ingress-only-on-alb", sg, inputs=inline)
    # dev's per-service HTTP ports pass only with dev's config
    dev_port = next(r for r in plans["dev"].of_type(rules.INGRESS_RULE) if r.name.startswith("alb-http-"))
    assert violations("world-ingress-only-on-alb", dev_port, stack="dev") == []
    assert violations("world-ingress-only-on-alb", dev_port, stack="prod")


def test_ecs_circuit_breaker(plans):
    service = first(plans["prod"], rules.SERVICE)
    assert violations("ecs-circuit-breaker", service) == []
    assert violations("ecs-circuit-breaker", service, inputs=broken(service, deploymentCircuitBreaker={"enable": True, "rollback": False}))


def test_advisory_policies(plans):
    assert BY_NAME["ecs-read-only-root"].level is EnforcementLevel.ADVISORY and BY_NAME["prod-multi-az"].level is EnforcementLevel.ADVISORY
    task = first(plans["prod"], rules.TASK)
    assert violations("ecs-read-only-root", task) == []
    assert violations("ecs-read-only-root", first(plans["dev"], rules.TASK), stack="dev")  # dev trades it for ECS Exec
    db = first(plans["prod"], rules.RDS)
    assert violations("prod-multi-az", db) == []
    assert violations("prod-multi-az", db, inputs=broken(db, multiAz=False))


def test_pack_entry_point_only_serves_the_policies():
    source = (ROOT / "policy" / "__main__.py").read_text()
    assert "PolicyPack(name=" in source and "from rules import POLICIES" in source
    assert len(rules.POLICIES) == len(rules.RULES) == len({r.name for r in rules.RULES})
