"""The data tier on the prod plan, by AWS Security Hub control id, and secrets that never leak."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from stacks.config import load_platform
from stacks.errors import ConfigError
from stacks.presets import PostgresPreset, RedisPreset
from tests.conftest import ROOT, load_stack_yaml, plan
from tools import harness

RDS = "aws:rds/instance:Instance"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
SECRET = "aws:secretsmanager/secret:Secret"
SYSTEMS_WITH_DB = {"twinkle", "offerhub", "starkdca", "aurum", "darwin"}
SYSTEMS_WITH_CACHE = {"twinkle", "offerhub", "starkdca", "darwin", "aurum"}  # aurum's: its session store where the API scales out


def test_one_database_and_one_cache_per_system(prod):
    assert {r.inputs["identifier"].removesuffix("-prod") for r in prod.of_type(RDS)} == SYSTEMS_WITH_DB
    assert {r.inputs["replicationGroupId"].removesuffix("-prod") for r in prod.of_type(REDIS)} == SYSTEMS_WITH_CACHE


def test_rds_controls(prod):
    for db in prod.of_type(RDS):
        i = db.inputs
        assert i["publiclyAccessible"] is False  # RDS.2
        assert i["storageEncrypted"] is True and i["kmsKeyId"].startswith("arn:aws:kms:")  # RDS.3
        assert i["multiAz"] is True  # RDS.5
        assert i["deletionProtection"] is True and db.options["protect"] is True  # RDS.8
        assert set(i["enabledCloudwatchLogsExports"]) == {"postgresql", "upgrade"}  # RDS.9
        assert i["backupRetentionPeriod"] >= 7  # RDS.11
        assert i["autoMinorVersionUpgrade"] is True  # RDS.13
        assert i["copyTagsToSnapshot"] is True  # RDS.17
        # one name per incarnation: a second delete naming an existing snapshot fails (DBSnapshotAlreadyExists)
        assert i["skipFinalSnapshot"] is False and re.fullmatch(rf"{i['identifier']}-final-[0-9a-f]{{8}}", i["finalSnapshotIdentifier"])
        assert i["storageType"] == "gp3" and i["engineVersion"] in {"16", "17"}
        assert i["performanceInsightsEnabled"] is True and i["monitoringInterval"] == 60
        assert db.options["customTimeouts"]["create"] == "90m"
        assert i["password"] == "[secret]"


def test_darwin_gets_its_100_gb_ceiling(prod):
    darwin = next(r for r in prod.of_type(RDS) if r.inputs["identifier"] == "darwin-prod")
    assert darwin.inputs["maxAllocatedStorage"] >= 100


def test_parameter_groups_force_tls(prod):
    for pg in prod.of_type("aws:rds/parameterGroup:ParameterGroup"):
        params = {p["name"]: p["value"] for p in pg.inputs["parameters"]}
        assert params["rds.force_ssl"] == "1" and pg.inputs["family"] == "postgres16"


def test_elasticache_controls(prod):
    for rg in prod.of_type(REDIS):
        i = rg.inputs
        assert i["snapshotRetentionLimit"] >= 1  # ElastiCache.1
        assert i["autoMinorVersionUpgrade"] is True  # ElastiCache.2
        assert i["automaticFailoverEnabled"] is True and i["multiAzEnabled"] is True and i["numCacheClusters"] == 2  # ElastiCache.3
        assert i["atRestEncryptionEnabled"] is True  # ElastiCache.4
        assert i["transitEncryptionEnabled"] is True  # ElastiCache.5
        assert i["authToken"] == "[secret]"  # ElastiCache.6
        assert i["subnetGroupName"] and "default" not in i["subnetGroupName"]  # ElastiCache.7
        assert i["engine"] == "redis" and i["engineVersion"].startswith("7")
        assert "clusterMode" not in i or i["clusterMode"] == "disabled"


def test_offerhub_cache_never_evicts(prod):
    pg = prod.one("aws:elasticache/parameterGroup:ParameterGroup", "offerhub-cache-params")
    assert pg.inputs["parameters"] == [{"name": "maxmemory-policy", "value": "noeviction"}] and pg.inputs["family"] == "redis7"


def test_data_security_groups_have_no_open_rule(prod):
    for sg in prod.of_type("aws:ec2/securityGroup:SecurityGroup"):
        assert sg.inputs.get("ingress", []) == [] and sg.inputs.get("egress", []) == []


def test_data_stores_sit_in_isolated_subnets(prod):
    isolated = {r.urn for r in prod.of_type("aws:ec2/subnet:Subnet") if r.inputs["tags"]["platform:tier"] == "isolated"}
    for group in prod.of_type("aws:rds/subnetGroup:SubnetGroup") + prod.of_type("aws:elasticache/subnetGroup:SubnetGroup"):
        assert set(group.property_dependencies["subnetIds"]) == isolated


def test_secrets_manager_names_recovery_window_and_key(plans):
    for stack, window in (("dev", 0), ("staging", 7), ("prod", 30)):
        for s in plans[stack].of_type(SECRET):
            assert s.inputs["name"].startswith(f"{stack}/")
            assert s.inputs["recoveryWindowInDays"] == window
            assert s.inputs["kmsKeyId"].startswith("arn:aws:kms:")


def test_kms_key_rotation_and_deletion_window(plans):
    for key in plans["prod"].of_type("aws:kms/key:Key"):  # the environment key and its DR-region twin
        assert key.inputs["enableKeyRotation"] is True and key.inputs["deletionWindowInDays"] == 30
    assert plans["dev"].one("aws:kms/key:Key").inputs["deletionWindowInDays"] == 7


def test_offerhub_master_key_is_32_random_bytes_base64(prod):
    value = prod.one("random:index/randomBytes:RandomBytes", "offerhub-offerhub-master-key-value")
    assert value.inputs["length"] == 32


def test_external_secret_without_value_is_created_empty(prod):
    # no value in the prod stack file: the secret exists, and Pulumi never writes a version to it
    names = {s.inputs["name"] for s in prod.of_type(SECRET)}
    assert "prod/offerhub/AIRTM_API_KEY" in names
    versions = [v for v in prod.of_type("aws:secretsmanager/secretVersion:SecretVersion") if "airtm-api-key" in v.name]
    assert versions == []


def test_per_service_secret_per_using_service(prod):
    names = {s.inputs["name"] for s in prod.of_type(SECRET)}
    assert {"prod/twinkle/indexer/PONDER_RPC_URL_11155111", "prod/twinkle/facilitator/PONDER_RPC_URL_11155111"} <= names
    assert "prod/twinkle/api/PONDER_RPC_URL_11155111" not in names


def test_external_value_from_config_is_written_as_secret(project):
    cfg = project("dev", lambda c: c.update({"platform:secrets": {"offerhub": {"AIRTM_API_KEY": {"secure": "v1:abc"}}}}))
    cap = plan("test", cfg)
    version = cap.one("aws:secretsmanager/secretVersion:SecretVersion", "offerhub-airtm-api-key")
    assert version.inputs["secretString"] == "[secret]"


def test_rotation_key_changes_the_generated_value(project):
    cap = plan("test", project("dev", lambda c: c["platform:systems"]["offerhub"].update(rotate={"OFFERHUB_MASTER_KEY": 2})))
    value = cap.one("random:index/randomBytes:RandomBytes", "offerhub-offerhub-master-key-value")
    assert value.inputs["keepers"] == {"rotation": "2"}


def test_no_plaintext_secret_anywhere_in_the_plan(plans):
    # The mocks make every random value start with "offline0password0" (base64 "b2ZmbGluZ", hex "6f66666c696e65"); none may appear in any input
    # or output. Only random resources themselves hold them (as state, not inputs).
    for cap in plans.values():
        text = json.dumps([r.to_json() for r in cap.resources] + [cap.outputs])
        assert "offline0password0" not in text and "b2ZmbGluZ" not in text and "6f66666c696e65" not in text
        for r in cap.of_type(RDS):
            assert r.inputs["password"] == "[secret]"


DATA_CASES = {
    "instance class that does not exist": ({"postgres": {"instance_class": "db.t4g.mega"}}, "platform:overrides.postgres.instance_class"),
    "storage below 20 GB": ({"postgres": {"allocated_storage_gb": 10}}, "platform:overrides.postgres.allocated_storage_gb"),
    "backup retention outside 0-35": ({"postgres": {"backup_retention_days": 36}}, "platform:overrides.postgres.backup_retention_days"),
    "multi-AZ redis with one node": ({"redis": {"multi_az": True, "nodes": 1}}, "platform:overrides.redis"),
    "secret recovery window of 3 days": ({"security": {"secret_recovery_days": 3}}, "platform:overrides.security.secret_recovery_days"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_data_tier_bad_input(project, case):
    overrides, key = DATA_CASES[case]
    with pytest.raises(ConfigError) as info:
        load_platform("test", project("dev", lambda c: c.update({"platform:overrides": overrides})))
    assert [p.key for p in info.value.problems] == [key], str(info.value)


def test_prod_cannot_drop_deletion_protection_without_acknowledgment(project):
    with pytest.raises(ConfigError) as info:
        load_platform("test", project("prod", lambda c: c.update({"platform:overrides": {"postgres": {"deletion_protection": False}}})))
    assert "acknowledge_unprotected_data" in str(info.value)
    ok = {"platform:overrides": {"postgres": {"deletion_protection": False}, "acknowledge_unprotected_data": True}}
    assert load_platform("test", project("prod", lambda c: c.update(ok))).preset.postgres.deletion_protection is False


def test_dev_database_may_be_destroyed(plans):
    for db in plans["dev"].of_type(RDS):
        assert db.inputs["deletionProtection"] is False and db.options["protect"] is False and db.inputs["skipFinalSnapshot"] is True


def test_stack_files_exist():
    assert all((ROOT / f"Pulumi.{s}.yaml").exists() for s in ("dev", "staging", "prod"))


def test_prod_replicates_postgres_backups_to_the_dr_region(plans):
    # GIVEN prod's recovery.dr_region, THEN every database's automated backups replicate there,
    # re-encrypted with a key that lives in that region
    prod = plans["prod"]
    copies = prod.of_type("aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication")
    assert len(copies) == len(prod.of_type(RDS)) == 5
    dr_key = prod.one("aws:kms/key:Key", "dr-key-key")
    assert dr_key.inputs["region"] == "us-west-2" and dr_key.inputs["enableKeyRotation"] is True
    for copy in copies:
        assert copy.inputs["region"] == "us-west-2" and copy.inputs["retentionPeriod"] == 7
        assert dr_key.urn in copy.property_dependencies["kmsKeyId"]
    assert "region" not in prod.one("aws:kms/key:Key", "key-key").inputs  # the main key stays in the stack's region
    assert plans["dev"].of_type("aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication") == []
    # and every secret has a replica there, under the DR key
    for secret in prod.of_type(SECRET):
        assert secret.inputs["replicas"][0]["region"] == "us-west-2" and dr_key.urn in secret.property_dependencies["replicas"]
    assert all("replicas" not in s.inputs for s in plans["dev"].of_type(SECRET))


def test_dr_region_must_differ_and_needs_backups(project):
    err = _error(project("prod", lambda c: c.update({"platform:recovery": {"dr_region": "us-east-1"}})))
    assert [(p.key, p.message) for p in err.problems] == [("platform:recovery.dr_region", "must be another region than aws:region (us-east-1)")]
    no_backups = {"platform:recovery": {"dr_region": "us-west-2"}, "platform:overrides": {"postgres": {"backup_retention_days": 0}}}
    err = _error(project("dev", lambda c: c.update(no_backups)))
    assert err.problems[0].key == "platform:recovery" and "needs automated backups" in err.problems[0].message


def _error(project_dir) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_platform("test", project_dir)
    return info.value


# ---------------------------------------------------------------- first real `pulumi up`: TLS, RDS logs, max_connections, Redis AUTH rotation

LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
TASK = "aws:ecs/taskDefinition:TaskDefinition"
KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/0123abcd-0000-0000-0000-000000000000"


def _component(build) -> tuple[harness.Capture, list[str]]:
    """WHEN one component is planned on its own; its secret URL (captured through ``apply``) comes back too."""
    urls: list[str] = []
    cap = harness.run("dev", program=lambda: build().apply(lambda url: urls.append(url)))
    return cap, urls


def _postgres(**overrides):
    from components.postgres import Postgres, PostgresArgs

    args = dict(identifier="offerhub-dev", database="offerhub_db", vpc_id="vpc-0123456789abcdef0", subnet_ids=["subnet-a", "subnet-b"],
                kms_key_arn=KMS_ARN, settings=PostgresPreset(), max_storage_gb=100) | overrides  # fmt: skip
    return lambda: Postgres("offerhub-db", PostgresArgs(**args)).database_url


def test_database_url_is_verified_by_node_postgres_and_by_prisma():
    from components.postgres import RDS_CA_BUNDLE, client_env

    # WHEN the Postgres component composes DATABASE_URL
    _, urls = _component(_postgres())
    url = urlsplit(urls[0])
    query = parse_qs(url.query, strict_parsing=True)
    assert (url.scheme, url.hostname, url.port, url.path) == ("postgresql", "offerhub-dev.abc123.us-east-1.rds.amazonaws.com", 5432, "/offerhub_db")
    # THEN Prisma's engine requires TLS (sslmode=require; anything else it reads as "prefer") and verifies the
    # certificate (sslaccept=strict; its default accepts any), and node-postgres verifies against the RDS CA
    # bundle (sslrootcert becomes ssl.ca; "require" is verify-full in pg 8 and verify-ca with a root CA in libpq terms)
    assert query == {"sslmode": ["require"], "sslaccept": ["strict"], "sslrootcert": [RDS_CA_BUNDLE]}
    # and no sslcert: Prisma reads it as the CA file, node-postgres as a *client* certificate
    assert "sslcert" not in query and "sslkey" not in query
    assert RDS_CA_BUNDLE == "/etc/ssl/certs/rds-global-bundle.pem"
    # AND every container that reads DATABASE_URL gets Node's extra CA store pointed at the same bundle
    assert client_env() == {"NODE_EXTRA_CA_CERTS": RDS_CA_BUNDLE}


def test_rds_log_groups_exist_before_the_instance_with_retention_and_key(plans):
    for stack, cap in plans.items():
        key = cap.one("aws:kms/key:Key", "key-key").urn
        groups = {g.inputs["name"]: g for g in cap.of_type(LOG_GROUP) if g.inputs.get("name", "").startswith("/aws/rds/instance/")}
        for db in cap.of_type(RDS):
            # GIVEN an instance exporting its postgresql and upgrade logs
            identifier, exports = db.inputs["identifier"], db.inputs["enabledCloudwatchLogsExports"]
            for log in exports:
                # THEN the log group RDS would create without retention or key is ours, created first
                group = groups[f"/aws/rds/instance/{identifier}/{log}"]
                assert group.inputs["retentionInDays"] >= 7, stack
                assert key in group.property_dependencies["kmsKeyId"], stack
                assert group.urn in db.dependencies, f"{stack}: {identifier} must wait for {log}"
        assert len(groups) == 2 * len(cap.of_type(RDS))


def test_rds_log_groups_take_the_given_retention():
    cap, _ = _component(_postgres(log_retention_days=365))
    assert {g.inputs["name"]: g.inputs["retentionInDays"] for g in cap.of_type(LOG_GROUP)} == {
        "/aws/rds/instance/offerhub-dev/postgresql": 365,
        "/aws/rds/instance/offerhub-dev/upgrade": 365,
    }


def test_rds_log_groups_keep_the_environments_retention(plans):
    for stack, days in (("dev", 7), ("staging", 30), ("prod", 365)):
        rds = [g for g in plans[stack].of_type(LOG_GROUP) if g.inputs.get("name", "").startswith("/aws/rds/instance/")]
        assert rds and {g.inputs["retentionInDays"] for g in rds} == {days}, stack


def test_max_connections_is_set_per_class_and_the_alarm_reads_the_same_number(plans):
    # GIVEN dev on db.t4g.micro, staging on db.t4g.small, prod on db.t4g.medium (RDS would give about 80-87 on a micro, not 112)
    for stack, (value, alarm) in {"dev": (80, 64), "staging": (160, 128), "prod": (320, 256)}.items():
        cap = plans[stack]
        for pg in cap.of_type("aws:rds/parameterGroup:ParameterGroup"):
            params = {p["name"]: p for p in pg.inputs["parameters"]}
            # THEN the parameter group sets it, as the static parameter it is (pending-reboot, or RDS refuses the change)
            assert params["max_connections"] == {"name": "max_connections", "value": str(value), "applyMethod": "pending-reboot"}, stack
        # AND the connections alarm fires at 80 % of that same number
        thresholds = {a.name: a.inputs["threshold"] for a in cap.of_type(ALARM) if a.name.endswith("-db-connections")}
        # one instance per system, or dev's one shared instance (components/shared_data.py), one alarm each
        assert len(thresholds) == (1 if stack == "dev" else 5) and set(thresholds.values()) == {alarm}, stack


def _allowed_postgres_classes() -> list[str]:
    general = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge")
    burstable = [f"db.{f}.{s}" for f in ("t3", "t4g") for s in ("micro", "small", "medium", "large", "xlarge", "2xlarge")]
    intel = [f"db.{f}.{s}" for f in ("m5", "m6i", "m7i", "r5", "r6i", "r7i") for s in (*general, "24xlarge")]
    graviton = [f"db.{f}.{s}" for f in ("m6g", "m7g", "r6g", "r7g") for s in general]
    return burstable + intel + graviton


def test_max_connections_table_covers_every_allowed_class_and_stays_under_rds_default():
    from stacks.presets import RDS_POSTGRES_CLASSES, instance_memory_gib, postgres_max_connections

    assert [postgres_max_connections(c) for c in ("db.t4g.micro", "db.t3.small", "db.t4g.medium", "db.m6g.large", "db.r6g.large")] == [80, 160, 320, 640, 1280]
    assert postgres_max_connections("db.r7g.2xlarge") == postgres_max_connections("db.m7i.24xlarge") == 5000  # RDS's cap
    for instance_class in _allowed_postgres_classes():
        assert re.match(RDS_POSTGRES_CLASSES, instance_class), instance_class
        value = postgres_max_connections(instance_class)
        # never above RDS's own default computed on the nominal memory (DBInstanceClassMemory is lower still)
        assert 6 <= value <= min(instance_memory_gib(instance_class) * 1024**3 // 9_531_392, 5000), instance_class


# ---- Redis AUTH token rotation: rotate (both tokens valid), then revoke (only the new one)


def _redis(rotation: int, revoked: int):
    from components.redis import Redis, RedisArgs

    args = RedisArgs(replication_group_id="offerhub-dev", vpc_id="vpc-0123456789abcdef0", subnet_ids=["subnet-a", "subnet-b"], kms_key_arn=KMS_ARN,
                     settings=RedisPreset(), maxmemory_policy="noeviction", rotation=rotation, revoked=revoked)  # fmt: skip
    return lambda: Redis("offerhub-cache", args).redis_url


def _redis_step(rotation: int, revoked: int) -> tuple[dict, dict, str]:
    cap, urls = _component(_redis(rotation, revoked))
    return cap.one(REDIS).inputs, cap.one("random:index/randomPassword:RandomPassword").inputs, urls[0]


def test_redis_token_rotation_takes_two_ups_and_a_third_changes_nothing():
    # GIVEN the cache as created: one token, never rotated (the strategy is not sent on create)
    group0, _, url0 = _redis_step(0, 0)
    assert group0["authTokenUpdateStrategy"] == "ROTATE"
    # WHEN step 1 bumps rotate.REDIS_URL: a new token goes out with ROTATE, so the old one keeps working
    group1, token1, url1 = _redis_step(1, 0)
    assert group1["authTokenUpdateStrategy"] == "ROTATE" and token1["keepers"] == {"rotation": "1"} and url1 != url0
    # WHEN step 2 sets revoke.REDIS_URL to the same number: the same token goes out with SET
    group2, token2, url2 = _redis_step(1, 1)
    assert group2["authTokenUpdateStrategy"] == "SET"
    assert token2 == token1 and url2 == url1  # the same token, so REDIS_URL and the services stay as they are
    # and nothing else of the replication group changes: the provider sends ModifyReplicationGroup(AuthToken, SET) for this diff alone
    assert {k for k in group1.keys() | group2.keys() if group1.get(k) != group2.get(k)} == {"authTokenUpdateStrategy"}
    # THEN a third `pulumi up` with the same stack file registers the same inputs: no diff, no call
    assert _redis_step(1, 1) == (group2, token2, url2)
    # AND the next rotation starts from SET with ROTATE again (SET is allowed only after ROTATE)
    assert _redis_step(2, 1)[0]["authTokenUpdateStrategy"] == "ROTATE"


def test_redis_revoke_cannot_run_ahead_of_rotation():
    from components.redis import auth_token_update_strategy

    assert [auth_token_update_strategy(r, v) for r, v in ((0, 0), (1, 0), (1, 1), (3, 1), (3, 3))] == ["ROTATE", "ROTATE", "SET", "ROTATE", "SET"]
    with pytest.raises(ValueError, match="ahead of rotation"):
        auth_token_update_strategy(1, 2)


def _rotation_step(tmp: Path, name: str, rotate: int, revoke: int | None) -> harness.Capture:
    data = load_stack_yaml("dev")
    data["config"]["platform:preset"] = "dev"
    offerhub = data["config"]["platform:systems"]["offerhub"]
    offerhub["rotate"] = {"REDIS_URL": rotate}
    if revoke is not None:
        offerhub["revoke"] = {"REDIS_URL": revoke}
    (tmp / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    shutil.copy(ROOT / "Pulumi.yaml", tmp / "Pulumi.yaml")
    return plan(name, tmp)


@pytest.fixture(scope="module")
def rotation_steps(tmp_path_factory) -> tuple[harness.Capture, harness.Capture]:
    """The dev stack file with offerhub's Redis token rotated (step 1), then revoked (step 2)."""
    tmp = tmp_path_factory.mktemp("rotation")
    return _rotation_step(tmp, "step1", 1, None), _rotation_step(tmp, "step2", 1, 1)


def _revisions(cap: harness.Capture) -> dict[str, str]:
    return {
        t.name: c["dockerLabels"]["platform.secrets-revision"]
        for t in cap.of_type(TASK)
        if t.name.startswith("offerhub-")
        for c in json.loads(t.inputs["containerDefinitions"])
        if "platform.secrets-revision" in c.get("dockerLabels", {})
    }


def test_redis_rotation_steps_on_the_dev_plan(plans, rotation_steps):
    before, (step1, step2) = plans["dev"], rotation_steps
    token = "offerhub-cache-auth"
    # step 1: a new token, and every offerhub service that reads REDIS_URL rolls onto it
    assert step1.one("random:index/randomPassword:RandomPassword", token).inputs["keepers"] == {"rotation": "1"}
    assert _revisions(step1) and all(_revisions(step1)[t] != r for t, r in _revisions(before).items())
    # step 2: the same token (same keepers), and no service rolls: nothing they read changed
    assert step2.one("random:index/randomPassword:RandomPassword", token).inputs == step1.one("random:index/randomPassword:RandomPassword", token).inputs
    assert _revisions(step2) == _revisions(step1)


def test_redis_rotation_strategy_on_the_dev_plan(rotation_steps):
    step1, step2 = rotation_steps
    assert step1.one(REDIS, "offerhub-cache-group").inputs["authTokenUpdateStrategy"] == "ROTATE"
    assert step2.one(REDIS, "offerhub-cache-group").inputs["authTokenUpdateStrategy"] == "SET"


REVOKE_CASES = {
    "a secret whose old value dies at once": ("offerhub", {"rotate": {"DATABASE_URL": 1}, "revoke": {"DATABASE_URL": 1}}, "DATABASE_URL", "only REDIS_URL"),
    "a system without Redis": ("aurum", {"revoke": {"REDIS_URL": 1}}, "REDIS_URL", "aurum has no Redis"),
    "ahead of the rotation": ("offerhub", {"rotate": {"REDIS_URL": 1}, "revoke": {"REDIS_URL": 2}}, "REDIS_URL", "bump rotate first"),
    "before any rotation": ("offerhub", {"revoke": {"REDIS_URL": 1}}, "REDIS_URL", "rotate.REDIS_URL is 0"),
}


@pytest.mark.parametrize("case", sorted(REVOKE_CASES))
def test_revoke_bad_input(project, case):
    system, settings, name, message = REVOKE_CASES[case]
    err = _error(project("dev", lambda c: c["platform:systems"][system].update(settings)))
    assert [p.key for p in err.problems] == [f"platform:systems.{system}.revoke.{name}"], str(err)
    assert message in err.problems[0].message


def test_revoke_of_the_current_rotation_loads(project):
    cfg = load_platform("test", project("dev", lambda c: c["platform:systems"]["offerhub"].update(rotate={"REDIS_URL": 2}, revoke={"REDIS_URL": 2})))
    assert cfg.stack_config.systems["offerhub"].revoke == {"REDIS_URL": 2}


# ---------------------------------------------------------------- backups kept, RDS events, least privilege inside the database


def test_prod_keeps_automated_backups_after_deletion(plans):
    # GIVEN prod and staging take a final snapshot; THEN their automated backups outlive a deletion too
    # (point-in-time restore for the retention period); dev, which may be destroyed, drops them
    for stack, keep in (("prod", True), ("staging", True), ("dev", False)):
        for db in plans[stack].of_type(RDS):
            assert db.inputs["deleteAutomatedBackups"] is (not keep), (stack, db.name)
            assert db.inputs["skipFinalSnapshot"] is (not keep)


def test_rds_events_reach_the_alarm_topic(plans):
    from components.postgres import EVENT_CATEGORIES

    prod = plans["prod"]
    # RDS events are critical (docs/operating.md, "Alarms"): the critical topic, not the warning one
    topic = prod.one("aws:sns/topic:Topic", "alarms-topic").urn
    subs = {s.inputs["sourceIds"][0]: s for s in prod.of_type("aws:rds/eventSubscription:EventSubscription")}
    # THEN every instance sends its failover, low-storage, maintenance, backup and failure events to the critical topic
    assert set(subs) == {db.inputs["identifier"] for db in prod.of_type(RDS)}
    for sub in subs.values():
        assert sub.inputs["sourceType"] == "db-instance" and sub.property_dependencies["snsTopic"] == [topic]
        assert sub.inputs["snsTopic"] == prod.outputs["alarm_topic_arns"]["critical"]
        assert {"failover", "low storage", "maintenance", "backup", "failure"} <= set(sub.inputs["eventCategories"])
    # the categories RDS knows for a DB instance (RDS user guide, "Amazon RDS event categories and event messages")
    known = {"availability", "backup", "configuration change", "creation", "deletion", "failover", "failure", "low storage",
             "maintenance", "notification", "read replica", "recovery", "restoration", "security", "security patching"}  # fmt: skip
    assert set(EVENT_CATEGORIES) <= known
    # AND the topic's key lets RDS events encrypt what they publish
    key_policy = json.loads(prod.one("aws:kms/key:Key", "key-key").inputs["policy"])
    assert any(s.get("Principal") == {"Service": "events.rds.amazonaws.com"} for s in key_policy["Statement"])


def test_enhanced_monitoring_role_trusts_rds_for_this_account_only(plans):
    roles = [r for r in plans["prod"].of_type("aws:iam/role:Role") if r.name.endswith("-db-monitoring")]
    assert len(roles) == 5
    for role in roles:
        statement = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]
        assert statement["Principal"] == {"Service": "monitoring.rds.amazonaws.com"}
        assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_apps_get_the_app_role_and_migrations_the_owner():
    from components.postgres import OWNER

    owners: list[str] = []

    def build():
        from components.postgres import Postgres, PostgresArgs

        db = Postgres("offerhub-db", PostgresArgs(identifier="offerhub-dev", database="offerhub_db", vpc_id="vpc-0123456789abcdef0",
                                                   subnet_ids=["subnet-a"], kms_key_arn=KMS_ARN, settings=PostgresPreset(), max_storage_gb=100))  # fmt: skip
        db.owner_secret.apply(owners.append)
        return db.database_url

    _, urls = _component(build)
    # THEN DATABASE_URL (what every app reads) carries the DML-only app role ...
    assert urlsplit(urls[0]).username == "offerhub_db_app"
    # ... and the owner's secret holds the master user's URL (migrations), its password and the app role's verifier
    owner = json.loads(owners[0])
    assert set(owner) == {"url", "host", "password", "app_verifier"}
    assert urlsplit(owner["url"]).username == OWNER and urlsplit(owner["url"]).password == owner["password"]
    assert owner["app_verifier"].startswith("SCRAM-SHA-256$4096:") and urlsplit(urls[0]).password not in owner["app_verifier"]


def test_scram_verifier_is_the_one_postgres_checks_rfc_7677():
    # RFC 7677 section 3: user "user", password "pencil", this salt and 4096 iterations
    import base64
    import hashlib
    import hmac

    from components.postgres import scram_verifier

    verifier = scram_verifier("pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="))
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    assert method == "SCRAM-SHA-256" and iterations_salt == "4096:W22ZaJ0SNY7soEsUEjb6gQ=="
    nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
    auth = f"n=user,r=rOprNGfwEbeRWgbNEkqO,r={nonce},s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,c=biws,r={nonce}".encode()
    # THEN the server signature of the RFC's exchange follows from the ServerKey ...
    assert base64.b64encode(hmac.new(server_key, auth, hashlib.sha256).digest()).decode() == "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
    # ... and the RFC's client proof checks against the StoredKey, as the server checks it
    proof = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    client_key = bytes(a ^ b for a, b in zip(proof, hmac.new(stored_key, auth, hashlib.sha256).digest(), strict=True))
    assert hashlib.sha256(client_key).digest() == stored_key


def test_bootstrap_sql_grants_dml_only_and_is_idempotent():
    from components.postgres import roles_sql

    sql = roles_sql("offerhub_db", ddl=False)
    lines = [line for line in sql.splitlines() if not line.startswith("--")]
    # one transaction at a time per database, every role created only when missing
    assert lines[0].startswith("SELECT pg_advisory_xact_lock(")
    assert "WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'offerhub_db_app')" in sql
    # DML and sequences, on what exists and on what the owner creates later; nothing else
    assert "ON ALL TABLES IN SCHEMA %I TO %I" in sql and "GRANT SELECT, INSERT, UPDATE, DELETE" in sql
    assert 'ALTER DEFAULT PRIVILEGES GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO "offerhub_db_app";' in sql
    assert 'ALTER DEFAULT PRIVILEGES GRANT USAGE, SELECT ON SEQUENCES TO "offerhub_db_app";' in sql
    for word in ("GRANT ALL", "TRUNCATE", "CREATEDB ", "CREATEROLE ", "SUPERUSER", "CREATE ON", "_ddl"):
        assert word not in sql.replace("NOCREATEDB", "").replace("NOCREATEROLE", ""), word
    # the password is a verifier read from the environment, never text in the script
    assert "PASSWORD :'app_verifier'" in sql and "\\getenv app_verifier DB_APP_VERIFIER" in sql
    ddl = roles_sql("twinkle", ddl=True)
    assert 'GRANT CONNECT, TEMPORARY, CREATE ON DATABASE "twinkle" TO "twinkle_ddl";' in ddl
    assert 'ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO "twinkle_app";' in ddl  # the API reads what Ponder writes
    with pytest.raises(ValueError):
        roles_sql("x'; DROP", ddl=False)


def test_only_a_ponder_service_gets_the_runtime_ddl_role():
    from components.postgres import bootstrap_service, runtime_ddl_services
    from stacks.catalog import load_catalog

    catalog = load_catalog()
    assert {n: runtime_ddl_services(s) for n, s in catalog.items()} == {
        "twinkle": ("indexer",), "offerhub": (), "starkdca": (), "aurum": (), "darwin": ()
    }  # fmt: skip
    assert {n: bootstrap_service(s) for n, s in catalog.items()} == {
        "twinkle": "indexer", "offerhub": "api", "starkdca": "api", "aurum": "api", "darwin": "app"
    }  # fmt: skip


def test_rotating_database_url_renews_every_database_password(project):
    cap = plan("test", project("staging", lambda c: c["platform:systems"]["twinkle"].update(rotate={"DATABASE_URL": 3})))
    for name in ("twinkle-db-password", "twinkle-db-app-password", "twinkle-db-ddl-password"):
        assert cap.one("random:index/randomPassword:RandomPassword", name).inputs["keepers"] == {"rotation": "3"}, name
    for name in ("twinkle-db-app-salt", "twinkle-db-ddl-salt"):
        assert cap.one("random:index/randomBytes:RandomBytes", name).inputs["keepers"] == {"rotation": "3"}, name
    # on dev's shared instance (components/shared_data.py) it renews the system's own roles, not the master
    # password every system's owner secret shares
    cap = plan("test", project("dev", lambda c: c["platform:systems"]["twinkle"].update(rotate={"DATABASE_URL": 3})))
    for name in ("twinkle-db-app-password", "twinkle-db-ddl-password"):
        assert cap.one("random:index/randomPassword:RandomPassword", name).inputs["keepers"] == {"rotation": "3"}, name
    assert cap.one("random:index/randomPassword:RandomPassword", "shared-db-password").inputs["keepers"] == {"rotation": "0"}


def test_parameter_group_stores_passwords_as_scram(plans):
    for pg in plans["prod"].of_type("aws:rds/parameterGroup:ParameterGroup"):
        assert {p["name"]: p["value"] for p in pg.inputs["parameters"]}["password_encryption"] == "scram-sha-256"


@pytest.mark.skipif(not os.environ.get("PLATFORM_TEST_PGHOST"), reason="needs PostgreSQL 16+: PLATFORM_TEST_PGHOST, _PGPORT, _PGPASSWORD (superuser master)")
def test_bootstrap_against_a_real_postgres(tmp_path):
    """The bootstrap as the container runs it (same env, same command) against a real server, twice and
    four at a time; the app role gets DML and no DDL, the DDL role its own schema, the app reads it."""
    import subprocess

    from components.postgres import BOOTSTRAP_COMMAND, bootstrap_env, scram_verifier

    host, port, master = os.environ["PLATFORM_TEST_PGHOST"], os.environ.get("PLATFORM_TEST_PGPORT", "5432"), os.environ["PLATFORM_TEST_PGPASSWORD"]

    def psql(user: str, password: str, *sql: str, db: str = "twinkle", check: bool = True) -> subprocess.CompletedProcess:
        args = ["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", host, "-p", port, "-U", user, "-d", db]
        for s in sql:
            args += ["-c", s]
        return subprocess.run(args, env={**os.environ, "PGPASSWORD": password, "PGSSLMODE": "require"}, capture_output=True, text=True, check=check)

    psql("master", master, "DROP DATABASE IF EXISTS twinkle", "DROP ROLE IF EXISTS twinkle_app", db="postgres")
    psql("master", master, "DROP ROLE IF EXISTS twinkle_ddl", "DROP ROLE IF EXISTS app", db="postgres")
    # RDS: the master user is not a superuser; it owns the database; a migration made tables first
    psql("master", master, "CREATE ROLE app LOGIN CREATEROLE CREATEDB PASSWORD 'ownerpw'", "CREATE DATABASE twinkle OWNER app", db="postgres")
    psql("app", "ownerpw", "CREATE TABLE users (id serial PRIMARY KEY, name text)")
    env = {**os.environ, **bootstrap_env("twinkle", ddl=True), "PGHOST": host, "PGPORT": port, "PGPASSWORD": "ownerpw",
           "DB_APP_VERIFIER": scram_verifier("apppw", b"0123456789abcdef"), "DB_DDL_VERIFIER": scram_verifier("ddlpw", b"fedcba9876543210")}  # fmt: skip
    runs = [subprocess.Popen(list(BOOTSTRAP_COMMAND), env=env) for _ in range(4)]
    assert [r.wait() for r in runs] == [0, 0, 0, 0]
    assert subprocess.run(list(BOOTSTRAP_COMMAND), env=env).returncode == 0  # and again: idempotent
    assert psql("twinkle_app", "apppw", "INSERT INTO users (name) VALUES ('a') RETURNING id").stdout.splitlines()[0] == "1"
    assert "permission denied" in psql("twinkle_app", "apppw", "CREATE TABLE x (i int)", check=False).stderr
    assert "must be owner" in psql("twinkle_app", "apppw", "DROP TABLE users", check=False).stderr
    psql("twinkle_ddl", "ddlpw", "CREATE SCHEMA ponder", "CREATE TABLE ponder.blocks (n int)", "INSERT INTO ponder.blocks VALUES (7)")
    assert psql("twinkle_app", "apppw", "SELECT n FROM ponder.blocks").stdout.strip() == "7"
    assert "permission denied" in psql("twinkle_app", "apppw", "DELETE FROM ponder.blocks", check=False).stderr
    psql("app", "ownerpw", "CREATE TABLE later (id serial)")  # a later migration
    psql("twinkle_app", "apppw", "INSERT INTO later DEFAULT VALUES")
    env.pop("DB_APP_VERIFIER")
    assert subprocess.run(list(BOOTSTRAP_COMMAND), env=env, capture_output=True).returncode == 3  # fails closed, nothing committed


def test_darwins_timers_are_never_evicted(prod):
    """darwin's guide: REDIS_TIMER_TTL=3600, so timer keys carry a TTL and volatile-lru could evict a live
    timer; the cache refuses writes when full instead (noeviction), and its memory alarm is the lower one."""
    from stacks.presets import ObservabilityPreset

    params = prod.one("aws:elasticache/parameterGroup:ParameterGroup", "darwin-cache-params").inputs["parameters"]
    assert {p["name"]: p["value"] for p in params}["maxmemory-policy"] == "noeviction"
    alarms = [r for r in prod.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if r.name.startswith("darwin-cache-") and r.name.endswith("-memory")]
    assert alarms and {a.inputs["threshold"] for a in alarms} == {ObservabilityPreset().cache_memory_noeviction_percent}


def test_darwins_100_gb_is_allocated_in_prod_and_a_ceiling_elsewhere(plans):
    """darwin's guide: "Storage: 100GB minimum". Production allocates it (autoscaling to twice that);
    dev and staging keep the preset's allocation with 100 GB as the ceiling, paying for what they use."""
    db = {stack: plans[stack].one("aws:rds/instance:Instance", "darwin-db-instance").inputs for stack in ("staging", "prod")}
    db["dev"] = plans["dev"].one("aws:rds/instance:Instance", "shared-db-instance").inputs  # dev: the shared instance takes the largest ceiling
    assert (db["prod"]["allocatedStorage"], db["prod"]["maxAllocatedStorage"]) == (100, 200)
    for stack in ("dev", "staging"):
        assert (db[stack]["allocatedStorage"], db[stack]["maxAllocatedStorage"]) == (20, 100), stack
    # the storage alarm measures free space against what is allocated
    from stacks.presets import ObservabilityPreset

    alarm = plans["prod"].one("aws:cloudwatch/metricAlarm:MetricAlarm", "darwin-db-storage")
    assert alarm.inputs["threshold"] == 100 * 1024**3 * ObservabilityPreset().db_free_storage_percent / 100


def test_twinkles_facilitator_reaches_the_database(prod):
    """twinkle's guide: its architecture diagram connects the facilitator (:3001) to "PostgreSQL + Redis"
    as it does the api. The task gets DATABASE_URL (the app role) and the database admits its group."""
    task = prod.one("aws:ecs/taskDefinition:TaskDefinition", "twinkle-facilitator-task")
    app = next(c for c in json.loads(task.inputs["containerDefinitions"]) if c["essential"])
    assert "DATABASE_URL" in {s["name"] for s in app["secrets"]}
    ingress = prod.one("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule", "twinkle-facilitator-to-db")
    assert ingress.inputs["fromPort"] == 5432
