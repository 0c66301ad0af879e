"""Per-system requirements of the guides (issue 16, part 2), read from the plan's task definitions and
services. Each test quotes the guide line it meets."""

from __future__ import annotations

import json

import pytest

from stacks.catalog import load_catalog
from stacks.config import load_platform, parse_image
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"


def app(cap, key: str) -> dict:
    task = cap.one(TASK, f"{key}-task")
    return next(c for c in json.loads(task.inputs["containerDefinitions"]) if c["essential"])


def env_of(cap, key: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in app(cap, key)["environment"]}


def minutes(timeout: str) -> int:
    return int(timeout.removesuffix("m"))


def test_ponder_gets_a_schema_per_deployment(plans):
    # Ponder, "Self-hosting": "Each deployment must use a different schema ... DATABASE_SCHEMA"
    # prod runs digests: the schema is named after the digest the task runs
    digest = app(plans["prod"], "twinkle-indexer")["image"].rsplit("@sha256:", 1)[1]
    assert env_of(plans["prod"], "twinkle-indexer")["DATABASE_SCHEMA"] == f"indexer_{digest[:12]}"
    # dev runs tags (immutable in ECR): named after the tag
    assert env_of(plans["dev"], "twinkle-indexer")["DATABASE_SCHEMA"] == "indexer_1_0_0"
    for cap in plans.values():
        assert "DATABASE_SCHEMA" not in env_of(cap, "twinkle-api")  # only Ponder creates schemas
    # a new image is a new deployment: a new schema; a valid unquoted Postgres identifier either way
    a, b = parse_image("sha256:" + "a" * 64), parse_image("sha256:" + "b" * 64)
    assert a.schema_name("indexer") != b.schema_name("indexer")
    assert parse_image("1.0.0-rc.1").schema_name("indexer") == "indexer_1_0_0_rc_1"


def test_the_api_starts_after_ponder_is_ready(plans):
    # twinkle's guide, "Service Startup Order": "2. Indexer - Creates database schema and syncs events
    # 3. API - Serves indexed data". Ponder's /ready answers 200 once the backfill is done.
    cap = plans["prod"]
    check = app(cap, "twinkle-indexer")["healthCheck"]
    port = env_of(cap, "twinkle-indexer")["PORT"]
    assert f"http://127.0.0.1:{port}/ready" in check["command"][-1]  # the port Ponder listens on
    assert check["command"][:3] == ["CMD", "node", "-e"]  # Node is in the image; curl and wget may not be
    indexer, api = cap.one(SERVICE, "twinkle-indexer-service"), cap.one(SERVICE, "twinkle-api-service")
    # the API's service is created after the indexer's deploy finished, and that deploy waits for healthy tasks
    assert indexer.urn in api.dependencies and indexer.inputs["waitForSteadyState"] is True
    # and pulumi waits at least as long as ECS lets a backfilling task stay unhealthy
    budget = check["startPeriod"] + check["interval"] * check["retries"]
    assert minutes(indexer.options["customTimeouts"]["update"]) * 60 > budget
    assert minutes(indexer.options["customTimeouts"]["create"]) * 60 > budget


def test_container_health_checks_are_within_ecs_limits(plans):
    # ECS API reference, HealthCheck: interval 5-300, timeout 2-60, retries 1-10, startPeriod 0-300
    checks = [c["healthCheck"] for cap in plans.values() for t in cap.of_type(TASK) for c in json.loads(t.inputs["containerDefinitions"]) if "healthCheck" in c]
    assert len(checks) >= 6
    for h in checks:
        assert 5 <= h["interval"] <= 300 and 2 <= h["timeout"] <= 60 and 1 <= h["retries"] <= 10 and 0 <= h["startPeriod"] <= 300
        assert h["timeout"] < h["interval"]


def test_starkdca_worker_heartbeat_is_writable(plans):
    # starkdca's guide, "Key Metrics to Watch": "Worker service restart count"; checklist: "Docker health checks"
    spec = load_catalog()["starkdca"].services["worker"]
    for cap in plans.values():
        container = app(cap, "starkdca-worker")
        assert spec.container_health.heartbeat in container["healthCheck"]["command"][-1]
        # cross-resource: the app can only touch the file where the read-only root has a writable mount
        mounts = [m["containerPath"] for m in container["linuxParameters"].get("tmpfs", [])]
        assert any(spec.container_health.heartbeat.startswith(m.rstrip("/") + "/") for m in mounts), mounts
        assert "healthCheck" not in app(cap, "starkdca-api")  # the API is checked by the load balancer


REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
CERT = "aws:acm/certificate:Certificate"
RECORD = "aws:route53/record:Record"
SNI = "aws:lb/listenerCertificate:ListenerCertificate"
RULE = "aws:lb/listenerRule:ListenerRule"


def test_aurum_gets_a_session_store_where_its_api_scales_out(plans):
    # aurum's guide, "Horizontal Scaling": "Use Redis for session storage". Dev runs one API task (no
    # autoscaling): no Redis there; staging and prod run two or more: a cache, and the API reads REDIS_URL.
    from stacks.config import scales_out

    for stack, cap in plans.items():
        cfg = load_platform(stack, ROOT)
        has_cache = any(r.inputs["replicationGroupId"] == f"aurum-{stack}" for r in cap.of_type(REDIS))
        assert has_cache is scales_out(load_catalog()["aurum"], cfg.preset) is (stack != "dev"), stack
        secrets = {s["name"] for s in app(cap, "aurum-api").get("secrets", [])}
        assert ("REDIS_URL" in secrets) is has_cache, stack
        assert "REDIS_URL" not in {s["name"] for s in app(cap, "aurum-indexer").get("secrets", [])}


def outside(zone: str | None = "Z0AURUMEXAMPLE", cert: str | None = None):
    host = {"name": "api.aurumlabs.io"} | ({"hosted_zone_id": zone} if zone else {}) | ({"certificate_arn": cert} if cert else {})
    return lambda c: c["platform:systems"]["aurum"].update(hostnames={"api": host})


def test_a_host_in_another_zone_gets_its_own_certificate_and_record(project):
    # aurum's guide: "wss://api.aurumlabs.io/ws", "curl https://api.aurumlabs.io/health": outside the platform domain
    cap = plan("test", project("prod", outside()))
    cert = next(r for r in cap.of_type(CERT) if r.inputs["domainName"] == "api.aurumlabs.io")
    assert cert.inputs["validationMethod"] == "DNS" and not cert.inputs.get("subjectAlternativeNames")
    records = [r for r in cap.of_type(RECORD) if r.inputs["zoneId"] == "Z0AURUMEXAMPLE"]
    assert {r.name for r in records} == {"alb-aurum-api-dns", "alb-cert-aurum-api-outside-validation-record"}
    assert next(r for r in records if r.name == "alb-aurum-api-dns").inputs["name"] == "api.aurumlabs.io"
    # the platform's zone gets no record for it, the listener serves its certificate by SNI, the rule matches it
    assert not [r for r in cap.of_type(RECORD) if r.inputs.get("name") == "api.aurumlabs.io" and r.inputs["zoneId"] != "Z0AURUMEXAMPLE"]
    assert any(r.name == "alb-aurum-api-outside-sni" for r in cap.of_type(SNI))
    rule = cap.one(RULE, "aurum-api-rule")
    assert rule.inputs["conditions"][0]["hostHeader"]["values"] == ["api.aurumlabs.io"]
    assert cap.outputs["urls"]["aurum-api"] == "https://api.aurumlabs.io"


def test_a_host_in_another_zone_with_an_issued_certificate(project):
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/0f0f0f0f-1111-2222-3333-444444444444"
    cap = plan("test", project("prod", outside(zone=None, cert=arn)))
    assert next(r for r in cap.of_type(SNI) if r.name == "alb-aurum-api-outside-sni").inputs["certificateArn"] == arn
    assert not [r for r in cap.of_type(CERT) if r.inputs["domainName"] == "api.aurumlabs.io"]
    assert not [r for r in cap.of_type(RECORD) if r.inputs.get("name") == "api.aurumlabs.io"]  # its DNS is the owner's


@pytest.mark.parametrize(
    ("stack", "mutate", "key", "words"),
    [
        ("dev", outside(), "platform:systems.aurum.hostnames.api", "needs 'platform:domain'"),
        ("prod", outside(cert="arn:aws:acm:us-east-1:123456789012:certificate/0f0f0f0f-1111-2222-3333-444444444444"), "hostnames.api", "exactly one of"),
        (
            "prod",
            lambda c: c["platform:systems"]["aurum"].update(hostnames={"api": {"name": "api.example.com", "hosted_zone_id": "Z1"}}),
            "platform:systems.aurum.hostnames.api.name",
            "is under 'example.com'",
        ),
    ],
)
def test_bad_outside_hosts_are_refused(project, stack, mutate, key, words):
    with pytest.raises(ConfigError) as info:
        load_platform("test", project(stack, mutate))
    assert key in str(info.value) and words in str(info.value)


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_every_catalog_value_reaches_its_container(plans, stack):
    # Every env value, secret name and start command the catalog takes from a guide is in the app
    # container the plan declares (system env, then service env; per environment where the guide varies it)
    cap = plans[stack]
    cfg = load_platform(stack, ROOT)
    checked = 0
    for name, deployed in cfg.systems.items():
        system = deployed.system
        for svc_name, svc in deployed.services.items():
            container = app(cap, f"{name}-{svc_name}")
            env = env_of(cap, f"{name}-{svc_name}")
            for var, value in {**system.env, **svc.spec.env}.items():
                want = value if isinstance(value, str) else value.for_env(stack)
                if want is not None and var not in deployed.system.secrets:
                    assert env.get(var) == want, (name, svc_name, var)
                    checked += 1
            assert {s["name"] for s in container.get("secrets", [])} >= set(svc.spec.secrets), (name, svc_name)
            if svc.spec.command:
                assert container["command"] == list(svc.spec.command), (name, svc_name)
    assert checked > 50


def test_replaced_task_definitions_stay_active_for_a_rollback(plans):
    # starkdca's guide, "Code Rollback (fastest)": go back to the previous version. tools.ops rollback
    # moves a service to its previous revision, which ECS runs only while it is ACTIVE (API reference,
    # DeregisterTaskDefinition): the provider must not deregister the revision a change replaces.
    for cap in plans.values():
        assert all(t.inputs.get("skipDestroy") is True for t in cap.of_type(TASK))


@pytest.mark.parametrize("systems", [25, 26])
def test_the_listener_takes_25_certificates_beside_its_default_one(project, systems):
    # ELB quotas: "Certificates per Application Load Balancer (excluding default certificates)": 25. Each
    # system's host app.<system>.<domain> is two labels down: one wildcard certificate per system beside
    # the default one (<domain>, *.<domain>). The 26th goes to a second load balancer (tests/test_load_balancers.py)
    from stacks.catalog import System

    darwin = load_catalog()["darwin"]
    # each its own database name: dev's systems share one instance, a database each (components/shared_data.py)
    postgres = darwin.postgres.model_dump(exclude_none=True)
    catalog = {
        name: System.model_validate({**darwin.model_dump(exclude_none=True), "name": name, "postgres": {**postgres, "database": name}})
        for name in (f"sys{i:02d}" for i in range(systems))
    }
    entries = {name: {"images": {"app": "1.0.0"}, "env": {"METRICS_ENDPOINT": "https://metrics.invalid/x"}} for name in catalog}
    project_dir = project("dev", lambda c: c.update({"platform:systems": entries, "platform:domain": "example.com", "platform:hosted_zone_id": "Z0EXAMPLE"}))
    cfg = load_platform("test", project_dir, catalog=catalog)
    assert cfg.load_balancers == {name: 1 if i < 25 else 2 for i, name in enumerate(catalog)}
