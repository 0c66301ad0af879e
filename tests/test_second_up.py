"""A second `pulumi up` with nothing changed changes nothing, and an update starts tasks only once
everything they need is in place.

The task definition's ``containerDefinitions`` is a replace-on-change field: the provider reads it back
from ECS and compares it with what the program sends through ``containerDefinitionsAreEquivalent``
(terraform-provider-aws ``internal/service/ecs/container_definitions.go``). Any difference registers a
new revision, rolls the service and reruns its migration. ``ecs_readback`` below models what ECS returns
for what we send; each rule names its source. ``provider_reduce`` is that equivalence function's
normalisation, transcribed.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.conftest import plan

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"


def ecs_readback(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What DescribeTaskDefinition returns for ``definitions`` (awsvpc network mode)."""
    out = copy.deepcopy(definitions)
    for c in out:
        # ECS echoes the fields it was sent and fills these defaults (ECS developer guide, "Task
        # definition parameters"; observed read-backs in hashicorp/terraform-aws-consul-ecs#318):
        c.setdefault("essential", True)
        c.setdefault("cpu", 0)
        for key in ("environment", "mountPoints", "volumesFrom", "portMappings", "systemControls"):
            c.setdefault(key, [])
        # awsvpc: the host port is the container port ("hostPort can be left blank or it must be the same
        # value as the containerPort", PortMapping, ECS API reference).
        for pm in c["portMappings"]:
            pm.setdefault("hostPort", pm["containerPort"])
            pm.setdefault("protocol", "tcp")
        # ECS stores capabilities as {add: [], drop: [...]} even when `add` was not sent (AWS persists
        # `{add=[], drop=["ALL"]}`: braintrustdata/terraform-aws-braintrust-data-plane#335, 2026).
        caps = c.get("linuxParameters", {}).get("capabilities")
        if caps is not None:
            caps.setdefault("add", [])
            caps.setdefault("drop", [])
    return out


def provider_reduce(definitions: list[dict[str, Any]]) -> str:
    """``containerDefinitions.reduce`` of terraform-provider-aws, for the fields we use: containers,
    environment and secrets sorted by name; empty top-level lists dropped; ``essential`` true when
    absent; port protocol ``tcp`` and a zero host port blanked, then the host port set to the container
    port (awsvpc); ``cpu`` is a non-pointer int32 in the SDK, so 0 and absent are equal. Nested lists
    (``linuxParameters.capabilities.add``, ``tmpfs[].mountOptions``) are NOT normalised: ``[]`` and
    absent differ there."""
    out = copy.deepcopy(definitions)
    out.sort(key=lambda c: c["name"])
    for c in out:
        for key in ("environment", "secrets"):
            if key in c:
                c[key] = sorted(c[key], key=lambda kv: kv["name"])
        c.setdefault("essential", True)
        if c.get("cpu") == 0:
            del c["cpu"]
        for pm in c.get("portMappings", []):
            if pm.get("protocol") == "tcp":
                del pm["protocol"]
            if not pm.get("hostPort"):
                pm.pop("hostPort", None)
            pm.setdefault("hostPort", pm["containerPort"])
        for key in [k for k, v in c.items() if isinstance(v, list) and not v]:
            del c[key]
    return json.dumps(out, sort_keys=True)


def definitions(task) -> list[dict[str, Any]]:
    return json.loads(task.inputs["containerDefinitions"])


def test_every_field_we_send_is_what_ecs_returns(plans):
    # GIVEN every task definition of the three stacks
    for stack, cap in plans.items():
        for task in cap.of_type(TASK):
            sent = definitions(task)
            back = {c["name"]: c for c in ecs_readback(sent)}
            # THEN each field we set reads back unchanged (ECS only adds defaults we do not send)
            for container in sent:
                for key, value in container.items():
                    assert back[container["name"]][key] == value, f"{stack} {task.name} {container['name']}.{key}"
            # AND the provider finds the read-back equivalent: no replacement on the next up
            assert provider_reduce(sent) == provider_reduce(ecs_readback(sent)), f"{stack} {task.name}"


def test_the_readback_model_catches_a_field_ecs_rewrites():
    # GIVEN capabilities sent the way the program used to send them
    sent = [{"name": "app", "image": "x", "linuxParameters": {"initProcessEnabled": True, "capabilities": {"drop": ["ALL"]}}}]
    # THEN the provider sees a difference after ECS's read-back: every up would replace the task definition
    assert provider_reduce(sent) != provider_reduce(ecs_readback(sent))


def test_a_second_plan_from_the_same_inputs_is_identical(plans):
    # GIVEN each stack planned again, in a fresh run, from the same files
    for stack, first in plans.items():
        second = plan(stack)
        # THEN every resource has the same inputs, dependencies and options: a second up changes nothing
        before = {r.urn: (r.inputs, sorted(r.dependencies), r.options) for r in first.resources}
        after = {r.urn: (r.inputs, sorted(r.dependencies), r.options) for r in second.resources}
        assert before.keys() == after.keys(), stack
        changed = [urn for urn in before if before[urn] != after[urn]]
        assert changed == [], f"{stack}: {changed[:5]}"


# ---------------------------------------------------------------- order on updates


def test_each_service_waits_for_its_policies_secret_values_and_network_rules(prod):
    by_urn = {r.urn: r for r in prod.resources}
    for svc in prod.of_type(SERVICE):
        key = svc.name.removesuffix("-service")
        deps = {by_urn[u].name for u in svc.dependencies if u in by_urn}
        # IAM: the execution role's policy (secrets, image pull, logs) and every task-role policy
        policies = {r.name for r in prod.of_type("aws:iam/rolePolicy:RolePolicy") if r.name.startswith(f"{key}-")}
        assert f"{key}-execution-policy" in policies and policies <= deps, key
        # network: its rules into its data stores and from the load balancer
        rules = {
            r.name
            for t in ("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
            for r in prod.of_type(t)
            if r.name.startswith(f"{key}-") and r.name != f"{key}-out"
        }
        assert rules <= deps, key
        # secret values: every version Pulumi writes of a secret this service reads
        task = next(by_urn[u] for u in svc.dependencies if by_urn.get(u) and by_urn[u].type == TASK)
        read = {s["valueFrom"] for c in definitions(task) for s in c.get("secrets", [])}
        versions = [r for r in prod.of_type("aws:secretsmanager/secretVersion:SecretVersion") if r.inputs["secretId"] in read]
        assert versions and {v.name for v in versions} <= deps, key


def test_offerhub_waits_for_its_database_rule_and_generated_key(prod):
    svc = next(r for r in prod.of_type(SERVICE) if r.name == "offerhub-api-service")
    names = {prod.by_urn(u).name for u in svc.dependencies}
    assert {"offerhub-api-to-db", "offerhub-api-to-cache", "offerhub-offerhub-master-key", "offerhub-database-url"} <= names


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_no_secret_value_reaches_a_task_definition(plans, stack):
    for task in plans[stack].of_type(TASK):
        for c in definitions(task):
            for env in c.get("environment", []):
                assert "[secret]" not in env["value"], (task.name, env["name"])
