"""What the platform gives each container so the apps run as a non-root user on a read-only root
filesystem, and keep connections open longer than the load balancer (README, "What an image must provide").
"""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from components import otel
from stacks import edge
from stacks.catalog import Service, load_catalog

TASK = "aws:ecs/taskDefinition:TaskDefinition"


def containers(task) -> list[dict]:
    return json.loads(task.inputs["containerDefinitions"])


def env_of(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("environment", [])}


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_every_written_path_is_a_tmpfs_any_user_can_write(plans, stack):
    # On Fargate a bind-mount task volume is owned by root, mode 0755: uid 1000 cannot write it. A tmpfs
    # is mode 1777 (the tmpfs default), so the app's user can.
    catalog = load_catalog()
    for task in plans[stack].of_type(TASK):
        system, service = task.name.removesuffix("-task").split("-", 1)
        spec = catalog[system].services[service]
        assert task.inputs.get("volumes") is None, task.name  # no root-owned bind mounts
        for c in containers(task):
            if c["name"] in (otel.CONTAINER, "db-roles"):
                continue  # AWS's collector and the database bootstrap: their own images, which write nothing
            assert c["readonlyRootFilesystem"] is True and c["user"] != "0"
            tmpfs = {t["containerPath"]: t for t in c["linuxParameters"]["tmpfs"]}
            assert set(tmpfs) == set(spec.writable_paths), task.name
            assert all(t["size"] == spec.writable_paths[p].size_mib and "mode" not in " ".join(t["mountOptions"]) for p, t in tmpfs.items())
            assert c.get("mountPoints") == []


def test_darwin_gets_its_next_cache_and_the_memory_for_it(prod):
    task = next(t for t in prod.of_type(TASK) if t.name == "darwin-app-task")
    app = next(c for c in containers(task) if c["name"] == "app")
    sizes = {t["containerPath"]: t["size"] for t in app["linuxParameters"]["tmpfs"]}
    assert sizes == {"/tmp": 64, "/app/.next/cache": 256}
    # tmpfs pages are task memory: the mounts, full, leave the app at least half the task
    assert 2 * sum(sizes.values()) <= int(task.inputs["memory"])


def test_tools_are_pointed_away_from_the_read_only_root(prod):
    for task in prod.of_type(TASK):
        for c in containers(task):
            if c["name"] in (otel.CONTAINER, "db-roles"):
                continue  # AWS's collector and the database bootstrap: their own images, which write nothing
            env = env_of(c)
            assert env["HOME"] == env["TMPDIR"] == "/tmp", (task.name, c["name"])
            assert env["npm_config_cache"].startswith("/tmp/") and env["npm_config_update_notifier"] == "false"
            assert env["XDG_CACHE_HOME"].startswith("/tmp/") and env["CHECKPOINT_DISABLE"] == "1"


def test_migrations_start_the_prisma_cli_directly(prod):
    # `npx` looks for the package and may try to download it; the image contract puts the CLI in node_modules
    for task in prod.of_type(TASK):
        for c in containers(task):
            assert c.get("command", [""])[0] != "npx", (task.name, c["name"])


def test_web_apps_keep_connections_open_longer_than_the_load_balancer(prod):
    idle = next(r for r in prod.of_type("aws:lb/loadBalancer:LoadBalancer")).inputs["idleTimeout"]
    for task in prod.of_type(TASK):
        app = next(c for c in containers(task) if c["essential"])
        if "portMappings" not in app:
            continue
        keep_alive = int(env_of(app)["KEEP_ALIVE_TIMEOUT"])
        assert keep_alive > idle * 1000, task.name
        assert keep_alive == edge.keep_alive_ms(idle)
    # darwin runs `next start`, which takes the keep-alive as a flag, not from the environment
    darwin = next(c for t in prod.of_type(TASK) if t.name == "darwin-app-task" for c in containers(t) if c["name"] == "app")
    assert darwin["command"][:2] == ["sh", "-c"] and '--keepAliveTimeout "$KEEP_ALIVE_TIMEOUT"' in darwin["command"][2]
    assert darwin["command"][2].startswith("exec ")  # the shell hands its PID to next: signals reach the app


def test_apps_send_telemetry_to_the_collectors_ipv4_address(prod):
    # The collector listens on 127.0.0.1; Node may resolve "localhost" to ::1 first.
    for task in prod.of_type(TASK):
        names = [c["name"] for c in containers(task)]
        if otel.CONTAINER in names:
            app = next(c for c in containers(task) if c["essential"])
            assert env_of(app)["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"


@pytest.mark.parametrize(
    ("writable", "message"),
    [
        ({"/tmp": {}, "app/cache": {}}, "writable path 'app/cache' is relative"),
        ({"/tmp": {}, "/app/../etc": {}}, "writable path '/app/../etc' is not normalised; write '/etc'"),
        ({"/tmp/": {}}, "writable path '/tmp/' is not normalised; write '/tmp'"),
        ({"/app/cache": {}}, "needs '/tmp'"),
        ({"/tmp": {"size_mib": 400}}, "keep them under half of 'memory'"),
    ],
)
def test_writable_paths_are_checked(writable, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace("'", "'")):
        Service.model_validate({"kind": "worker", "writable_paths": writable})


def test_an_image_provided_volume_is_a_task_volume_not_a_tmpfs():
    from components.service import container_definitions
    from stacks.config import DeployedService, ImageRef

    spec = Service.model_validate({"kind": "worker", "writable_paths": {"/tmp": {}, "/data": {"source": "image"}}})
    d = DeployedService("s", "w", spec, ImageRef(None, "1", None), "w", None, {})
    (app,) = container_definitions(
        d, image="x", env={}, secrets={}, log_group="g", region="us-east-1", writable_root=False, migration=None, secrets_revision="r"
    )
    assert app["mountPoints"] == [{"sourceVolume": "scratch-data", "containerPath": "/data", "readOnly": False}]
    assert [t["containerPath"] for t in app["linuxParameters"]["tmpfs"]] == ["/tmp"]


def test_every_container_that_reads_the_database_url_trusts_the_rds_cas(prod):
    # node-postgres verifies against Node's store plus NODE_EXTRA_CA_CERTS (read once at start); the
    # migration container reads DATABASE_URL too.
    from components.postgres import RDS_CA_BUNDLE

    seen = 0
    for task in prod.of_type(TASK):
        for c in containers(task):
            if any(s["name"] == "DATABASE_URL" for s in c.get("secrets", [])):
                assert env_of(c)["NODE_EXTRA_CA_CERTS"] == RDS_CA_BUNDLE, (task.name, c["name"])
                seen += 1
            else:
                assert "NODE_EXTRA_CA_CERTS" not in env_of(c), (task.name, c["name"])
    assert seen == 13  # the 10 services that read it, and the 3 migrate containers


def test_the_database_bootstrap_needs_nothing_from_the_app_images(prod):
    # The db-roles container runs psql from the official postgres image, pinned by digest, as that image's
    # own user: no app image has to ship psql, and its TLS does not need the RDS bundle (channel binding)
    from components import postgres

    bootstraps = [c for task in prod.of_type(TASK) for c in containers(task) if c["name"] == postgres.BOOTSTRAP_CONTAINER]
    assert len(bootstraps) == 5  # one per system with Postgres
    for c in bootstraps:
        assert c["image"].startswith("public.ecr.aws/docker/library/postgres:17") and "@sha256:" in c["image"]
        assert c["user"] == "70:70" and c["readonlyRootFilesystem"] is True and "mountPoints" not in c
        assert c["command"][:2] == ["sh", "-c"] and "psql" in c["command"][2] and "--single-transaction" in c["command"][2]
        assert env_of(c)["PGCHANNELBINDING"] == "require"
