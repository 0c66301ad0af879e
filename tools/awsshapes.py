"""Captured inputs as the AWS API requests they become, checked against botocore's service models.

The engine receives Pulumi's camelCase inputs, named after the Terraform schema; the provider turns
them into API calls. :data:`REQUESTS` holds, per resource type, one explicit mapping from those inputs
to the API's parameter names and structure (the create call, plus the other calls a few inputs go to,
e.g. target group attributes). A captured input that its mapping does not name is a problem, so a new
input cannot go unchecked. :func:`check` then runs botocore's own ``ParamValidator`` (types, required
members, minimums) and walks the shape for what it leaves out: enums, maximums, patterns, and the
rules the API reference states but the model does not encode (:data:`DOCUMENTED`).

Two things the capture does not show as AWS would see them are restored first: the harness's mock
ARNs (``arn:aws:<service>:<region>:<account>:<type>/<id>`` for every type) are rewritten to each
type's real format (:func:`arn_rewriter`), and a redacted secret (``"[secret]"``) becomes a stand-in
with the length and alphabet of the ``random`` resource that generates it.
"""

from __future__ import annotations

import copy
import re
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import regex  # AWS patterns use \p{L} classes, which ``re`` lacks
from botocore.session import get_session
from botocore.validate import ParamValidator

from tools import harness

# ---------------------------------------------------------------- the capture as AWS would see it

# Resource types whose mock ARN is not AWS-shaped: real format and the input that names the resource.
REAL_ARN = {
    "aws:iam/role:Role": ("arn:aws:iam::{account}:role/{name}", "name"),
    "aws:cloudwatch/logGroup:LogGroup": ("arn:aws:logs:{region}:{account}:log-group:{name}", "name"),
    "aws:s3/bucket:Bucket": ("arn:aws:s3:::{name}", "bucket"),
    # Secrets Manager appends a hyphen and six random characters to the name
    "aws:secretsmanager/secret:Secret": ("arn:aws:secretsmanager:{region}:{account}:secret:{name}-AbCdEf", "name"),
    "aws:lambda/function:Function": ("arn:aws:lambda:{region}:{account}:function:{name}", "name"),
    "aws:sns/topic:Topic": ("arn:aws:sns:{region}:{account}:{name}", "name"),
}


def mock_arn(resource: harness.Resource, region: str = "us-east-1") -> str:
    """The ARN the harness's mocks give ``resource`` (``arn:aws:<service>:<region>:<account>:<type>/<id>``)."""
    service = resource.type.split(":")[1].split("/")[0]
    return f"arn:aws:{service}:{region}:{harness.ACCOUNT}:{resource.type.rsplit(':', 1)[-1].lower()}/{harness._fake_id(resource.type, resource.name)}"


def autoname(resource: harness.Resource) -> str:
    """The physical name the provider gives a resource with no ``name``: ``<logical name>-<7 hex>``."""
    return f"{resource.name}-{harness._fake_id(resource.type, resource.name)[-7:]}"


def arn_rewriter(cap: harness.Capture) -> Callable[[Any], Any]:
    """A function that replaces, anywhere in a value (JSON strings included), every mock ARN of a
    :data:`REAL_ARN` type by the ARN AWS would give that resource."""
    real: dict[str, tuple[str, harness.Resource]] = {}
    for r in cap.resources:
        if r.type in REAL_ARN:
            service = r.type.split(":")[1].split("/")[0]
            kind = r.type.rsplit(":", 1)[-1].lower()
            real[f"{service}:{kind}/{harness._fake_id(r.type, r.name)}"] = (REAL_ARN[r.type][0], r)
    if not real:
        return lambda value: value
    # arn:aws:<service>:<region>:<account>:<kind>/<id>, the id not followed by more of an id
    pattern = re.compile(
        r"arn:aws:(?P<key_service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):(?P<account>\d{12}):(?P<rest>"
        + "|".join(re.escape(k.split(":", 1)[1]) for k in sorted(real, key=len, reverse=True))
        + r")(?![\w.-])"
    )

    def one(m: re.Match) -> str:
        fmt, r = real[f"{m['key_service']}:{m['rest']}"]
        name = r.inputs.get(REAL_ARN[r.type][1]) or autoname(r)
        return fmt.format(region=r.inputs.get("region") or m["region"], account=m["account"], name=name)

    def rewrite(value: Any) -> Any:
        if isinstance(value, str):
            return pattern.sub(one, value)
        if isinstance(value, dict):
            return {k: rewrite(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rewrite(v) for v in value]
        return value

    return rewrite


def secret_stand_in(cap: harness.Capture, resource: harness.Resource, key: str) -> str:
    """A value shaped like the redacted ``key`` of ``resource``: same length and alphabet as the
    ``random:index/randomPassword`` it comes from. Raises when the origin is not such a generator."""
    sources = [cap.by_urn(u) for u in resource.property_dependencies.get(key, [])]
    generators = [s for s in sources if s.type == "random:index/randomPassword:RandomPassword"]
    if len(generators) != 1:
        raise ValueError(f"{resource.name}.{key} is secret and not from one RandomPassword: cannot check its value")
    g = generators[0].inputs
    alphabet = string.ascii_letters + string.digits + (g.get("overrideSpecial", "!@#$%&*()-_=+[]{}<>:?") if g.get("special", True) else "")
    length = int(g.get("length", 0))
    return (alphabet * (length // len(alphabet) + 1))[-length:] if length else ""


# ---------------------------------------------------------------- the mapping language


@dataclass(frozen=True)
class To:
    """The input becomes API member ``name``; ``convert`` is a :data:`Struct` (an object, or a list of
    them, mapped member by member), a function of the value, or nothing (the value as it is)."""

    name: str
    convert: Any = None
    then: Callable[[dict], Any] | None = None
    """Applied to each object ``convert`` (a Struct) gives, where the API regroups members."""


@dataclass(frozen=True)
class Flatten:
    """A nested block whose members land in the enclosing request (a target group's ``healthCheck``)."""

    struct: dict


@dataclass(frozen=True)
class Call:
    """The input goes to another API call of the same resource: ``build(value)`` gives its parameters
    (lists are appended, e.g. several attributes of one ``Modify...Attributes`` call); with ``struct``
    the value is mapped member by member first."""

    operation: str
    build: Callable[[Any], dict]
    struct: dict | None = None


Struct = dict  # pulumi key -> str (rename) | To | Flatten | Call


@dataclass(frozen=True)
class Request:
    service: str
    operation: str
    struct: Struct
    autoname: str | None = None
    """API member that takes the provider's generated name when the ``name`` input is absent."""
    secrets: tuple[str, ...] = ()
    """Inputs redacted in the capture whose stand-in comes from their generator (:func:`secret_stand_in`)."""
    identity: Callable[[dict, str], dict] = lambda params, arn: {}
    """Parameters that name the resource in the other calls, from the create request and its ARN."""
    envelope: str | None = None
    """API member the mapped request sits in (WAFv2 PutLoggingConfiguration's ``LoggingConfiguration``)."""
    finish: Callable[[dict], dict] | None = None
    """Regroups the mapped members where the API nests them (CreateBudget's ``Budget`` and ``BudgetLimit``)."""


@dataclass
class Converted:
    params: dict
    calls: dict[str, dict] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)


def _convert(value: Any, conv: Any, path: str, out: Converted, then: Callable[[dict], Any] | None = None) -> Any:
    if conv is None:
        return value
    if isinstance(conv, dict):
        then = then or (lambda d: d)
        if isinstance(value, list):
            return [then(_convert_struct(v, conv, f"{path}[{i}]", out)) for i, v in enumerate(value)]
        return then(_convert_struct(value, conv, path, out))
    return conv(value)


def _convert_struct(value: Any, struct: Struct, path: str, out: Converted) -> dict:
    result: dict = {}
    if not isinstance(value, dict):
        out.unmapped.append(f"{path} (an object was expected, not {value!r})")
        return result
    for key, item in value.items():
        rule = struct.get(key)
        where = f"{path}.{key}" if path else key
        if rule is None:
            out.unmapped.append(where)
        elif isinstance(rule, str):
            result[rule] = item
        elif isinstance(rule, To):
            result[rule.name] = _convert(item, rule.convert, where, out, rule.then)
        elif isinstance(rule, Flatten):
            result.update(_convert_struct(item, rule.struct, where, out))
        elif isinstance(rule, Call):
            call = out.calls.setdefault(rule.operation, {})
            built = rule.build(_convert_struct(item, rule.struct, where, out) if rule.struct is not None else item)
            for k, v in built.items():
                call[k] = [*call.get(k, []), *v] if isinstance(v, list) else v
        else:
            raise TypeError(f"{where}: unknown rule {rule!r}")
    return result


def requests(cap: harness.Capture, resource: harness.Resource, rewrite: Callable[[Any], Any], inputs: dict | None = None) -> Converted:
    """``resource``'s inputs (or ``inputs``, a changed copy) as its create request and other calls."""
    spec = REQUESTS[resource.type]
    inputs = copy.deepcopy(resource.inputs if inputs is None else inputs)
    for key in spec.secrets:
        if inputs.get(key) == harness.SECRET:
            inputs[key] = secret_stand_in(cap, resource, key)
    inputs = rewrite(inputs)
    out = Converted(params={})
    out.params = _convert_struct(inputs, spec.struct, "", out)
    if spec.autoname and "name" not in inputs:
        out.params[spec.autoname] = autoname(resource)
    if spec.envelope:
        out.params = {spec.envelope: out.params}
    if spec.finish:
        out.params = spec.finish(out.params)
    arn = rewrite(mock_arn(resource))
    for call in out.calls.values():
        call.update(spec.identity(out.params, arn))
    return out


# ---------------------------------------------------------------- checking a request


@cache
def operation_shape(service: str, operation: str):
    return get_session().get_service_model(service).operation_model(operation).input_shape


def _coerce(value: Any, shape) -> Any:
    """The engine carries every number as a double; the provider sends integers where the API wants them."""
    t = shape.type_name
    if t == "structure" and isinstance(value, dict):
        return {k: _coerce(v, shape.members[k]) if k in shape.members else v for k, v in value.items()}
    if t == "list" and isinstance(value, list):
        return [_coerce(v, shape.member) for v in value]
    if t == "map" and isinstance(value, dict):
        return {k: _coerce(v, shape.value) for k, v in value.items()}
    if t in ("integer", "long") and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _walk(value: Any, shape, path: str, operation: str) -> list[str]:
    """What botocore's validator leaves out: enums, maximums, patterns, documented rules."""
    problems = []
    m = shape.metadata
    t = shape.type_name
    rule = DOCUMENTED.get(operation + re.sub(r"\[\d+\]", "[]", path))
    if rule is not None:
        problem = rule(value)
        if problem:
            problems.append(f"{path}: {value!r}: {problem}")
    if t == "structure" and isinstance(value, dict):
        if shape.name in UNIONS and len(value) != 1:
            problems.append(f"{path}: {shape.name} takes exactly one of its members, got {sorted(value)}")
        for key, item in value.items():
            if key in shape.members:
                problems += _walk(item, shape.members[key], f"{path}.{key}", operation)
    elif t == "list" and isinstance(value, list):
        if "max" in m and len(value) > m["max"]:
            problems.append(f"{path}: {len(value)} items, at most {m['max']}")
        for i, item in enumerate(value):
            problems += _walk(item, shape.member, f"{path}[{i}]", operation)
    elif t == "map" and isinstance(value, dict):
        for key, item in value.items():
            problems += _walk(key, shape.key, f"{path}<key>", operation)
            problems += _walk(item, shape.value, f"{path}.{key}", operation)
    elif t == "string" and isinstance(value, str):
        if getattr(shape, "enum", None) and value not in shape.enum:
            problems.append(f"{path}: {value!r} not in {shape.enum}")
        if "max" in m and len(value) > m["max"]:
            problems.append(f"{path}: {len(value)} characters, at most {m['max']}")
        if "pattern" in m and not regex.fullmatch(m["pattern"], value):
            problems.append(f"{path}: {value!r} does not match {m['pattern']!r}")
    elif t in ("integer", "long", "double", "float") and isinstance(value, int | float) and not isinstance(value, bool):
        if "max" in m and value > m["max"]:
            problems.append(f"{path}: {value} above the maximum {m['max']}")
    return problems


def check(service: str, operation: str, params: dict) -> list[str]:
    """Every problem botocore and the shape walk find in one request."""
    shape = operation_shape(service, operation)
    params = _coerce(params, shape)
    report = ParamValidator().validate(params, shape)
    problems = [report.generate_report()] if report.has_errors() else []
    whole = WHOLE.get(operation)
    return problems + _walk(params, shape, "", operation) + (whole(params) if whole else [])


def problems(cap: harness.Capture, resource: harness.Resource, rewrite: Callable[[Any], Any], inputs: dict | None = None) -> list[str]:
    """All problems of one resource's requests: unmapped inputs, then each call's findings."""
    spec = REQUESTS[resource.type]
    try:
        out = requests(cap, resource, rewrite, inputs)
    except ValueError as e:
        return [str(e)]
    found = [f"input {u!r} has no mapping to {spec.operation}" for u in out.unmapped]
    found += [f"{spec.operation}: {p}" for p in check(spec.service, spec.operation, out.params)]
    for operation, params in out.calls.items():
        found += [f"{operation}: {p}" for p in check(spec.service, operation, params)]
    return found


# ---------------------------------------------------------------- rules the API reference states, the model does not


def one_of(*allowed: Any) -> Callable[[Any], str | None]:
    return lambda v: None if v in allowed else f"not one of {list(allowed)}"


def each_one_of(*allowed: Any) -> Callable[[Any], str | None]:
    return lambda vs: next((f"{v!r} not one of {list(allowed)}" for v in vs if v not in allowed), None) if isinstance(vs, list) else "not a list"


def matches(pattern: str, what: str) -> Callable[[Any], str | None]:
    return lambda v: None if regex.fullmatch(pattern, str(v)) else f"not {what} ({pattern})"


def between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if isinstance(v, int | float) and low <= v <= high else f"not within {low}-{high}"


def _alarm_period(v: Any) -> str | None:
    ok = isinstance(v, int | float) and (v in (10, 20, 30) or (v >= 60 and v % 60 == 0))
    return None if ok else "not 10, 20, 30 or a multiple of 60"


WINDOW = r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d"
WEEKLY_WINDOW = r"(mon|tue|wed|thu|fri|sat|sun):([01]\d|2[0-3]):[0-5]\d-(mon|tue|wed|thu|fri|sat|sun):([01]\d|2[0-3]):[0-5]\d"
# ELB "Security policies for your Application Load Balancer" (aws elbv2 describe-ssl-policies).
ALB_SSL_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-1-2021-06",
    "ELBSecurityPolicy-TLS13-1-0-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-2-Res-PQ-2025-09",
    "ELBSecurityPolicy-TLS13-1-3-PQ-2025-09",
    "ELBSecurityPolicy-2016-08",
    "ELBSecurityPolicy-TLS-1-2-2017-01",
    "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
    "ELBSecurityPolicy-FS-1-2-Res-2020-10",
    "ELBSecurityPolicy-FS-1-2-Res-2019-08",
)

# "<Operation><path in the request>" -> a check returning a problem or None. Each names where AWS says so.
DOCUMENTED: dict[str, Callable[[Any], str | None]] = {
    # RDS API reference, CreateDBInstance
    "CreateDBInstance.Engine": one_of("aurora-mysql", "aurora-postgresql", "db2-ae", "db2-se", "mariadb", "mysql", "oracle-ee", "oracle-ee-cdb",
                                      "oracle-se2", "oracle-se2-cdb", "postgres", "sqlserver-dev-ee", "sqlserver-ee", "sqlserver-se",
                                      "sqlserver-ex", "sqlserver-web"),
    "CreateDBInstance.StorageType": one_of("gp2", "gp3", "io1", "io2", "standard"),
    "CreateDBInstance.AllocatedStorage": between(20, 65536),  # gp2/gp3 for PostgreSQL
    "CreateDBInstance.MaxAllocatedStorage": between(21, 65536),
    "CreateDBInstance.BackupRetentionPeriod": between(0, 35),
    "CreateDBInstance.MonitoringInterval": one_of(0, 1, 5, 10, 15, 30, 60),
    "CreateDBInstance.PerformanceInsightsRetentionPeriod": one_of(7, 731, *(31 * n for n in range(1, 24))),
    "CreateDBInstance.EnableCloudwatchLogsExports": each_one_of("postgresql", "upgrade", "iam-db-auth-error"),
    "CreateDBInstance.PreferredBackupWindow": matches(WINDOW, "hh24:mi-hh24:mi"),
    "CreateDBInstance.PreferredMaintenanceWindow": matches(WEEKLY_WINDOW, "ddd:hh24:mi-ddd:hh24:mi"),
    "CreateDBInstance.DBInstanceIdentifier": matches(r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{0,62}(?<!-)", "1-63 letters, digits, single hyphens"),
    "CreateDBInstance.DBName": matches(r"[a-zA-Z][a-zA-Z0-9_]{0,62}", "a PostgreSQL database name"),
    "CreateDBInstance.MasterUsername": matches(r"[a-zA-Z][a-zA-Z0-9_]{0,62}", "a master user name"),
    "CreateDBInstance.MasterUserPassword": matches(r"(?:(?![/'\"@])[\x21-\x7e]){8,128}", "8-128 printable ASCII characters but / ' \" @"),
    "DeleteDBInstance.FinalDBSnapshotIdentifier": matches(r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{0,254}(?<!-)", "1-255 letters, digits, single hyphens"),
    # ElastiCache API reference, CreateReplicationGroup
    "CreateReplicationGroup.Engine": one_of("redis", "valkey"),
    "CreateReplicationGroup.NumCacheClusters": between(1, 6),
    "CreateReplicationGroup.SnapshotRetentionLimit": between(0, 35),
    "CreateReplicationGroup.SnapshotWindow": matches(WINDOW, "hh24:mi-hh24:mi"),
    "CreateReplicationGroup.PreferredMaintenanceWindow": matches(WEEKLY_WINDOW, "ddd:hh24:mi-ddd:hh24:mi"),
    "CreateReplicationGroup.ReplicationGroupId": matches(r"[a-zA-Z](?!.*--)[a-zA-Z0-9-]{0,39}(?<!-)", "1-40 letters, digits, single hyphens"),
    "CreateReplicationGroup.AuthToken": matches(r"(?:(?![@\"/])[\x21-\x7e]){16,128}", "16-128 printable characters but @ \" /"),
    # ELBv2 API reference
    "CreateTargetGroup.Name": matches(r"(?!internal-)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,30}[a-zA-Z0-9])?", "1-32 letters, digits, inner hyphens"),
    "CreateTargetGroup.Matcher.HttpCode": matches(r"([2-4]\d\d)((-|,)[2-4]\d\d)*", "HTTP codes 200-499"),
    "CreateListener.SslPolicy": one_of(*ALB_SSL_POLICIES),
    "CreateRule.Actions[].ForwardConfig.TargetGroups[].Weight": between(0, 999),
    "CreateRule.Actions[].ForwardConfig.TargetGroupStickinessConfig.DurationSeconds": between(1, 604_800),
    "CreateRule.Conditions[].Field": one_of("http-header", "http-request-method", "host-header", "path-pattern", "query-string", "source-ip"),
    # CloudWatch API reference, PutMetricAlarm
    "PutMetricAlarm.TreatMissingData": one_of("breaching", "notBreaching", "ignore", "missing"),
    "PutMetricAlarm.ExtendedStatistic": matches(r"p(\d{1,2}(\.\d{1,2})?|100)", "a percentile p0.0-p100"),
    "PutMetricAlarm.Period": _alarm_period,
    "PutMetricAlarm.Metrics[].MetricStat.Period": _alarm_period,
    "PutMetricAlarm.Metrics[].MetricStat.Stat": matches(r"SampleCount|Average|Sum|Minimum|Maximum|IQM|(p|tm|tc|ts|wm)(\d{1,2}(\.\d{1,2})?|100)"
                                                        r"|(PR|TM|TC|TS|WM)\(.+\)", "a CloudWatch statistic"),
    "PutMetricAlarm.Metrics[].Id": matches(r"[a-z][a-zA-Z0-9_]*", "a lowercase letter, then letters, digits, underscores"),
    # WAFv2 API reference, RateBasedStatement
    "CreateWebACL.Rules[].Statement.RateBasedStatement.EvaluationWindowSec": one_of(60, 120, 300, 600),
    # Lambda API reference, CreateFunction
    "CreateFunction.Timeout": between(1, 900),
    # WAF developer guide, "Logging web ACL traffic": a destination's name starts with aws-waf-logs-;
    # WAF API reference, LoggingConfiguration.RedactedFields: SingleHeader names in lower case
    "PutLoggingConfiguration.LoggingConfiguration.LogDestinationConfigs[]": matches(
        r"arn:aws[a-z-]*:(logs:[a-z0-9-]+:\d{12}:log-group:|s3:::|firehose:[a-z0-9-]+:\d{12}:deliverystream/)aws-waf-logs-[\w.#/-]+",
        "a log group, bucket or Firehose stream named aws-waf-logs-...",
    ),
    "PutLoggingConfiguration.LoggingConfiguration.RedactedFields[].SingleHeader.Name": matches(r"[a-z0-9!#$%&'*+.^_`|~-]+", "a header name in lower case"),
    # AWS Cost Management user guide, "Available budget filters" (Tag) and the Budgets API reference,
    # Budget.CostFilters: a cost allocation tag is <user|aws>:<key>$<value>; an SNS subscriber's address
    # is the topic's ARN (Subscriber.Address), an email subscriber's an address
    "CreateBudget.Budget.CostFilters.TagKeyValue[]": matches(r"(user|aws):[^$]+\$.*", "a cost allocation tag as user:<key>$<value>"),
    "CreateBudget.NotificationsWithSubscribers[].Subscribers[].Address": matches(
        r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[\w-]{1,256}|[^@\s]+@[^@\s]+\.[^@\s]+", "an SNS topic ARN or an email address"
    ),
}  # fmt: skip

# WAFv2 structures of which a request sets exactly one member (the API reference says so; the model does not mark them).
UNIONS = {"Statement", "FieldToMatch", "RuleAction", "OverrideAction", "DefaultAction"}


def _alarm_rules(p: dict) -> list[str]:
    """PutMetricAlarm: a metric or metric math, not both; math queries well formed."""
    found = []
    single = {"MetricName", "Namespace", "Statistic", "ExtendedStatistic", "Dimensions", "Period", "Unit"} & set(p)
    if "Metrics" not in p:
        if len({"Statistic", "ExtendedStatistic"} & set(p)) != 1:
            found.append("exactly one of Statistic and ExtendedStatistic")
        return found
    if single:
        found.append(f"Metrics excludes {sorted(single)}")
    queries = p["Metrics"]
    ids = [q.get("Id") for q in queries]
    if len(set(ids)) != len(ids):
        found.append(f"duplicate metric query ids {ids}")
    if sum(1 for q in queries if q.get("ReturnData", True)) != 1:
        found.append("exactly one metric query returns data")
    for q in queries:
        if ("MetricStat" in q) == ("Expression" in q):
            found.append(f"{q.get('Id')}: exactly one of MetricStat and Expression")
        # functions are upper case (IF, FILL, ...); what starts lower case names a query; quoted text does not count
        names = set(re.findall(r"\b[a-z][a-zA-Z0-9_]*\b", re.sub(r"'[^']*'|\"[^\"]*\"", "", q.get("Expression", ""))))
        if unknown := names - set(ids):
            found.append(f"{q.get('Id')}: expression names unknown queries {sorted(unknown)}")
    return found


def _web_acl_rules(p: dict) -> list[str]:
    found = []
    rules = p.get("Rules", [])
    for field_ in ("Name", "Priority"):
        values = [r.get(field_) for r in rules]
        if len(set(values)) != len(values):
            found.append(f"rule {field_}s repeat: {values}")
    for r in rules:
        group = {"ManagedRuleGroupStatement", "RuleGroupReferenceStatement"} & set(r.get("Statement", {}))
        if ("OverrideAction" in r) != bool(group) or ("Action" in r) == bool(group):
            found.append(f"{r.get('Name')}: a rule group takes OverrideAction, any other rule Action")
    return found


def _target_group_attributes(p: dict) -> list[str]:
    keys = [a["Key"] for a in p.get("Attributes", [])]
    return [f"attribute {k!r} is not a target group attribute" for k in keys if k not in TARGET_GROUP_ATTRIBUTES]


# Rules over a whole request, per operation.
WHOLE: dict[str, Callable[[dict], list[str]]] = {
    "PutMetricAlarm": _alarm_rules,
    "CreateWebACL": _web_acl_rules,
    "ModifyTargetGroupAttributes": _target_group_attributes,
}

TARGET_GROUP_ATTRIBUTES = {"deregistration_delay.timeout_seconds", "stickiness.enabled", "stickiness.type", "stickiness.lb_cookie.duration_seconds"}


# ---------------------------------------------------------------- the mappings, one per resource type


def tags(value: dict) -> list[dict]:
    return [{"Key": k, "Value": v} for k, v in value.items()]


def dimensions(value: dict) -> list[dict]:
    return [{"Name": k, "Value": v} for k, v in value.items()]


def _s(value: Any) -> str:
    """A target group or listener attribute value, as the provider writes it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


RDS_INSTANCE: Struct = {
    "identifier": "DBInstanceIdentifier",
    "instanceClass": "DBInstanceClass",
    "engine": "Engine",
    "engineVersion": "EngineVersion",
    "allocatedStorage": "AllocatedStorage",
    "maxAllocatedStorage": "MaxAllocatedStorage",
    "storageType": "StorageType",
    "storageEncrypted": "StorageEncrypted",
    "kmsKeyId": "KmsKeyId",
    "dbName": "DBName",
    "username": "MasterUsername",
    "password": "MasterUserPassword",
    "port": "Port",
    "vpcSecurityGroupIds": "VpcSecurityGroupIds",
    "dbSubnetGroupName": "DBSubnetGroupName",
    "parameterGroupName": "DBParameterGroupName",
    "multiAz": "MultiAZ",
    "publiclyAccessible": "PubliclyAccessible",
    "backupRetentionPeriod": "BackupRetentionPeriod",
    "backupWindow": "PreferredBackupWindow",
    "maintenanceWindow": "PreferredMaintenanceWindow",
    "autoMinorVersionUpgrade": "AutoMinorVersionUpgrade",
    "copyTagsToSnapshot": "CopyTagsToSnapshot",
    "deletionProtection": "DeletionProtection",
    "enabledCloudwatchLogsExports": "EnableCloudwatchLogsExports",
    "iamDatabaseAuthenticationEnabled": "EnableIAMDatabaseAuthentication",
    "monitoringInterval": "MonitoringInterval",
    "monitoringRoleArn": "MonitoringRoleArn",
    "performanceInsightsEnabled": "EnablePerformanceInsights",
    "performanceInsightsKmsKeyId": "PerformanceInsightsKMSKeyId",
    "performanceInsightsRetentionPeriod": "PerformanceInsightsRetentionPeriod",
    "tags": To("Tags", tags),
    # only read on an engine version change
    "allowMajorVersionUpgrade": Call("ModifyDBInstance", lambda v: {"AllowMajorVersionUpgrade": v}),
    "applyImmediately": Call("ModifyDBInstance", lambda v: {"ApplyImmediately": v}),
    # used when the instance is destroyed
    "skipFinalSnapshot": Call("DeleteDBInstance", lambda v: {"SkipFinalSnapshot": v}),
    "finalSnapshotIdentifier": Call("DeleteDBInstance", lambda v: {"FinalDBSnapshotIdentifier": v}),
    "deleteAutomatedBackups": Call("DeleteDBInstance", lambda v: {"DeleteAutomatedBackups": v}),
}

REPLICATION_GROUP: Struct = {
    "replicationGroupId": "ReplicationGroupId",
    "description": "ReplicationGroupDescription",
    "engine": "Engine",
    "engineVersion": "EngineVersion",
    "nodeType": "CacheNodeType",
    "numCacheClusters": "NumCacheClusters",
    "parameterGroupName": "CacheParameterGroupName",
    "subnetGroupName": "CacheSubnetGroupName",
    "securityGroupIds": "SecurityGroupIds",
    "port": "Port",
    "automaticFailoverEnabled": "AutomaticFailoverEnabled",
    "multiAzEnabled": "MultiAZEnabled",
    "transitEncryptionEnabled": "TransitEncryptionEnabled",
    "atRestEncryptionEnabled": "AtRestEncryptionEnabled",
    "kmsKeyId": "KmsKeyId",
    "authToken": "AuthToken",
    "autoMinorVersionUpgrade": "AutoMinorVersionUpgrade",
    "maintenanceWindow": "PreferredMaintenanceWindow",
    "snapshotWindow": "SnapshotWindow",
    "snapshotRetentionLimit": "SnapshotRetentionLimit",
    "tags": To("Tags", tags),
    # how a changed token or setting is applied
    "authTokenUpdateStrategy": Call("ModifyReplicationGroup", lambda v: {"AuthTokenUpdateStrategy": v}),
    "applyImmediately": Call("ModifyReplicationGroup", lambda v: {"ApplyImmediately": v}),
    # sent only when the group is deleted
    "finalSnapshotIdentifier": Call("DeleteReplicationGroup", lambda v: {"FinalSnapshotIdentifier": v}),
}

TARGET_GROUP: Struct = {
    "name": "Name",
    "port": "Port",
    "protocol": "Protocol",
    "protocolVersion": "ProtocolVersion",
    "vpcId": "VpcId",
    "targetType": "TargetType",
    "ipAddressType": "IpAddressType",
    "healthCheck": Flatten(
        {
            "enabled": "HealthCheckEnabled",
            "protocol": "HealthCheckProtocol",
            "port": "HealthCheckPort",
            "path": "HealthCheckPath",
            "interval": "HealthCheckIntervalSeconds",
            "timeout": "HealthCheckTimeoutSeconds",
            "healthyThreshold": "HealthyThresholdCount",
            "unhealthyThreshold": "UnhealthyThresholdCount",
            "matcher": To("Matcher", lambda v: {"HttpCode": v}),
        }
    ),
    "tags": To("Tags", tags),
    "deregistrationDelay": Call("ModifyTargetGroupAttributes", lambda v: {"Attributes": [{"Key": "deregistration_delay.timeout_seconds", "Value": _s(v)}]}),
    "stickiness": Call(
        "ModifyTargetGroupAttributes",
        lambda v: {"Attributes": [{"Key": k, "Value": _s(value)} for k, value in v.items()]},
        struct={"enabled": "stickiness.enabled", "type": "stickiness.type", "cookieDuration": "stickiness.lb_cookie.duration_seconds"},
    ),
}

ACTION: Struct = {
    "type": "Type",
    "order": "Order",
    "targetGroupArn": "TargetGroupArn",
    "fixedResponse": To("FixedResponseConfig", {"contentType": "ContentType", "messageBody": "MessageBody", "statusCode": "StatusCode"}),
    "redirect": To("RedirectConfig", {"protocol": "Protocol", "port": "Port", "host": "Host", "path": "Path", "query": "Query", "statusCode": "StatusCode"}),
    # Terraform's forward { target_group { arn weight } stickiness { enabled duration } } is the API's
    # ForwardConfig {TargetGroups [{TargetGroupArn Weight}] TargetGroupStickinessConfig {Enabled DurationSeconds}}
    "forward": To(
        "ForwardConfig",
        {
            "targetGroups": To("TargetGroups", {"arn": "TargetGroupArn", "weight": "Weight"}),
            "stickiness": To("TargetGroupStickinessConfig", {"enabled": "Enabled", "duration": "DurationSeconds"}),
        },
    ),
}

LISTENER: Struct = {
    "loadBalancerArn": "LoadBalancerArn",
    "port": "Port",
    "protocol": "Protocol",
    "sslPolicy": "SslPolicy",
    "certificateArn": To("Certificates", lambda v: [{"CertificateArn": v}]),
    "defaultActions": To("DefaultActions", ACTION),
    "tags": To("Tags", tags),
    "routingHttpResponseStrictTransportSecurityHeaderValue": Call(
        "ModifyListenerAttributes", lambda v: {"Attributes": [{"Key": "routing.http.response.strict_transport_security.header_value", "Value": v}]}
    ),
}


# Terraform's ``condition { host_header { values } }`` is the API's ``{Field: host-header, HostHeaderConfig: {Values}}``.
CONDITION_FIELDS = {"HostHeaderConfig": "host-header", "PathPatternConfig": "path-pattern"}
CONDITION: Struct = {"hostHeader": To("HostHeaderConfig", {"values": "Values"}), "pathPattern": To("PathPatternConfig", {"values": "Values"})}


def _with_field(condition: dict) -> dict:
    return {"Field": ",".join(CONDITION_FIELDS[k] for k in condition), **condition}


LISTENER_RULE: Struct = {
    "listenerArn": "ListenerArn",
    "priority": "Priority",
    "actions": To("Actions", ACTION),
    "conditions": To("Conditions", CONDITION, then=_with_field),
    "tags": To("Tags", tags),
}

METRIC_ALARM: Struct = {
    "name": "AlarmName",
    "alarmDescription": "AlarmDescription",
    "actionsEnabled": "ActionsEnabled",
    "alarmActions": "AlarmActions",
    "okActions": "OKActions",
    "insufficientDataActions": "InsufficientDataActions",
    "comparisonOperator": "ComparisonOperator",
    "evaluationPeriods": "EvaluationPeriods",
    "datapointsToAlarm": "DatapointsToAlarm",
    "threshold": "Threshold",
    "thresholdMetricId": "ThresholdMetricId",
    "treatMissingData": "TreatMissingData",
    "evaluateLowSampleCountPercentiles": "EvaluateLowSampleCountPercentile",
    "metricName": "MetricName",
    "namespace": "Namespace",
    "period": "Period",
    "statistic": "Statistic",
    "extendedStatistic": "ExtendedStatistic",
    "unit": "Unit",
    "dimensions": To("Dimensions", dimensions),
    "metricQueries": To(
        "Metrics",
        {
            "id": "Id",
            "expression": "Expression",
            "label": "Label",
            "returnData": "ReturnData",
            "period": "Period",
            "accountId": "AccountId",
            # Terraform's metric { metric_name namespace dimensions period stat unit } is the API's
            # MetricStat {Metric {MetricName Namespace Dimensions} Period Stat Unit}
            "metric": To(
                "MetricStat",
                {
                    "metricName": "MetricName",
                    "namespace": "Namespace",
                    "dimensions": To("Dimensions", dimensions),
                    "period": "Period",
                    "stat": "Stat",
                    "unit": "Unit",
                },
                then=lambda d: {
                    "Metric": {k: d[k] for k in ("MetricName", "Namespace", "Dimensions") if k in d},
                    **{k: d[k] for k in ("Period", "Stat", "Unit") if k in d},
                },
            ),
        },
    ),
    "tags": To("Tags", tags),
}

# WAFv2: Terraform's nested blocks (camelCase here) against the API's JSON. Statements nest, so the
# statement mapping refers to itself.
TEXT_TRANSFORMATION: Struct = {"priority": "Priority", "type": "Type"}
FIELD_TO_MATCH: Struct = {
    "singleHeader": To("SingleHeader", {"name": "Name"}),
    "uriPath": To("UriPath", {}),
    "queryString": To("QueryString", {}),
    "method": To("Method", {}),
    "singleQueryArgument": To("SingleQueryArgument", {"name": "Name"}),
}
RULE_ACTION: Struct = {
    "allow": To("Allow", {}),
    "block": To("Block", {}),
    "count": To("Count", {}),
    "captcha": To("Captcha", {}),
    "challenge": To("Challenge", {}),
}
STATEMENT: Struct = {}
STATEMENT.update(
    {
        "byteMatchStatement": To(
            "ByteMatchStatement",
            {
                "searchString": To("SearchString", lambda v: v.encode()),  # a blob in the API, text in Terraform
                "positionalConstraint": "PositionalConstraint",
                "fieldToMatch": To("FieldToMatch", FIELD_TO_MATCH),
                "textTransformations": To("TextTransformations", TEXT_TRANSFORMATION),
            },
        ),
        "rateBasedStatement": To(
            "RateBasedStatement",
            {
                "limit": "Limit",
                "aggregateKeyType": "AggregateKeyType",
                "evaluationWindowSec": "EvaluationWindowSec",
                "scopeDownStatement": To("ScopeDownStatement", STATEMENT),
            },
        ),
        "managedRuleGroupStatement": To(
            "ManagedRuleGroupStatement",
            {
                "name": "Name",
                "vendorName": "VendorName",
                "version": "Version",
                "scopeDownStatement": To("ScopeDownStatement", STATEMENT),
                # Terraform's rule_action_override { name action_to_use { count {} } }
                "ruleActionOverrides": To("RuleActionOverrides", {"name": "Name", "actionToUse": To("ActionToUse", RULE_ACTION)}),
            },
        ),
        "labelMatchStatement": To("LabelMatchStatement", {"scope": "Scope", "key": "Key"}),
        "andStatement": To("AndStatement", {"statements": To("Statements", STATEMENT)}),
        "orStatement": To("OrStatement", {"statements": To("Statements", STATEMENT)}),
        "notStatement": To("NotStatement", {"statement": To("Statement", STATEMENT)}),
    }
)
VISIBILITY: Struct = {"metricName": "MetricName", "sampledRequestsEnabled": "SampledRequestsEnabled", "cloudwatchMetricsEnabled": "CloudWatchMetricsEnabled"}
WEB_ACL: Struct = {
    "name": "Name",
    "description": "Description",
    "scope": "Scope",
    "defaultAction": To("DefaultAction", {"allow": To("Allow", {}), "block": To("Block", {})}),
    "visibilityConfig": To("VisibilityConfig", VISIBILITY),
    "rules": To(
        "Rules",
        {
            "name": "Name",
            "priority": "Priority",
            "statement": To("Statement", STATEMENT),
            "action": To("Action", RULE_ACTION),
            "ruleLabels": To("RuleLabels", {"name": "Name"}),
            "overrideAction": To("OverrideAction", {"none": To("None", {}), "count": To("Count", {})}),
            "visibilityConfig": To("VisibilityConfig", VISIBILITY),
        },
    ),
    "tags": To("Tags", tags),
}

LAMBDA_FUNCTION: Struct = {
    "name": "FunctionName",
    "role": "Role",
    "runtime": "Runtime",
    "handler": "Handler",
    "description": "Description",
    "memorySize": "MemorySize",
    "timeout": "Timeout",
    "architectures": "Architectures",
    "environment": To("Environment", {"variables": "Variables"}),
    "kmsKeyArn": "KMSKeyArn",
    "tracingConfig": To("TracingConfig", {"mode": "Mode"}),
    "loggingConfig": To(
        "LoggingConfig", {"logFormat": "LogFormat", "logGroup": "LogGroup", "applicationLogLevel": "ApplicationLogLevel", "systemLogLevel": "SystemLogLevel"}
    ),
    # the provider zips the asset archive into Code.ZipFile; its content is not a request setting
    "code": To("Code", lambda v: {"ZipFile": b"PK\x05\x06" + b"\0" * 18}),
    "tags": To("Tags", dict),
    "reservedConcurrentExecutions": Call("PutFunctionConcurrency", lambda v: {"ReservedConcurrentExecutions": v}),
}

# Terraform's redacted_fields { single_header { name } } is the API's FieldToMatch (one member each).
WAF_LOGGING: Struct = {
    "resourceArn": "ResourceArn",
    "logDestinationConfigs": "LogDestinationConfigs",
    "redactedFields": To("RedactedFields", {"singleHeader": To("SingleHeader", {"name": "Name"}), "uriPath": To("UriPath", {}), "method": To("Method", {}),
                                            "queryString": To("QueryString", {})}),
}  # fmt: skip
LOG_RESOURCE_POLICY: Struct = {"policyName": "policyName", "policyDocument": "policyDocument", "resourceArn": "resourceArn"}


def _budget_request(params: dict) -> dict:
    """CreateBudget nests the budget's members under ``Budget`` (the limit under ``BudgetLimit``); the
    account, the notifications and the tags sit beside it. (The provider sends each notification with
    its own CreateNotification after CreateBudget; the members and their shapes are the same as in
    CreateBudget's ``NotificationsWithSubscribers``, checked here.)"""
    beside = {k: params.pop(k) for k in ("AccountId", "NotificationsWithSubscribers", "ResourceTags") if k in params}
    limit = {k: params.pop(f"BudgetLimit.{k}") for k in ("Amount", "Unit") if f"BudgetLimit.{k}" in params}
    if limit:
        params["BudgetLimit"] = limit
    return {**beside, "Budget": params}


def _with_subscribers(notification: dict) -> dict:
    sns, email = notification.pop("sns", []), notification.pop("email", [])
    subscribers = [{"SubscriptionType": "SNS", "Address": a} for a in sns] + [{"SubscriptionType": "EMAIL", "Address": a} for a in email]
    return {"Notification": notification, "Subscribers": subscribers}


COST_TYPES = ("Credit", "Discount", "OtherSubscription", "Recurring", "Refund", "Subscription", "Support", "Tax", "Upfront")
BUDGET: Struct = {
    "accountId": "AccountId",
    "name": "BudgetName",
    "budgetType": "BudgetType",
    "timeUnit": "TimeUnit",
    "limitAmount": "BudgetLimit.Amount",
    "limitUnit": "BudgetLimit.Unit",
    # Terraform's cost_filter { name values } blocks are the API's map of filter name to values
    "costFilters": To("CostFilters", lambda filters: {f["name"]: f["values"] for f in filters}),
    "costTypes": To("CostTypes", {f"include{k}": f"Include{k}" for k in COST_TYPES} | {"useAmortized": "UseAmortized", "useBlended": "UseBlended"}),
    "notifications": To(
        "NotificationsWithSubscribers",
        {"notificationType": "NotificationType", "comparisonOperator": "ComparisonOperator", "threshold": "Threshold", "thresholdType": "ThresholdType",
         "subscriberSnsTopicArns": "sns", "subscriberEmailAddresses": "email"},
        then=_with_subscribers,
    ),
    "tags": To("ResourceTags", lambda tags: [{"Key": k, "Value": v} for k, v in tags.items()]),
}  # fmt: skip

REQUESTS: dict[str, Request] = {
    "aws:rds/instance:Instance": Request(
        "rds", "CreateDBInstance", RDS_INSTANCE, secrets=("password",), identity=lambda p, arn: {"DBInstanceIdentifier": p.get("DBInstanceIdentifier")}
    ),
    "aws:elasticache/replicationGroup:ReplicationGroup": Request(
        "elasticache",
        "CreateReplicationGroup",
        REPLICATION_GROUP,
        secrets=("authToken",),
        identity=lambda p, arn: {"ReplicationGroupId": p.get("ReplicationGroupId")},
    ),
    "aws:lb/targetGroup:TargetGroup": Request("elbv2", "CreateTargetGroup", TARGET_GROUP, autoname="Name", identity=lambda p, arn: {"TargetGroupArn": arn}),
    "aws:lb/listener:Listener": Request("elbv2", "CreateListener", LISTENER, identity=lambda p, arn: {"ListenerArn": arn}),
    "aws:lb/listenerRule:ListenerRule": Request("elbv2", "CreateRule", LISTENER_RULE),
    "aws:cloudwatch/metricAlarm:MetricAlarm": Request("cloudwatch", "PutMetricAlarm", METRIC_ALARM, autoname="AlarmName"),
    "aws:wafv2/webAcl:WebAcl": Request("wafv2", "CreateWebACL", WEB_ACL, autoname="Name"),
    "aws:lambda/function:Function": Request("lambda", "CreateFunction", LAMBDA_FUNCTION, identity=lambda p, arn: {"FunctionName": p.get("FunctionName")}),
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": Request(
        "wafv2", "PutLoggingConfiguration", WAF_LOGGING, envelope="LoggingConfiguration"
    ),
    "aws:cloudwatch/logResourcePolicy:LogResourcePolicy": Request("logs", "PutResourcePolicy", LOG_RESOURCE_POLICY),
    "aws:budgets/budget:Budget": Request("budgets", "CreateBudget", BUDGET, finish=_budget_request),
}


def checked_resources(cap: harness.Capture) -> Iterable[harness.Resource]:
    return (r for r in cap.resources if r.type in REQUESTS)
