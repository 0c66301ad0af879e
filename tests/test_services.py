"""Services on ECS/Fargate: task definitions checked by botocore, ECS controls by id, deploy behaviour."""

from __future__ import annotations

import json
import re

import pytest
from botocore.session import get_session
from botocore.validate import ParamValidator

from components import otel, postgres
from components.service import EGRESS_BY_SECRET, HTTPS, DatabaseBootstrap, container_definitions, egress_for
from components.workload import task_counts
from stacks.catalog import fargate_pair_problem
from stacks.config import load_platform
from tests.conftest import ROOT, plan

TASK = "aws:ecs/taskDefinition:TaskDefinition"
SERVICE = "aws:ecs/service:Service"
TG = "aws:lb/targetGroup:TargetGroup"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"

# The seeds' ports and health paths (DESIGN.md table, from each deployment guide).
SEED_HEALTH = {
    "twinkle-api": (3000, "/health"),
    "twinkle-facilitator": (3001, "/health"),
    "offerhub-api": (4000, "/api/v1/health"),
    "starkdca-api": (4000, "/api/v1/health"),
    "aurum-api": (3001, "/health"),
    "darwin-app": (3000, "/api/health"),
}
# ECS.8 looks for AWS credentials in plain env; we also refuse names that end like a secret.
SECRET_LOOKING = re.compile(r"^(AWS_ACCESS_KEY_ID|AWS_SECRET_ACCESS_KEY|ECS_ENGINE_AUTH_DATA)$|(SECRET|PASSWORD|PASS|TOKEN|API_KEY|PRIVATE_KEY|DSN|_URL_\d+)$")


def tasks(cap):
    return {r.name.removesuffix("-task"): r for r in cap.of_type(TASK)}


def containers(task) -> list[dict]:
    return json.loads(task.inputs["containerDefinitions"])


def app_container(task) -> dict:
    return next(c for c in containers(task) if c["essential"])


def services(cap):
    return {r.name.removesuffix("-service"): r for r in cap.of_type(SERVICE)}


def secret_arn(value_from: str) -> str:
    """The secret's ARN in a ``valueFrom`` that may name one JSON key (``<arn>:<key>::``)."""
    return value_from.removesuffix("::").rsplit(":", 1)[0] if value_from.endswith("::") else value_from


# ---------------------------------------------------------------- independent validators


def _enum_problems(value, shape, path="") -> list[str]:
    """botocore's validator checks types and required keys, not enums: walk the shape for those."""
    problems = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for key, item in value.items():
            problems += _enum_problems(item, shape.members[key], f"{path}.{key}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            problems += _enum_problems(item, shape.member, f"{path}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += _enum_problems(item, shape.value, f"{path}.{key}")
    elif getattr(shape, "enum", None) and value not in shape.enum:
        problems.append(f"{path}: {value!r} not in {shape.enum}")
    return problems


@pytest.mark.parametrize("stack", ["dev", "staging", "prod"])
def test_task_definitions_pass_botocore_register_task_definition(plans, stack):
    # GIVEN botocore's own ECS service model
    model = get_session().get_service_model("ecs")
    shape = model.operation_model("RegisterTaskDefinition").input_shape
    validator = ParamValidator()
    # WHEN every captured task definition is put in RegisterTaskDefinition's shape
    for name, task in tasks(plans[stack]).items():
        i = task.inputs
        params = {
            "family": i["family"],
            "taskRoleArn": i["taskRoleArn"],
            "executionRoleArn": i["executionRoleArn"],
            "networkMode": i["networkMode"],
            "containerDefinitions": containers(task),
            "volumes": i.get("volumes", []),
            "requiresCompatibilities": i["requiresCompatibilities"],
            "cpu": i["cpu"],
            "memory": i["memory"],
            "runtimePlatform": i["runtimePlatform"],
        }
        # THEN botocore reports no error, every enum value is one ECS knows, and the size is Fargate's
        report = validator.validate(params, shape)
        assert not report.has_errors(), f"{stack} {name}: {report.generate_report()}"
        assert _enum_problems(params, shape) == [], name
        assert fargate_pair_problem(int(i["cpu"]), int(i["memory"])) is None, name


@pytest.mark.parametrize(
    ("cpu", "memory", "valid"),
    # AWS ECS developer guide, "Task CPU and memory" (Fargate)
    [(256, 512, True), (256, 2048, True), (256, 3072, False), (512, 1024, True), (512, 512, False), (1024, 8192, True), (1024, 9216, False),
     (2048, 16384, True), (4096, 30720, True), (8192, 20480, True), (8192, 18432, False), (16384, 122880, True), (300, 512, False)],
)  # fmt: skip
def test_fargate_pairs(cpu, memory, valid):
    assert (fargate_pair_problem(cpu, memory) is None) is valid


# ---------------------------------------------------------------- ECS controls, by Security Hub id


def test_ecs_2_no_public_ip(prod):
    assert all(s.inputs["networkConfiguration"]["assignPublicIp"] is False for s in prod.of_type(SERVICE))


def test_ecs_3_and_4_no_host_pid_and_not_privileged(prod):
    for task in prod.of_type(TASK):
        assert task.inputs.get("pidMode") != "host"
        assert all(c.get("privileged") is False for c in containers(task)), task.name


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_ecs_5_read_only_root_filesystem(plans, stack):
    for task in plans[stack].of_type(TASK):
        assert all(c["readonlyRootFilesystem"] is True for c in containers(task)), task.name


def test_ecs_5_dev_trades_read_only_root_for_ecs_exec(plans):
    # ECS Exec's agent writes to the root filesystem; dev has exec, so its root is writable (not the
    # collector's or the database bootstrap's: nobody execs into those)
    dev = plans["dev"]
    assert all(s.inputs["enableExecuteCommand"] is True for s in dev.of_type(SERVICE))
    fixed = {otel.CONTAINER, postgres.BOOTSTRAP_CONTAINER}
    assert all(c["readonlyRootFilesystem"] is (c["name"] in fixed) for t in dev.of_type(TASK) for c in containers(t))


def test_ecs_8_no_secret_in_plain_environment(plans):
    declared = {name for system in load_platform("prod", ROOT).systems.values() for name in system.system.secrets}
    for cap in plans.values():
        for task in cap.of_type(TASK):
            for c in containers(task):
                plain = [e["name"] for e in c.get("environment", []) if SECRET_LOOKING.search(e["name"]) or e["name"] in declared]
                assert plain == [], f"{task.name}: {plain}"
                assert all(s["valueFrom"].startswith("arn:aws:secretsmanager:") for s in c.get("secrets", []))


def test_ecs_9_every_container_logs_to_its_log_group(prod):
    for name, task in tasks(prod).items():
        system, service = name.split("-", 1)
        for c in containers(task):
            opts = c["logConfiguration"]["options"]
            assert c["logConfiguration"]["logDriver"] == "awslogs"
            assert opts["awslogs-group"] == f"/platform/prod/{system}/{service}"


def test_ecs_10_latest_fargate_platform(prod):
    assert {s.inputs["platformVersion"] for s in prod.of_type(SERVICE)} == {"LATEST"}


def test_ecs_12_container_insights(plans):
    for cap in plans.values():
        cluster = cap.one("aws:ecs/cluster:Cluster")
        assert {"name": "containerInsights", "value": "enabled"} in cluster.inputs["settings"]


def test_log_groups_have_retention_and_the_environment_key(prod):
    groups = [g for g in prod.of_type("aws:cloudwatch/logGroup:LogGroup") if g.inputs.get("name", "").startswith("/platform/")]
    of_services = [g for g in groups if "platform:compute:Service$" in g.urn]
    assert len(of_services) == 2 * len(prod.of_type(TASK))  # the app's logs and its collector's EMF metrics
    # every other one (starkdca's worker stops, ECS Exec) is kept as long and encrypted the same way
    assert all(g.inputs["retentionInDays"] == 365 and g.inputs["kmsKeyId"] for g in groups)


# ---------------------------------------------------------------- task definition facts


def test_arm64_non_root_init_and_stop_timeout(prod):
    for name, task in tasks(prod).items():
        assert task.inputs["runtimePlatform"]["cpuArchitecture"] == "ARM64"
        for c in containers(task):
            assert not c["user"].startswith("0"), name
            assert c["linuxParameters"]["initProcessEnabled"] is True
        assert app_container(task)["stopTimeout"] >= 10  # the seeds' SIGTERM grace


def test_starkdca_runs_as_its_own_user(prod):
    assert {app_container(tasks(prod)[k])["user"] for k in ("starkdca-api", "starkdca-worker")} == {"1001:1001"}


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_images_are_pinned_by_digest_from_our_registry(plans, stack):
    # prod names digests; dev names tags, which the program resolves to digests in ECR
    for task in plans[stack].of_type(TASK):
        for c in containers(task):
            if c["name"] == otel.CONTAINER:
                continue  # AWS's collector, pinned by version (tests/test_observability.py)
            if c["name"] == postgres.BOOTSTRAP_CONTAINER:
                assert c["image"] == postgres.BOOTSTRAP_IMAGE and re.search(r"@sha256:[0-9a-f]{64}$", c["image"])  # the official image, by digest
                continue
            assert re.fullmatch(r"\d{12}\.dkr\.ecr\.us-east-1\.amazonaws\.com/[a-z-]+/[a-z-]+@sha256:[0-9a-f]{64}", c["image"]), c["image"]


def test_each_secret_reaches_only_the_services_that_declared_it(prod):
    # twinkle's settlement key: the facilitator's container and execution role, nobody else's
    for name, task in tasks(prod).items():
        names = {s["name"] for c in containers(task) for s in c.get("secrets", [])}
        assert ("FACILITATOR_PRIVATE_KEY" in names) is (name == "twinkle-facilitator"), name
        # starkdca's guide: "The only difference is the start command": both services hold the executor key
        assert ("EXECUTOR_PRIVATE_KEY" in names) is name.startswith("starkdca-"), name
    policies = {p.name.removesuffix("-execution-policy"): json.loads(p.inputs["policy"]) for p in prod.of_type("aws:iam/rolePolicy:RolePolicy")}
    for name, task in tasks(prod).items():
        arns = {secret_arn(s["valueFrom"]) for c in containers(task) for s in c.get("secrets", [])}
        readable = next(st["Resource"] for st in policies[name]["Statement"] if st["Sid"] == "Secrets")
        assert set(readable) == arns, name


def test_execution_role_pulls_only_its_repository(prod):
    policy = json.loads(prod.one("aws:iam/rolePolicy:RolePolicy", "starkdca-worker-execution-policy").inputs["policy"])
    pull = next(st for st in policy["Statement"] if st["Sid"] == "Pull")
    assert pull["Resource"] == ["arn:aws:ecr:us-east-1:123456789012:repository/starkdca/backend"]


def test_task_role_holds_only_the_collectors_policy_in_prod(prod):
    task_roles = {r.urn for r in prod.of_type("aws:iam/role:Role") if r.name.endswith("-task-role")}
    attached = [p for p in prod.of_type("aws:iam/rolePolicy:RolePolicy") if any(u in task_roles for u in p.property_dependencies["role"])]
    assert len(task_roles) == len(prod.of_type(TASK))
    assert sorted(p.name.rsplit("-", 1)[1] for p in attached) == ["otel"] * len(task_roles)  # no ECS Exec in prod


def test_migrations_gate_the_app_container(prod):
    expected = {
        "offerhub-api": ["node_modules/.bin/prisma", "migrate", "deploy", "--schema", "packages/database/prisma/schema.prisma"],
        "starkdca-api": ["node_modules/.bin/prisma", "migrate", "deploy", "--schema=apps/backend/prisma/schema.prisma"],
        "aurum-api": ["npm", "run", "migrate"],
    }
    for name, task in tasks(prod).items():
        migrate = [c for c in containers(task) if c["name"] == "migrate"]
        if name not in expected:
            assert migrate == [], name
            continue
        assert migrate[0]["command"] == expected[name] and migrate[0]["essential"] is False
        assert [s["name"] for s in migrate[0]["secrets"]] == ["DATABASE_URL"]
        assert {"containerName": "migrate", "condition": "SUCCESS"} in app_container(task)["dependsOn"]
        assert migrate[0]["image"] == app_container(task)["image"]  # the new image migrates
        # as the owner (it creates and alters tables), after the roles exist
        owner_url = migrate[0]["secrets"][0]["valueFrom"]
        assert f"{name.split('-')[0]}-database-owner-" in owner_url and owner_url.endswith(":url::")
        assert migrate[0]["dependsOn"] == [{"containerName": "db-roles", "condition": "SUCCESS"}]


def test_apps_connect_as_the_app_role_and_only_the_bootstrap_and_migration_get_the_owner(prod):
    # GIVEN every task of the steady prod plan
    owner_users = set()
    for name, task in tasks(prod).items():
        system = name.split("-")[0]
        for c in containers(task):
            refs = {s["name"]: s["valueFrom"] for s in c.get("secrets", [])}
            owner = {n for n, v in refs.items() if f"{system}-database-owner-" in v}
            if c["name"] in (postgres.BOOTSTRAP_CONTAINER, "migrate"):
                owner_users.add(name)
                assert owner == set(refs), (name, c["name"])  # nothing but the owner's secret
            else:
                # THEN no app (or collector) container ever receives the owner's credentials
                assert owner == set(), (name, c["name"])
                if "DATABASE_URL" in refs:
                    expected = "database-ddl-url" if name == "twinkle-indexer" else "database-url"
                    assert f"{system}-{expected}-" in refs["DATABASE_URL"], name
    # AND one service per system runs the bootstrap: the migration's, else the first that uses Postgres
    assert owner_users == {"offerhub-api", "starkdca-api", "aurum-api", "twinkle-indexer", "darwin-app"}
    policies = {p.name.removesuffix("-execution-policy"): p.inputs["policy"] for p in prod.of_type("aws:iam/rolePolicy:RolePolicy")}
    assert {n for n, pol in policies.items() if "-database-owner-" in pol} == owner_users


def test_the_bootstrap_runs_before_everything_that_connects(prod):
    # GIVEN the tasks that run db-roles
    for name in ("offerhub-api", "twinkle-indexer", "darwin-app"):
        defs = {c["name"]: c for c in containers(tasks(prod)[name])}
        roles = defs[postgres.BOOTSTRAP_CONTAINER]
        # THEN it runs psql from the pinned postgres image, non-essential, before migrate or the app
        assert roles["image"] == postgres.BOOTSTRAP_IMAGE and "@sha256:" in roles["image"] and roles["essential"] is False
        assert roles["user"] == postgres.BOOTSTRAP_USER and roles["readonlyRootFilesystem"] is True
        first = "migrate" if "migrate" in defs else name.split("-", 1)[1]
        assert {"containerName": postgres.BOOTSTRAP_CONTAINER, "condition": "SUCCESS"} in defs[first]["dependsOn"]
        # AND no password in its command or plain env: each comes from one JSON key of the owner secret
        env = {e["name"]: e["value"] for e in roles["environment"]}
        assert {"PGPASSWORD", "PGHOST", "DB_APP_VERIFIER"} <= {s["name"] for s in roles["secrets"]}
        assert not {"PGPASSWORD", "DB_APP_VERIFIER", "DB_DDL_VERIFIER"} & set(env)
        assert env["PGUSER"] == postgres.OWNER and env["PGSSLMODE"] == "require" and env["PGCHANNELBINDING"] == "require"
        assert all(s["valueFrom"].endswith(f":{postgres.OWNER_KEYS[s['name']]}::") for s in roles["secrets"])
        assert "PASSWORD '" not in env["DB_ROLES_SQL"] and "PASSWORD :'app_verifier'" in env["DB_ROLES_SQL"]
    # AND only twinkle (Ponder creates its own schema) gets the runtime-DDL role
    assert "DB_DDL_VERIFIER" in {s["name"] for s in next(c for c in containers(tasks(prod)["twinkle-indexer"]) if c["name"] == "db-roles")["secrets"]}
    assert "DB_DDL_VERIFIER" not in {s["name"] for s in next(c for c in containers(tasks(prod)["offerhub-api"]) if c["name"] == "db-roles")["secrets"]}


def test_database_services_wait_for_the_service_that_bootstraps_their_roles(prod):
    svc = services(prod)
    assert svc["twinkle-indexer"].urn in svc["twinkle-worker"].dependencies  # no migration: the indexer bootstraps
    assert svc["twinkle-indexer"].urn in svc["twinkle-api"].dependencies
    owner_versions = {v.urn for v in prod.of_type("aws:secretsmanager/secretVersion:SecretVersion") if v.name.endswith("-database-owner")}
    assert owner_versions & set(svc["darwin-app"].dependencies)  # the bootstrap waits for the owner's secret value


# ---------------------------------------------------------------- network: what a task may reach


def test_task_egress_is_https_the_stores_and_written_reasons(prod):
    # GIVEN every egress rule of the task security groups
    rules: dict[str, list[dict]] = {}
    for r in prod.of_type(EGRESS):
        key = next((k for k in tasks(prod) if r.name.startswith(f"{k}-")), None)
        if key is not None and not r.name.endswith("-alb-out"):
            rules.setdefault(key, []).append(r.inputs | {"name": r.name})
    assert set(rules) == set(tasks(prod))
    for key, found in rules.items():
        # THEN nothing is all-traffic, and the internet is reachable on 443 only ...
        assert all(r["ipProtocol"] == "tcp" and r["fromPort"] == r["toPort"] for r in found), key
        internet = sorted(int(r["fromPort"]) for r in found if r.get("cidrIpv4") == "0.0.0.0/0")
        assert internet == ([443, 465, 587] if key.startswith("starkdca-") else [443]), key  # ... but SMTP submission for the ones that send mail
        # AND the data stores' ports go to the stores' security groups only
        stores = {int(r["fromPort"]) for r in found if r.get("referencedSecurityGroupId")}
        assert stores <= {5432, 6379} and all(r.get("cidrIpv4") is None for r in found if int(r["fromPort"]) in (5432, 6379)), key
    assert {int(r["fromPort"]) for r in rules["offerhub-api"] if r.get("referencedSecurityGroupId")} == {5432, 6379}
    # the guide's diagram connects the facilitator to "PostgreSQL + Redis"
    assert {int(r["fromPort"]) for r in rules["twinkle-facilitator"] if r.get("referencedSecurityGroupId")} == {5432, 6379}
    assert all(len(r["description"]) > 20 for rs in rules.values() for r in rs if r.get("cidrIpv4"))  # each says why


def test_every_extra_port_has_a_reason_and_the_otlp_port_is_derived():
    assert [e.port for e in egress_for(["SENTRY_DSN"])] == [HTTPS.port]
    assert [e.port for e in egress_for(["SMTP_PASS", "DATABASE_URL"])] == [443, 587, 465]
    assert all(e.reason for es in EGRESS_BY_SECRET.values() for e in es)
    assert [e.port for e in egress_for([], "https://otlp.example.com:4318/v1")] == [443, 4318]
    assert [e.port for e in egress_for([], "https://otlp.example.com")] == [443]


def test_task_roles_trust_only_this_accounts_ecs(prod):
    roles = [r for r in prod.of_type("aws:iam/role:Role") if r.name.endswith(("-execution", "-task-role"))]
    assert roles
    for role in roles:
        statement = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
        assert [s["Principal"] for s in statement] == [{"Service": "ecs-tasks.amazonaws.com"}], role.name
        if role.name.endswith("-task-role"):
            # ECS developer guide, "Amazon ECS task IAM role": aws:SourceAccount and aws:SourceArn arn:aws:ecs:<region>:<account>:*
            assert statement[0]["Condition"] == {
                "StringEquals": {"aws:SourceAccount": "123456789012"},
                "ArnLike": {"aws:SourceArn": "arn:aws:ecs:us-east-1:123456789012:*"},
            }, role.name
        else:
            # documented for the task role only: a key ECS does not send for the execution role would stop every task
            assert "Condition" not in statement[0], role.name


def test_offerhub_learns_its_public_url(prod):
    env = {e["name"]: e["value"] for e in app_container(tasks(prod)["offerhub-api"])["environment"]}
    assert env["PUBLIC_BASE_URL"] == "https://api.offerhub.example.com"


def test_container_definitions_is_pure_and_orders_migration_first():
    cfg = load_platform("prod", ROOT)
    svc = cfg.systems["aurum"].services["api"]
    defs = container_definitions(
        svc,
        image="img@sha256:" + "0" * 64,
        env={"B": "2", "A": "1"},
        secrets={"DATABASE_URL": "arn:aws:secretsmanager:us-east-1:1:secret:x"},
        log_group="/g",
        region="us-east-1",
        writable_root=False,
        migration=cfg.systems["aurum"].system.migration,
        secrets_revision="r",
    )
    assert [c["name"] for c in defs] == ["migrate", "api"]
    assert [e["name"] for e in defs[1]["environment"]] == ["A", "B", "NODE_EXTRA_CA_CERTS"]  # sorted; the RDS CAs with DATABASE_URL
    # with the roles bootstrap: db-roles, then migrate (as the owner), then the app
    owner = "arn:aws:secretsmanager:us-east-1:1:secret:prod/aurum/DATABASE_OWNER-abc"
    boot = container_definitions(
        svc,
        image="img@sha256:" + "0" * 64,
        env={},
        secrets={"DATABASE_URL": "arn:aws:secretsmanager:us-east-1:1:secret:x"},
        log_group="/g",
        region="us-east-1",
        writable_root=False,
        migration=cfg.systems["aurum"].system.migration,
        secrets_revision="r",
        bootstrap=DatabaseBootstrap(owner_secret_arn=owner, database="aurum"),
    )
    assert [c["name"] for c in boot] == ["db-roles", "migrate", "api"]
    assert boot[1]["secrets"] == [{"name": "DATABASE_URL", "valueFrom": f"{owner}:url::"}]
    assert boot[2]["secrets"] == [{"name": "DATABASE_URL", "valueFrom": "arn:aws:secretsmanager:us-east-1:1:secret:x"}]
    assert boot[2]["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]


# ---------------------------------------------------------------- the ECS service


def test_deploys_roll_back_and_wait_for_steady_state(plans):
    for cap in plans.values():
        for s in cap.of_type(SERVICE):
            assert s.inputs["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
            assert s.inputs["waitForSteadyState"] is True and s.inputs["propagateTags"] == "SERVICE"


def test_singletons_never_run_two_tasks(prod):
    for name in ("twinkle-indexer", "aurum-indexer"):
        s = services(prod)[name].inputs
        assert (s["desiredCount"], s["deploymentMinimumHealthyPercent"], s["deploymentMaximumPercent"]) == (1, 0, 100)
        assert not [t for t in prod.of_type("aws:appautoscaling/target:Target") if t.name.startswith(name)]


def test_web_services_keep_full_capacity_during_a_deploy(prod):
    for name in SEED_HEALTH:
        s = services(prod)[name].inputs
        assert (s["deploymentMinimumHealthyPercent"], s["deploymentMaximumPercent"]) == (100, 200)
        assert s["healthCheckGracePeriodSeconds"] >= 60


def test_prod_autoscales_on_cpu_70_and_memory(prod):
    targets = {t.name.removesuffix("-scaling"): t.inputs for t in prod.of_type("aws:appautoscaling/target:Target")}
    assert targets["darwin-app"]["minCapacity"] == 3 and targets["darwin-app"]["maxCapacity"] == 6  # "Instance 1, 2, 3"
    assert targets["offerhub-api"]["minCapacity"] == 2 and targets["offerhub-api"]["maxCapacity"] == 10
    assert "starkdca-worker" not in targets  # a lock lets one copy work at a time
    policies = {p.name: p.inputs.get("targetTrackingScalingPolicyConfiguration") for p in prod.of_type("aws:appautoscaling/policy:Policy")}
    assert policies["offerhub-api-scale-cpu"]["targetValue"] == 70
    assert policies["offerhub-api-scale-cpu"]["predefinedMetricSpecification"]["predefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert policies["offerhub-api-scale-memory"]["predefinedMetricSpecification"]["predefinedMetricType"] == "ECSServiceAverageMemoryUtilization"
    assert policies["offerhub-api-scale-memory"]["targetValue"] == 80  # offerhub's guide: "Memory >80%"
    for key in ("twinkle-api", "twinkle-facilitator", "starkdca-api"):  # "Run multiple instances": two or more
        assert targets[key]["minCapacity"] >= 2 and targets[key]["maxCapacity"] > targets[key]["minCapacity"], key
    for name in targets:
        assert "desiredCount" in services(prod)[name].options["ignoreChanges"]


def test_dev_runs_on_spot_and_prod_on_demand(plans):
    for stack, provider in (("dev", "FARGATE_SPOT"), ("prod", "FARGATE")):
        assert {s.inputs["capacityProviderStrategies"][0]["capacityProvider"] for s in plans[stack].of_type(SERVICE)} == {provider}


def test_twinkle_start_order(prod):
    # GIVEN twinkle's order: indexer, then api, then facilitator, then worker
    svc = services(prod)
    urn = {name: r.urn for name, r in svc.items()}
    for later, earlier in (("twinkle-api", "twinkle-indexer"), ("twinkle-facilitator", "twinkle-api"), ("twinkle-worker", "twinkle-facilitator")):
        assert urn[earlier] in svc[later].dependencies, later
    assert not any(u in svc["twinkle-indexer"].dependencies for u in urn.values())


def test_services_wait_for_their_migration_and_data_stores(prod):
    svc = services(prod)
    assert svc["starkdca-api"].urn in svc["starkdca-worker"].dependencies
    assert svc["aurum-api"].urn in svc["aurum-indexer"].dependencies
    db = {r.name.removesuffix("-db-instance"): r.urn for r in prod.of_type("aws:rds/instance:Instance")}
    assert db["offerhub"] in svc["offerhub-api"].dependencies
    assert db["twinkle"] in svc["twinkle-facilitator"].dependencies  # it reads DATABASE_URL (the guide's diagram)
    assert not any(s.urn in svc["darwin-app"].dependencies for k, s in svc.items() if not k.startswith("darwin"))


def test_task_definitions_do_not_wait_for_databases(prod):
    data = {r.urn for r in prod.resources if r.type in ("aws:rds/instance:Instance", "aws:elasticache/replicationGroup:ReplicationGroup")}
    for task in prod.of_type(TASK):
        assert not data & set(task.dependencies), task.name


def test_data_stores_admit_exactly_the_services_that_use_them(prod):
    # GIVEN each data store's security group
    groups = {r.inputs["description"].split(":")[0]: f"sg-of-{r.name}" for r in prod.of_type(SG)}
    assert groups  # sanity: the descriptions name the stores
    by_name = {r.name: r for r in prod.of_type(INGRESS)}
    # THEN a consumer rule exists per declared dependency and nowhere else
    db_rules = sorted(n.removesuffix("-to-db") for n in by_name if n.endswith("-to-db"))
    cache_rules = sorted(n.removesuffix("-to-cache") for n in by_name if n.endswith("-to-cache"))
    assert db_rules == sorted(
        [
            *("twinkle-indexer", "twinkle-api", "twinkle-facilitator", "twinkle-worker", "offerhub-api"),
            *("starkdca-api", "starkdca-worker", "aurum-api", "aurum-indexer", "darwin-app"),
        ]
    )
    # aurum's API reads its session store where it scales out (prod); its indexer does not
    assert cache_rules == sorted(
        ["twinkle-api", "twinkle-facilitator", "twinkle-worker", "offerhub-api", "starkdca-api", "starkdca-worker", "aurum-api", "darwin-app"]
    )
    rule = by_name["offerhub-api-to-db"].inputs
    assert (rule["fromPort"], rule["toPort"], rule["ipProtocol"]) == (5432, 5432, "tcp") and "cidrIpv4" not in rule
    assert by_name["offerhub-api-to-cache"].inputs["fromPort"] == 6379


def test_rotating_a_secret_rolls_exactly_its_users(project):
    # GIVEN prod, WHEN starkdca's JWT_ACCESS_SECRET rotation key is bumped
    before = tasks(plan("test", project("prod")))
    after = tasks(plan("test", project("prod", lambda c: c["platform:systems"]["starkdca"].update(rotate={"JWT_ACCESS_SECRET": 1}))))
    changed = sorted(k for k in before if before[k].inputs["containerDefinitions"] != after[k].inputs["containerDefinitions"])
    # THEN exactly the services that read it get a new task definition revision: both of starkdca's
    # (its guide: "The only difference is the start command"), nobody else's
    assert changed == ["starkdca-api", "starkdca-worker"]


def test_rotating_the_database_password_rolls_every_database_user(project):
    before = tasks(plan("test", project("prod")))
    after = tasks(plan("test", project("prod", lambda c: c["platform:systems"]["twinkle"].update(rotate={"DATABASE_URL": 1}))))
    changed = sorted(k for k in before if before[k].inputs["containerDefinitions"] != after[k].inputs["containerDefinitions"])
    assert changed == ["twinkle-api", "twinkle-facilitator", "twinkle-indexer", "twinkle-worker"]


def test_task_counts_by_kind():
    cfg = load_platform("prod", ROOT)
    c = cfg.preset.compute
    assert task_counts(cfg.systems["twinkle"].services["indexer"].released(), c) == (1, 1)
    assert task_counts(cfg.systems["darwin"].services["app"].released(), c) == (3, 6)
    assert task_counts(cfg.systems["starkdca"].services["worker"].released(), c) == (1, 1)
    dev = load_platform("dev", ROOT)
    assert task_counts(dev.systems["offerhub"].services["api"].released(), dev.preset.compute) == (1, 1)
    # the shipped stack files set no external secret: every service is held at zero, never autoscaled
    assert task_counts(cfg.systems["darwin"].services["app"], c) == (0, 0)


# ---------------------------------------------------------------- health checks and target groups


def target_groups(cap) -> dict[str, list[dict]]:
    """Web service key -> its target groups' inputs (with a canary deploy, two: ``-tg`` and ``-tg2``)."""
    out: dict[str, list[dict]] = {}
    for r in cap.of_type(TG):
        out.setdefault(r.name.removesuffix("-tg2").removesuffix("-tg"), []).append(r.inputs)
    return out


def test_health_checks_and_ports_match_the_seeds(prod):
    groups = target_groups(prod)
    assert set(groups) == set(SEED_HEALTH)
    for name, (port, path) in SEED_HEALTH.items():
        assert len(groups[name]) == 2  # prod deploys by canary: the alternate group is checked the same way
        tg = groups[name][0]
        assert groups[name][1]["healthCheck"] == tg["healthCheck"] and groups[name][1]["port"] == tg["port"]
        assert (tg["port"], tg["healthCheck"]["path"], tg["healthCheck"]["matcher"]) == (port, path, "200"), name
        assert tg["targetType"] == "ip" and tg["deregistrationDelay"] == 10  # the seeds' 10 s shutdown
        assert tg["healthCheck"]["unhealthyThreshold"] == 3
        assert app_container(tasks(prod)[name])["portMappings"][0]["containerPort"] == port
        lb = services(prod)[name].inputs["loadBalancers"][0]
        assert (lb["containerName"], lb["containerPort"]) == (name.split("-", 1)[1], port)


def test_aurum_api_is_sticky_and_others_are_not(prod):
    groups = target_groups(prod)
    assert all(tg["stickiness"]["type"] == "lb_cookie" and tg["stickiness"]["enabled"] is True for tg in groups["aurum-api"])
    assert all("stickiness" not in tg for n, tgs in groups.items() if n != "aurum-api" for tg in tgs)


def test_ecr_repositories_immutable_and_scanned(plans):
    repos = plans["dev"].of_type("aws:ecr/repository:Repository")
    assert sorted(r.inputs["name"] for r in repos) == sorted(
        ["twinkle/api", "twinkle/facilitator", "twinkle/indexer", "twinkle/worker", "offerhub/api", "starkdca/backend", "aurum/api", "darwin/app"]
    )
    for r in repos:
        assert r.inputs["imageTagMutability"] == "IMMUTABLE" and r.inputs["imageScanningConfiguration"]["scanOnPush"] is True
        assert r.options["retainOnDelete"] is True
    assert len(plans["dev"].of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")) == len(repos)
    # staging and prod pull from the repositories dev created in the account
    assert plans["prod"].of_type("aws:ecr/repository:Repository") == []


def test_an_image_bump_reaches_only_that_services_task_definition(project):
    from bench.blast_radius import changed

    before = plan("test", project("prod"))
    after = plan("test", project("prod", lambda c: c["platform:systems"]["darwin"]["images"].update(app="sha256:" + "f" * 64)))
    assert changed(before, after) == (["darwin-app-task"], [], [])
