"""The policy pack, offline: every policy against compliant and broken resources from the real plans;
how CI runs it (its virtualenv) and how the program enforces the mandatory rules without it."""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jsonschema
import pulumi
import pytest
import yaml
from pulumi.output import Unknown
from pulumi.resource import DependencyResource
from pulumi.runtime import rpc
from pulumi.runtime._callbacks import _CallbackServicer
from pulumi.runtime.proto import resource_pb2
from pulumi_policy import EnforcementLevel, PolicyCustomTimeouts, PolicyResourceOptions, ResourceValidationArgs

from components.platform import run_stack
from policy import local, rules
from tests.conftest import ROOT
from tools import harness

BY_NAME = {rule.name: rule for rule in rules.RULES}
POLICIES = rules.policies()
POLICY_BY_NAME = {p.name: p for p in POLICIES}
WORKFLOWS = ROOT / ".github" / "workflows"
PACK = ROOT / "policy"


@pytest.fixture(autouse=True)
def _no_engine_config(monkeypatch):
    """Outside the CLI there is no stack configuration in the environment (see ``rules.engine_preset``)."""
    for name in ("PULUMI_CONFIG", "PULUMI_STACK", "PULUMI_PROJECT"):
        monkeypatch.delenv(name, raising=False)


def stack_config(stack: str) -> dict:
    return json.loads((PACK / "config" / f"{stack}.json").read_text())


def rule_config(rule, stack: str) -> dict:
    """What the CLI hands the policy: schema defaults, overridden by the stack's config file."""
    defaults = {k: v["default"] for k, v in (rule.config or {}).items() if "default" in v}
    given = {k: v for k, v in stack_config(stack).get(rule.name, {}).items() if k != "enforcementLevel"}
    return {**defaults, **given}


def level(rule, stack: str) -> str:
    return stack_config(stack).get(rule.name, {}).get("enforcementLevel", rule.level)


def options(protect: bool) -> PolicyResourceOptions:
    return PolicyResourceOptions(protect, [], None, [], PolicyCustomTimeouts(0, 0, 0), [])


def violations(
    name: str, resource, stack: str = "prod", inputs: dict | None = None, urn: str | None = None, config: dict | None = None, protect: bool | None = None
) -> list[str]:
    """Run one policy through its real pulumi-policy wrapper, the way the engine calls it (with the
    resource's options: ``protect`` as registered unless given)."""
    found: list[str] = []
    args = ResourceValidationArgs(
        resource_type=resource.type,
        props=inputs if inputs is not None else resource.inputs,
        urn=urn or resource.urn,
        name=resource.name,
        opts=options(resource.options.get("protect", False) if protect is None else protect),
        provider=None,
        config=config if config is not None else rule_config(BY_NAME[name], stack),
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


def effective_preset(stack: str) -> str:
    """``platform:preset`` of ``Pulumi.<stack>.yaml``, default the stack name (stacks/config.py)."""
    config = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())["config"]
    return config.get("platform:preset") or stack


# ---------------------------------------------------------------- each policy


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
    preset_only = ("prod-data-deletion-protection", "prod-multi-az", "prod-state-protected")
    relaxed = {k: v for k, v in stack_config("dev").items() if k not in preset_only}
    assert relaxed == {"alb-serves-https": {"enforcementLevel": "advisory"}, "world-ingress-only-on-alb": {"allowedPortRange": [8000, 8999]}}
    for stack in ("staging", "prod", "staging-eks"):
        assert set(stack_config(stack)) == set(preset_only), stack
    assert all(name in BY_NAME for stack in ("dev", "staging", "prod") for name in stack_config(stack))


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


def test_messages_print_ports_as_integers(plans):
    # the engine's numbers are floats: 80.0, 22.0
    http = next(r for r in plans["prod"].of_type(rules.LISTENER) if r.inputs["port"] == 80)
    forward = [{"type": "fixed-response", "fixedResponse": {"statusCode": "200", "contentType": "text/plain"}}]
    assert violations("alb-serves-https", http, inputs=broken(http, port=80.0, defaultActions=forward)) == [
        "HTTP listener on port 80 serves traffic instead of redirecting to HTTPS"
    ]
    https = next(r for r in plans["prod"].of_type(rules.INGRESS_RULE) if r.name == "alb-https-in")
    found = violations("world-ingress-only-on-alb", https, inputs=broken(https, fromPort=22.0, toPort=23.0))
    assert found == ["the internet may reach the load balancer on tcp 80 and 443 only, not tcp 22-23 (0.0.0.0/0)"]
    assert not any(f"{n}.0" in m for n in (22, 23) for m in found)


def test_prod_data_deletion_protection(plans):
    db = first(plans["prod"], rules.RDS)
    assert violations("prod-data-deletion-protection", db) == []
    assert violations("prod-data-deletion-protection", db, inputs=broken(db, deletionProtection=False))
    assert violations("prod-data-deletion-protection", db, inputs=broken(db, skipFinalSnapshot=True))
    assert violations("prod-data-deletion-protection", first(plans["dev"], rules.RDS), stack="dev") == []  # dev may be destroyed
    # issue 15: a prod cache's delete (a replacement included) keeps a final snapshot
    cache = first(plans["prod"], rules.REDIS)
    assert violations("prod-data-deletion-protection", cache) == []
    assert violations("prod-data-deletion-protection", cache, inputs=broken(cache, finalSnapshotIdentifier=None)) == [
        "production cache without a final snapshot (finalSnapshotIdentifier)"
    ]
    assert violations("prod-data-deletion-protection", first(plans["dev"], rules.REDIS), stack="dev") == []


def test_prod_state_protected(plans):
    """Issue 14 part 5: prod's keys, caches, secrets and repositories carry ``protect``; the rule reads the
    option pulumi-policy hands over (``args.opts.protect``), not an input."""
    prod = plans["prod"]
    held = [r for r in prod.resources if r.type in rules.STATE_TYPES]
    assert {r.type for r in held} >= {rules.KMS_KEY, rules.REDIS, rules.SECRET}
    for resource in held:
        assert resource.options["protect"], resource.name
        assert violations("prod-state-protected", resource) == []
    key, cache, secret = first(prod, rules.KMS_KEY), first(prod, rules.REDIS), first(prod, rules.SECRET)
    assert violations("prod-state-protected", key, protect=False) == ["production KMS key without Pulumi protect (preset security.protect_state)"]
    assert violations("prod-state-protected", cache, protect=False) == [
        "production ElastiCache replication group without Pulumi protect (preset security.protect_state)"
    ]
    assert violations("prod-state-protected", secret, protect=False) == ["production secret without Pulumi protect (preset security.protect_state)"]
    # staging is not held to it; the local check sees the option the transform passes
    assert violations("prod-state-protected", first(plans["staging"], rules.KMS_KEY), stack="staging", protect=False) == []
    config = {"stack": "prod-eu", "preset": "prod"}
    assert local.check_resource(cache.type, cache.inputs, config, urn=cache.urn, protect=True) == []
    assert local.check_resource(cache.type, cache.inputs, config, urn=cache.urn, protect=False) == [
        "prod-state-protected: production ElastiCache replication group without Pulumi protect (preset security.protect_state)"
    ]


def test_the_transform_reads_the_protect_option(plans):
    key = first(plans["prod"], rules.KMS_KEY)
    transform = local.transform("prod", "prod")

    async def call(protect: bool) -> None:
        args = pulumi.ResourceTransformArgs(custom=True, type_=key.type, name=key.name, props=key.inputs, opts=pulumi.ResourceOptions(protect=protect))
        await transform(args)

    asyncio.run(call(True))
    with pytest.raises(pulumi.RunError, match="prod-state-protected: production KMS key without Pulumi protect"):
        asyncio.run(call(False))


def test_world_ingress_only_on_alb(plans):
    prod = plans["prod"]
    https = next(r for r in prod.of_type(rules.INGRESS_RULE) if r.name == "alb-https-in")
    assert violations("world-ingress-only-on-alb", https) == []
    assert violations("world-ingress-only-on-alb", https, inputs=broken(https, fromPort=22, toPort=22))
    db_rule = next(r for r in prod.of_type(rules.INGRESS_RULE) if r.name.endswith("-to-db"))
    opened = broken(db_rule, referencedSecurityGroupId=None, cidrIpv4="0.0.0.0/0")
    assert violations("world-ingress-only-on-alb", db_rule, inputs=opened) == [
        "only the load balancer's security group may admit the internet (0.0.0.0/0 on tcp 5432)"
    ]
    sg = first(prod, rules.SECURITY_GROUP, "-db-sg")
    inline = broken(sg, ingress=[{"fromPort": 5432, "toPort": 5432, "protocol": "tcp", "cidrBlocks": ["0.0.0.0/0"]}])
    assert violations("world-ingress-only-on-alb", sg, inputs=inline)
    # dev's per-service HTTP ports pass only with dev's config
    dev_port = next(r for r in plans["dev"].of_type(rules.INGRESS_RULE) if r.name.startswith("alb-http-"))
    assert violations("world-ingress-only-on-alb", dev_port, stack="dev") == []
    assert violations("world-ingress-only-on-alb", dev_port, stack="prod")


def test_security_group_rules_of_every_resource_type_are_checked(plans):
    """Both rule APIs (aws.ec2.SecurityGroupRule, aws.vpc.SecurityGroupIngressRule) and inline ingress
    of aws.ec2.SecurityGroup and aws.ec2.DefaultSecurityGroup, IPv4 and IPv6, all-traffic rules."""
    prod = plans["prod"]
    sg = first(prod, rules.SECURITY_GROUP, "-db-sg")
    alb_rule = next(r for r in prod.of_type(rules.INGRESS_RULE) if r.name == "alb-https-in")
    app_urn = sg.urn  # a security group outside the load balancer
    alb_urn = alb_rule.urn  # a child of the load balancer component

    def check(type_: str, props: dict, urn: str) -> list[str]:
        resource = harness.Resource(urn, type_, "x", "", True, props, [], {}, {})
        return violations("world-ingress-only-on-alb", resource, inputs=props)

    ssh = {"type": "ingress", "securityGroupId": "sg-1", "protocol": "tcp", "fromPort": 22.0, "toPort": 22.0, "cidrBlocks": ["0.0.0.0/0"]}
    assert check(rules.SECURITY_GROUP_RULE, ssh, app_urn) == ["only the load balancer's security group may admit the internet (0.0.0.0/0 on tcp 22)"]
    assert check(rules.SECURITY_GROUP_RULE, {**ssh, "type": "egress"}, app_urn) == []
    assert check(rules.SECURITY_GROUP_RULE, {**ssh, "cidrBlocks": ["10.0.0.0/16"]}, app_urn) == []
    v6 = {**ssh, "cidrBlocks": [], "ipv6CidrBlocks": ["::/0"]}
    assert check(rules.SECURITY_GROUP_RULE, v6, app_urn) == ["only the load balancer's security group may admit the internet (::/0 on tcp 22)"]
    https_rule = {**ssh, "fromPort": 443.0, "toPort": 443.0}
    assert check(rules.SECURITY_GROUP_RULE, https_rule, alb_urn) == []  # the load balancer, on 443
    everything = {**ssh, "protocol": "-1", "fromPort": 0.0, "toPort": 0.0}
    assert check(rules.SECURITY_GROUP_RULE, everything, alb_urn) == [
        "the internet may reach the load balancer on tcp 80 and 443 only, not all ports (0.0.0.0/0)"
    ]
    vpc_all = {"securityGroupId": "sg-1", "ipProtocol": "-1", "cidrIpv6": "::/0"}
    assert check(rules.INGRESS_RULE, vpc_all, app_urn) == ["only the load balancer's security group may admit the internet (::/0 on all ports)"]
    inline = {"ingress": [{"protocol": "tcp", "fromPort": 443.0, "toPort": 443.0, "cidrBlocks": ["0.0.0.0/0"]}]}
    assert check(rules.DEFAULT_SECURITY_GROUP, inline, app_urn)
    assert check(rules.SECURITY_GROUP, inline, alb_urn) == []
    assert set(rules.INGRESS_TYPES) <= set(BY_NAME["world-ingress-only-on-alb"].types)


def test_ecs_circuit_breaker(plans):
    service = first(plans["prod"], rules.SERVICE)
    assert violations("ecs-circuit-breaker", service) == []
    assert violations("ecs-circuit-breaker", service, inputs=broken(service, deploymentCircuitBreaker={"enable": True, "rollback": False}))


def test_advisory_policies(plans):
    assert BY_NAME["ecs-read-only-root"].level == "advisory" and BY_NAME["prod-multi-az"].level == "advisory"
    assert POLICY_BY_NAME["prod-multi-az"].enforcement_level is EnforcementLevel.ADVISORY
    task = first(plans["prod"], rules.TASK)
    assert violations("ecs-read-only-root", task) == []
    assert violations("ecs-read-only-root", first(plans["dev"], rules.TASK), stack="dev")  # dev trades it for ECS Exec
    db = first(plans["prod"], rules.RDS)
    assert violations("prod-multi-az", db) == []
    assert violations("prod-multi-az", db, inputs=broken(db, multiAz=False))


# ---------------------------------------------------------------- "prod" is the preset


def test_prod_follows_the_preset_not_the_stack_name(plans, monkeypatch):
    db = first(plans["prod"], rules.RDS)
    unprotected = broken(db, deletionProtection=False, multiAz=False)
    prod_eu = db.urn.replace("urn:pulumi:prod::", "urn:pulumi:prod-eu::")
    # a stack named prod-eu whose policy config says preset prod
    for name in ("prod-data-deletion-protection", "prod-multi-az"):
        assert violations(name, db, inputs=unprotected, urn=prod_eu, config={"preset": "prod"}), name
        # a stack named prod whose preset is staging is not production
        assert violations(name, db, inputs=unprotected, config={"preset": "staging"}) == [], name
    # the stack's own configuration, as the CLI gives the pack process, wins when it is stricter
    monkeypatch.setenv("PULUMI_STACK", "prod-eu")
    monkeypatch.setenv("PULUMI_PROJECT", "platform")
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"platform:preset": "prod", "aws:region": "eu-west-1"}))
    assert violations("prod-data-deletion-protection", db, inputs=unprotected, urn=prod_eu, config={"preset": "dev"})
    # no platform:preset in the stack: the preset is the stack's name (stacks/config.py)
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({"platform:preset": ""}))
    assert violations("prod-data-deletion-protection", db, inputs=unprotected, urn=prod_eu, config={"preset": "dev"}) == []
    monkeypatch.setenv("PULUMI_STACK", "prod")
    assert violations("prod-data-deletion-protection", db, inputs=unprotected, config={"preset": "dev"})


def test_engine_preset_reads_the_stack_configuration_the_cli_passes():
    assert rules.engine_preset({}) is None  # a CLI before v3.221.0
    env = {"PULUMI_STACK": "prod-eu", "PULUMI_PROJECT": "platform", "PULUMI_CONFIG": '{"platform:preset": "prod"}'}
    assert rules.engine_preset(env) == "prod"
    assert rules.engine_preset({**env, "PULUMI_CONFIG": "{}"}) == "prod-eu"
    assert rules.engine_preset({**env, "PULUMI_CONFIG": "not json"}) is None


def validate_config(stack: str) -> list[str]:
    """What the engine does with ``--policy-pack-config``: every policy's schema against its defaults plus
    the file (pulumi/pulumi pkg/resource/analyzer/config.go ``ReconcilePolicyPackConfig``)."""
    errors = []
    given = stack_config(stack)
    for policy, rule in zip(POLICIES, rules.RULES, strict=True):
        if policy.config_schema is None:
            continue
        schema = {"type": "object", "properties": policy.config_schema.properties}
        if policy.config_schema.required:
            schema["required"] = policy.config_schema.required
        config = {**{k: v["default"] for k, v in (rule.config or {}).items() if "default" in v}}
        config.update({k: v for k, v in given.get(rule.name, {}).items() if k != "enforcementLevel"})
        errors += [f"{rule.name}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    return errors


def test_every_stack_file_has_a_policy_config_with_its_preset(tmp_path):
    """A stack cannot escape the prod rules by its name: the preset is required (a config without it is
    refused by the engine) and each stack file's config names the stack's preset."""
    stacks = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in ROOT.glob("Pulumi.*.yaml"))
    assert {"dev", "staging", "prod", "staging-eks"} <= set(stacks)
    for stack in stacks:
        assert (PACK / "config" / f"{stack}.json").exists(), f"policy/config/{stack}.json is missing"
        assert validate_config(stack) == [], stack
        for name in ("prod-data-deletion-protection", "prod-multi-az"):
            assert stack_config(stack)[name]["preset"] == effective_preset(stack), (stack, name)
    for name in ("prod-data-deletion-protection", "prod-multi-az"):
        assert POLICY_BY_NAME[name].config_schema.required == ["preset"]
    (PACK / "config" / "no-preset.json").write_text("{}")
    try:
        assert any("preset" in e for e in validate_config("no-preset"))
    finally:
        (PACK / "config" / "no-preset.json").unlink()


def test_policy_config_entries_are_objects_per_policy():
    # a top-level "preset": "prod" would be parsed as policy "preset" with enforcement level "prod" and
    # refused (pkg/resource/analyzer/config.go parsePolicyPackConfig)
    for path in (PACK / "config").glob("*.json"):
        for key, value in json.loads(path.read_text()).items():
            assert key in BY_NAME and isinstance(value, dict), (path.name, key)


# ---------------------------------------------------------------- how CI runs the pack


def pack_runtime() -> dict:
    return yaml.safe_load((PACK / "PulumiPolicy.yaml").read_text())


def test_pack_declares_a_version_and_its_virtualenv():
    project = pack_runtime()
    assert re.fullmatch(r"\d+\.\d+\.\d+", str(project["version"]))
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}
    pins = {line.split("==")[0]: line.split("==")[1] for line in (PACK / "requirements.txt").read_text().splitlines() if "==" in line}
    program = {line.split("==")[0]: line.split("==")[1] for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    dev = {line.split("==")[0]: line.split("==")[1] for line in (ROOT / "requirements-dev.txt").read_text().splitlines() if "==" in line}
    assert pins == {"pulumi": program["pulumi"], "pulumi-policy": dev["pulumi-policy"]}
    assert "policy/venv/" in (ROOT / ".gitignore").read_text().split()


def _runs_the_pack(step: dict) -> str | None:
    """The pack directory a step passes (pulumi/actions ``policyPacks`` or ``--policy-pack``), if any."""
    if str(step.get("uses", "")).startswith("pulumi/actions@") and step.get("with", {}).get("policyPacks"):
        return str(step["with"]["policyPacks"]).strip()
    found = re.search(r"--policy-pack[ =]+(\S+)", str(step.get("run", "")))
    return found.group(1).strip("\"'") if found else None


def _creates_virtualenv(step: dict, venv: str, requirements: str) -> bool:
    run = " ".join(str(step.get("run", "")).split())
    creates = re.search(rf"python3? -m venv {re.escape(venv)}(\s|$)", run)
    installs = re.search(rf"{re.escape(venv)}/bin/(pip|python -m pip) install (-\S+ )*-r {re.escape(requirements)}", run)
    return bool(creates and installs and creates.start() < installs.start())


def pack_steps_without_virtualenv(workflow: dict) -> list[str]:
    """Every step that passes the pack with no earlier step of its job creating the virtualenv the CLI
    will run it with: ``<pack>/<virtualenv of PulumiPolicy.yaml>``. The CLI resolves that path against
    the pack's directory (pulumi/pulumi sdk/python/toolchain/pip.go ``resolveVirtualEnvironmentPath``,
    root = the pack directory, pkg/resource/plugin/plugin.go) and creates nothing for a local pack;
    pulumi/actions only passes ``--policy-pack`` (src/config.ts ``policyPacks``)."""
    virtualenv = pack_runtime()["runtime"]["options"]["virtualenv"]
    missing = []
    for job_name, job in workflow.get("jobs", {}).items():
        steps = job.get("steps", [])
        for i, step in enumerate(steps):
            pack = _runs_the_pack(step)
            if pack is None:
                continue
            pack = pack.removeprefix("./").rstrip("/")
            venv, requirements = f"{pack}/{virtualenv}", f"{pack}/requirements.txt"
            if not any(_creates_virtualenv(before, venv, requirements) for before in steps[:i]):
                missing.append(f"{job_name}: step {i} ({step.get('name') or step.get('uses')}) runs {pack} without creating {venv}")
    return missing


def test_every_step_that_runs_the_pack_creates_its_virtualenv_first():
    passing = 0
    for path in sorted(WORKFLOWS.glob("*.yml")):
        workflow = yaml.safe_load(path.read_text())
        assert pack_steps_without_virtualenv(workflow) == [], path.name
        passing += sum(1 for job in workflow["jobs"].values() for s in job.get("steps", []) if _runs_the_pack(s))
    assert passing >= 3  # the pull request previews, dev's update, the promotion's update


def test_the_virtualenv_check_catches_a_job_without_it():
    def job(*steps: dict) -> dict:
        return {"jobs": {"j": {"steps": list(steps)}}}

    action = {"uses": "pulumi/actions@v7", "with": {"command": "up", "policyPacks": "policy"}}
    cli = {"run": 'pulumi preview --stack dev --policy-pack policy --policy-pack-config "policy/config/dev.json"'}
    venv = {"run": "python -m venv policy/venv && policy/venv/bin/pip install -r policy/requirements.txt"}
    assert pack_steps_without_virtualenv(job(venv, action)) == pack_steps_without_virtualenv(job(venv, cli)) == []
    assert pack_steps_without_virtualenv(job(action))
    assert pack_steps_without_virtualenv(job(cli, venv))  # after is too late
    assert pack_steps_without_virtualenv(job({"run": "python -m venv .venv && .venv/bin/pip install -r requirements.txt"}, cli))
    assert pack_steps_without_virtualenv(job({"run": "python -m venv policy/venv"}, action))  # created, nothing installed


def test_pack_entry_point_only_serves_the_policies():
    source = (PACK / "__main__.py").read_text()
    assert "PolicyPack(name=" in source and "from rules import policies" in source
    assert len(POLICIES) == len(rules.RULES) == len({r.name for r in rules.RULES})


# ---------------------------------------------------------------- the program enforces the mandatory rules


def test_check_resource_reports_mandatory_violations_with_the_stacks_config(plans):
    prod, dev = plans["prod"], plans["dev"]
    db = first(prod, rules.RDS)
    assert local.check_resource(db.type, db.inputs, {"stack": "prod", "preset": "prod"}, urn=db.urn) == []
    bad = broken(db, publiclyAccessible=True, deletionProtection=False, multiAz=False)
    assert local.check_resource(db.type, bad, {"stack": "prod-eu", "preset": "prod"}) == [
        "no-public-database: the database is publicly accessible; it must sit in isolated subnets only",
        "prod-data-deletion-protection: production database without deletion protection",
    ]  # prod-multi-az is advisory: the program leaves it to the pack
    assert local.check_resource(db.type, bad, {"stack": "staging", "preset": "staging"}) == [
        "no-public-database: the database is publicly accessible; it must sit in isolated subnets only"
    ]
    # dev's config: plain HTTP is advisory, its service ports are allowed
    listener = first(dev, rules.LISTENER)
    assert local.check_resource(listener.type, listener.inputs, {"stack": "dev", "preset": "dev"}) == []
    assert local.check_resource(listener.type, listener.inputs, {"stack": "dev", "preset": "dev", "policy_config": {}})
    dev_port = next(r for r in dev.of_type(rules.INGRESS_RULE) if r.name.startswith("alb-http-"))
    assert local.check_resource(dev_port.type, dev_port.inputs, {"stack": "dev", "preset": "dev"}, urn=dev_port.urn) == []
    assert local.check_resource(dev_port.type, dev_port.inputs, {"stack": "prod", "preset": "prod"}, urn=dev_port.urn)
    # a new stack without a config file: every rule at its default level, the strictest
    assert local.check_resource(listener.type, listener.inputs, {"stack": "brand-new", "preset": "dev"})


def test_check_resource_sees_through_secrets_and_skips_unknowns(plans):
    cache = first(plans["prod"], rules.REDIS)
    config = {"stack": "prod", "preset": "prod"}
    secret = broken(cache, authToken=rpc.wrap_rpc_secret("token"))
    assert local.check_resource(cache.type, secret, config) == []
    assert local.check_resource(cache.type, broken(cache, authToken=rpc.wrap_rpc_secret("")), config) == ["redis-tls-and-auth: Redis without an AUTH token"]
    # during a preview an unknown input skips the rule that reads it, as pulumi-policy does
    db = first(plans["prod"], rules.RDS)
    assert local.check_resource(db.type, broken(db, deletionProtection=Unknown()), config) == []
    assert local.check_resource(db.type, broken(db, deletionProtection=Unknown(), publiclyAccessible=True), config) == [
        "no-public-database: the database is publicly accessible; it must sit in isolated subnets only"
    ]


def run_transform(fn: Callable, type_: str, name: str, props: dict, parent_urn: str = "") -> None:
    """Call the transform as the SDK's callback does, with the parent as a ``DependencyResource``."""

    async def call() -> None:
        opts = pulumi.ResourceOptions(parent=DependencyResource(parent_urn)) if parent_urn else pulumi.ResourceOptions()
        assert await fn(pulumi.ResourceTransformArgs(custom=True, type_=type_, name=name, props=props, opts=opts)) is None  # unchanged

    asyncio.run(call())


def test_the_transform_fails_on_a_violation_naming_resource_and_policy(plans):
    prod = plans["prod"]
    transform = local.transform("prod-eu", "prod")
    db = first(prod, rules.RDS)
    run_transform(transform, db.type, db.name, db.inputs)  # compliant: no error, inputs unchanged
    with pytest.raises(pulumi.RunError) as err:
        run_transform(transform, db.type, db.name, broken(db, deletionProtection=False))
    assert str(err.value).startswith(f"{db.name} ({rules.RDS}) breaks the mandatory policies")
    assert "prod-data-deletion-protection: production database without deletion protection" in str(err.value)
    # its parent places it: the load balancer's children may admit the internet on 443
    https = next(r for r in prod.of_type(rules.INGRESS_RULE) if r.name == "alb-https-in")
    run_transform(transform, https.type, https.name, https.inputs, parent_urn=https.parent)
    with pytest.raises(pulumi.RunError, match="world-ingress-only-on-alb: only the load balancer's security group"):
        run_transform(transform, https.type, https.name, https.inputs)


class TransformingMonitor(harness.RecordingMonitor):
    """The mock monitor, plus what the engine does with stack transforms: call each registered one with
    the registration's inputs (through the SDK's own callback, pulumi/runtime/_callbacks.py) before it
    registers the resource, and register what it returns. Pulumi's mock monitor does not run them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.tokens: list[str] = []

    def RegisterStackTransform(self, request):
        self.tokens.append(request.token)
        return super().RegisterStackTransform(request)

    def RegisterResource(self, request):
        if request.type != "pulumi:pulumi:Stack":
            for token in self.tokens:
                servicer = next(s for s in _CallbackServicer._servicers if token in s._callbacks)
                transform_request = resource_pb2.TransformRequest(
                    type=request.type,
                    name=request.name,
                    custom=request.custom,
                    parent=request.parent,
                    properties=request.object,
                    options=resource_pb2.TransformResourceOptions(protect=request.protect),
                )
                callback = servicer._callbacks[token](transform_request.SerializeToString())
                response = asyncio.run_coroutine_threadsafe(callback, servicer._loop).result()
                request.object.CopyFrom(response.properties)
        return super().RegisterResource(request)


def plan_enforced(stack: str, project_dir: Path, preset: str) -> harness.Capture:
    def program() -> None:
        local.enforce(pulumi.get_stack(), preset)
        run_stack(project_dir)

    return harness.run(stack, project_dir, program=program)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_the_real_program_under_enforcement_registers_every_stack_unchanged(monkeypatch, stack):
    monkeypatch.setattr(harness, "RecordingMonitor", TransformingMonitor)
    checked: list[str] = []
    check = local.check_resource
    monkeypatch.setattr(local, "check_resource", lambda type_, *args, **kwargs: checked.append(type_) or check(type_, *args, **kwargs))
    enforced = plan_enforced(stack, ROOT, effective_preset(stack))
    registered = Counter(r.type for r in enforced.resources if r.custom)
    assert not registered - Counter(checked)  # the transform saw every resource (twice once run_stack enforces too)
    plain = harness.run(stack, ROOT, program=lambda: run_stack(ROOT))
    assert {r.urn: r.inputs for r in enforced.resources} == {r.urn: r.inputs for r in plain.resources}


def unprotected_prod_eu(monkeypatch, tmp_path) -> None:
    """A copy of prod named prod-eu (preset prod) with deletion protection acknowledged off."""
    monkeypatch.setattr(harness, "RecordingMonitor", TransformingMonitor)
    data = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    data["config"]["platform:preset"] = "prod"
    data["config"]["platform:overrides"] = {"postgres": {"deletion_protection": False}, "acknowledge_unprotected_data": True}
    (tmp_path / "Pulumi.prod-eu.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(ROOT / "Pulumi.yaml", tmp_path / "Pulumi.yaml")


def test_the_program_refuses_an_unprotected_prod_database_in_a_stack_not_named_prod(monkeypatch, tmp_path):
    """prod-eu, preset prod, deletion protection acknowledged off in the stack file: the config layer lets
    it through, the pack (preset prod) would block it in CI, and the program's transform blocks it too.

    The violation is checked on the inputs the program registers, by the transform's own check: a
    transform that raises inside Pulumi's mock runtime can leave the mock waiting on registrations that
    never finish (the real engine fails the update instead)."""
    from components.platform import build
    from stacks.config import load_platform

    unprotected_prod_eu(monkeypatch, tmp_path)
    cap = harness.run("prod-eu", tmp_path, program=lambda: build(load_platform("prod-eu", tmp_path)))
    databases = cap.of_type("aws:rds/instance:Instance")
    assert databases
    for db in databases:
        violations = local.check_resource(db.type, db.inputs, {"stack": "prod-eu", "preset": "prod"}, urn=db.urn)
        assert "prod-data-deletion-protection: production database without deletion protection" in violations


def test_run_stack_enforces_the_mandatory_policies(monkeypatch):
    """components/platform.py run_stack registers ``policy.local``'s transform: every custom resource of the
    shipped program goes through the mandatory rules before it is registered."""
    monkeypatch.setattr(harness, "RecordingMonitor", TransformingMonitor)
    checked: list[str] = []
    check = local.check_resource
    monkeypatch.setattr(local, "check_resource", lambda type_, *args, **kwargs: checked.append(type_) or check(type_, *args, **kwargs))
    cap = harness.run("prod", ROOT, program=lambda: run_stack(ROOT))
    assert "aws:rds/instance:Instance" in checked and len(checked) == len([r for r in cap.resources if r.custom])
