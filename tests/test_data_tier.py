"""The data tier on the prod plan, by AWS Security Hub control id, and secrets that never leak."""

from __future__ import annotations

import json

import pytest

from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan

RDS = "aws:rds/instance:Instance"
REDIS = "aws:elasticache/replicationGroup:ReplicationGroup"
SECRET = "aws:secretsmanager/secret:Secret"
SYSTEMS_WITH_DB = {"twinkle", "offerhub", "starkdca", "aurum", "darwin"}
SYSTEMS_WITH_CACHE = {"twinkle", "offerhub", "starkdca", "darwin"}


def test_one_database_per_system_and_one_cache_except_aurum(prod):
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
        assert i["skipFinalSnapshot"] is False and i["finalSnapshotIdentifier"].endswith("-final")
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
