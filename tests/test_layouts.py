"""The two layouts (README "Layouts"): dev all-in-one (Pulumi.dev.yaml) against dev split into a core
(Pulumi.core-dev.yaml) and a stack per system (Pulumi.<system>-dev.yaml), planned offline with the
StackReference answered from the core's own offline plan.

Same resources, names and inputs in both is what makes the move a `pulumi state move` with nothing
replaced: the engine keys a resource by its URN (`urn:pulumi:<stack>::<project>::<parent types>$<type>::<name>`),
and a move changes only the stack part (Pulumi docs, "pulumi state move"; the URN format in "Resource
names"). An input that differs would be an update or a replacement at the first `pulumi up` after it.
"""

from __future__ import annotations

import json

import pulumi
import pytest
import yaml

from components import core as core_ref
from components.platform import run_stack
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan
from tools import harness
from tools import plan as plan_cli

SYSTEMS = ("twinkle", "offerhub", "starkdca", "aurum", "darwin")


@pytest.fixture(scope="module")
def split() -> dict[str, harness.Capture]:
    """dev in the split layout: the core (with dev's registry, so it imports what dev imports), then each
    system stack reading the core's outputs."""
    values, _ = harness.engine_config("dev", ROOT)
    core = plan("core-dev", ROOT, registry=harness.pushed_images(values))
    out = {"core-dev": core}
    for system in SYSTEMS:
        out[f"{system}-dev"] = harness.run(f"{system}-dev", ROOT, stacks={"core-dev": core.outputs})
    return out


def _custom(captures) -> dict[tuple[str, str], harness.Resource]:
    out = {}
    for capture in captures:
        for r in capture.resources:
            if r.custom:
                assert (r.type, r.name) not in out, f"{r.type} {r.name} declared in two stacks of the split layout"
                out[(r.type, r.name)] = r
    return out


def _tail(urn: str) -> str:
    """The URN without its stack: what `pulumi state move` keeps."""
    return urn.split("::", 2)[2] if urn else ""


def test_split_layout_declares_the_all_in_one_resources_with_the_same_names_and_inputs(plans, split):
    # GIVEN dev planned in both layouts
    whole = _custom([plans["dev"]])
    parts = _custom(split.values())
    # THEN every resource exists in exactly one split stack, under the same URN but for the stack
    assert set(parts) == set(whole)
    assert {_tail(r.urn) for r in parts.values()} == {_tail(r.urn) for r in whole.values()}
    # AND its inputs and options are the same (StackReference values resolve to the core's own)
    differ = {
        k: sorted(f for f in {*whole[k].inputs, *parts[k].inputs} if whole[k].inputs.get(f) != parts[k].inputs.get(f))
        for k in whole
        if whole[k].inputs != parts[k].inputs
    }
    assert differ == {}
    assert {k: parts[k].options for k in parts if parts[k].options != whole[k].options} == {}


def test_a_system_stack_loses_only_the_dependencies_on_its_core(plans, split):
    # GIVEN each resource's dependencies by URN tail, in both layouts
    whole = _custom([plans["dev"]])
    core = {_tail(r.urn) for r in split["core-dev"].resources}
    for system in SYSTEMS:
        for r in split[f"{system}-dev"].resources:
            if not r.custom:
                continue
            before = {_tail(u) for u in whole[(r.type, r.name)].dependencies}
            after = {_tail(u) for u in r.dependencies}
            # THEN a system stack's resource waits for what it waited for in its own stack, and what it
            # no longer waits for is in the core, which `pulumi up` has finished before (its outputs exist)
            assert after <= before, r.name
            assert before - after <= core, (r.name, before - after - core)


def test_the_core_exports_what_its_systems_read_and_no_secret(split):
    export = split["core-dev"].outputs[core_ref.OUTPUT]
    assert export["preset"] == "dev" and export["systems"] == sorted(SYSTEMS)
    assert set(export["load_balancers"]["1"]["listeners"]) == {"twinkle-api", "twinkle-facilitator", "offerhub-api", "starkdca-api", "aurum-api", "darwin-app"}
    assert harness.SECRET not in json.dumps(export)


def test_the_example_split_stacks_are_the_systems_of_dev():
    # the split example files hold what Pulumi.dev.yaml holds, system by system (images, settings)
    dev = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())["config"]
    for system in SYSTEMS:
        mine = yaml.safe_load((ROOT / f"Pulumi.{system}-dev.yaml").read_text())["config"]
        assert mine["platform:systems"] == {system: dev["platform:systems"][system]}
        assert mine["platform:layout"] == {"system": system, "core": "core-dev"}
        assert mine["aws:defaultTags"] == dev["aws:defaultTags"]


def _mutated(project, source: str, change, name: str = "test") -> object:
    def edit(config: dict) -> None:
        config["platform:preset"] = "dev"  # the fixture names the copy's preset after its source stack
        change(config)

    return project(source, edit, name=name)


@pytest.mark.parametrize(
    ("source", "change", "key", "says"),
    [
        ("offerhub-dev", lambda c: c["platform:systems"].update({"darwin": {"images": {"app": "1.0.0"}}}), "platform:systems", "its own system only"),
        ("offerhub-dev", lambda c: c.update({"platform:network": {"cidr": "10.20.0.0/16"}}), "platform:network", "belongs to the core stack (core-dev)"),
        ("offerhub-dev", lambda c: c["platform:layout"].pop("core"), "platform:layout.core", "required: the core stack"),
        ("core-dev", lambda c: c["platform:layout"].update({"system": "offerhub"}), "platform:layout.system", "deploys no system of its own"),
        ("core-dev", lambda c: c["platform:layout"].update({"environment": "pr-4"}), "platform:layout.environment", "only a system stack"),
        ("offerhub-dev", lambda c: c["platform:layout"].update({"environment": "preview"}), "platform:layout.environment", "pr-"),
    ],
)
def test_the_loader_refuses_a_layout_mistake_by_its_key(project, source, change, key, says):
    directory = _mutated(project, source, change)
    with pytest.raises(ConfigError) as info:
        load_platform("test", directory)
    text = str(info.value)
    assert f"Pulumi.test.yaml: {key}" in text and says in text, text


def test_a_system_stack_stops_before_its_resources_when_the_core_lacks_it(split, monkeypatch):
    # GIVEN a core export that serves no darwin (it was not added to the core, or the core was not updated)
    export = json.loads(json.dumps(split["core-dev"].outputs[core_ref.OUTPUT]))
    export["systems"].remove("darwin")
    del export["load_balancers"]["1"]["listeners"]["darwin-app"]
    captured = harness.Capture(stack="darwin-dev")
    monkeypatch.setattr(harness, "Capture", lambda stack: captured)
    # WHEN darwin's stack runs
    with pytest.raises(pulumi.RunError) as info:
        harness.run("darwin-dev", ROOT, stacks={"core-dev": {core_ref.OUTPUT: export}})
    # THEN one message names the core and what it lacks
    text = str(info.value)
    assert "platform:systems.darwin: the core 'core-dev' does not serve it" in text
    assert "no listener for darwin-app" in text
    # AND nothing of its own was declared: the StackReference is a read, the registry view a component only
    assert [r.type for r in captured.resources if r.custom] == []


def test_a_system_stack_without_its_core_says_to_update_the_core_first():
    with pytest.raises(pulumi.RunError, match=r"the stack 'core-dev' has no output 'platform_core'.*`pulumi up` on it before its systems"):
        harness.run("offerhub-dev", ROOT, stacks={"core-dev": {}})


def test_an_ephemeral_environment_gets_its_own_names_and_listener(project, split):
    # GIVEN offerhub's dev stack as a pull request's preview environment on the dev core
    def as_preview(c):
        c["platform:layout"]["environment"] = "pr-7"
        c["aws:defaultTags"]["tags"]["environment"] = "pr-7"

    directory = _mutated(project, "offerhub-dev", as_preview, name="offerhub-pr-7")  # as tools.preview_env names it
    export = split["core-dev"].outputs[core_ref.OUTPUT]
    # (the core's every output, its shared data stores too: dev's preset shares them)
    capture = harness.run("offerhub-pr-7", directory, program=lambda: run_stack(directory), stacks={"core-dev": split["core-dev"].outputs})
    # THEN its data stores are its own, not a tenant of dev's shared ones (its bootstrap would reset dev's
    # roles' passwords and its migrations run on dev's database), and named after it
    db = capture.one("aws:rds/instance:Instance")
    assert db.inputs["identifier"] == "offerhub-pr-7"
    assert capture.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs["replicationGroupId"] == "offerhub-pr-7"
    # AND its web service has a listener of its own on the core's load balancer, on a port no dev service holds
    listener = capture.one("aws:lb/listener:Listener")
    assert listener.inputs["loadBalancerArn"] == export["load_balancers"]["1"]["arn"]
    assert listener.inputs["port"] not in export["load_balancers"]["1"]["http_ports"].values()
    served = sorted(export["load_balancers"]["1"]["listeners"])
    taken = {int(p) for p in export["load_balancers"]["1"]["http_ports"].values()}
    assert listener.inputs["port"] == core_ref.preview_port("pr-7", "offerhub-api", served, taken)  # from the pull request's number
    assert 8000 <= listener.inputs["port"] <= 8999  # the range the dev policy admits (policy/config/dev.json)
    ingress = capture.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "offerhub-api-preview-in")
    assert ingress.inputs["fromPort"] == listener.inputs["port"] and ingress.inputs["securityGroupId"] == export["load_balancers"]["1"]["security_group_id"]
    rule = capture.one("aws:lb/listenerRule:ListenerRule")
    assert rule.property_dependencies["listenerArn"] == [listener.urn]  # the service's rule is on that listener
    assert capture.outputs["urls"]["offerhub-api"].endswith(f":{int(listener.inputs['port'])}")
    # AND the policy pack admits it: the internet reaches the load balancer's children only (policy/rules.py)
    mandatory, _ = plan_cli.policy_findings(capture, load_platform("offerhub-pr-7", directory))
    assert mandatory == []


def test_preview_ports_differ_between_the_systems_of_one_pull_request_and_between_pull_requests(split):
    # GIVEN the dev core's web services (six) and the ports its own listeners hold
    lb = split["core-dev"].outputs[core_ref.OUTPUT]["load_balancers"]["1"]
    served, taken = sorted(lb["listeners"]), {int(p) for p in lb["http_ports"].values()}
    # THEN every web service of every system of pull requests 1..100 has a port of its own, none the core's
    ports = [core_ref.preview_port(f"pr-{n}", key, served, taken) for n in range(1, 101) for key in served]
    assert len(set(ports)) == len(ports) and not set(ports) & taken
    assert all(8000 <= p <= 8999 for p in ports)  # the range the dev policy admits (policy/config/dev.json)
