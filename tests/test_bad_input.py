"""Bad input: one clear message naming the file, the key and what is allowed; exit 2; no resource."""

from __future__ import annotations

import pytest

from stacks.catalog import load_catalog, load_system
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import plan
from tools import plan as plan_cli

D64 = "a" * 64


def error_of(project_dir, stack="test") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_platform(stack, project_dir)
    return info.value


CASES = {
    # case: (mutation of the dev stack's config, key the message must name, words it must contain)
    "unknown key": (lambda c: c["platform:network"].update(cidrr="10.0.0.0/16"), "platform:network.cidrr", "allowed keys: availability_zones, cidr"),
    "unknown top-level key": (lambda c: c.update({"platform:sytems": {}}), "platform:sytems", "unknown key"),
    "wrong type": (lambda c: c["platform:systems"]["twinkle"].update(images=["1.0.0"]), "platform:systems.twinkle.images", "valid dictionary"),
    "unknown system": (
        lambda c: c["platform:systems"].update(twinkel={"images": {"api": "1.0"}}),
        "platform:systems.twinkel",
        "the catalog has: aurum, darwin",
    ),
    "unknown service": (
        lambda c: c["platform:systems"]["darwin"].update(hostnames={"web": "timer"}),
        "platform:systems.darwin.hostnames.web",
        "unknown service 'web' of darwin; its services are: app",
    ),
    "unknown image": (lambda c: c["platform:systems"]["darwin"]["images"].update(web="1.0"), "platform:systems.darwin.images.web", "its images are: app"),
    "missing image": (lambda c: c["platform:systems"]["darwin"]["images"].pop("app"), "platform:systems.darwin.images.app", "required"),
    "two services, one hostname": (
        lambda c: c["platform:systems"]["darwin"].update(hostnames={"app": "api.twinkle"}),
        "platform:systems.darwin.hostnames.app",
        "already claimed by twinkle.api",
    ),
    "plaintext value for a secret key": (
        lambda c: c.update({"platform:secrets": {"offerhub": {"AIRTM_API_KEY": "sk_live_123"}}}),
        "platform:secrets.offerhub.AIRTM_API_KEY",
        "pulumi config set --secret --path 'secrets.offerhub.AIRTM_API_KEY'",
    ),
    "declared secret given as plain env": (
        lambda c: c["platform:systems"]["aurum"].update(env={"PRIVATE_KEY": "0xabc"}),
        "platform:systems.aurum.env.PRIVATE_KEY",
        "declares PRIVATE_KEY a secret",
    ),
    "secret the system does not declare": (
        lambda c: c.update({"platform:secrets": {"darwin": {"STRIPE_KEY": {"secure": "v1:x"}}}}),
        "platform:secrets.darwin.STRIPE_KEY",
        "not declared by darwin; external secrets you can set: ALERT_WEBHOOK_URL, HELIUS_API_KEY, SENTRY_DSN",
    ),
    "generated secret given a value": (
        lambda c: c.update({"platform:secrets": {"darwin": {"ADMIN_SECRET": {"secure": "v1:x"}}}}),
        "platform:secrets.darwin.ADMIN_SECRET",
        "a generated secret of darwin",
    ),
    "per-service secret for a service that does not use it": (
        lambda c: c.update({"platform:secrets": {"twinkle": {"PONDER_RPC_URL_11155111": {"api": {"secure": "v1:x"}}}}}),
        "platform:secrets.twinkle.PONDER_RPC_URL_11155111.api",
        "services that do: indexer, facilitator",
    ),
    "Redis export more often than ElastiCache allows": (
        lambda c: c.update({"platform:recovery": {"dr_region": "us-west-2", "redis_export_minutes": 60}}),
        "platform:recovery.redis_export_minutes",
        "greater than or equal to 120",
    ),
    "subnet outside the VPC": (
        lambda c: c["platform:network"].update(
            subnets={
                "public": ["10.10.0.0/24", "10.10.1.0/24"],
                "private": ["10.10.16.0/20", "10.99.32.0/20"],
                "isolated": ["10.10.2.0/24", "10.10.3.0/24"],
            }
        ),
        "platform:network.subnets.private[1]",
        "10.99.32.0/20 does not fit the VPC 10.10.0.0/16",
    ),
    "VPC too small for its subnets": (lambda c: c["platform:network"].update(cidr="10.10.0.0/24"), "platform:network.cidr", "too small"),
    "not a CIDR": (lambda c: c["platform:network"].update(cidr="10.10.0.0/33"), "platform:network.cidr", "valid IPv4 network"),
    "invalid image reference": (
        lambda c: c["platform:systems"]["darwin"]["images"].update(app="ghcr.io/Org/App:1.0"),
        "platform:systems.darwin.images.app",
        "not a valid image reference",
    ),
    "image without tag or digest": (
        lambda c: c["platform:systems"]["darwin"]["images"].update(app="ghcr.io/org/app"),
        "platform:systems.darwin.images.app",
        "with a tag or digest",
    ),
    "moving tag": (lambda c: c["platform:systems"]["darwin"]["images"].update(app="latest"), "platform:systems.darwin.images.app", "'latest' is not allowed"),
    "unknown preset": (lambda c: c.update({"platform:preset": "qa"}), "platform:preset", "preset 'qa' is unknown; allowed: dev, staging, prod"),
    "preset override out of range": (
        lambda c: c.update({"platform:overrides": {"postgres": {"backup_retention_days": 40}}}),
        "platform:overrides.postgres.backup_retention_days",
        "less than or equal to 35",
    ),
    "preset override unknown key": (
        lambda c: c.update({"platform:overrides": {"postgres": {"multiaz": True}}}),
        "platform:overrides.postgres.multiaz",
        "allowed keys: allocated_storage_gb",
    ),
    "log retention CloudWatch does not offer": (
        lambda c: c.update({"platform:overrides": {"logs": {"retention_days": 10}}}),
        "platform:overrides.logs.retention_days",
        "must be one of 1, 3, 5, 7, 14, 30",
    ),
    "AZ of another region": (
        lambda c: c["platform:network"].update(availability_zones=["us-east-1a", "eu-west-1b"]),
        "platform:network.availability_zones[1]",
        "not an AZ of us-east-1",
    ),
    "missing region": (lambda c: c.pop("aws:region"), "aws:region", "required"),
    "encrypted value outside secrets": (
        lambda c: c.update({"platform:domain": {"secure": "v1:x"}}),
        "platform:domain",
        "only 'platform:secrets' takes secrets",
    ),
    "domain without a way to get a certificate": (
        lambda c: c.update({"platform:domain": "example.org"}),
        "platform:domain",
        "also set 'platform:hosted_zone_id'",
    ),
    "hosted zone without a domain": (
        lambda c: c.update({"platform:hosted_zone_id": "Z0EXAMPLE"}),
        "platform:hosted_zone_id",
        "only applies with 'platform:domain'",
    ),
    "registry account while creating the repositories": (
        lambda c: c.update({"platform:registry": {"account_id": "210987654321"}}),
        "platform:registry.account_id",
        "set 'registry.create: false'",
    ),
    "architecture Fargate does not run": (
        lambda c: c.update({"platform:overrides": {"compute": {"architecture": "ARM32"}}}),
        "platform:overrides.compute.architecture",
        "'ARM64' or 'X86_64'",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_mistake_names_file_key_and_what_is_allowed(project, case):
    # GIVEN the dev stack file with one mistake
    mutate, key, words = CASES[case]
    project_dir = project("dev", mutate)
    # WHEN it is loaded
    err = error_of(project_dir)
    # THEN one problem names the file, the exact key and what is allowed
    rendered = [str(p) for p in err.problems]
    assert any(p.file == "Pulumi.test.yaml" and p.key == key and words in p.message for p in err.problems), rendered


def test_prod_takes_digests_only(project):
    # GIVEN the prod stack with a tag instead of a digest
    project_dir = project("prod", lambda c: c["platform:systems"]["darwin"]["images"].update(app="1.0.0"))
    err = error_of(project_dir)
    # THEN the message says digests only and names the key
    assert [p.key for p in err.problems] == ["platform:systems.darwin.images.app"]
    assert "digests only" in err.problems[0].message


def test_no_ecs_exec_in_prod(project):
    err = error_of(project("prod", lambda c: c.update({"platform:overrides": {"compute": {"exec_enabled": True}}})))
    assert [p.key for p in err.problems] == ["platform:overrides"]
    assert "exec_enabled is not allowed in a production preset" in err.problems[0].message


def catalog_problems(tmp_path, system: str, old: str, new: str):
    """GIVEN the real catalog entry of ``system`` with ``old`` replaced by ``new``, WHEN loaded: its problems."""
    src = (load_catalog_dir() / f"{system}.yaml").read_text()
    assert old in src
    (tmp_path / f"{system}.yaml").write_text(src.replace(old, new))
    with pytest.raises(ConfigError) as info:
        load_system(tmp_path / f"{system}.yaml")
    return info.value.problems


def test_port_out_of_range_in_catalog(tmp_path):
    (problem,) = catalog_problems(tmp_path, "darwin", "port: 3000", "port: 70000")
    assert (problem.file, problem.key) == ("stacks/apps/darwin.yaml", "services.app.port")
    assert "less than or equal to 65535" in problem.message


def test_service_using_undeclared_secret_in_catalog(tmp_path):
    (problem,) = catalog_problems(tmp_path, "darwin", "secrets: [REDIS_URL,", "secrets: [STRIPE_KEY, REDIS_URL,")
    assert problem.key == "services.app.secrets[0]"
    assert "'STRIPE_KEY' is not declared in this system's 'secrets'" in problem.message


def test_web_service_without_health_check_in_catalog(tmp_path):
    (problem,) = catalog_problems(tmp_path, "darwin", "    health: {path: /api/health}\n", "")
    assert "a web service needs 'port' and 'health'" in problem.message


def test_start_order_cycle_in_catalog(tmp_path):
    problems = catalog_problems(tmp_path, "twinkle", "    command: [pnpm, --filter", "    start_after: [worker]\n    command: [pnpm, --filter")
    assert any("cycle" in p.message for p in problems)


def test_unknown_key_in_catalog_lists_allowed_keys(tmp_path):
    (problem,) = catalog_problems(tmp_path, "darwin", "    port: 3000", "    port: 3000\n    prot: 3000")
    assert problem.key == "services.app.prot"
    assert "allowed keys:" in problem.message and "port" in problem.message


def test_yaml_syntax_error_names_line(project, tmp_path):
    project_dir = project("dev")
    (project_dir / "Pulumi.test.yaml").write_text("config:\n  aws:region: us-east-1\n  platform:systems: {darwin: [\n")
    err = error_of(project_dir)
    assert "not valid YAML: line" in str(err)


def test_duplicate_yaml_key_is_an_error(project):
    project_dir = project("dev")
    path = project_dir / "Pulumi.test.yaml"
    path.write_text(path.read_text() + "  aws:region: us-west-2\n")
    assert "duplicate key 'aws:region'" in str(error_of(project_dir))


def test_program_declares_nothing_and_fails_cleanly(project):
    # GIVEN a broken stack file WHEN the real program runs under the mock runtime
    import pulumi

    project_dir = project("dev", lambda c: c["platform:network"].update(cidrr="x"))
    with pytest.raises(pulumi.RunError) as info:
        plan("test", project_dir)
    # THEN it stops with the message (RunError: no traceback from the Pulumi host) and declared nothing
    assert "Pulumi.test.yaml: platform:network.cidrr: unknown key" in str(info.value)


def test_program_declares_no_resource_on_error(project):
    import pulumi

    from components import platform

    project_dir = project("dev", lambda c: c["platform:network"].update(cidrr="x"))
    from tools import harness

    captured = harness.Capture(stack="test")
    original = harness.Capture
    try:
        harness.Capture = lambda stack: captured  # keep a handle on the capture the run fills
        with pytest.raises(pulumi.RunError):
            harness.run("test", project_dir, program=lambda: platform.run_stack(project_dir))
    finally:
        harness.Capture = original
    assert captured.resources == []


def test_plan_cli_prints_one_message_and_exits_2(project, capsys):
    project_dir = project("dev", lambda c: c["platform:systems"].update(twinkel={"images": {"api": "1.0"}}))
    code = plan_cli.main(["--stack", "test", "--project-dir", str(project_dir)])
    out = capsys.readouterr()
    assert code == 2
    assert out.err.startswith("error: invalid configuration:\n  Pulumi.test.yaml: platform:systems.twinkel: unknown system")
    assert "Traceback" not in out.err and out.out == ""


def load_catalog_dir():
    from stacks.catalog import APPS_DIR

    assert load_catalog()  # the real catalog is valid
    return APPS_DIR


def test_every_problem_is_reported_at_once(project):
    def two_mistakes(c):
        c["platform:systems"]["darwin"]["images"].update(app="latest")
        c["platform:systems"]["aurum"]["images"].update(api=f"sha256:{D64[:10]}")

    err = error_of(project("dev", two_mistakes))
    assert sorted(p.key for p in err.problems) == ["platform:systems.aurum.images.api", "platform:systems.darwin.images.app"]


def test_cpu_memory_that_fargate_does_not_offer_in_catalog(tmp_path):
    (problem,) = catalog_problems(tmp_path, "darwin", "    memory: 1024", "    memory: 768")
    assert (problem.file, problem.key) == ("stacks/apps/darwin.yaml", "services.app")
    assert "memory 768 does not pair with cpu 512 on Fargate; allowed: 1024 to 4096 MiB in steps of 1024" in problem.message


def test_public_url_on_a_worker_in_catalog(tmp_path):
    (problem,) = catalog_problems(tmp_path, "starkdca", "    kind: worker ", "    kind: worker\n    public_url_env: BASE_URL ")
    assert problem.key == "services.worker" and "has no public URL" in problem.message


def test_more_web_services_than_one_load_balancer_takes(project):
    # GIVEN a domainless stack whose catalog has 51 web services (one listener each; an ALB takes 50)
    from stacks.catalog import System

    darwin = load_catalog()["darwin"]
    catalog = {f"sys{i:02d}": System.model_validate({**darwin.model_dump(exclude_none=True), "name": f"sys{i:02d}"}) for i in range(51)}
    project_dir = project("dev", lambda c: c.update({"platform:systems": {name: {"images": {"app": "1.0.0"}} for name in catalog}}))
    # WHEN loaded, THEN one message says which quota and what to do
    with pytest.raises(ConfigError) as info:
        load_platform("test", project_dir, catalog=catalog)
    (problem,) = info.value.problems
    assert problem.key == "platform:systems" and "51 web services exceed what one load balancer takes (50: listeners per ALB" in problem.message
