"""An independent scanner: checkov over the offline plan of a stack.

    python -m tools.scan --stack prod          # findings outside the allowlist; exit 1 if any
    python -m tools.scan --all                 # every shipped stack
    python -m tools.scan --stack prod --json plan.tf.json    # also write the Terraform plan JSON

Our policy pack checks what we thought of; checkov (the field's standard IaC scanner, some 800 AWS
checks) checks what others did. It reads Terraform plans, so the captured resources
(:mod:`tools.harness`) are converted to the plan JSON ``terraform show -json`` prints:

- the type: an explicit table, :data:`TF_TYPES`, ``aws:rds/instance:Instance`` -> ``aws_db_instance``
  (pulumi-aws bridges the Terraform AWS provider; each token is the bridge's own name for that
  Terraform resource). A type the table lacks stops the scan: nothing is left unscanned silently.
- the fields: the shape comes from the pulumi-aws SDK's input types (``ServiceArgs`` ...): camelCase to
  snake_case; an object (a Terraform block of at most one item, flattened by the bridge) becomes a
  list of one, as Terraform prints it; maps (tags, environment variables, dimensions) keep their keys;
  JSON documents (policies, container definitions) stay strings. A list field's Terraform name is
  read from :data:`LIST_FIELDS` (the bridge pluralises block names: ``rules`` is Terraform's
  ``rule``, ``ingress`` stays); a list field the table lacks stops the scan too.
- references: an id, ARN or name that AWS computes (a mock placeholder here) and that another resource
  uses is written as the Terraform address it comes from (``aws_s3_bucket.alb-logs.id``), in the
  values and in ``configuration...expressions.<field>.references``, so checkov's graph connects the
  bucket to its public access block, the security group to what uses it, the ALB to its WAF ACL.

checkov needs its own virtualenv (its pins conflict with ours: boto3 1.35 vs 1.44):
``.venv/scan``, made by ``.ci/run`` from ``requirements-scan.txt``. This module runs there as the
worker (``--worker``), so it imports nothing but the standard library at module level.

Accepted findings are argued in ``tests/scan_allowlist.yaml``: check id, resource, reason and the
compensating control. An entry that no longer matches a finding fails the test suite.
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .harness import Capture, Resource

ROOT = Path(__file__).resolve().parent.parent
ALLOWLIST = ROOT / "tests" / "scan_allowlist.yaml"
SCAN_VENV = ROOT / ".venv" / "scan"
SCAN_REQUIREMENTS = ROOT / "requirements-scan.txt"
CHECKOV_VERSION = "3.3.30"
STACKS = ("dev", "staging", "prod", "staging-eks")
TF_PROVIDER = "registry.terraform.io/hashicorp/aws"

# Pulumi type -> the Terraform resource pulumi-aws bridges (the provider's bridge metadata,
# provider/cmd/pulumi-resource-aws/bridge-metadata.json, "renames.resources"). Every AWS type a plan
# declares must be here; tests/test_scan.py checks it for every shipped stack.
TF_TYPES: dict[str, str] = {
    "aws:acm/certificate:Certificate": "aws_acm_certificate",
    "aws:acm/certificateValidation:CertificateValidation": "aws_acm_certificate_validation",
    "aws:budgets/budget:Budget": "aws_budgets_budget",
    "aws:cloudwatch/dashboard:Dashboard": "aws_cloudwatch_dashboard",
    "aws:cloudwatch/eventRule:EventRule": "aws_cloudwatch_event_rule",
    "aws:cloudwatch/eventTarget:EventTarget": "aws_cloudwatch_event_target",
    "aws:cloudwatch/logMetricFilter:LogMetricFilter": "aws_cloudwatch_log_metric_filter",
    "aws:appautoscaling/policy:Policy": "aws_appautoscaling_policy",
    "aws:appautoscaling/target:Target": "aws_appautoscaling_target",
    "aws:cloudwatch/logGroup:LogGroup": "aws_cloudwatch_log_group",
    "aws:cloudwatch/logResourcePolicy:LogResourcePolicy": "aws_cloudwatch_log_resource_policy",
    "aws:cloudwatch/metricAlarm:MetricAlarm": "aws_cloudwatch_metric_alarm",
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": "aws_default_security_group",
    "aws:ec2/eip:Eip": "aws_eip",
    "aws:ec2/flowLog:FlowLog": "aws_flow_log",
    "aws:ec2/internetGateway:InternetGateway": "aws_internet_gateway",
    "aws:ec2/natGateway:NatGateway": "aws_nat_gateway",
    "aws:ec2/route:Route": "aws_route",
    "aws:ec2/routeTable:RouteTable": "aws_route_table",
    "aws:ec2/routeTableAssociation:RouteTableAssociation": "aws_route_table_association",
    "aws:ec2/securityGroup:SecurityGroup": "aws_security_group",
    "aws:ec2/subnet:Subnet": "aws_subnet",
    "aws:ec2/vpc:Vpc": "aws_vpc",
    "aws:ec2/vpcEndpoint:VpcEndpoint": "aws_vpc_endpoint",
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": "aws_ecr_lifecycle_policy",
    "aws:ecr/repository:Repository": "aws_ecr_repository",
    "aws:ecr/repositoryPolicy:RepositoryPolicy": "aws_ecr_repository_policy",
    "aws:ecs/cluster:Cluster": "aws_ecs_cluster",
    "aws:ecs/clusterCapacityProviders:ClusterCapacityProviders": "aws_ecs_cluster_capacity_providers",
    "aws:ecs/service:Service": "aws_ecs_service",
    "aws:ecs/taskDefinition:TaskDefinition": "aws_ecs_task_definition",
    "aws:elasticache/parameterGroup:ParameterGroup": "aws_elasticache_parameter_group",
    "aws:elasticache/replicationGroup:ReplicationGroup": "aws_elasticache_replication_group",
    "aws:elasticache/subnetGroup:SubnetGroup": "aws_elasticache_subnet_group",
    "aws:iam/role:Role": "aws_iam_role",
    "aws:iam/rolePolicy:RolePolicy": "aws_iam_role_policy",
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": "aws_iam_role_policy_attachment",
    "aws:kms/alias:Alias": "aws_kms_alias",
    "aws:kms/key:Key": "aws_kms_key",
    "aws:kms/replicaKey:ReplicaKey": "aws_kms_replica_key",
    "aws:lambda/function:Function": "aws_lambda_function",
    "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig": "aws_lambda_function_event_invoke_config",
    "aws:lambda/permission:Permission": "aws_lambda_permission",
    "aws:lb/listener:Listener": "aws_lb_listener",
    "aws:lb/listenerCertificate:ListenerCertificate": "aws_lb_listener_certificate",
    "aws:lb/listenerRule:ListenerRule": "aws_lb_listener_rule",
    "aws:lb/loadBalancer:LoadBalancer": "aws_lb",
    "aws:lb/targetGroup:TargetGroup": "aws_lb_target_group",
    "aws:rds/eventSubscription:EventSubscription": "aws_db_event_subscription",
    "aws:rds/instance:Instance": "aws_db_instance",
    "aws:rds/instanceAutomatedBackupsReplication:InstanceAutomatedBackupsReplication": "aws_db_instance_automated_backups_replication",
    "aws:rds/parameterGroup:ParameterGroup": "aws_db_parameter_group",
    "aws:rds/subnetGroup:SubnetGroup": "aws_db_subnet_group",
    "aws:route53/healthCheck:HealthCheck": "aws_route53_health_check",
    "aws:route53/record:Record": "aws_route53_record",
    "aws:s3/bucket:Bucket": "aws_s3_bucket",
    "aws:s3/bucketAcl:BucketAcl": "aws_s3_bucket_acl",
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": "aws_s3_bucket_lifecycle_configuration",
    "aws:s3/bucketLogging:BucketLogging": "aws_s3_bucket_logging",
    "aws:s3/bucketNotification:BucketNotification": "aws_s3_bucket_notification",
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": "aws_s3_bucket_ownership_controls",
    "aws:s3/bucketPolicy:BucketPolicy": "aws_s3_bucket_policy",
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": "aws_s3_bucket_public_access_block",
    "aws:s3/bucketReplicationConfig:BucketReplicationConfig": "aws_s3_bucket_replication_configuration",
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": "aws_s3_bucket_server_side_encryption_configuration",
    "aws:s3/bucketVersioning:BucketVersioning": "aws_s3_bucket_versioning",
    "aws:scheduler/schedule:Schedule": "aws_scheduler_schedule",
    "aws:secretsmanager/secret:Secret": "aws_secretsmanager_secret",
    "aws:secretsmanager/secretPolicy:SecretPolicy": "aws_secretsmanager_secret_policy",
    "aws:secretsmanager/secretVersion:SecretVersion": "aws_secretsmanager_secret_version",
    "aws:sns/topic:Topic": "aws_sns_topic",
    "aws:sns/topicPolicy:TopicPolicy": "aws_sns_topic_policy",
    "aws:sns/topicSubscription:TopicSubscription": "aws_sns_topic_subscription",
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": "aws_vpc_security_group_egress_rule",
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": "aws_vpc_security_group_ingress_rule",
    "aws:wafv2/webAcl:WebAcl": "aws_wafv2_web_acl",
    "aws:wafv2/webAclAssociation:WebAclAssociation": "aws_wafv2_web_acl_association",
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": "aws_wafv2_web_acl_logging_configuration",
}

# Types that declare nothing in AWS for checkov to read, each with the reason.
NOT_SCANNED: dict[str, str] = {
    "random:": "a value generated in the Pulumi state (passwords, keys); no cloud resource",
    "pulumi:providers:": "a provider configuration, not a resource",
    "kubernetes:": "Kubernetes objects (staging-eks): not AWS resources; the policy pack checks them",
}

# A list field's Terraform name, by its Pulumi name. The bridge pluralises a Terraform list whose name
# is singular (a repeated block ``rule`` is ``rules``), except where the provider says otherwise
# (``ingress``); Terraform names that are plural already stay. Each entry was read against the
# Terraform AWS provider's documentation of the types that use it. (Pulumi type, field) overrides a
# field's global entry.
LIST_FIELDS: dict[str, str] = {
    # repeated blocks
    "actions": "action",
    "aliases": "alias",
    "capacityProviderStrategies": "capacity_provider_strategy",
    "conditions": "condition",
    "costFilters": "cost_filter",
    "defaultActions": "default_action",
    "defaultCapacityProviderStrategies": "default_capacity_provider_strategy",
    "egress": "egress",
    "encryptionConfigurations": "encryption_configuration",
    "grants": "grant",
    "ingress": "ingress",
    "loadBalancers": "load_balancer",
    "metricQueries": "metric_query",
    "notifications": "notification",
    "parameters": "parameter",
    "plannedLimits": "planned_limit",
    "redactedFields": "redacted_fields",
    "replicas": "replica",
    "ruleActionOverrides": "rule_action_override",
    "ruleLabels": "rule_label",
    "rules": "rule",
    "settings": "setting",
    "statements": "statement",
    "stepAdjustments": "step_adjustment",
    "targetGroups": "target_group",
    "textTransformations": "text_transformation",
    "volumes": "volume",
    # lists of strings, plural in Terraform too
    "alarmActions": "alarm_actions",
    "alarmNames": "alarm_names",
    "architectures": "architectures",
    "capacityProviders": "capacity_providers",
    "enabledCloudwatchLogsExports": "enabled_cloudwatch_logs_exports",
    "eventCategories": "event_categories",
    "insufficientDataActions": "insufficient_data_actions",
    "logDestinationConfigs": "log_destination_configs",
    "managedPolicyArns": "managed_policy_arns",
    "okActions": "ok_actions",
    "records": "records",
    "regions": "regions",
    "requiresCompatibilities": "requires_compatibilities",
    "routeTableIds": "route_table_ids",
    "securityGroupIds": "security_group_ids",
    "securityGroups": "security_groups",
    "sourceIds": "source_ids",
    "subjectAlternativeNames": "subject_alternative_names",
    "subnetIds": "subnet_ids",
    "subnets": "subnets",
    "subscriberEmailAddresses": "subscriber_email_addresses",
    "subscriberSnsTopicArns": "subscriber_sns_topic_arns",
    "validationRecordFqdns": "validation_record_fqdns",
    "values": "values",
    "vpcSecurityGroupIds": "vpc_security_group_ids",
}
LIST_FIELD_OVERRIDES: dict[tuple[str, str], str] = {}

# A plan value that is one of these outputs of a resource it depends on is written as a reference.
_IDENTITY_KEYS = re.compile(r"^(id|arn|name|bucket|keyId|.*(Id|Arn|Name|Url|Address))$")


class UnmappedError(Exception):
    """A type or field the converter has no Terraform name for: the scan stops instead of skipping it."""


# ---------------------------------------------------------------- the conversion


def snake(name: str) -> str:
    """``cidrIpv4`` -> ``cidr_ipv4``, ``enableHttp2`` -> ``enable_http2`` (the bridge's camelCase, reversed)."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def tf_type(pulumi_type: str) -> str | None:
    """The Terraform type of a Pulumi type; None for a type with nothing to scan; raises for an unmapped one."""
    if pulumi_type in TF_TYPES:
        return TF_TYPES[pulumi_type]
    if any(pulumi_type.startswith(prefix) for prefix in NOT_SCANNED):
        return None
    raise UnmappedError(f"no Terraform type for {pulumi_type}: add it to tools/scan.py TF_TYPES")


@functools.cache
def _args_class(pulumi_type: str) -> type:
    """The SDK's input type of a resource, from the resource class's own module (``pulumi_aws.s3`` also
    exports a nested type of the legacy Bucket named ``BucketServerSideEncryptionConfigurationArgs``, and
    the resource's own is then ``...InitArgs``):
    ``aws:ecs/service:Service`` -> ``pulumi_aws.ecs.service.ServiceArgs``."""
    import importlib

    module, _, cls = pulumi_type.split(":", 1)[1].partition(":")
    module = module.split("/")[0]
    for name in (f"pulumi_aws.{module}", f"pulumi_aws.{module}_"):
        try:
            module_of = sys.modules[getattr(importlib.import_module(name), cls).__module__]
            # where a nested type already has the name, the generator calls the resource's own "<Name>InitArgs"
            return getattr(module_of, f"{cls}InitArgs", None) or getattr(module_of, f"{cls}Args")
        except (ModuleNotFoundError, AttributeError):
            continue
    raise UnmappedError(f"no SDK input type for {pulumi_type}")


@dataclass(frozen=True)
class _Shape:
    kind: str  # scalar, int, float, bool, map, object, list, asset
    item: Any = None  # object: the input type; list: the item's _Shape


def _shape(typ: Any) -> _Shape:
    import collections.abc
    import typing

    import pulumi
    from pulumi import _types

    typ = _types.unwrap_type(typ)
    origin = typing.get_origin(typ)
    if origin in (collections.abc.Sequence, list):
        return _Shape("list", _shape(typing.get_args(typ)[0]))
    if origin in (collections.abc.Mapping, dict):
        return _Shape("map")
    if isinstance(typ, type):
        if _types.is_input_type(typ):
            return _Shape("object", typ)
        if issubclass(typ, pulumi.Archive | pulumi.Asset):
            return _Shape("asset")
        if typ in (bool, int, float):
            return _Shape(typ.__name__)
    return _Shape("scalar")


@functools.cache
def _fields(input_type: type) -> dict[str, Any]:
    """Pulumi field name -> its annotated type (the SDK resolves the forward references)."""
    from pulumi import _types

    return _types.input_type_types(input_type)


def _top_level_field(pulumi_type: str, key: str) -> str | None:
    """The Terraform name of a resource's own field (None for a code archive)."""
    fields = _fields(_args_class(pulumi_type))
    shape = _shape(fields[key]) if key in fields else _Shape("scalar")
    return None if shape.kind == "asset" else _field_name(key, shape, "", pulumi_type)


def _scalar(value: Any, shape: _Shape) -> Any:
    # the engine's protobuf Struct carries every number as a double
    if shape.kind == "int" and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, float) and value.is_integer() and shape.kind != "float":
        return int(value)
    return value


def _value(value: Any, shape: _Shape, where: str, pulumi_type: str) -> Any:
    if value is None:
        return None
    if shape.kind == "object":
        if not isinstance(value, dict):
            return value
        return [_object(value, shape.item, where, pulumi_type)]  # a block of MaxItems 1: a list of one in Terraform
    if shape.kind == "list":
        if not isinstance(value, list):
            return value
        if shape.item.kind == "object":  # a repeated block: a list of objects
            return [_object(v, shape.item.item, where, pulumi_type) if isinstance(v, dict) else v for v in value]
        return [_value(v, shape.item, where, pulumi_type) for v in value]
    if shape.kind == "map":
        return value  # keys are data (tag keys, variable names)
    return _scalar(value, shape)


def _field_name(key: str, shape: _Shape, where: str, pulumi_type: str) -> str:
    if shape.kind != "list":
        return snake(key)
    if (pulumi_type, key) in LIST_FIELD_OVERRIDES:
        return LIST_FIELD_OVERRIDES[(pulumi_type, key)]
    if key in LIST_FIELDS:
        return LIST_FIELDS[key]
    raise UnmappedError(f"no Terraform name for the list field {where}.{key} of {pulumi_type}: add it to tools/scan.py LIST_FIELDS")


def _object(inputs: dict[str, Any], input_type: type, where: str, pulumi_type: str) -> dict[str, Any]:
    fields = _fields(input_type)
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if key not in fields:
            raise UnmappedError(f"{pulumi_type}: {where}.{key} is not a field of {input_type.__name__}")
        shape = _shape(fields[key])
        if shape.kind == "asset":
            continue  # code archives: nothing a Terraform plan shows either
        out[_field_name(key, shape, where, pulumi_type)] = _value(value, shape, f"{where}.{key}", pulumi_type)
    return out


def values(resource: Resource) -> dict[str, Any]:
    """The Terraform values of one resource, before references are put in."""
    return _object(resource.inputs, _args_class(resource.type), resource.name, resource.type)


def _address_names(resources: list[Resource]) -> dict[str, str]:
    """URN -> Terraform address; Pulumi names are unique per type in these plans, a clash gets a suffix."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for r in resources:
        kind = TF_TYPES[r.type]
        name = re.sub(r"[^A-Za-z0-9_-]", "_", r.name)
        name = name if re.match(r"[A-Za-z_]", name) else f"r_{name}"
        address, n = f"{kind}.{name}", 1
        while address in taken:
            n += 1
            address = f"{kind}.{name}_{n}"
        taken.add(address)
        out[r.urn] = address
    return out


def _identities(resources: list[Resource], region: str, stack: str) -> dict[str, dict[str, str]]:
    """URN -> {value: attribute} for the ids, ARNs and names the mock answered for each resource: the
    same computation as the plan run (harness.RecordingMocks), from the captured inputs."""
    import pulumi

    from . import harness

    mocks = harness.RecordingMocks(region, harness.Capture(stack))
    out: dict[str, dict[str, str]] = {}
    for r in resources:
        args = pulumi.runtime.MockResourceArgs(r.type, r.name, r.inputs, r.options.get("provider"), r.options.get("import") or None, True)
        rid, state = mocks.new_resource(args)
        ids = {rid: "id"}
        for key, value in state.items():
            if isinstance(value, str) and len(value) >= 3 and _IDENTITY_KEYS.match(key):
                ids.setdefault(value, snake(key))
        out[r.urn] = ids
    return out


def _substitute(value: Any, targets: list[tuple[str, dict[str, str]]]) -> tuple[Any, list[str]]:
    """Replace every string of ``value`` that is a target's id, ARN or name by the target's address."""
    if isinstance(value, str):
        for address, ids in targets:
            if value in ids:
                return f"{address}.{ids[value]}", [f"{address}.{ids[value]}", address]
        return value, []
    if isinstance(value, list):
        pairs = [_substitute(v, targets) for v in value]
        return [p[0] for p in pairs], [ref for p in pairs for ref in p[1]]
    if isinstance(value, dict):
        out, refs = {}, []
        for k, v in value.items():
            out[k], r = _substitute(v, targets)
            refs += r
        return out, refs
    return value, []


def region_of(stack: str, project_dir: Path = ROOT) -> str:
    from . import harness

    try:
        values_, _ = harness.engine_config(stack, project_dir)
    except Exception:  # a scratch stack: its resources still carry the mock's default region
        return "us-east-1"
    return values_.get("aws:region", "us-east-1")


def tf_plan(capture: Capture, region: str | None = None) -> dict[str, Any]:
    """The Terraform plan JSON (``terraform show -json`` of a plan that creates every resource) of a capture.
    Raises :class:`UnmappedError` for a type or field the converter cannot name."""
    region = region or region_of(capture.stack)
    resources = [r for r in capture.resources if r.custom and tf_type(r.type)]
    address = _address_names(resources)
    identities = _identities(resources, region, capture.stack)
    by_urn = {r.urn: r for r in resources}
    planned, changes, config = [], [], []
    for r in resources:
        kind, name = address[r.urn].split(".", 1)
        vals = values(r)
        expressions: dict[str, Any] = {}
        for key, urns in r.property_dependencies.items():
            targets = [(address[u], identities[u]) for u in urns if u in by_urn]
            field_ = _top_level_field(r.type, key)
            if not targets or field_ not in vals:
                continue
            # an id, ARN or name AWS computes becomes the address it comes from; a value merely built from
            # one (a policy document) stays, and the configuration still names what it references
            vals[field_], refs = _substitute(vals[field_], targets)
            expressions[field_] = {"references": list(dict.fromkeys([*refs, *(t[0] for t in targets)]))}
        common = {"address": address[r.urn], "mode": "managed", "type": kind, "name": name, "provider_name": TF_PROVIDER}
        planned.append({**common, "schema_version": 0, "values": vals, "sensitive_values": {}})
        changes.append({**common, "change": {"actions": ["create"], "before": None, "after": vals, "after_unknown": {}}})
        config.append({"address": address[r.urn], "mode": "managed", "type": kind, "name": name, "provider_config_key": "aws", "expressions": expressions})
    return {
        "format_version": "1.2",
        "terraform_version": "1.9.8",
        "planned_values": {"root_module": {"resources": planned}},
        "resource_changes": changes,
        "configuration": {
            "provider_config": {"aws": {"name": "aws", "full_name": TF_PROVIDER, "expressions": {"region": {"constant_value": region}}}},
            "root_module": {"resources": config},
        },
    }


def unmapped(capture: Capture) -> list[str]:
    """Every type and field of a capture the converter cannot name (empty: the whole plan is scanned)."""
    problems = []
    for r in capture.resources:
        if not r.custom:
            continue
        try:
            if tf_type(r.type):
                values(r)
        except UnmappedError as e:
            problems.append(str(e))
    return sorted(set(problems))


# ---------------------------------------------------------------- running checkov


def scanner_python() -> list[str]:
    """The interpreter that has checkov: ``$CHECKOV_PYTHON``, else ``.venv/scan``, else this one if it can import checkov."""
    if os.environ.get("CHECKOV_PYTHON"):
        return [os.environ["CHECKOV_PYTHON"]]
    venv = SCAN_VENV / "bin" / "python"
    if venv.exists():
        return [str(venv)]
    import importlib.util

    if importlib.util.find_spec("checkov"):
        return [sys.executable]
    raise RuntimeError(
        f"checkov is not installed: python3 -m venv {SCAN_VENV.relative_to(ROOT)} && "
        f"{SCAN_VENV.relative_to(ROOT)}/bin/pip install -r {SCAN_REQUIREMENTS.name}   (.ci/run does this)"
    )


def _worker(paths: list[str]) -> dict[str, Any]:
    """In checkov's interpreter: scan each plan file with checkov's plan runner; every result as JSON."""
    import logging

    logging.disable(logging.WARNING)  # checkov logs every unparsable value at warning level
    from checkov import version as checkov_version
    from checkov.runner_filter import RunnerFilter
    from checkov.terraform.plan_runner import Runner

    out: dict[str, Any] = {"checkov": checkov_version.version, "files": {}}
    for path in paths:
        report = Runner().run(root_folder=None, files=[path], runner_filter=RunnerFilter(framework=["terraform_plan"], download_external_modules=False))
        reports = report if isinstance(report, list) else [report]
        results: dict[str, list[dict[str, str]]] = {"failed": [], "passed": [], "skipped": []}
        for rep in reports:
            for kind, records in (("failed", rep.failed_checks), ("passed", rep.passed_checks), ("skipped", rep.skipped_checks)):
                results[kind] += [{"check": r.check_id, "name": r.check_name, "resource": r.resource, "guideline": r.guideline or ""} for r in records]
        out["files"][path] = {**results, "parsing_errors": sorted(report.parsing_errors) if not isinstance(report, list) else []}
    return out


def run_checkov(plans: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Scan several plans in one checkov process (its import takes seconds): label -> results."""
    with tempfile.TemporaryDirectory(prefix="scan-") as tmp:
        paths = {}
        for label, plan in plans.items():
            path = Path(tmp) / f"{re.sub(r'[^A-Za-z0-9_-]', '_', label)}.tfplan.json"
            path.write_text(json.dumps(plan))
            paths[label] = str(path)
        env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false", "LOG_LEVEL": "ERROR"}
        proc = subprocess.run(  # noqa: S603 - our own interpreter and file
            [*scanner_python(), "-P", str(Path(__file__).resolve()), "--worker", *paths.values()],  # -P: not tools/ first (tools/schema.py)
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"checkov failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        out = json.loads(proc.stdout)
    return {"checkov": out["checkov"], **{label: out["files"][path] for label, path in paths.items()}}


# ---------------------------------------------------------------- findings and the allowlist


@dataclass(frozen=True)
class Finding:
    check: str
    name: str
    address: str  # Terraform address
    resource: str  # "<pulumi type> <pulumi name>"
    guideline: str = ""

    def __str__(self) -> str:
        return f"{self.check}  {self.resource}  ({self.address})\n    {self.name}" + (f"\n    {self.guideline}" if self.guideline else "")


@dataclass(frozen=True)
class Allowed:
    check: str
    resource: str  # "<pulumi type> <name glob>"
    reason: str
    control: str
    stacks: tuple[str, ...] = ()

    def covers(self, finding: Finding, stack: str) -> bool:
        return (
            finding.check == self.check
            and fnmatch.fnmatchcase(finding.resource, self.resource)
            and (not self.stacks or stack in self.stacks or stack.split("-")[0] in self.stacks)
        )


def allowlist(path: Path = ALLOWLIST) -> list[Allowed]:
    import yaml

    entries = yaml.safe_load(path.read_text()) or []
    out = []
    for e in entries:
        missing = {"check", "resource", "reason", "control"} - set(e)
        if missing:
            raise ValueError(f"{path.name}: entry {e} lacks {sorted(missing)}")
        out.append(Allowed(e["check"], e["resource"], " ".join(e["reason"].split()), " ".join(e["control"].split()), tuple(e.get("stacks") or ())))
    return out


@dataclass
class Scan:
    stack: str
    findings: list[Finding]
    passed: list[Finding]
    plan: dict[str, Any] = field(repr=False)
    checkov: str = ""
    seconds: float = 0.0

    def not_allowed(self, allowed: list[Allowed]) -> list[Finding]:
        return [f for f in self.findings if not any(a.covers(f, self.stack) for a in allowed)]


def _findings(records: list[dict[str, str]], pulumi_of: dict[str, str]) -> list[Finding]:
    out = {Finding(r["check"], r["name"], r["resource"], pulumi_of.get(r["resource"], r["resource"]), r.get("guideline", "")) for r in records}
    return sorted(out, key=lambda f: (f.resource, f.check))


def scan(captures: dict[str, Capture], regions: dict[str, str] | None = None) -> dict[str, Scan]:
    """Convert and scan each capture (label -> capture) in one checkov run."""
    start = time.monotonic()
    plans, pulumi_of = {}, {}
    for label, cap in captures.items():
        plans[label] = tf_plan(cap, (regions or {}).get(label))
        resources = [r for r in cap.resources if r.custom and tf_type(r.type)]
        names = _address_names(resources)
        pulumi_of[label] = {names[r.urn]: f"{r.type} {r.name}" for r in resources}
    results = run_checkov(plans)
    seconds = time.monotonic() - start
    return {
        label: Scan(
            cap.stack,
            _findings(results[label]["failed"], pulumi_of[label]),
            _findings(results[label]["passed"], pulumi_of[label]),
            plans[label],
            results["checkov"],
            seconds,
        )
        for label, cap in captures.items()
    }


def report(result: Scan, allowed: list[Allowed]) -> str:
    outside = result.not_allowed(allowed)
    lines = [
        f"stack {result.stack}: checkov {result.checkov}, {len(result.plan['planned_values']['root_module']['resources'])} resources, "
        f"{len(result.passed)} checks passed, {len(result.findings)} failed, {len(result.findings) - len(outside)} of them allowlisted "
        f"({ALLOWLIST.relative_to(ROOT)})"
    ]
    if outside:
        lines.append(f"{len(outside)} findings outside the allowlist:")
        lines.extend(f"  {f}".replace("\n", "\n  ") for f in outside)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.scan", description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--stack", action="append", help="a stack (repeatable)")
    group.add_argument("--all", action="store_true", help=f"every shipped stack: {', '.join(STACKS)}")
    parser.add_argument("--json", metavar="FILE", help="write the Terraform plan JSON checkov read to FILE (FILE with .<stack> inserted for several)")
    parser.add_argument("--allowlisted", action="store_true", help="also print the allowlisted findings")
    args = parser.parse_args(argv)
    stacks = list(STACKS) if args.all else args.stack

    import pulumi

    from stacks.errors import ConfigError

    from .harness import run

    captures = {}
    for stack in stacks:
        try:
            captures[stack] = run(stack, ROOT)
        except (ConfigError, pulumi.RunError) as err:
            print(f"{stack}: error: {err}", file=sys.stderr)
            return 2
    try:
        results = scan(captures)
    except UnmappedError as e:
        print(f"not scanned: {e}", file=sys.stderr)
        return 2
    allowed = allowlist()
    failed = False
    for result in results.values():
        print(report(result, allowed))
        if args.allowlisted:
            for f in result.findings:
                if f not in result.not_allowed(allowed):
                    print(f"  allowlisted: {f.check}  {f.resource}")
        failed |= bool(result.not_allowed(allowed))
        if args.json:
            path = Path(args.json)
            path = path.with_name(f"{path.stem}.{result.stack}{path.suffix}") if len(results) > 1 else path
            path.write_text(json.dumps(result.plan, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        json.dump(_worker(sys.argv[2:]), sys.stdout)
        sys.exit(0)
    code = main()
    sys.stdout.flush()
    os._exit(code)  # as tools.plan: the mock runtime's event loop complains when collected at exit
