"""The catalog carries every fact of the seeds: ports, health paths, secrets, env, start order."""

from __future__ import annotations

import pytest

from stacks.catalog import SecretSource, ServiceKind, load_catalog

CATALOG = load_catalog()


def svc(system: str, service: str):
    return CATALOG[system].services[service]


def test_five_systems():
    assert sorted(CATALOG) == ["aurum", "darwin", "offerhub", "starkdca", "twinkle"]


@pytest.mark.parametrize(
    ("system", "service", "kind", "port", "health"),
    [
        ("twinkle", "api", "web", 3000, "/health"),
        ("twinkle", "facilitator", "web", 3001, "/health"),
        ("twinkle", "indexer", "singleton", None, None),
        ("twinkle", "worker", "worker", None, None),
        ("offerhub", "api", "web", 4000, "/api/v1/health"),
        ("starkdca", "api", "web", 4000, "/api/v1/health"),
        ("starkdca", "worker", "worker", None, None),
        ("aurum", "api", "web", 3001, "/health"),
        ("aurum", "indexer", "singleton", None, None),
        ("darwin", "app", "web", 3000, "/api/health"),
    ],
)
def test_ports_and_health_paths_match_the_seeds(system, service, kind, port, health):
    s = svc(system, service)
    assert (s.kind, s.port, s.health.path if s.health else None) == (ServiceKind(kind), port, health)


def test_twinkle_start_order_and_mcp_server():
    twinkle = CATALOG["twinkle"]
    order = sorted(twinkle.services, key=twinkle.start_rank)
    assert order == ["indexer", "api", "facilitator", "worker"]
    assert [p.name for p in twinkle.not_deployed] == ["mcp-server"]
    assert "stdio" in twinkle.not_deployed[0].reason


def test_twinkle_private_key_only_on_the_facilitator_and_rpc_per_service():
    twinkle = CATALOG["twinkle"]
    users = [name for name, s in twinkle.services.items() if "FACILITATOR_PRIVATE_KEY" in s.secrets]
    assert users == ["facilitator"]
    assert twinkle.secrets["PONDER_RPC_URL_11155111"].per_service
    assert twinkle.services["api"].metrics.path == "/metrics" and twinkle.services["facilitator"].metrics.path == "/metrics"
    assert twinkle.services["worker"].env["WORKER_CONCURRENCY"]


def test_offerhub_secrets_env_and_bullmq():
    offerhub = CATALOG["offerhub"]
    master = offerhub.secrets["OFFERHUB_MASTER_KEY"]
    assert (master.source, master.length, master.encoding) == (SecretSource.generated, 32, "base64")
    external = {n for n, s in offerhub.secrets.items() if s.source is SecretSource.external}
    assert {"AIRTM_API_KEY", "AIRTM_API_SECRET", "AIRTM_WEBHOOK_SECRET", "TRUSTLESS_API_KEY", "TRUSTLESS_WEBHOOK_SECRET"} <= external
    assert offerhub.redis.maxmemory_policy == "noeviction"
    env = offerhub.env
    assert [env["AIRTM_ENV"].for_env(e) for e in ("dev", "staging", "prod")] == ["sandbox", "sandbox", "prod"]
    assert [env["STELLAR_NETWORK"].for_env(e) for e in ("dev", "staging", "prod")] == ["testnet", "testnet", "mainnet"]
    assert [env["LOG_LEVEL"].for_env(e) for e in ("dev", "staging", "prod")] == ["debug", "info", "warn"]
    assert offerhub.migration.command[:3] == ["node_modules/.bin/prisma", "migrate", "deploy"] and offerhub.services["api"].long_lived_connections
    assert offerhub.services["api"].scaling.cpu_target_percent == 70


def test_starkdca_one_image_two_commands_cron_off_in_api():
    stark = CATALOG["starkdca"]
    assert stark.images == ["backend"]
    assert stark.services["api"].command == ["node", "apps/backend/dist/server.js"]
    assert stark.services["worker"].command == ["node", "apps/backend/dist/worker.js"]
    assert stark.services["api"].env["ENABLE_CRON"] == "false"
    assert stark.migration.command[-1] == "--schema=apps/backend/prisma/schema.prisma"
    assert {s.user for s in stark.services.values()} == {"1001:1001"}
    generated = {n for n, s in stark.secrets.items() if s.source is SecretSource.generated}
    assert generated == {"JWT_ACCESS_SECRET", "JWT_REFRESH_SECRET"}
    # "The only difference is the start command": the same secrets for both
    assert stark.services["api"].secrets == stark.services["worker"].secrets


def test_aurum_websocket_metrics_and_a_session_store_when_scaled_out():
    aurum = CATALOG["aurum"]
    api = aurum.services["api"]
    assert api.sticky and api.long_lived_connections and api.metrics.port == 9090
    # "Horizontal Scaling: Use Redis for session storage": only where the API scales out
    assert aurum.redis.when == "scaled_out" and aurum.without_redis().redis is None and aurum.postgres.min_major == 14
    assert "REDIS_URL" in api.secrets and "REDIS_URL" not in aurum.without_redis().services["api"].secrets
    assert aurum.services["indexer"].command == ["npm", "run", "indexer"]
    assert aurum.migration.command == ["npm", "run", "migrate"]
    assert aurum.env["CORS_ORIGIN"].for_env("prod") == "https://app.aurumlabs.io"


def test_darwin_instances_storage_and_secrets():
    darwin = CATALOG["darwin"]
    app = darwin.services["app"]
    assert app.scaling.min_tasks == 3 and darwin.postgres.storage_gb == 100
    assert (app.cpu, app.memory) == (512, 1024)
    generated = {n for n, s in darwin.secrets.items() if s.source is SecretSource.generated}
    assert generated == {"ADMIN_SECRET", "NEXTAUTH_SECRET"}


def test_every_system_has_sentry_and_every_secret_reaches_a_service():
    for system in CATALOG.values():
        assert "SENTRY_DSN" in system.secrets, system.name
        for name in system.secrets:
            assert any(name in s.secrets for s in system.services.values()), (system.name, name)


def test_runtime_ddl_names_a_service_that_reads_the_database():
    """postgres.runtime_ddl gives a service the DDL role; a name that is no service of the system, or one
    without DATABASE_URL, is refused by key (twinkle's facilitator reads the Ponder RPC secret too, so the
    role is named rather than guessed)."""
    twinkle = load_catalog()["twinkle"]
    assert twinkle.postgres.runtime_ddl == ["indexer"] and twinkle.reference_problems() == []
    no_db = twinkle.services["facilitator"].model_copy(update={"secrets": [s for s in twinkle.services["facilitator"].secrets if s != "DATABASE_URL"]})
    services = {**twinkle.services, "facilitator": no_db}
    for wrong in ("indexr", "facilitator"):
        bad = twinkle.model_copy(update={"postgres": twinkle.postgres.model_copy(update={"runtime_ddl": [wrong]}), "services": services})
        assert ("postgres.runtime_ddl[0]", f"'{wrong}' is not a service of this system that reads DATABASE_URL") in bad.reference_problems()
