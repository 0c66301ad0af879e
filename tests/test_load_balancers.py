"""Past one load balancer's quotas, a second (README "Layouts", "Past one load balancer").

AWS default quotas one ALB meets as web services are added (Elastic Load Balancing user guide, "Quotas
for your Application Load Balancers"): 50 listeners per load balancer (one per web service without a
domain); with a domain each web service takes a rule in each direction of the ALB's security group, of
which a group holds 60 per direction (Amazon VPC user guide, "Amazon VPC quotas", "Inbound or outbound
rules per security group"), and the HTTPS listener 25 certificates beside its default one.
"""

from __future__ import annotations

import pytest

from components.platform import build
from stacks.catalog import System, load_catalog
from stacks.config import LISTENERS_PER_ALB, load_platform
from stacks.errors import ConfigError
from tools import harness


def web_only(n: int) -> dict[str, System]:
    """``n`` systems of one web service each: darwin's app without its data stores or external secrets."""
    base = load_catalog()["darwin"].model_dump(exclude_none=True)
    base.pop("postgres"), base.pop("redis")
    base["secrets"] = {k: v for k, v in base["secrets"].items() if v["source"] == "generated"}
    base["settings"] = {}
    for svc in base["services"].values():
        svc["secrets"] = [s for s in svc.get("secrets", []) if s in base["secrets"]]
    return {f"w{i:02d}": System.model_validate({**base, "name": f"w{i:02d}"}) for i in range(n)}


def _stack(project, catalog: dict[str, System], pins: dict[str, int] | None = None):
    systems = {name: {"images": {"app": "1.0.0"}, **({"load_balancer": pins[name]} if pins and name in pins else {})} for name in catalog}
    return project("dev", lambda c: c.update({"platform:systems": systems}))


def test_a_web_service_past_one_load_balancer_goes_to_a_second(project):
    # GIVEN 51 domainless web services: one listener each, and an ALB takes 50
    catalog = web_only(LISTENERS_PER_ALB + 1)
    cfg = load_platform("test", _stack(project, catalog), catalog=catalog)
    # THEN the first 50 systems, as listed, share the first load balancer and the 51st gets the second
    assert cfg.load_balancers == {**{f"w{i:02d}": 1 for i in range(50)}, "w50": 2}


def test_adding_a_system_moves_no_other(project):
    catalog = web_only(LISTENERS_PER_ALB + 1)
    before = load_platform("test", _stack(project, catalog), catalog=catalog).load_balancers
    more = web_only(LISTENERS_PER_ALB + 2)
    after = load_platform("test", _stack(project, more), catalog=more).load_balancers
    assert {name: after[name] for name in before} == before and after["w51"] == 2


def test_a_pinned_system_stays_on_its_load_balancer(project):
    # GIVEN w00 pinned to the second load balancer (as after the systems before it went away)
    catalog = web_only(3)
    cfg = load_platform("test", _stack(project, catalog, {"w00": 2}), catalog=catalog)
    assert cfg.load_balancers == {"w00": 2, "w01": 1, "w02": 1}


def test_a_pin_to_a_full_load_balancer_is_refused_by_its_key(project):
    catalog = web_only(LISTENERS_PER_ALB + 1)
    with pytest.raises(ConfigError) as info:
        load_platform("test", _stack(project, catalog, {"w50": 1}), catalog=catalog)
    (problem,) = info.value.problems
    assert problem.key == "platform:systems.w50.load_balancer"
    assert "load balancer 1 has no room for its 1 web services (50: listeners per ALB" in problem.message


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> tuple[harness.Capture, object]:
    import shutil

    import yaml

    from tests.conftest import ROOT

    directory = tmp_path_factory.mktemp("two")
    catalog = web_only(LISTENERS_PER_ALB + 1)
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    data["config"]["platform:systems"] = {name: {"images": {"app": "1.0.0"}} for name in catalog}
    (directory / "Pulumi.dev.yaml").write_text(yaml.safe_dump(data))
    shutil.copy(ROOT / "Pulumi.yaml", directory / "Pulumi.yaml")
    cfg = load_platform("dev", directory, catalog=catalog)
    return harness.run("dev", directory, program=lambda: build(cfg)), cfg


def test_the_second_load_balancer_carries_its_systems_listeners_rules_and_alarms(two):
    capture, _ = two
    lbs = {r.name: r for r in capture.of_type("aws:lb/loadBalancer:LoadBalancer")}
    assert set(lbs) == {"alb-lb", "alb-2-lb"}  # the first keeps its name: nothing of today's stacks moves
    listener = capture.one("aws:lb/listener:Listener", "alb-2-w50-app-http")
    assert listener.property_dependencies["loadBalancerArn"] == [lbs["alb-2-lb"].urn]
    rule = capture.one("aws:lb/listenerRule:ListenerRule", "w50-app-rule")
    assert rule.property_dependencies["listenerArn"] == [listener.urn]
    # the service admits the second load balancer's security group, not the first's
    sg = {r.name: r.urn for r in capture.of_type("aws:ec2/securityGroup:SecurityGroup")}
    ingress = capture.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "w50-app-from-alb")
    assert ingress.property_dependencies["referencedSecurityGroupId"] == [sg["alb-2-sg"]]
    # each load balancer has its own 5xx alarms and WAF log group (a log group name is unique per region)
    assert {r.name for r in capture.resources if r.type == "platform:observability:LoadBalancerMonitoring"} >= {"alb-monitoring", "alb-2-monitoring"}
    groups = [r.inputs["name"] for r in capture.of_type("aws:cloudwatch/logGroup:LogGroup") if r.inputs.get("name", "").startswith("aws-waf-logs")]
    assert sorted(groups) == ["aws-waf-logs-platform-dev", "aws-waf-logs-platform-dev-alb-2"]


def test_the_core_export_names_each_systems_load_balancer(two):
    from components import core as core_ref

    _, cfg = two
    # numbers as a StackReference returns them (floats)
    export = {"load_balancer_of": {"w00": 1.0, "w50": 2.0}, "load_balancers": {"1": {"arn": "first"}, "2": {"arn": "second"}}}
    assert core_ref.load_balancer_of(export, "w50") == {"arn": "second"}
    assert core_ref.load_balancer_of(export, "w00") == {"arn": "first"}
    assert cfg.load_balancers["w50"] == 2
