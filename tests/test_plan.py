"""The offline plan: the newcomer's first command, and the JSON other tools read."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from stacks.catalog import load_catalog
from stacks.config import load_platform
from tests.conftest import ROOT
from tools import plan as plan_cli
from tools import schema

STACKS = ("dev", "staging", "prod")


@pytest.mark.parametrize("stack", STACKS)
def test_plan_lists_every_deployed_service(stack, capsys, tmp_path):
    out_file = tmp_path / "plan.json"
    assert plan_cli.main(["--stack", stack, "--json", str(out_file)]) == 0
    text = capsys.readouterr().out
    for system in load_catalog().values():
        assert f"  {system.name}  (" in text
        for name in system.services:
            assert f"    {name:<12} {system.services[name].kind}" in text
    assert "mcp-server   not deployed" in text
    data = json.loads(out_file.read_text())
    # every web service's URL, and each system's database, cache and secrets
    assert len(data["outputs"]["urls"]) == 6 and all(url in text for url in data["outputs"]["urls"].values())
    for system in load_catalog().values():
        assert (f"    database  {system.name}-" in text) is bool(system.postgres)
        assert (f"    cache     {system.name}-" in text) is bool(system.redis)
        assert all(secret in text for secret in system.secrets)
    assert data["stack"] == stack
    for r in data["resources"]:
        assert set(r) == {"urn", "type", "name", "parent", "custom", "inputs", "dependencies", "propertyDependencies", "options"}
        assert {"protect", "ignoreChanges", "retainOnDelete", "deleteBeforeReplace", "customTimeouts"} <= set(r["options"])


def test_dev_plan_says_http_without_domain(capsys):
    plan_cli.main(["--stack", "dev"])
    assert "no domain configured" in capsys.readouterr().out


def test_inputs_use_engine_camel_case(plans):
    vpc = plans["dev"].one("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == "10.10.0.0/16" and vpc.inputs["enableDnsHostnames"] is True


def test_data_source_calls_per_preview(plans):
    # every data-source call is a cloud round trip in CI: the account id (key and trust policies) and
    # the region's ELB log-delivery account (access-log bucket policy), once each; one image listing per
    # repository (a service whose image is not pushed is held, a tag resolves to its digest), and in the
    # stack that creates the repositories (dev) the account's repository names (adopt, or create);
    # with a DR region (prod), the account's canonical user id for the Redis export buckets' ACL
    expected = ["aws:elb/getServiceAccount:getServiceAccount", "aws:index/getCallerIdentity:getCallerIdentity", *["aws:ecr/getImages:getImages"] * 8]
    assert sorted(plans["staging"].invokes) == sorted(expected)
    assert sorted(plans["prod"].invokes) == sorted([*expected, "aws:s3/getCanonicalUserId:getCanonicalUserId"])
    assert sorted(plans["dev"].invokes) == sorted([*expected, "aws:ecr/getRepositories:getRepositories"])


def test_checked_in_schemas_are_fresh():
    stale = [name for name, text in schema.rendered().items() if (schema.SCHEMA_DIR / name).read_text() != text]
    assert stale == [], "run `python -m tools.schema`"


@pytest.mark.parametrize("stack", [*STACKS, "staging-eks"])
def test_stack_files_validate_against_the_schema(stack):
    data = yaml.safe_load((ROOT / f"Pulumi.{stack}.yaml").read_text())
    jsonschema.validate(data, schema.stack_schema())


def test_schema_rejects_a_typo():
    data = yaml.safe_load((ROOT / "Pulumi.dev.yaml").read_text())
    data["config"]["platform:netwrok"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema.stack_schema())


@pytest.mark.parametrize("path", sorted((ROOT / "stacks" / "apps").glob("*.yaml")), ids=lambda p: p.stem)
def test_catalog_files_validate_against_the_schema(path):
    jsonschema.validate(yaml.safe_load(path.read_text()), schema.catalog_schema())


def test_pulumi_yaml_declares_only_types_pulumi_accepts():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    for key, decl in project["config"].items():
        assert ":" not in key
        assert decl["type"] in {"string", "integer", "boolean", "array"}
        if decl["type"] == "array":
            assert "items" in decl


def test_plan_counts_elastic_ips_against_the_default_quota(plans, capsys):
    # GIVEN one Elastic IP per NAT gateway: dev and staging run one NAT, prod one per AZ (3)
    eips = {stack: len(plans[stack].of_type("aws:ec2/eip:Eip")) for stack in STACKS}
    assert eips == {"dev": 1, "staging": 1, "prod": 3}
    # the plan reads the other stacks' counts from their stack files, without running them: it agrees with the captures
    assert {stack: plan_cli.elastic_ips(load_platform(stack, ROOT)) for stack in STACKS} == eips
    assert plan_cli.elastic_ips(load_platform("staging-eks", ROOT)) == 0  # an adopted VPC brings its own NAT
    # WHEN the plan of prod runs, THEN it prints its own count and the three stacks' total against AWS's default of 5 per region
    plan_cli.main(["--stack", "prod"])
    out = capsys.readouterr().out
    assert "elastic IPs: 3 for this stack (one per NAT gateway)" in out
    assert "dev 1 + staging 1 + prod 3 = 5 in us-east-1, at the default quota of 5" in out
    assert "L-0263D0A3" in out
