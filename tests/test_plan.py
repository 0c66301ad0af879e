"""The offline plan: the newcomer's first command, and the JSON other tools read."""

from __future__ import annotations

import dataclasses
import json
import re

import jsonschema
import pytest
import yaml

from components import shared_data
from components.workload import task_counts
from policy import local
from stacks.catalog import load_catalog
from stacks.config import load_platform, placeholders
from tests.conftest import ROOT, plan
from tools import cost, deploytime, harness, schema
from tools import plan as plan_cli

STACKS = ("dev", "staging", "prod")


def dev_summary(plans, verbose: bool = False) -> str:
    return plan_cli.summary(plans["dev"], load_platform("dev", ROOT), ROOT, verbose=verbose)


@pytest.mark.parametrize("stack", STACKS)
def test_plan_lists_every_deployed_service(stack, capsys, tmp_path):
    out_file = tmp_path / "plan.json"
    assert plan_cli.main(["--stack", stack, "--json", str(out_file), "--diagram", str(tmp_path / "env.mmd")]) == 0
    text = capsys.readouterr().out
    data = json.loads(out_file.read_text())
    urls = data["outputs"]["urls"]
    # one tree per system: entry point URL -> service -> the stores it reaches, then its secrets
    for system in load_catalog().values():
        tree = block(text.split("\nsystems (", 1)[1], f"  {system.name}  (")
        tree = tree[: next((i for i, line in enumerate(tree[1:], 1) if not line.startswith("    ")), len(tree))]
        for name, svc in system.services.items():
            key = f"{system.name}-{name}"
            entry = f"    {urls[key]} (offline) -> " if key in urls and stack == "dev" else f"    {urls[key]} -> " if key in urls else "    "
            assert sum(line.startswith(f"{entry}{name} -> ") and f"   [{svc.kind}, image " in line for line in tree) == 1, (key, tree)
    assert "    not deployed: mcp-server (" in text
    # every web service's URL, and each system's database, cache and secrets
    assert len(urls) == 6 and all(url in text for url in urls.values())
    for system in (deployed.system for deployed in load_platform(stack, ROOT).systems.values()):  # a cache "when: scaled_out" is not in dev
        # its own store, or (dev: components/shared_data.py) its database and number in the shared ones
        shared = shared_data.tenancy(load_platform(stack, ROOT))
        if shared and system.name in shared.postgres:
            assert f"    database  db {system.postgres.database} in {shared.identifier} (shared:" in text
        else:
            assert (f"    database  {system.name}-" in text) is bool(system.postgres)
        if shared and system.name in shared.redis:
            assert f"    cache     db {shared.redis[system.name]} of {shared.identifier} (shared:" in text
        else:
            assert (f"    cache     {system.name}-" in text) is bool(system.redis)
        assert all(secret in text for secret in system.secrets)
    # the JSON keeps its format (tests/test_cost.py and the preview workflow read it)
    assert set(data) == {"stack", "resources", "outputs", "invokes", "cost"}
    assert data["stack"] == stack
    for r in data["resources"]:
        assert set(r) == {"urn", "type", "name", "parent", "custom", "inputs", "dependencies", "propertyDependencies", "options"}
        assert {"protect", "ignoreChanges", "retainOnDelete", "deleteBeforeReplace", "customTimeouts"} <= set(r["options"])
    # --diagram writes the Mermaid source and says how to render it
    assert (tmp_path / "env.mmd").read_text().startswith("%% stack ") and "wrote the diagram to" in text


def test_dev_plan_says_http_without_domain(plans):
    text = dev_summary(plans)
    assert "  DNS: no domain configured" in text and "zones to delegate" not in text


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


def test_plan_counts_elastic_ips_against_the_default_quota(plans):
    # GIVEN one Elastic IP per NAT gateway: dev and staging run one NAT, prod one per AZ (3)
    eips = {stack: len(plans[stack].of_type("aws:ec2/eip:Eip")) for stack in STACKS}
    assert eips == {"dev": 1, "staging": 1, "prod": 3}
    # the plan reads the other stacks' counts from their stack files, without running them: it agrees with the captures
    assert {stack: plan_cli.elastic_ips(load_platform(stack, ROOT)) for stack in STACKS} == eips
    assert plan_cli.elastic_ips(load_platform("staging-eks", ROOT)) == 0  # an adopted VPC brings its own NAT
    # WHEN the plan of prod runs, THEN it prints its own count and the three stacks' total against AWS's default of 5 per region
    out = plan_cli.summary(plans["prod"], load_platform("prod", ROOT), ROOT)
    assert "elastic IPs: 3 for this stack (one per NAT gateway)" in out
    assert "dev 1 + staging 1 + prod 3 = 5 in us-east-1, at the default quota of 5" in out
    assert "L-0263D0A3" in out


# ---------------------------------------------------------------- the summary reads at a glance (issue 20)


def block(text: str, title: str) -> list[str]:
    """The lines of the block that starts with ``title``, up to the next blank line."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    end = next((i for i in range(start, len(lines)) if not lines[i]), len(lines))
    return lines[start:end]


def test_before_you_run_up_is_the_first_block_after_the_summary_line(plans):
    text = dev_summary(plans)
    lines = text.splitlines()
    cfg = load_platform("dev", ROOT)
    # one header line, one line of modeled cost and first-up time, then the block
    assert lines[0].startswith("stack dev: preset dev, us-east-1")
    month = sum(cost.totals(cost.estimate(plans["dev"], cfg.systems, cost.load_prices(), cost.running_counts(cfg))).values())
    p50, p90 = deploytime.schedule(plans["dev"], "p50").total, deploytime.schedule(plans["dev"], "p90").total
    assert lines[1] == f"modeled: ${month:,.0f}/month at list prices; first `pulumi up` about {p50:.0f} min (p50; {p90:.0f} min p90)"
    assert lines[2] == "" and lines[3] == "Before you run `pulumi up`:"
    before = block(text, "Before you run `pulumi up`:")
    heads = [line.split(":")[0].strip() for line in before if line.startswith("  ") and not line.startswith("   ")]
    # placeholders first, then secrets, images, DNS, emails, quotas
    assert heads == [
        "placeholders",
        "external secrets without a value",
        "images that must exist (ARM64",
        "DNS",
        "alarm emails",
        "quotas this stack needs (per account and region)",
    ]
    # every placeholder is listed inside the block, with its command
    for key, _, _ in placeholders(cfg, ROOT):
        assert any(f"--path '{key}' <value>" in line for line in before)
    assert "held at zero tasks" not in text  # the old per-service list, which repeated each secret


def test_every_unset_secret_appears_once_with_its_command(plans):
    text = dev_summary(plans)
    cfg = load_platform("dev", ROOT)
    holds: dict[str, list[str]] = {}
    for svc in cfg.services():
        for path in svc.missing_secrets:
            holds.setdefault(path, []).append(svc.key)
    assert len(holds) == 20 and len(holds["secrets.twinkle.SENTRY_DSN"]) == 4  # one per system, read by every twinkle service
    before = "\n".join(block(text, "Before you run `pulumi up`:"))
    for path, services in holds.items():
        assert text.count(f"--path '{path}'") == 1, path
        assert f"      pulumi config set --secret --path '{path}' <value> --stack dev" in before
        assert f"    {path}: holds {', '.join(services)}" in before
    assert text.count("aws secretsmanager put-secret-value") == 0 and "dev/<system>/[<service>/]<NAME>" in before
    # a service held only because what it starts after is held has no command of its own; in dev each also lacks its SENTRY_DSN
    assert not [svc for svc in cfg.services() if svc.waits_for_held and not svc.missing_secrets] and "held too" not in before


def test_images_that_must_exist_say_which_are_missing():
    # GIVEN ECR without twinkle's api image (the rest as CI pushed them)
    values, _ = harness.engine_config("dev", ROOT)
    registry = {repo: images for repo, images in harness.pushed_images(values).items() if repo != "twinkle/api"}
    capture = plan("dev", ROOT, registry=registry)
    text = plan_cli.summary(capture, load_platform("dev", ROOT), ROOT)
    images = block(text, "  images that must exist")
    # THEN the block names repository, tag and architecture, and the missing one with the services it holds
    assert images[0].startswith("  images that must exist (ARM64: `docker buildx build --platform linux/arm64`")
    missing = [line for line in images if "NOT PUSHED" in line]
    assert len(missing) == 1 and missing[0].split()[0] == "twinkle/api:1.0.0" and missing[0].endswith("for twinkle-api")
    assert sum("pushed (offline registry)" in line for line in images) == 7
    assert plan_cli.missing_images(capture) == {"twinkle-api": "twinkle/api:1.0.0"}


def test_zones_to_delegate_and_emails_to_confirm(plans):
    cfg = load_platform("prod", ROOT)
    text = plan_cli.summary(plans["prod"], cfg, ROOT)
    before = "\n".join(block(text, "Before you run `pulumi up`:"))
    assert "    example.com (hosted zone Z0PRODEXAMPLE): `dig NS example.com +short`" in before
    assert "aws route53 get-hosted-zone --id Z0PRODEXAMPLE" in before
    assert cfg.stack_config.alarm_emails and all(email in before for email in cfg.stack_config.alarm_emails)
    assert "SNS mails each a confirmation" in before


def expected_vcpus(capture, cfg) -> dict[str, tuple[float, float]]:
    """vCPU per capacity provider at every service's ceiling, and while each deploys (its maximum percent)."""
    out: dict[str, list[float]] = {}
    for svc in cfg.services():
        service = capture.one("aws:ecs/service:Service", f"{svc.key}-service").inputs
        cpu = float(capture.one("aws:ecs/taskDefinition:TaskDefinition", f"{svc.key}-task").inputs["cpu"]) / 1024
        (provider,) = [s["capacityProvider"] for s in service["capacityProviderStrategies"]]  # one provider in the shipped stacks
        ceiling = task_counts(svc.released(), cfg.preset.compute)[1]
        totals = out.setdefault(provider, [0.0, 0.0])
        totals[0] += cpu * ceiling
        totals[1] += cpu * ceiling * service["deploymentMaximumPercent"] / 100
    return {k: (a, b) for k, (a, b) in out.items()}


def test_quotas_count_fargate_vcpu_at_the_ceiling_and_during_a_deploy(plans):
    cfg = load_platform("prod", ROOT)
    vcpus = plan_cli.fargate_vcpus(plans["prod"], cfg)
    assert vcpus == expected_vcpus(plans["prod"], cfg) and set(vcpus) == {"FARGATE"}
    steady, deploy = vcpus["FARGATE"]
    assert steady < deploy <= 2 * steady  # web services deploy at 200 %, singletons at 100 %
    text = plan_cli.summary(plans["prod"], cfg, ROOT)
    quotas = "\n".join(block(text, "  quotas this stack needs"))
    assert f"Fargate On-Demand vCPU resource count (L-3032A538): {steady:g} vCPU with every service at its autoscaling maximum, {deploy:g} while" in quotas
    assert "account-specific" in quotas and "Service Quotas" in quotas and "L-0263D0A3" in quotas  # and the Elastic IPs
    # dev runs on Spot: its own quota
    dev = plan_cli.fargate_vcpus(plans["dev"], load_platform("dev", ROOT))
    assert set(dev) == {"FARGATE_SPOT"} and "Fargate Spot vCPU resource count (L-36FBB829)" in dev_summary(plans)


def test_outputs_are_short_lines_and_mock_values_are_marked(plans):
    # the mock runtime keeps an earlier run's exports within one process (prod's DR bucket); dev has no DR region
    dev = dataclasses.replace(plans["dev"], outputs={k: v for k, v in plans["dev"].outputs.items() if k != "redis_dr_bucket"})
    text = plan_cli.summary(dev, load_platform("dev", ROOT), ROOT)
    outputs = text.split("\noutputs (", 1)[1].splitlines()[1:]
    leaves = [kv for name, value in dev.outputs.items() for kv in plan_cli.flatten(value, name)]
    assert len(outputs) == len(leaves) and all(line.startswith(f"  {key}: ") for line, (key, _) in zip(outputs, leaves, strict=True))
    assert max(len(line) for line in outputs) <= 120
    assert "  urls.twinkle-api: http://alb-lb-1234567890.us-east-1.elb.amazonaws.com:" in text  # nested keys flattened
    assert any(line.endswith("...") or line.endswith("... (offline)") for line in outputs)  # long values cut
    made_up = re.compile(r"123456789012|-1234567890\.|\.abc123\.|\b(vpc|subnet|sg)-[0-9a-f]{17}\b|sha256:[0-9a-f]|-[0-9a-f]{7}$")
    for line in outputs:
        value = line.split(": ", 1)[1].removesuffix(" (offline)")
        assert line.endswith(" (offline)") is bool(made_up.search(value)), line
    assert "  environment: dev" in outputs and "  cluster_name: platform-dev" in outputs  # given, not made up
    assert "floor" not in text  # the deploy-time model in words


def test_verbose_adds_the_census_priced_items_and_each_service_start(plans):
    short, verbose = dev_summary(plans), dev_summary(plans, verbose=True)
    assert "resources by component:" not in short and "resources by component:" in verbose
    census = block(verbose, "resources by component:")
    components = {plans["dev"].top_component(r.urn) for r in plans["dev"].resources if r.custom}
    assert {line.split()[0] for line in census[1:]} == components
    assert "Fargate twinkle-api" in verbose and "Fargate twinkle-api" not in short  # priced items
    assert "    twinkle-worker " in verbose and "of the earliest)" in verbose and "of the earliest)" not in short
    assert len(short.splitlines()) < len(verbose.splitlines()) - len(components)


def test_the_policy_pack_runs_over_the_capture(plans):
    # the shipped dev stack: no mandatory violation; dev's config makes plain HTTP advisory
    mandatory, advisory = plan_cli.policy_findings(plans["dev"], load_platform("dev", ROOT))
    assert mandatory == []
    assert {a.split()[0] for a in advisory} == {"alb-serves-https", "ecs-read-only-root"}
    text = dev_summary(plans)
    assert "policy pack (policy/rules.py with policy/config/dev.json): no violations" in text
    assert "    alb-serves-https on 6: HTTP listener" in text
    # a database made public: the mandatory rule's own message, as the program's transform reports it
    capture = plans["dev"]
    db = capture.one("aws:rds/instance:Instance", "shared-db-instance")  # dev's systems share one (components/shared_data.py)
    broken = dataclasses.replace(db, inputs={**db.inputs, "publiclyAccessible": True})
    bad = harness.Capture(capture.stack, [broken if r is db else r for r in capture.resources], capture.invokes, capture.outputs, capture.logs)
    mandatory, _ = plan_cli.policy_findings(bad, load_platform("dev", ROOT))
    (message,) = local.check_resource(broken.type, broken.inputs, {"stack": "dev", "preset": "dev"}, urn=broken.urn)
    assert mandatory == [f"no-public-database shared-db-instance: {message.split(': ', 1)[1]}"]
    text = plan_cli.summary(bad, load_platform("dev", ROOT), ROOT)
    assert "policy pack (policy/rules.py with policy/config/dev.json): 1 VIOLATIONS" in text and "  no-public-database shared-db-instance: " in text


def test_a_registry_only_stack_gets_one_message_and_no_traceback(project, capsys):
    # GIVEN the old repositories-only first run (`registry.only`), which the loader now refuses
    project_dir = project("dev", lambda c: c.update({"platform:registry": {"only": True}}))
    # WHEN the plan runs, THEN one message with what comes next, and no traceback
    code = plan_cli.main(["--stack", "test", "--project-dir", str(project_dir)])
    out = capsys.readouterr()
    assert code == 2 and out.out == "" and "Traceback" not in out.err
    assert out.err.startswith("error: invalid configuration:\n  Pulumi.test.yaml: platform:registry.only: no longer exists")
    assert "`pulumi up` creates the repositories with everything else" in out.err


def test_a_plan_without_services_still_summarizes(plans):
    # GIVEN a capture that holds the repositories and nothing else (what a repositories-only up created)
    capture = plans["dev"]
    registry = {r.urn for r in capture.resources if capture.top_component(r.urn) == "registry"}
    only = harness.Capture(capture.stack, [r for r in capture.resources if r.urn in registry], [], {"repository_urls": capture.outputs["repository_urls"]}, [])
    assert only.of_type("aws:ecr/repository:Repository") and not only.of_type("aws:ecs/service:Service")
    # THEN the summary needs no ECS service (the deploy-time model read each one and raised KeyError)
    text = plan_cli.summary(only, load_platform("dev", ROOT), ROOT)
    assert text.splitlines()[3] == "Before you run `pulumi up`:" and "modeled from-scratch pulumi up:" in text
    assert "services ready" not in text and "Fargate" not in block(text, "  quotas this stack needs")[-1]
