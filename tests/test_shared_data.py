"""dev's shared data tier (issue 18, "A cheaper dev"; components/shared_data.py): one Postgres instance with a
database and roles per system, one Redis with a logical database per system, the systems whose guides set
cache settings of their own on their own Redis; each system's URLs name its own database and number."""

from __future__ import annotations

import json
import os
import subprocess
from urllib.parse import urlsplit

import pulumi
import pytest

from components import shared_data
from components.platform import run_stack
from stacks import edge, sharing
from stacks.catalog import load_catalog
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan
from tools import cost, harness

RDS = "aws:rds/instance:Instance"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
SYSTEMS = ("twinkle", "offerhub", "starkdca", "aurum", "darwin")
OWN_CACHE = {"offerhub", "darwin"}  # their catalog entries' redis.own_cache (BullMQ's noeviction; darwin's Pub/Sub and 1 GB)


@pytest.fixture(scope="module")
def urls() -> dict[str, dict[str, str]]:
    """WHEN the real dev program runs: each system's composed URLs and owner secret, read through ``apply``
    (the capture itself only ever holds them as ``[secret]``)."""
    seen: dict[str, dict[str, str]] = {}

    def program() -> None:
        platform = run_stack(ROOT)
        assert platform is not None
        for name, data in platform.systems.items():
            mine = seen.setdefault(name, {})

            def keep(key: str, value, mine=mine) -> None:
                value.apply(lambda v: mine.__setitem__(key, v))

            keep("DATABASE_URL", data.postgres.database_url)
            keep("DATABASE_OWNER", data.postgres.owner_secret)
            if data.postgres.ddl_url is not None:
                keep("DATABASE_DDL_URL", data.postgres.ddl_url)
            if data.redis is not None:
                keep("REDIS_URL", data.redis.redis_url)

    harness.run("dev", ROOT, program=program)
    return seen


def _sharing(stack: str = "dev") -> shared_data.Tenancy:
    t = shared_data.tenancy(load_platform(stack, ROOT))
    assert t is not None
    return t


def test_dev_runs_one_postgres_instance_and_one_shared_redis_beside_the_caches_guides_keep(plans):
    # issue 18: one Postgres instance (a database per system) and one Redis (a logical database per system);
    # offerhub (BullMQ: noeviction) and darwin (Pub/Sub, 1 GB) keep their own (catalog redis.own_cache)
    dev = plans["dev"]
    assert [r.inputs["identifier"] for r in dev.of_type(RDS)] == ["shared-dev"]
    assert "dbName" not in dev.one(RDS).inputs  # RDS creates only `postgres`; each system's bootstrap creates its own
    assert sorted(r.inputs["replicationGroupId"] for r in dev.of_type(REDIS)) == ["darwin-dev", "offerhub-dev", "shared-dev"]
    # the shared cache never evicts: its tenants ask for different policies (twinkle allkeys-lru, starkdca noeviction)
    params = {p["name"]: p["value"] for p in dev.one("aws:elasticache/parameterGroup:ParameterGroup", "shared-cache-params").inputs["parameters"]}
    assert params == {"maxmemory-policy": "noeviction"}
    # staging and prod keep a database and a cache per system (a production preset refuses data.shared)
    for stack in ("staging", "prod"):
        assert {r.inputs["identifier"].rsplit("-", 1)[0] for r in plans[stack].of_type(RDS)} == set(SYSTEMS)


def test_each_systems_urls_name_its_own_database_role_and_redis_number(urls):
    # components/shared_data.py: DATABASE_URL carries the system's own database and app role; the owner secret
    # its own database; REDIS_URL its own logical database (redis.io "Connection URLs": the path selects it)
    t = _sharing()
    catalog = load_catalog()
    hosts = set()
    for name in SYSTEMS:
        database = catalog[name].postgres.database
        url = urlsplit(urls[name]["DATABASE_URL"])
        hosts.add(url.hostname)
        assert (url.path, url.username) == (f"/{database}", f"{database}_app"), name
        owner = json.loads(urls[name]["DATABASE_OWNER"])
        assert urlsplit(owner["url"]).path == f"/{database}" and urlsplit(owner["url"]).username == "app"
        assert owner["host"] == url.hostname
    assert hosts == {"shared-dev.abc123.us-east-1.rds.amazonaws.com"}
    ddl = urlsplit(urls["twinkle"]["DATABASE_DDL_URL"])
    assert (ddl.path, ddl.username) == ("/twinkle", "twinkle_ddl")
    numbers = {}
    for name in SYSTEMS:
        if "REDIS_URL" not in urls[name]:
            continue  # aurum: no Redis where its API does not scale out
        url = urlsplit(urls[name]["REDIS_URL"])
        assert url.scheme == "rediss" and url.password
        if name in OWN_CACHE:
            assert url.hostname.startswith(f"master.{name}-dev.") and url.path == "", name
        else:
            assert url.hostname.startswith("master.shared-dev.") and url.path == f"/{t.redis[name]}", name
            numbers[name] = int(url.path[1:])
    assert set(numbers) == {"twinkle", "starkdca"} and len(set(numbers.values())) == len(numbers)
    assert all(1 <= n <= 15 for n in numbers.values())  # 0 stays empty: a client that ignores the path lands there


def test_services_reach_the_shared_instance_and_cache_through_their_own_ingress_rules(plans):
    # components/service.py: each service adds ingress from its own group to its stores' groups; on a shared
    # instance that is the shared group, on the Postgres port, one rule per service
    dev = plans["dev"]
    db_sg = dev.one("aws:ec2/securityGroup:SecurityGroup", "shared-db-sg").urn
    cache_sg = dev.one("aws:ec2/securityGroup:SecurityGroup", "shared-cache-sg").urn
    offerhub_sg = dev.one("aws:ec2/securityGroup:SecurityGroup", "offerhub-cache-sg").urn
    cfg = load_platform("dev", ROOT)
    for svc in cfg.services():
        secrets = svc.spec.secrets
        if "DATABASE_URL" in secrets:
            rule = dev.one(INGRESS, f"{svc.key}-to-db")
            assert rule.property_dependencies["securityGroupId"] == [db_sg] and rule.inputs["fromPort"] == 5432, svc.key
        if "REDIS_URL" in secrets and svc.system in {"twinkle", "starkdca"}:
            rule = dev.one(INGRESS, f"{svc.key}-to-cache")
            assert rule.property_dependencies["securityGroupId"] == [cache_sg] and rule.inputs["fromPort"] == 6379, svc.key
    # offerhub's own cache admits offerhub, and the shared one does not know it
    assert dev.one(INGRESS, "offerhub-api-to-cache").property_dependencies["securityGroupId"] == [offerhub_sg]
    # nothing opens the shared groups to an address range
    shared_rules = [r for r in dev.of_type(INGRESS) if r.property_dependencies.get("securityGroupId") in ([db_sg], [cache_sg])]
    assert shared_rules and all("cidrIpv4" not in r.inputs for r in shared_rules)


def test_offerhub_keeps_its_own_noeviction_redis_with_its_own_alarms(plans):
    # offerhub's guide: BullMQ requires noeviction; stacks/apps/offerhub.yaml redis.own_cache
    dev = plans["dev"]
    params = {p["name"]: p["value"] for p in dev.one("aws:elasticache/parameterGroup:ParameterGroup", "offerhub-cache-params").inputs["parameters"]}
    assert params == {"maxmemory-policy": "noeviction"}
    assert {r.name for r in dev.of_type(ALARM) if r.name.startswith("offerhub-cache-")} == {"offerhub-cache-001-cpu", "offerhub-cache-001-memory"}


def test_the_shared_stores_alarms_exist_once_not_per_system(plans):
    # components/shared_data.py monitoring(): the instance's and the cache's alarms in the core, once
    dev = plans["dev"]
    on_shared = [r for r in dev.of_type(ALARM) if "shared-dev" in json.dumps(r.inputs.get("dimensions", {}))]
    assert sorted(r.name for r in on_shared) == [
        "shared-cache-001-cpu",
        "shared-cache-001-memory",
        "shared-db-connections",
        "shared-db-cpu",
        "shared-db-storage",
    ]
    assert all(dev.top_component(r.urn) == "shared-data-monitoring" for r in on_shared)
    assert not [r.name for r in dev.of_type(ALARM) if r.name.endswith(("-db-cpu", "-db-storage")) and not r.name.startswith("shared-")]
    # its memory alarm is noeviction's earlier one (observability: writes fail when full)
    memory = next(r for r in on_shared if r.name == "shared-cache-001-memory")
    assert memory.inputs["threshold"] == load_platform("dev", ROOT).preset.observability.cache_memory_noeviction_percent
    # RDS events of the shared instance reach the alarm topic once
    assert [r.inputs["sourceIds"] for r in dev.of_type("aws:rds/eventSubscription:EventSubscription")] == [["shared-dev"]]


def _bootstrap(cap: harness.Capture, task: str) -> dict:
    containers = json.loads(cap.one(TASK, task).inputs["containerDefinitions"])
    return next(c for c in containers if c["name"] == "db-roles")


def test_the_bootstrap_creates_its_database_on_the_shared_instance_only(plans):
    # PostgreSQL docs: CREATE DATABASE cannot run inside a transaction block, so no --single-transaction there;
    # it connects to `postgres` (RDS creates it) and \connect's to its own database for the roles' transaction
    dev = _bootstrap(plans["dev"], "twinkle-indexer-task")
    env = {e["name"]: e["value"] for e in dev["environment"]}
    assert "--single-transaction" not in dev["command"][2] and env["PGDATABASE"] == "postgres"
    sql = env["DB_ROLES_SQL"]
    assert "SELECT format('CREATE DATABASE %I', 'twinkle') WHERE NOT EXISTS" in sql and sql.index("\\connect twinkle") < sql.index("BEGIN;")
    assert 'REVOKE CONNECT, TEMPORARY ON DATABASE "twinkle" FROM PUBLIC;' in sql and sql.rstrip().endswith("COMMIT;")
    assert {s["name"] for s in dev["secrets"]} == {"PGHOST", "PGPASSWORD", "DB_APP_VERIFIER", "DB_DDL_VERIFIER"}  # still secrets, not env
    # prod's own instances: the bootstrap as before
    prod = _bootstrap(plans["prod"], "twinkle-indexer-task")
    assert "--single-transaction" in prod["command"][2] and {e["name"]: e["value"] for e in prod["environment"]}["PGDATABASE"] == "twinkle"


def test_redis_numbers_stay_put_when_a_system_is_added_and_pins_hold():
    # components/shared_data.py: a number from a hash of the name, probing past taken ones (stacks/edge.py)
    tenants = ["aurum", "starkdca", "twinkle"]
    base = sharing.redis_databases(tenants)
    assert base == edge.stable_slots(tenants, sharing.REDIS_DATABASES)  # the load balancer's assignment, over 1-15
    # adding any of these systems moves none of the others (their probes land on free numbers)
    for new in ("offerhub", "darwin", "ledger", "payments", "search"):
        grown = sharing.redis_databases([*tenants, new])
        assert {k: grown[k] for k in tenants} == base, new
    # the one case that moves a number: a new name whose probe reaches a taken number and sorts first ...
    mover = next(n for n in (f"a{i}" for i in range(1000)) if sharing.redis_databases([*tenants, n]) != {**base, n: sharing.redis_databases([*tenants, n])[n]})
    moved = sharing.redis_databases([*tenants, mover])
    assert any(moved[k] != base[k] for k in tenants)
    # ... which a pin of the existing numbers (data.redis_databases) prevents
    pinned = sharing.redis_databases([*tenants, mover], pins=base)
    assert {k: pinned[k] for k in tenants} == base and pinned[mover] not in base.values()
    # a number is 1-15 and 15 tenants fill the cache; a 16th is refused
    assert set(sharing.redis_databases([f"s{i}" for i in range(15)]).values()) == set(range(1, 16))
    with pytest.raises(ValueError, match="16 systems share a cache of 15"):
        sharing.redis_databases([f"s{i}" for i in range(16)])


def test_nothing_secret_in_plaintext_and_the_cores_shared_output_is_split(plans):
    # the mocks' random values start with "offline0password0": never in an input or an output of dev
    text = json.dumps([r.to_json() for r in plans["dev"].resources] + [plans["dev"].outputs])
    assert "offline0password0" not in text and "b2ZmbGluZ" not in text
    # a split core exports what a tenant needs: plain values in one output, each secret an output of its own
    core = plan("core-dev")
    plain = core.outputs[shared_data.OUTPUT]
    assert harness.SECRET not in json.dumps(plain) and "offline0password0" not in json.dumps(core.outputs)
    assert plain["postgres"]["databases"] == {n: load_catalog()[n].postgres.database for n in SYSTEMS}
    assert plain["redis"]["databases"] == _sharing().redis and "url" not in plain["redis"] and "master_password" not in plain["postgres"]
    assert {core.outputs[name] for name in shared_data.SECRETS.values()} == {harness.SECRET}


def test_a_tenant_rebuilt_from_the_cores_outputs_is_the_same_tenant():
    # shared_data.tenant_from_outputs: what a split layout's system stack builds from the core's export
    seen: dict[str, str] = {}
    deployed = load_platform("dev", ROOT).systems["twinkle"]

    def program() -> None:
        outputs = {
            "postgres": {"address": "shared-dev.abc123.us-east-1.rds.amazonaws.com", "security_group_id": "sg-1", "master_password": "m" * 32,
                         "identifier": "shared-dev", "databases": {"twinkle": "twinkle"}},
            "redis": {"url": "rediss://:token@shared-dev.cache:6379", "security_group_id": "sg-2", "replication_group_id": "shared-dev",
                      "databases": {"twinkle": 6}},
        }  # fmt: skip
        tenant = shared_data.tenant_from_outputs(outputs, deployed)
        assert tenant.postgres is not None and tenant.redis is not None and tenant.postgres.instance is None
        tenant.postgres.database_url.apply(lambda v: seen.__setitem__("db", v))
        tenant.redis.redis_url.apply(lambda v: seen.__setitem__("redis", v))
        tenant.postgres.owner_secret.apply(lambda v: seen.__setitem__("owner", v))
        for name, value in (("db", tenant.postgres.database_url), ("redis", tenant.redis.redis_url), ("owner", tenant.postgres.owner_secret)):
            pulumi.export(name, value)

    cap = harness.run("dev", ROOT, program=program)
    assert urlsplit(seen["db"]).path == "/twinkle" and urlsplit(seen["db"]).username == "twinkle_app"
    assert seen["redis"] == "rediss://:token@shared-dev.cache:6379/6"
    assert json.loads(seen["owner"])["password"] == "m" * 32
    # plain values from a stack output come back secret: the harness masks every secret output
    assert {k: cap.outputs[k] for k in ("db", "redis", "owner")} == {"db": harness.SECRET, "redis": harness.SECRET, "owner": harness.SECRET}


def test_dev_is_priced_with_one_instance_and_render_still_counts_a_store_per_system(project, plans):
    # tools/cost.py: the shared stores are priced once, under "shared"; the Render comparison counts each
    # system's store (sharing is our saving, not Render's)
    prices = cost.load_prices()
    counts = cost.running_counts(load_platform("dev", ROOT))
    shared = plans["dev"]
    own = plan("test", project("dev", lambda c: c.setdefault("platform:overrides", {}).update({"data": {"shared": False}})))
    assert cost.store_counts(shared) == cost.store_counts(own) == (5, 4)
    assert cost.render_equivalent(shared, prices, counts) == cost.render_equivalent(own, prices, counts)
    total = {name: sum(x.monthly for x in cost.estimate(cap, SYSTEMS, prices, counts)) for name, cap in (("shared", shared), ("own", own))}
    hours = prices["hours_per_month"]
    db = prices["rds_postgres_hourly"]["db.t4g.micro"]["single_az"] * hours + 20 * prices["rds_storage_gp3_gb_month"]["single_az"]
    cache = prices["elasticache_redis_node_hourly"]["cache.t4g.micro"]["price"] * hours
    # five instances become one, two micro caches (twinkle's, starkdca's) become one
    assert total["own"] - total["shared"] == pytest.approx(4 * db + cache)
    lines = {x.item for x in cost.estimate(shared, SYSTEMS, prices, counts) if x.system == "shared"}
    assert {"Postgres db.t4g.micro single_az (shared)", "Redis 1 x cache.t4g.micro (shared)"} <= lines


SHARED_CASES = {
    "two systems naming one database": ("dev", None, "platform:overrides.data.shared", "both name the database 'twinkle'"),
    "a shared tier on Kubernetes": ("staging-eks", {"data": {"shared": True}}, "platform:overrides.data.shared", "runs on ECS only"),
    "a pin for a system that shares no cache": (
        "dev",
        {"data": {"redis_databases": {"offerhub": 3}}},
        "platform:overrides.data.redis_databases.offerhub",
        "shares no cache",
    ),
    "a pin outside 1-15": ("dev", {"data": {"redis_databases": {"twinkle": 0}}}, "platform:overrides.data.redis_databases", "1 to 15"),
    "a shared tier in a production preset": ("prod", {"data": {"shared": True}}, "platform:overrides", "not allowed in a production preset"),
}


@pytest.mark.parametrize("case", sorted(SHARED_CASES))
def test_shared_data_bad_input(project, case):
    stack, overrides, key, words = SHARED_CASES[case]
    catalog = None
    if overrides is None:  # starkdca's catalog entry names twinkle's database
        catalog = load_catalog()
        catalog["starkdca"] = catalog["starkdca"].model_copy(update={"postgres": catalog["starkdca"].postgres.model_copy(update={"database": "twinkle"})})

    def mutate(config: dict) -> None:
        if stack == "staging-eks":
            config["platform:preset"] = "staging"
        if overrides:
            config.setdefault("platform:overrides", {}).update(overrides)

    with pytest.raises(ConfigError) as info:
        load_platform("test", project(stack, mutate), catalog=catalog)
    problem = next(p for p in info.value.problems if p.key.startswith(key))
    assert words in problem.message, problem.message


@pytest.mark.skipif(
    not os.environ.get("PLATFORM_TEST_PGHOST"), reason="needs PostgreSQL 15+ with TLS: PLATFORM_TEST_PGHOST, _PGPORT, _PGPASSWORD (superuser master)"
)
def test_shared_bootstrap_against_a_real_postgres():
    """Two systems' bootstraps as their containers run them (same env, same command) against one server,
    three tasks each at once, then again: each creates its database once, its roles reach only it."""
    from components.postgres import bootstrap_command, bootstrap_env, scram_verifier

    host, port, master = os.environ["PLATFORM_TEST_PGHOST"], os.environ.get("PLATFORM_TEST_PGPORT", "5432"), os.environ["PLATFORM_TEST_PGPASSWORD"]

    def psql(user: str, password: str, *sql: str, db: str, check: bool = True) -> subprocess.CompletedProcess:
        args = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", user, "-d", db]
        for s in sql:
            args += ["-c", s]
        return subprocess.run(args, env={**os.environ, "PGPASSWORD": password, "PGSSLMODE": "require"}, capture_output=True, text=True, check=check)

    for db in ("twinkle", "aurum"):
        psql("master", master, f"DROP DATABASE IF EXISTS {db}", db="postgres")
    psql("master", master, "DROP ROLE IF EXISTS twinkle_app", "DROP ROLE IF EXISTS aurum_app", db="postgres")
    psql("master", master, "DROP ROLE IF EXISTS app", db="postgres")
    # RDS: the master user is not a superuser; it may create roles and databases
    psql("master", master, "CREATE ROLE app LOGIN CREATEROLE CREATEDB PASSWORD 'ownerpw'", db="postgres")
    # the containers' own environment (TLS and SCRAM channel binding required); the DDL role's part of the
    # script is the same on both kinds of instance (test_data_tier's real-Postgres test, PostgreSQL 16+)
    envs = {
        db: {**os.environ, **bootstrap_env(db, ddl=False, create_database=True), "PGHOST": host, "PGPORT": port, "PGPASSWORD": "ownerpw",
             "DB_APP_VERIFIER": scram_verifier(f"{db}pw", b"0123456789abcdef")}
        for db in ("twinkle", "aurum")
    }  # fmt: skip
    command = list(bootstrap_command(create_database=True))
    runs = [subprocess.Popen(command, env=envs[db]) for db in ("twinkle", "aurum") for _ in range(3)]
    assert [r.wait() for r in runs] == [0] * 6
    assert all(subprocess.run(command, env=envs[db]).returncode == 0 for db in envs)  # and again: idempotent
    psql("app", "ownerpw", "CREATE TABLE users (id serial PRIMARY KEY, name text)", db="twinkle")  # a migration, as the owner
    psql("app", "ownerpw", "CREATE TABLE markets (id serial PRIMARY KEY)", db="aurum")
    assert psql("twinkle_app", "twinklepw", "INSERT INTO users (name) VALUES ('a') RETURNING id", db="twinkle").stdout.splitlines()[0] == "1"
    # each system's role reaches its own database only: PUBLIC lost CONNECT on each
    assert "permission denied" in psql("twinkle_app", "twinklepw", "SELECT 1", db="aurum", check=False).stderr
    assert "permission denied" in psql("aurum_app", "aurumpw", "SELECT 1", db="twinkle", check=False).stderr
    assert psql("aurum_app", "aurumpw", "INSERT INTO markets DEFAULT VALUES RETURNING id", db="aurum").stdout.splitlines()[0] == "1"
    # the owner owns each database; PUBLIC holds nothing on it
    acl = psql(
        "master",
        master,
        "SELECT datname, pg_get_userbyid(datdba), datacl::text FROM pg_database WHERE datname IN ('twinkle', 'aurum') ORDER BY 1",
        db="postgres",
    )
    assert acl.stdout.splitlines() == ["aurum|app|{app=CTc/app,aurum_app=Tc/app}", "twinkle|app|{app=CTc/app,twinkle_app=Tc/app}"]
    # a bootstrap that fails commits nothing of its roles' transaction and exits 3
    broken = {k: v for k, v in envs["aurum"].items() if k != "DB_APP_VERIFIER"}
    assert subprocess.run(command, env=broken, capture_output=True).returncode == 3
    # leave the server as test_data_tier's real-Postgres test expects it (it drops `app`)
    psql("master", master, "DROP DATABASE aurum", "DROP ROLE aurum_app", db="postgres")


def test_the_plan_writes_what_is_shared():
    # issue 18: "with what is shared written in the plan"
    from tools import plan as plan_cli

    text = plan_cli.summary(plan("dev"), load_platform("dev", ROOT), ROOT)
    assert "shared data stores (data.shared; turn off with platform:overrides: {data: {shared: false}}):" in text
    t = _sharing()
    assert f"Redis shared-dev: starkdca (db {t.redis['starkdca']}), twinkle (db {t.redis['twinkle']}); maxmemory-policy noeviction" in text
    assert "own Redis: offerhub, because BullMQ's queues" in text and "own Redis: darwin, because" in text
    assert "database  db offerhub_db in shared-dev" in text


def test_store_names_follow_the_sharing():
    cfg = load_platform("dev", ROOT)
    assert shared_data.store_names(cfg, "offerhub") == ("shared-db-instance", "offerhub-cache-group")
    assert shared_data.store_names(cfg, "twinkle") == ("shared-db-instance", "shared-cache-group")
    prod = load_platform("prod", ROOT)
    assert shared_data.store_names(prod, "twinkle") == ("twinkle-db-instance", "twinkle-cache-group")


def test_the_probe_expects_the_shared_alarms_once():
    # tools/probe.py reads what the stack exports: a shared instance's and cache's alarms exist once (shared-*)
    from tools import probe

    t = _sharing()
    outputs = {
        "databases": {n: "shared-dev.abc123.us-east-1.rds.amazonaws.com" for n in SYSTEMS},
        "platform_shared_data": {"postgres": {"databases": dict(t.postgres)}, "redis": {"databases": dict(t.redis)}},
    }
    names = probe.expected_alarms(outputs, load_catalog())
    assert [n for n in names if n.endswith(("-db-cpu", "-db-storage", "-db-connections"))] == ["shared-db-connections", "shared-db-cpu", "shared-db-storage"]
    caches = {n.split("-cache-")[0] for n in names if "-cache-001-" in n}
    assert {"shared", "offerhub", "darwin"} <= caches and not caches & {"twinkle", "starkdca"}
