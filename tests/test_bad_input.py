"""Bad input: one clear message naming the file, the key and what is allowed; exit 2; no resource."""

from __future__ import annotations

import pytest

from stacks.catalog import load_catalog, load_system
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan, set_every_secret
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
    assert [p.key for p in err.problems] == ["platform:overrides.compute.exec_enabled"]
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


def test_a_system_with_more_web_services_than_one_load_balancer_takes(project):
    # GIVEN a domainless stack with one system of 51 web services (one listener each; an ALB takes 50, and a
    # system's services share a load balancer, so a second one cannot help: tests/test_load_balancers.py)
    from stacks.catalog import System

    darwin = load_catalog()["darwin"].model_dump(exclude_none=True)
    darwin.pop("images", None)  # computed from the services
    app = darwin["services"]["app"]
    darwin["services"] = {f"app{i:02d}": {**app, "port": 3000 + i, "image": "app"} for i in range(51)}
    catalog = {"darwin": System.model_validate(darwin)}
    project_dir = project("dev", lambda c: c.update({"platform:systems": {"darwin": c["platform:systems"]["darwin"]}}))
    # WHEN loaded, THEN one message names the system, the quota and what to do
    with pytest.raises(ConfigError) as info:
        load_platform("test", project_dir, catalog=catalog)
    (problem,) = info.value.problems
    assert problem.key == "platform:systems.darwin" and "its 51 web services exceed what one load balancer takes (50: listeners per ALB" in problem.message


# ---------------------------------------------------------------- round 2 (issue 15 part 7)

CERT = "arn:aws:acm:{}:123456789012:certificate/0e2b7f4c-1a2b-4c3d-9e8f-0123456789ab"


def with_domain(c: dict) -> None:
    c.update({"platform:domain": "example.com", "platform:hosted_zone_id": "Z0EXAMPLE"})


def rename(old: str, new: str):
    def mutate(c: dict) -> None:
        c[new] = c.pop(old)

    return mutate


ROUND_2 = {
    # case: (stack, mutation of its config, the one key the message names, words it must contain)
    "namespace typo": ("dev", lambda c: c.update({"platfrom:domain": "example.com"}), "platfrom:domain", "did you mean 'platform:domain'?"),
    "aws key typo": ("dev", rename("aws:region", "aws:regoin"), "aws:regoin", "did you mean 'aws:region'?"),
    "platform key typo": ("dev", rename("platform:systems", "platform:sytems"), "platform:sytems", "unknown key 'sytems'; did you mean 'systems'?"),
    "region that does not exist": ("dev", lambda c: c.update({"aws:region": "us-west-3"}), "aws:region", "'us-west-3' is not an AWS region"),
    "region misspelt": ("dev", lambda c: c.update({"aws:region": "us-est-1"}), "aws:region", "did you mean 'us-east-1' or 'us-west-1'?"),
    "DR region that does not exist": (
        "prod",
        lambda c: c["platform:recovery"].update(dr_region="eu-west-9"),
        "platform:recovery.dr_region",
        "'eu-west-9' is not an AWS region",
    ),
    "latest in a full reference": (
        "dev",
        lambda c: c["platform:systems"]["darwin"]["images"].update(app="ghcr.io/org/app:latest"),
        "platform:systems.darwin.images.app",
        "'latest' is not allowed",
    ),
    "hostname outside the domain": (
        "dev",
        lambda c: (with_domain(c), c["platform:systems"]["darwin"].update(hostnames={"app": "app.example.org"})),
        "platform:systems.darwin.hostnames.app",
        "'app.example.org' is not under the domain 'example.com'",
    ),
    "hostname that is not a DNS name": (
        "dev",
        lambda c: (with_domain(c), c["platform:systems"]["darwin"].update(hostnames={"app": "timer_app"})),
        "platform:systems.darwin.hostnames.app",
        "'timer_app' is not a valid DNS name",
    ),
    "hostname with a trailing dot": (
        "dev",
        lambda c: (with_domain(c), c["platform:systems"]["darwin"].update(hostnames={"app": "timer.example.com."})),
        "platform:systems.darwin.hostnames.app",
        "ends with a dot; write 'timer.example.com'",
    ),
    "certificate from another region": (
        "dev",
        lambda c: c.update({"platform:domain": "example.com", "platform:certificate_arn": CERT.format("eu-west-1")}),
        "platform:certificate_arn",
        "the certificate is in eu-west-1; a load balancer uses certificates of its own region (us-east-1)",
    ),
    "allocated storage above its ceiling": (
        "dev",
        lambda c: c.setdefault("platform:overrides", {}).update(postgres={"allocated_storage_gb": 200}),
        "platform:overrides.postgres.allocated_storage_gb",
        "must be at least 10 % above the allocated storage (200 GB)",
    ),
    "storage ceiling not above the allocated storage": (
        "dev",
        lambda c: c.setdefault("platform:overrides", {}).update(postgres={"max_allocated_storage_gb": 21}),
        "platform:overrides.postgres.max_allocated_storage_gb",
        "raise max_allocated_storage_gb to 22 or more",
    ),
    "prod final snapshot off": (
        "prod",
        lambda c: c.update({"platform:overrides": {"postgres": {"final_snapshot": False}}}),
        "platform:overrides.postgres.final_snapshot",
        "set overrides.acknowledge_unprotected_data: true",
    ),
    "prod deletion protection off": (
        "prod",
        lambda c: c.update({"platform:overrides": {"postgres": {"deletion_protection": False}}}),
        "platform:overrides.postgres.deletion_protection",
        "set overrides.acknowledge_unprotected_data: true",
    ),
    "prod cache final snapshot off": (
        "prod",
        lambda c: c.update({"platform:overrides": {"redis": {"final_snapshot": False}}}),
        "platform:overrides.redis.final_snapshot",
        "set overrides.acknowledge_unprotected_data: true",
    ),
    "credentials in the OTLP endpoint": (
        "dev",
        lambda c: c.update({"platform:observability": {"otlp_endpoint": "https://user:tok3n@otlp.example.com"}}),
        "platform:observability.otlp_endpoint",
        "put the credential in the secret OTLP_AUTH",
    ),
    "database URL in plain env": (
        "dev",
        lambda c: c["platform:systems"]["aurum"]["env"].update(ANALYTICS_DB="postgres://app:hunter2@db.example.com/aurum"),
        "platform:systems.aurum.env.ANALYTICS_DB",
        "a URL with credentials in it",
    ),
    "secret-looking name in plain env": (
        "dev",
        lambda c: c["platform:systems"]["darwin"]["env"].update(GITHUB_TOKEN="abc"),
        "platform:systems.darwin.env.GITHUB_TOKEN",
        "named like a secret",
    ),
    "secret-looking value in plain env": (
        "dev",
        lambda c: c["platform:systems"]["aurum"]["env"].update(SIGNER="0x" + "ab" * 32),
        "platform:systems.aurum.env.SIGNER",
        "looks like a credential",
    ),
    "PORT other than the service's": (
        "dev",
        lambda c: c["platform:systems"]["darwin"]["env"].update(PORT="8080"),
        "platform:systems.darwin.env.PORT",
        "'8080' contradicts the catalog (app listens on 3000",
    ),
    "cache node type that does not exist": (
        "dev",
        lambda c: c.update({"platform:overrides": {"redis": {"node_type": "cache.m5.8xlarge"}}}),
        "platform:overrides.redis.node_type",
        "'cache.m5.8xlarge' is not an ElastiCache node type",
    ),
}


@pytest.mark.parametrize("case", sorted(ROUND_2))
def test_round_2_each_mistake_is_one_message_naming_file_and_key(project, case):
    # GIVEN a shipped stack file with one mistake a platform engineer plausibly makes
    stack, mutate, key, words = ROUND_2[case]
    # WHEN it is loaded
    err = error_of(project(stack, mutate))
    # THEN exactly one problem, naming the file and the key, says what is allowed
    assert [(p.file, p.key) for p in err.problems] == [("Pulumi.test.yaml", key)], str(err)
    assert words in err.problems[0].message, str(err)


def test_no_message_repeats_a_credential(project):
    def leaks(c):
        c["platform:systems"]["aurum"]["env"].update(ANALYTICS_DB="postgres://app:hunter2@db.example.com/aurum", SIGNER="0x" + "ab" * 32)
        c.update({"platform:observability": {"otlp_endpoint": "https://user:tok3n@otlp.example.com"}})

    text = str(error_of(project("dev", leaks)))
    assert "hunter2" not in text and "tok3n" not in text and "ab" * 32 not in text


def test_a_typo_in_a_top_level_section_of_the_stack_file(project):
    # GIVEN `confg:` instead of `config:` (today: every value dropped, and the message blames aws:region)
    project_dir = project("dev")
    path = project_dir / "Pulumi.test.yaml"
    path.write_text(path.read_text().replace("config:", "confg:", 1))
    err = error_of(project_dir)
    assert [(p.file, p.key) for p in err.problems] == [("Pulumi.test.yaml", "confg")]
    assert "unknown top-level section 'confg'; did you mean 'config'?" in err.problems[0].message


def test_a_typo_in_a_namespace_of_an_engine_value_names_its_source(tmp_path):
    from stacks.engine import EngineConfig
    from tests.test_engine_config import environment_only
    from tools.harness import engine_config

    values, secret_keys = engine_config("dev", ROOT)
    values["platfrom:domain"] = "example.com"
    with pytest.raises(ConfigError) as info:
        load_platform("dev", environment_only(tmp_path), engine=EngineConfig(values, frozenset(secret_keys), "Pulumi.dev.yaml", {}))
    (problem,) = info.value.problems
    assert problem.key == "platfrom:domain" and problem.file.startswith("the stack's environment or config file")


def test_other_projects_namespaces_are_left_alone(project):
    # an environment may carry settings of other tools; only a likely typo of ours is refused
    assert load_platform("test", project("dev", lambda c: c.update({"datadog:site": "datadoghq.eu"})))


def test_the_region_list_is_botocores(project):
    # The loader's copy of botocore's aws partition (botocore is not a runtime dependency) stays equal
    # to the installed botocore's: a new region fails here until it is added to stacks/regions.py.
    import botocore
    from botocore.loaders import Loader

    from stacks import regions

    partitions = Loader().load_data("endpoints")["partitions"]
    assert regions.BOTOCORE_VERSION == botocore.__version__
    assert regions.AWS_REGIONS == tuple(sorted(next(p for p in partitions if p["partition"] == "aws")["regions"]))


def test_a_region_botocore_knows_is_accepted(project):
    cfg = load_platform("test", project("dev", lambda c: c.update({"aws:region": "ap-southeast-7"})))
    assert cfg.region == "ap-southeast-7" and cfg.availability_zones == ("ap-southeast-7a", "ap-southeast-7b")


def test_acknowledged_prod_switches_and_a_pinned_latest_are_accepted(project):
    def acknowledged(c):
        c["platform:overrides"] = {"postgres": {"final_snapshot": False}, "redis": {"final_snapshot": False}, "acknowledge_unprotected_data": True}

    cfg = load_platform("test", project("prod", acknowledged))
    assert cfg.preset.postgres.final_snapshot is False and cfg.preset.redis.final_snapshot is False
    digest = f"ghcr.io/org/app:latest@sha256:{D64}"  # the digest pins it; the tag is ignored
    cfg = load_platform("test", project("dev", lambda c: c["platform:systems"]["darwin"]["images"].update(app=digest)))
    assert cfg.systems["darwin"].images["app"].digest == f"sha256:{D64}"


@pytest.mark.parametrize("where", ["stack", "catalog"])
def test_a_file_that_is_not_utf8(project, tmp_path, where):
    # GIVEN a file saved as Latin-1 (an accented letter in a comment or a value)
    if where == "stack":
        project_dir = project("dev")
        path = project_dir / "Pulumi.test.yaml"
        text = path.read_text().replace("app: 1.0.0", "app: 1.0.0 # café", 1)
        assert "café" in text
        path.write_bytes(text.encode("latin-1"))
        # WHEN loaded, THEN one message names the file, the key on that line and the fix; no UnicodeDecodeError
        err = error_of(project_dir)
        expected = ("Pulumi.test.yaml", "platform:systems.darwin.images.app")
    else:
        src = (load_catalog_dir() / "darwin.yaml").read_text()
        (tmp_path / "darwin.yaml").write_bytes(src.replace("Next.js app, admin panel", "Next.js app (café), admin panel").encode("latin-1"))
        with pytest.raises(ConfigError) as info:
            load_system(tmp_path / "darwin.yaml")
        err = info.value
        expected = ("stacks/apps/darwin.yaml", "services.app.description")
    assert [(p.file, p.key) for p in err.problems] == [expected]
    assert "not UTF-8: byte 0xe9 on line" in err.problems[0].message and "save the file as UTF-8" in err.problems[0].message


def test_plan_cli_refuses_a_latin1_stack_file_without_a_traceback(project, capsys):
    project_dir = project("dev")
    path = project_dir / "Pulumi.test.yaml"
    path.write_bytes(path.read_text().replace("cidr:", "# réseau\n    cidr:", 1).encode("latin-1"))
    code = plan_cli.main(["--stack", "test", "--project-dir", str(project_dir)])
    out = capsys.readouterr()
    assert code == 2 and "not UTF-8" in out.err and "Traceback" not in out.err


# ---------------------------------------------------------------- round 2 in the catalog


CATALOG_ROUND_2 = {
    # case: (system, text replaced, replacement, the key named, words)
    "runs as uid 0": ("starkdca", '    user: "1001:1001"       #', '    user: "0"       #', "services.api.user", "runs the app as root"),
    "runs as 0:0": ("starkdca", '    user: "1001:1001"       #', '    user: "0:0"       #', "services.api.user", "runs the app as root"),
    "runs as root": ("starkdca", '    user: "1001:1001"       #', "    user: root       #", "services.api.user", "runs the app as root"),
    "relative writable path": (
        "darwin",
        "      /app/.next/cache: {size_mib: 256}",
        "      app/.next/cache: {size_mib: 256}",
        "services.app.writable_paths",
        "is relative",
    ),
    "writable path not normalised": (
        "darwin",
        "      /app/.next/cache: {size_mib: 256}",
        "      /app/.next/../.next/cache: {size_mib: 256}",
        "services.app.writable_paths",
        "is not normalised; write '/app/.next/cache'",
    ),
    "writable paths that are one after normalisation": (
        "darwin",
        "      /tmp: {size_mib: 64}",
        "      /tmp: {size_mib: 64}\n      /tmp/: {size_mib: 32}",
        "services.app.writable_paths",
        "'/tmp/' is not normalised; write '/tmp' (and '/tmp' is listed too",
    ),
    "writable path inside another": (
        "darwin",
        "      /tmp: {size_mib: 64}",
        "      /tmp: {size_mib: 64}\n      /app/.next: {size_mib: 64}",
        "services.app.writable_paths",
        "'/app/.next/cache' is inside '/app/.next'",
    ),
    "size of a path the image provides": (
        "darwin",
        "      /app/.next/cache: {size_mib: 256}",
        "      /app/.next/cache: {source: image, size_mib: 256}",
        "services.app.writable_paths./app/.next/cache",
        "size_mib applies to a tmpfs only",
    ),
    "plain env shadows a declared secret": (
        "darwin",
        "  NODE_ENV: production\n",
        "  NODE_ENV: production\n  ALERT_WEBHOOK_URL: https://hooks.example.com/x\n",
        "env.ALERT_WEBHOOK_URL",
        "also declared in 'secrets'",
    ),
    "service env shadows a secret it does not receive": (
        "twinkle",
        '    env: {PORT: "3000"}',
        '    env: {PORT: "3000", FACILITATOR_PRIVATE_KEY: "none"}',
        "services.api.env.FACILITATOR_PRIVATE_KEY",
        "the system declares it a secret",
    ),
    "secret-looking name in catalog env": (
        "darwin",
        "  NODE_ENV: production\n",
        "  NODE_ENV: production\n  SMTP_PASS: x\n",
        "env.SMTP_PASS",
        "named like a secret",
    ),
    "secret-looking value in a per-environment env": (
        "darwin",
        "  NODE_ENV: production\n",
        "  NODE_ENV: production\n  STRIPE: {dev: sk_test_abc, prod: from-the-dashboard}\n",
        "env.STRIPE.dev",
        "looks like a credential",
    ),
    "catalog PORT other than the port": (
        "darwin",
        '    env: {PORT: "3000"}',
        '    env: {PORT: "3001"}',
        "services.app.env.PORT",
        "'3001' contradicts services.app.port (3000)",
    ),
    "app port the collector listens on": (
        "darwin",
        "    port: 3000\n",
        "    port: 4318\n",
        "services.app.port",
        "4318 is taken by the collector sidecar in the same task (OTLP HTTP",
    ),
    "metrics port the collector listens on": (
        "aurum",
        "metrics: {path: /metrics, port: 9090}\n    env: {PORT",
        "metrics: {path: /metrics, port: 8888}\n    env: {PORT",
        "services.api.metrics.port",
        "8888 is taken by the collector sidecar in the same task (its own metrics",
    ),
    "catalog hostname that is not a DNS name": (
        "darwin",
        "    strict_paths:",
        "    hostname: Timer_App\n    strict_paths:",
        "services.app.hostname",
        "should match pattern",
    ),
}


@pytest.mark.parametrize("case", sorted(CATALOG_ROUND_2))
def test_round_2_catalog_mistakes(tmp_path, case):
    system, old, new, key, words = CATALOG_ROUND_2[case]
    if case == "app port the collector listens on":  # the port and the PORT it sets move together
        src = (load_catalog_dir() / "darwin.yaml").read_text()
        (tmp_path / "darwin.yaml").write_text(src.replace(old, new).replace('env: {PORT: "3000"}', 'env: {PORT: "4318"}'))
        with pytest.raises(ConfigError) as info:
            load_system(tmp_path / "darwin.yaml")
        problems = info.value.problems
    else:
        problems = catalog_problems(tmp_path, system, old, new)
    assert [(p.file, p.key) for p in problems] == [(f"stacks/apps/{system}.yaml", key)], problems
    assert words in problems[0].message, problems


def test_a_catalog_key_typo_says_which_key_was_meant(tmp_path):
    (problem,) = catalog_problems(tmp_path, "darwin", "    port: 3000", "    port: 3000\n    prot: 3000")
    assert "unknown key 'prot'; did you mean 'port'?" in problem.message


def test_a_postgres_minimum_the_preset_cannot_meet(project):
    # GIVEN a system whose guide needs Postgres 17 and the dev preset's engine_major (16)
    from stacks.catalog import System

    catalog = load_catalog()
    darwin = catalog["darwin"].model_dump(exclude_none=True)
    darwin["postgres"]["min_major"] = 17
    catalog["darwin"] = System.model_validate(darwin)
    with pytest.raises(ConfigError) as info:
        load_platform("test", project("dev"), catalog=catalog)
    (problem,) = info.value.problems
    assert (problem.file, problem.key) == ("Pulumi.test.yaml", "platform:overrides.postgres.engine_major")
    assert "Postgres 16 is older than darwin supports (postgres.min_major: 17 in stacks/apps/darwin.yaml)" in problem.message
    # THEN raising the engine in the stack file is what it takes
    cfg = load_platform("test", project("dev", lambda c: c.setdefault("platform:overrides", {}).update(postgres={"engine_major": 17})), catalog=catalog)
    assert cfg.preset.postgres.engine_major == 17


def test_every_shipped_stack_meets_the_catalogs_minimums():
    # darwin's "Memory: 1GB minimum" holds on every shipped stack: its own node is sized for it
    from stacks import config

    for stack in ("dev", "staging", "prod", "staging-eks"):
        cfg = load_platform(stack, ROOT)
        for name, system in cfg.systems.items():
            if system.system.redis and system.system.redis.memory_gb:
                assert config.cache_usable_gib(cfg.redis_settings(name).node_type) >= system.system.redis.memory_gb, (stack, name)
        assert all(s.system.postgres is None or s.system.postgres.min_major <= cfg.preset.postgres.engine_major for s in cfg.systems.values())


def test_a_system_that_needs_more_redis_memory_gets_its_own_larger_node():
    """darwin's guide: "Memory: 1GB minimum". dev's preset node (cache.t4g.micro) holds 0.38 GiB of data
    (maxmemory 0.5 GiB less the 25 % ElastiCache reserves): darwin alone gets cache.t4g.small (1.03 GiB),
    the other systems keep the preset's node."""
    from stacks import config

    cfg = load_platform("dev", ROOT)
    assert cfg.preset.redis.node_type == "cache.t4g.micro"
    assert cfg.redis_settings("darwin").node_type == "cache.t4g.small"
    assert {cfg.redis_settings(n).node_type for n, s in cfg.systems.items() if s.system.redis and n != "darwin"} == {"cache.t4g.micro"}
    assert config.cache_node_type("cache.t4g.micro", 2) == "cache.t4g.medium"  # 2.32 GiB usable
    assert config.cache_node_type("cache.m6g.large", 1) == "cache.m6g.large"
    assert config.cache_node_type("cache.t4g.small", 4) == "cache.m5.large"  # out of the family: 4.79 GiB usable


def test_a_paused_service_is_loaded_and_an_unknown_one_refused(project):
    """``python -m tools.ops pause`` writes ``platform:systems.<s>.paused.<service>: <count>``; the loader
    marks the service paused without holding what starts after it, and names a typo."""

    def pause_indexer(config: dict) -> None:
        set_every_secret(config)
        config["platform:systems"]["twinkle"]["paused"] = {"indexer": 1}

    cfg = load_platform("test", project("dev", pause_indexer))
    twinkle = cfg.systems["twinkle"].services
    assert twinkle["indexer"].paused and not twinkle["indexer"].held
    assert not twinkle["api"].paused and not twinkle["api"].waits_for_held
    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", lambda c: c["platform:systems"]["twinkle"].update(paused={"indexr": 1})))
    (problem,) = err.value.problems
    assert problem.key == "platform:systems.twinkle.paused.indexr"
    assert "did you mean 'indexer'" in problem.message
