"""Issue 15, security round 2: the parts in the keys, the caches, the network and the cluster.

Each test reads the real plans (the shipped stack files, planned once per session) or a copy of one
with a single setting changed."""

from __future__ import annotations

import json
import re

from tests.conftest import plan

KEY = "aws:kms/key:Key"
GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
ROLE = "aws:iam/role:Role"
ENDPOINT = "aws:ec2/vpcEndpoint:VpcEndpoint"
CLUSTER = "aws:ecs/cluster:Cluster"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
BREAK_GLASS = "arn:aws:iam::123456789012:role/platform-break-glass"


def statements(resource, field: str = "policy") -> dict[str, dict]:
    return {s.get("Sid", ""): s for s in json.loads(resource.inputs[field])["Statement"]}


# ---------------------------------------------------------------- keys


def test_protected_keys_deny_deletion_and_disabling_to_everyone(plans):
    """A prod key (and its DR twin) cannot be scheduled for deletion or disabled, even by the account
    root: an explicit Deny in a key policy beats every Allow (KMS developer guide, "Key policies";
    IAM "Policy evaluation logic")."""
    for name in ("key-key", "dr-key-key"):
        deny = statements(plans["prod"].one(KEY, name))["ProtectKeyFromDeletion"]
        assert deny == {
            "Sid": "ProtectKeyFromDeletion",
            "Effect": "Deny",
            "Principal": {"AWS": "*"},
            "Action": ["kms:ScheduleKeyDeletion", "kms:DisableKey"],
            "Resource": "*",
        }
    for stack in ("staging", "prod"):
        assert "ProtectKeyFromDeletion" in statements(plans[stack].one(KEY, "key-key")), stack
    # dev is not protected: `pulumi destroy` schedules its key's deletion
    assert "ProtectKeyFromDeletion" not in statements(plans["dev"].one(KEY, "key-key"))


def test_the_break_glass_role_alone_may_delete_a_protected_key(project):
    def mutate(config: dict) -> None:
        overrides = config.setdefault("platform:overrides", {})
        overrides.setdefault("security", {})["break_glass_role_arn"] = BREAK_GLASS

    cap = plan("test", project("prod", mutate))
    for name in ("key-key", "dr-key-key"):
        deny = statements(cap.one(KEY, name))["ProtectKeyFromDeletion"]
        assert deny["Condition"] == {"ArnNotEquals": {"aws:PrincipalArn": BREAK_GLASS}}


def test_rds_events_may_publish_to_the_encrypted_alarm_topic(plans):
    """SNS developer guide, "Configure AWS KMS permissions for AWS services": a service that publishes to
    an encrypted topic needs kms:GenerateDataKey* and kms:Decrypt on its key."""
    st = statements(plans["prod"].one(KEY, "key-key"))["RdsEventsToSns"]
    assert st["Principal"] == {"Service": "events.rds.amazonaws.com"}
    assert set(st["Action"]) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert st["Condition"] == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


# ---------------------------------------------------------------- caches


def test_caches_take_a_final_snapshot_outside_dev(plans):
    for stack in ("staging", "prod"):
        groups = plans[stack].of_type(GROUP)
        assert groups, stack
        for group in groups:
            # one name per incarnation of the group: a second delete naming an existing snapshot fails
            # (SnapshotAlreadyExistsFault) and leaves the group up
            assert re.fullmatch(rf"{group.inputs['replicationGroupId']}-final-[0-9a-f]{{8}}", group.inputs["finalSnapshotIdentifier"]), group.name
            assert group.options["protect"], group.name
    assert all("finalSnapshotIdentifier" not in g.inputs for g in plans["dev"].of_type(GROUP))


# ---------------------------------------------------------------- network


def test_flow_log_role_trusts_only_our_account_flow_logs(plans):
    """VPC user guide, "IAM role for publishing flow logs to CloudWatch Logs": aws:SourceAccount and
    aws:SourceArn arn:aws:ec2:<region>:<account>:vpc-flow-log/*."""
    role = plans["prod"].one(ROLE, "network-flow-logs")
    (statement,) = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert statement["Principal"] == {"Service": "vpc-flow-logs.amazonaws.com"}
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": "123456789012"},
        "ArnLike": {"aws:SourceArn": "arn:aws:ec2:us-east-1:123456789012:vpc-flow-log/*"},
    }


def test_s3_endpoint_reaches_only_our_buckets_and_ecr_layers(plans):
    endpoint = plans["prod"].one(ENDPOINT, "network-s3")
    policy = statements(endpoint)
    assert policy["OwnAccountBuckets"]["Condition"] == {"StringEquals": {"aws:ResourceAccount": "123456789012"}}
    assert policy["EcrImageLayers"] == {
        "Sid": "EcrImageLayers",
        "Effect": "Allow",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::prod-us-east-1-starport-layer-bucket/*",
    }
    assert set(policy) == {"OwnAccountBuckets", "EcrImageLayers"}


# ---------------------------------------------------------------- ECS Exec


def test_ecs_exec_sessions_are_logged_to_an_encrypted_group(plans):
    dev = plans["dev"]
    cluster = dev.one(CLUSTER)
    config = cluster.inputs["configuration"]["executeCommandConfiguration"]
    assert config["logging"] == "OVERRIDE"
    assert config["logConfiguration"]["cloudWatchEncryptionEnabled"] is True
    group = dev.one(LOG_GROUP, "cluster-exec-log")
    assert group.inputs["name"] == "/platform/dev/ecs-exec"
    assert dev.one(KEY, "key-key").urn in group.property_dependencies["kmsKeyId"]
    assert group.urn in cluster.property_dependencies["configuration"]
    # no ECS Exec in prod, so nothing to log there
    assert "configuration" not in plans["prod"].one(CLUSTER).inputs


def test_a_replaced_cache_gets_a_new_final_snapshot_name(project):
    """What replaces the group (here its key, as a new environment key would) renews the suffix, so the
    old group's final snapshot and the new one's cannot collide."""
    prod = plan("test", project("prod"))
    suffixes = {r.name: r for r in prod.of_type("random:index/randomId:RandomId") if r.name.endswith("-cache-final-id")}
    assert suffixes and all(set(r.inputs["keepers"]) == {"group", "kms", "subnets", "port"} for r in suffixes.values())
    group = next(iter(prod.of_type(GROUP)))
    assert any(r.urn in group.property_dependencies["finalSnapshotIdentifier"] for r in suffixes.values())
