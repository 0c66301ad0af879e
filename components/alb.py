"""The environment's one public entry: an Application Load Balancer, its certificate, WAF and logs.

Children: ``aws:ec2/securityGroup:SecurityGroup`` (the only group open to the internet: 443 and 80 with
a domain, else one HTTP port per web service; to ``edge.ingress_cidrs`` only when the preset or stack
file sets them), ``aws:lb/loadBalancer:LoadBalancer`` in the public
subnets, ``aws:lb/listener:Listener`` (HTTPS plus an HTTP redirect, or one HTTP listener per web service
without a domain), ``aws:acm/certificate:Certificate`` with its DNS validation records and
``aws:acm/certificateValidation:CertificateValidation`` (unless ``certificate_arn`` is given),
``aws:route53/record:Record`` (an alias per host), an encrypted private S3 bucket for access logs with
a lifecycle, and ``aws:wafv2/webAcl:WebAcl`` plus its association and its logging
(``aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration``) to an encrypted log group
``aws-waf-logs-platform-<env>`` with the log group's own resource policy for the delivery service.

Services own their target group and listener rule (see ``components/service.py``); this component
gives each one its listener (:meth:`listener_arn`), a stable rule priority (:meth:`priority`) and its
public URL (:meth:`url`). With ``ecs_traffic_shifting`` (a blue/green or canary deploy strategy) it also
holds the one ``aws:iam/role:Role`` ``<name>-ecs-infrastructure`` through which ECS moves traffic
between a service's two target groups, with AWS's managed ``AmazonECSInfrastructureRolePolicyForLoadBalancers``
attached (:data:`ECS_INFRASTRUCTURE_POLICY`; ECS developer guide, "Amazon ECS infrastructure IAM role
for load balancers").

Hardening: invalid header fields dropped, desync mitigation ``defensive``, TLS 1.3 policy, HSTS,
deletion protection per preset. WAF: a rate limit per client IP, a stricter one on paths a service
marks ``strict_paths`` (darwin's ``/admin``; the path is URL-decoded and lower-cased before it is
compared, so ``/Admin`` and ``/%61dmin`` count too), then the AWS managed common and known-bad-inputs
rules. WAF logs every request it inspects (FSBP WAF.11) with the ``authorization`` and ``cookie``
headers redacted, kept as long as the preset's ``logs.retention_days``.
On a service's ``webhooks`` paths (offerhub's Airtm and Trustless Work callbacks) the common rule set's
body-size (over 8 KB) and missing User-Agent rules only count: third-party senders post large bodies
and may send no User-Agent. Everywhere else those two rules block, as before.

Without a domain (a first dev stack) each web service gets its own HTTP listener port (8000-8999,
stable per service), and only those ports are open. That is plain HTTP: set a domain before real
traffic. The loader refuses it unless the preset (dev) or the stack file acknowledges it
(``overrides.edge.acknowledge_plain_http``); ``overrides.edge.ingress_cidrs`` keeps those ports to an
office or VPN.

Cost note: the ALB is about $16/month plus LCUs; WAF $5/month per web ACL, $1 per rule and $0.60 per
million requests; access logs are S3 storage only; WAF logs are CloudWatch vended logs (about $0.50 per
GB ingested, roughly 1-2 KB per request, less in bulk tiers) plus storage for the retention.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from stacks import edge
from stacks.presets import EdgePreset

from .iam import service_trust
from .storage import lock_down, tls_only

TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
HSTS = "max-age=31536000; includeSubDomains"
WORLD = "0.0.0.0/0"
# Rules of AWSManagedRulesCommonRuleSet that webhook senders trip, and the label each adds (AWS WAF
# developer guide, "Core rule set (CRS) managed rule group"): SizeRestrictions_BODY blocks bodies over
# 8 KB, NoUserAgent_HEADER requests without a User-Agent. Labels are case-sensitive.
WEBHOOK_EXEMPT = {
    "NoUserAgent_HEADER": "awswaf:managed:aws:core-rule-set:NoUserAgent_Header",
    "SizeRestrictions_BODY": "awswaf:managed:aws:core-rule-set:SizeRestrictions_Body",
}
WEBHOOK_LABEL = "platform:webhook"
# A strict path is compared after these, in this order (WAF applies a statement's text transformations
# from the lowest priority up, before it inspects the field; "Text transformation" in the WAF API
# reference): %XX escapes decoded first, so that the decoded letters are lower-cased too (/%41dmin).
STRICT_PATH_TRANSFORMATIONS = ("URL_DECODE", "LOWERCASE")
# Request headers WAF logs with their value replaced by REDACTED: credentials and sessions. WAF wants
# the header names in lower case (LoggingConfiguration.RedactedFields, SingleHeader).
REDACTED_HEADERS = ("authorization", "cookie")
# What ECS needs to shift traffic in a blue/green, canary or linear deploy: describe the listeners,
# rules and target groups, register and deregister targets, rewrite the production listener rule's
# weights. AWS maintains it as the service changes (v6 in February 2026), so it is attached rather than
# copied; the deploy roles may attach this policy and no other (docs/iam/github-deploy-*-permissions.json).
ECS_INFRASTRUCTURE_POLICY = "arn:aws:iam::aws:policy/AmazonECSInfrastructureRolePolicyForLoadBalancers"
ECS_PRINCIPAL = "ecs.amazonaws.com"


@dataclass(frozen=True, kw_only=True)
class AlbArgs:
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    """At least two AZs (ELB.13)."""
    account_id: pulumi.Input[str]
    hosts: Mapping[str, str]
    """Service key (``<system>-<service>``) -> host: a full name with a domain, else a label (unused)."""
    domain: str | None = None
    """Serve HTTPS for ``hosts`` under this domain. Default: none (HTTP listener ports)."""
    hosted_zone_id: str | None = None
    """Route 53 zone: DNS validation and an alias record per host. Default: none."""
    certificate_arn: str | None = None
    """An issued certificate for the hosts. Default: request and DNS-validate one in ``hosted_zone_id``."""
    outside_hosts: Mapping[str, tuple[str | None, str | None]] = field(default_factory=dict)
    """Service key -> (hosted zone id, certificate ARN) of a host outside ``domain`` (exactly one given): its
    own certificate on the HTTPS listener by SNI, and with a zone, the certificate's validation and an alias
    record in that zone. Default: none."""
    strict_paths: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Service key -> path prefixes with the strict WAF rate limit."""
    webhooks: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Service key -> paths third parties call back (exact). On them, on the service's host (the path alone
    without a domain), WAF's body-size and no-User-Agent rules count instead of block. Default: none."""
    idle_timeout_seconds: int = 60
    """Seconds an idle connection stays open; long for SSE and WebSocket. Default: 60 (the ALB's)."""
    env: str
    """Environment (preset) name: the WAF log group is ``aws-waf-logs-platform-<env>``."""
    kms_key_arn: pulumi.Input[str]
    """Environment key: encrypts the WAF log group (its policy lets CloudWatch Logs use it for log groups)."""
    log_retention_days: int
    """Days WAF logs are kept (preset ``logs.retention_days``)."""
    settings: EdgePreset = field(default_factory=EdgePreset)
    ecs_traffic_shifting: bool = False
    """Some service deploys blue/green or canary: create the ECS infrastructure role. Default: false."""


class Alb(pulumi.ComponentResource):
    """One internet-facing ALB for every web service of the environment."""

    security_group_id: pulumi.Output[str]
    """Services admit this group on their port."""
    arn_suffix: pulumi.Output[str]
    """For CloudWatch metrics (``LoadBalancer`` dimension)."""
    dns_name: pulumi.Output[str]

    def __init__(self, name: str, args: AlbArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("platform:edge:Alb", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self._args = args
        self.https = args.domain is not None
        keys = sorted(args.hosts)
        self._priorities = edge.stable_slots(keys, edge.PRIORITIES) if self.https else dict.fromkeys(keys, 1)
        self.http_ports = {} if self.https else edge.stable_slots(keys, edge.HTTP_PORTS)
        """Service key -> its HTTP listener port (no domain only)."""
        s = args.settings

        sg = aws.ec2.SecurityGroup(f"{name}-sg", vpc_id=args.vpc_id, description="load balancer: the only group open to the internet", opts=child)
        open_ports = {"https": 443, "http": 80} if self.https else {f"http-{k}": p for k, p in self.http_ports.items()}
        sources = edge.admitted(s)
        for role, port in open_ports.items():
            admit(f"{name}-{role}-in", sg.id, port, sources, role, child)

        logs, logs_policy = self._log_bucket(name, args)
        self.lb = aws.lb.LoadBalancer(
            f"{name}-lb",
            load_balancer_type="application",
            internal=False,
            subnets=args.public_subnet_ids,
            security_groups=[sg.id],
            idle_timeout=args.idle_timeout_seconds,
            drop_invalid_header_fields=True,
            desync_mitigation_mode="defensive",
            enable_deletion_protection=s.deletion_protection,
            access_logs=aws.lb.LoadBalancerAccessLogsArgs(bucket=logs.bucket, enabled=True, prefix="alb"),
            # ELB checks that it may write to the bucket when access logs are turned on
            opts=pulumi.ResourceOptions(parent=self, depends_on=[logs_policy]),
        )

        self._listeners: dict[str, aws.lb.Listener] = {}
        if self.https:
            certificate_arn = args.certificate_arn or self._certificate(name, args)
            https = aws.lb.Listener(
                f"{name}-https",
                load_balancer_arn=self.lb.arn,
                port=443,
                protocol="HTTPS",
                ssl_policy=TLS_POLICY,
                certificate_arn=certificate_arn,
                routing_http_response_strict_transport_security_header_value=HSTS,
                default_actions=[_not_found()],
                opts=child,
            )
            aws.lb.Listener(
                f"{name}-http",
                load_balancer_arn=self.lb.arn,
                port=80,
                protocol="HTTP",
                default_actions=[
                    aws.lb.ListenerDefaultActionArgs(
                        type="redirect", redirect=aws.lb.ListenerDefaultActionRedirectArgs(port="443", protocol="HTTPS", status_code="HTTP_301")
                    )
                ],
                opts=child,
            )
            self._listeners = dict.fromkeys(keys, https)
            if args.hosted_zone_id:
                # one more certificate per host parent, served by SNI (also beside a given default
                # certificate, which covers the domain and one label under it); adding a system changes no existing one
                for scope in edge.certificate_scopes(args.domain, [h for k, h in args.hosts.items() if k not in args.outside_hosts]):
                    aws.lb.ListenerCertificate(
                        f"{name}-{_scope_slug(scope, args.domain)}-sni",
                        listener_arn=https.arn,
                        certificate_arn=self._certificate(name, args, scope),
                        opts=child,
                    )
            for key, (zone_id, given) in sorted(args.outside_hosts.items()):
                # a host in another zone (aurum's api.aurumlabs.io): a certificate naming exactly it
                host = args.hosts[key]
                aws.lb.ListenerCertificate(
                    f"{name}-{key}-outside-sni",
                    listener_arn=https.arn,
                    certificate_arn=given or self._certificate(name, args, host, zone_id=zone_id, role=f"cert-{key}-outside"),
                    opts=child,
                )
                if zone_id:
                    self._alias(f"{name}-{key}-dns", zone_id, host)
            if args.hosted_zone_id:
                for key in [k for k in keys if k not in args.outside_hosts]:
                    aws.route53.Record(
                        f"{name}-{key}-dns",
                        zone_id=args.hosted_zone_id,
                        name=args.hosts[key],
                        type="A",
                        aliases=[aws.route53.RecordAliasArgs(name=self.lb.dns_name, zone_id=self.lb.zone_id, evaluate_target_health=True)],
                        opts=child,
                    )
        else:
            for key, port in self.http_ports.items():
                self._listeners[key] = aws.lb.Listener(
                    f"{name}-{key}-http", load_balancer_arn=self.lb.arn, port=port, protocol="HTTP", default_actions=[_not_found()], opts=child
                )

        self._waf(name, args)
        self.infrastructure_role_arn: pulumi.Output[str] | None = None
        """The role ECS assumes to shift traffic (``ecs_traffic_shifting`` only)."""
        self.infrastructure_ready: list[pulumi.Resource] = []
        """What a service that shifts traffic waits for: the role's policy attachment."""
        if args.ecs_traffic_shifting:
            self._ecs_infrastructure_role(name)
        self.security_group_id = sg.id
        self.arn_suffix = self.lb.arn_suffix
        self.dns_name = self.lb.dns_name
        self.register_outputs({"dns_name": self.dns_name, "security_group_id": self.security_group_id})

    # ------------------------------------------------------------ what services ask for

    def listener_arn(self, key: str) -> pulumi.Output[str]:
        return self._listeners[key].arn

    def priority(self, key: str) -> int:
        return self._priorities[key]

    def url(self, key: str) -> pulumi.Output[str]:
        if self.https:
            return pulumi.Output.from_input(f"https://{self._args.hosts[key]}")
        port = self.http_ports[key]
        return self.lb.dns_name.apply(lambda dns: f"http://{dns}:{port}")

    # ------------------------------------------------------------ children

    def _alias(self, resource_name: str, zone_id: str, host: str) -> None:
        aws.route53.Record(
            resource_name,
            zone_id=zone_id,
            name=host,
            type="A",
            aliases=[aws.route53.RecordAliasArgs(name=self.lb.dns_name, zone_id=self.lb.zone_id, evaluate_target_health=True)],
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _certificate(self, name: str, args: AlbArgs, scope: str | None = None, zone_id: str | None = None, role: str | None = None) -> pulumi.Output[str]:
        """A DNS-validated certificate: the domain and ``*.<domain>`` (``scope`` None), or one name or wildcard
        scope, validated in ``zone_id`` (default: the domain's zone)."""
        zone_id = zone_id or args.hosted_zone_id
        assert args.domain and zone_id  # enforced by the stack file loader
        child = pulumi.ResourceOptions(parent=self)
        names = [args.domain, f"*.{args.domain}"] if scope is None else [scope]
        role = role or ("cert" if scope is None else f"cert-{_scope_slug(scope, args.domain)}")
        cert = aws.acm.Certificate(f"{name}-{role}", domain_name=names[0], subject_alternative_names=names[1:] or None, validation_method="DNS", opts=child)
        # a wildcard and its parent share one validation record, so one record per certificate suffices
        option = cert.domain_validation_options.apply(lambda opts: opts[0])
        record = aws.route53.Record(
            f"{name}-{role}-validation-record",
            zone_id=zone_id,
            name=option.resource_record_name,
            type=option.resource_record_type,
            records=[option.resource_record_value],
            ttl=300,
            allow_overwrite=True,
            opts=child,
        )
        validation = aws.acm.CertificateValidation(
            f"{name}-{role}-validation",
            certificate_arn=cert.arn,
            validation_record_fqdns=[record.fqdn],
            opts=pulumi.ResourceOptions(parent=self, custom_timeouts=pulumi.CustomTimeouts(create="45m")),
        )
        return validation.certificate_arn

    def _ecs_infrastructure_role(self, name: str) -> None:
        """The role of the ECS developer guide, "Amazon ECS infrastructure IAM role for load balancers":
        trust ``ecs.amazonaws.com`` (the guide's trust policy, without conditions: it documents no
        ``aws:SourceAccount`` or ``aws:SourceArn`` for this role, and a key ECS does not send would make
        every deploy fail), the managed policy attached. The service names it in
        ``loadBalancers[].advancedConfiguration.roleArn``, so whoever runs ``pulumi up`` passes it to ECS
        (``iam:PassRole`` with ``iam:PassedToService`` ``ecs.amazonaws.com``)."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-ecs-infrastructure",
            description="ECS shifts traffic between a service's target groups during blue/green and canary deploys",
            assume_role_policy=service_trust(ECS_PRINCIPAL),
            opts=child,
        )
        attachment = aws.iam.RolePolicyAttachment(f"{name}-ecs-infrastructure-policy", role=role.name, policy_arn=ECS_INFRASTRUCTURE_POLICY, opts=child)
        self.infrastructure_role_arn = role.arn
        self.infrastructure_ready = [attachment]

    def _log_bucket(self, name: str, args: AlbArgs) -> tuple[aws.s3.Bucket, aws.s3.BucketPolicy]:
        child = pulumi.ResourceOptions(parent=self)
        s = args.settings
        bucket = aws.s3.Bucket(f"{name}-logs", force_destroy=not s.deletion_protection, opts=child)
        lock_down(f"{name}-logs", bucket, child, ownership="BucketOwnerEnforced")
        aws.s3.BucketLifecycleConfiguration(
            f"{name}-logs-lifecycle",
            bucket=bucket.id,
            rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-access-logs",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(prefix=""),
                    expiration=aws.s3.BucketLifecycleConfigurationRuleExpirationArgs(days=s.access_log_days),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(days_after_initiation=1),
                )
            ],
            opts=child,
        )
        elb_account = aws.elb.get_service_account_output()
        policy = pulumi.Output.all(bucket.arn, args.account_id, elb_account.arn).apply(lambda v: json.dumps(_log_bucket_policy(*v)))
        bucket_policy = aws.s3.BucketPolicy(f"{name}-logs-policy", bucket=bucket.id, policy=policy, opts=child)
        return bucket, bucket_policy

    def _waf(self, name: str, args: AlbArgs) -> None:
        s = args.settings
        rules = []
        priority = 1
        for key in sorted(args.strict_paths):
            for path in args.strict_paths[key]:
                host = args.hosts[key] if self.https else None
                rules.append(_rate_rule(f"strict-{key}-{_slug(path)}", priority, s.strict_rate_limit, path, host, STRICT_PATH_TRANSFORMATIONS))
                priority += 1
        rules.append(_rate_rule("rate-per-ip", 50, s.rate_limit))
        hooks = [(args.hosts[key] if self.https else None, path) for key in sorted(args.webhooks) for path in args.webhooks[key]]
        if hooks:
            # "Count, then block with a label match" (AWS WAF developer guide: rule action overrides in a
            # managed rule group; "Label match examples"): the two rules count and label every request, and
            # the rule after the group blocks those labels unless an earlier rule labelled the request a
            # webhook. Two rules rather than one "not a webhook" clause: and/not/or/and would nest four deep,
            # one more than the provider accepts in a web ACL rule (terraform-provider-aws,
            # webACLRootStatementSchemaLevel = 3).
            rules.append(_webhook_rule(55, hooks))
            rules.append(_managed_rule("AWSManagedRulesCommonRuleSet", 60, count=sorted(WEBHOOK_EXEMPT)))
            rules.append(_reblock_rule(65, sorted(WEBHOOK_EXEMPT.values())))
        else:
            rules.append(_managed_rule("AWSManagedRulesCommonRuleSet", 60))
        rules.append(_managed_rule("AWSManagedRulesKnownBadInputsRuleSet", 70))
        acl = aws.wafv2.WebAcl(
            f"{name}-waf",
            scope="REGIONAL",
            description="rate limits and AWS managed rules in front of every web service",
            default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
            rules=rules,
            visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(cloudwatch_metrics_enabled=True, metric_name=f"{name}-waf", sampled_requests_enabled=True),
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.wafv2.WebAclAssociation(f"{name}-waf-association", resource_arn=self.lb.arn, web_acl_arn=acl.arn, opts=pulumi.ResourceOptions(parent=self))
        self._waf_logging(name, args, acl)

    def _waf_logging(self, name: str, args: AlbArgs, acl: aws.wafv2.WebAcl) -> None:
        """FSBP WAF.11: every request WAF inspects, to a log group named ``aws-waf-logs-...`` (WAF accepts no
        other name), encrypted with the environment key, credentials and sessions redacted.

        The delivery permission is the log group's own resource policy, written here, rather than the one
        WAF writes when the caller may ``logs:PutResourcePolicy``: CloudWatch Logs adds a policy only where
        none grants the delivery service yet ("Logs sent to CloudWatch Logs", CloudWatch Logs user guide),
        so WAF finds ours and adds nothing, and a second ``pulumi up`` has nothing to reconcile; the
        policy goes with the stack; and a policy scoped to one log group (``resource_arn``) does not count
        against the ten account-level resource policies a region allows, nor grow the shared
        ``AWSWAF-LOGS`` policy that breaks at 5,120 characters (pulumi-aws ``WebAclLoggingConfiguration``).
        """
        child = pulumi.ResourceOptions(parent=self)
        group = aws.cloudwatch.LogGroup(
            f"{name}-waf-logs",
            name=f"aws-waf-logs-platform-{args.env}" + ("" if name == "alb" else f"-{name}"),  # one group per load balancer
            retention_in_days=args.log_retention_days,
            kms_key_id=args.kms_key_arn,
            opts=child,
        )
        policy = aws.cloudwatch.LogResourcePolicy(
            f"{name}-waf-logs-delivery",
            resource_arn=group.arn,
            policy_document=group.arn.apply(lambda arn: json.dumps(_log_delivery_policy(arn))),
            opts=child,
        )
        aws.wafv2.WebAclLoggingConfiguration(
            f"{name}-waf-logging",
            resource_arn=acl.arn,
            log_destination_configs=[group.arn],
            redacted_fields=[
                aws.wafv2.WebAclLoggingConfigurationRedactedFieldArgs(single_header=aws.wafv2.WebAclLoggingConfigurationRedactedFieldSingleHeaderArgs(name=h))
                for h in REDACTED_HEADERS
            ],
            # WAF checks, when logging is turned on, that it may deliver to the group
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )


def _not_found() -> aws.lb.ListenerDefaultActionArgs:
    return aws.lb.ListenerDefaultActionArgs(
        type="fixed-response",
        fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(content_type="text/plain", message_body="not found", status_code="404"),
    )


def admit(name: str, security_group_id: pulumi.Input[str], port: int, sources: Sequence[str], what: str, opts: pulumi.ResourceOptions) -> None:
    """Ingress on the load balancer's security group: ``port`` from each admitted source
    (``edge.admitted``), a rule each. The internet keeps ``name``; each range gets ``name-<range>``."""
    for cidr in sources:
        aws.vpc.SecurityGroupIngressRule(
            name + ("" if cidr == WORLD else "-" + _slug(cidr)),
            security_group_id=security_group_id,
            cidr_ipv4=cidr,
            ip_protocol="tcp",
            from_port=port,
            to_port=port,
            description=f"{what} from the internet" if cidr == WORLD else f"{what} from {cidr} (edge.ingress_cidrs)",
            opts=opts,
        )


def _slug(path: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in path.strip("/")) or "root"


def _scope_slug(scope: str, domain: str) -> str:
    """``*.twinkle.example.com`` under ``example.com`` -> ``twinkle``: names the scope's resources."""
    return _slug(scope.removeprefix("*.").removesuffix("." + domain))


def _visibility(metric: str) -> aws.wafv2.WebAclRuleVisibilityConfigArgs:
    return aws.wafv2.WebAclRuleVisibilityConfigArgs(cloudwatch_metrics_enabled=True, metric_name=metric, sampled_requests_enabled=True)


def _byte_match(field_to_match: dict, value: str, constraint: str, transformations: Sequence[str] = ()) -> dict:
    """``value`` in the field after ``transformations`` (by default: a header lower-cased, a path as sent)."""
    types = transformations or ("LOWERCASE" if "single_header" in field_to_match else "NONE",)
    return {
        "byte_match_statement": {
            "field_to_match": field_to_match,
            "positional_constraint": constraint,
            "search_string": value,
            "text_transformations": [{"priority": i, "type": t} for i, t in enumerate(types)],
        }
    }


def _rate_rule(
    rule_name: str, priority: int, limit: int, path: str | None = None, host: str | None = None, path_transformations: Sequence[str] = ()
) -> aws.wafv2.WebAclRuleArgs:
    statement: dict = {"limit": limit, "aggregate_key_type": "IP", "evaluation_window_sec": 300}
    if path:
        # a lower-cased field only ever equals a lower-case search string
        value = path.lower() if "LOWERCASE" in path_transformations else path
        by_path = _byte_match({"uri_path": {}}, value, "STARTS_WITH", path_transformations)
        if host:
            by_host = _byte_match({"single_header": {"name": "host"}}, host, "EXACTLY")
            statement["scope_down_statement"] = {"and_statement": {"statements": [by_host, by_path]}}
        else:
            statement["scope_down_statement"] = by_path
    return aws.wafv2.WebAclRuleArgs(
        name=rule_name,
        priority=priority,
        action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs()),
        statement={"rate_based_statement": statement},
        visibility_config=_visibility(rule_name),
    )


def _managed_rule(group: str, priority: int, count: Sequence[str] = ()) -> aws.wafv2.WebAclRuleArgs:
    """An AWS managed rule group; the rules named in ``count`` only count (and still add their labels)."""
    statement: dict = {"vendor_name": "AWS", "name": group}
    if count:
        statement["rule_action_overrides"] = [{"name": rule, "action_to_use": {"count": {}}} for rule in count]
    return aws.wafv2.WebAclRuleArgs(
        name=group,
        priority=priority,
        override_action=aws.wafv2.WebAclRuleOverrideActionArgs(none=aws.wafv2.WebAclRuleOverrideActionNoneArgs()),
        statement={"managed_rule_group_statement": statement},
        visibility_config=_visibility(group),
    )


def _webhook_rule(priority: int, hooks: Sequence[tuple[str | None, str]]) -> aws.wafv2.WebAclRuleArgs:
    """Count and label (``platform:webhook``) requests to a webhook: exactly its path, on its host if any."""
    matches = []
    for host, path in hooks:
        by_path = _byte_match({"uri_path": {}}, path, "EXACTLY")
        by_host = _byte_match({"single_header": {"name": "host"}}, host.lower(), "EXACTLY") if host else None
        matches.append({"and_statement": {"statements": [by_host, by_path]}} if by_host else by_path)
    return aws.wafv2.WebAclRuleArgs(
        name="webhooks",
        priority=priority,
        action=aws.wafv2.WebAclRuleActionArgs(count=aws.wafv2.WebAclRuleActionCountArgs()),
        rule_labels=[aws.wafv2.WebAclRuleRuleLabelArgs(name=WEBHOOK_LABEL)],
        statement=matches[0] if len(matches) == 1 else {"or_statement": {"statements": matches}},
        visibility_config=_visibility("webhooks"),
    )


def _reblock_rule(priority: int, labels: Sequence[str]) -> aws.wafv2.WebAclRuleArgs:
    """Block what the counted managed rules labelled, unless the request is a webhook."""
    flagged = [{"label_match_statement": {"scope": "LABEL", "key": label}} for label in labels]
    # a label added by a rule of this web ACL is matched by its bare name ("Label match examples", local label)
    not_webhook = {"not_statement": {"statement": {"label_match_statement": {"scope": "LABEL", "key": WEBHOOK_LABEL}}}}
    return aws.wafv2.WebAclRuleArgs(
        name="common-rules-outside-webhooks",
        priority=priority,
        action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs()),
        statement={"and_statement": {"statements": [flagged[0] if len(flagged) == 1 else {"or_statement": {"statements": flagged}}, not_webhook]}},
        visibility_config=_visibility("common-rules-outside-webhooks"),
    )


def _log_delivery_policy(group_arn: str) -> dict:
    """The statement CloudWatch Logs itself writes for vended logs ("Logs sent to CloudWatch Logs", CloudWatch
    Logs user guide), for this one group: the log delivery service of this account and region writes streams."""
    partition, region, account = group_arn.split(":")[1], group_arn.split(":")[3], group_arn.split(":")[4]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AWSLogDeliveryWrite20150319",
                "Effect": "Allow",
                "Principal": {"Service": ["delivery.logs.amazonaws.com"]},
                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                "Resource": [f"{group_arn}:log-stream:*"],
                "Condition": {
                    "StringEquals": {"aws:SourceAccount": [account]},
                    "ArnLike": {"aws:SourceArn": [f"arn:{partition}:logs:{region}:{account}:*"]},
                },
            }
        ],
    }


def _log_bucket_policy(bucket_arn: str, account: str, elb_account_arn: str) -> dict:
    """ELB writes access logs under ``alb/AWSLogs/<account>/``; nothing else, and only over TLS."""
    objects = f"{bucket_arn}/alb/AWSLogs/{account}/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ElbAccountWritesLogs", "Effect": "Allow", "Principal": {"AWS": elb_account_arn}, "Action": "s3:PutObject", "Resource": objects},
            {
                "Sid": "ElbServiceWritesLogs",
                "Effect": "Allow",
                "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                "Action": "s3:PutObject",
                "Resource": objects,
            },
            tls_only(bucket_arn),
        ],
    }
