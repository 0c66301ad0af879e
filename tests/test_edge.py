"""The load balancer by control id, the only door to the internet, WAF, certificates and stable rules."""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from urllib.parse import unquote

import pytest

from stacks import edge
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, plan
from tools import awsshapes
from tools import plan as plan_cli

LB = "aws:lb/loadBalancer:LoadBalancer"
LISTENER = "aws:lb/listener:Listener"
RULE = "aws:lb/listenerRule:ListenerRule"
INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
SG = "aws:ec2/securityGroup:SecurityGroup"
WEB = ["twinkle-api", "twinkle-facilitator", "offerhub-api", "starkdca-api", "aurum-api", "darwin-app"]


def listeners(cap):
    return {r.inputs["port"]: r.inputs for r in cap.of_type(LISTENER)}


def test_elb_1_http_redirects_to_https(prod):
    ls = listeners(prod)
    assert set(ls) == {80, 443}
    redirect = ls[80]["defaultActions"][0]
    assert redirect["type"] == "redirect" and redirect["redirect"] == {"port": "443", "protocol": "HTTPS", "statusCode": "HTTP_301"}
    assert ls[443]["protocol"] == "HTTPS" and ls[443]["sslPolicy"].startswith("ELBSecurityPolicy-TLS13-")


def test_elb_4_5_12_headers_logs_desync(plans):
    for cap in plans.values():
        lb = cap.one(LB).inputs
        assert lb["dropInvalidHeaderFields"] is True
        assert lb["accessLogs"]["enabled"] is True and lb["accessLogs"]["bucket"]
        assert lb["desyncMitigationMode"] in ("defensive", "strictest")
        assert cap.one("aws:s3/bucketPolicy:BucketPolicy", "alb-logs-policy").urn in cap.one(LB).dependencies  # ELB checks it can write


def test_elb_6_deletion_protection_in_prod(plans):
    assert plans["prod"].one(LB).inputs["enableDeletionProtection"] is True
    assert plans["dev"].one(LB).inputs["enableDeletionProtection"] is False


def test_elb_13_alb_spans_every_public_subnet(prod):
    lb = prod.one(LB)
    public = [r for r in prod.of_type("aws:ec2/subnet:Subnet") if r.name.startswith("network-public-")]
    assert len(lb.inputs["subnets"]) == len(public) == 3
    assert len({s.inputs["availabilityZone"] for s in public}) == 3


@pytest.mark.parametrize("stack", ["staging", "prod"])
def test_ec2_18_19_only_the_alb_is_open_to_the_world_and_only_on_80_443(plans, stack):
    cap = plans[stack]
    alb_sg = cap.one(SG, "alb-sg").urn
    open_rules = [r for r in cap.of_type(INGRESS) if r.inputs.get("cidrIpv4") == "0.0.0.0/0" or r.inputs.get("cidrIpv6") == "::/0"]
    assert {(r.inputs["fromPort"], r.inputs["toPort"]) for r in open_rules} == {(80, 80), (443, 443)}
    assert all(alb_sg in r.property_dependencies["securityGroupId"] for r in open_rules)
    # no inline rule anywhere opens a group either
    for sg in cap.of_type(SG):
        assert all("0.0.0.0/0" not in json.dumps(rule) for rule in sg.inputs.get("ingress", [])), sg.name


def test_without_a_domain_each_web_service_has_its_own_http_port(plans):
    dev = plans["dev"]
    ls = listeners(dev)
    assert len(ls) == len(WEB) and all(8000 <= port < 9000 and ls[port]["protocol"] == "HTTP" for port in ls)
    open_ports = sorted(r.inputs["fromPort"] for r in dev.of_type(INGRESS) if r.inputs.get("cidrIpv4") == "0.0.0.0/0")
    assert open_ports == sorted(ls)  # exactly the listener ports, nothing else
    assert set(dev.outputs["urls"]) == set(WEB)
    assert all(u.startswith("http://") and ":8" in u for u in dev.outputs["urls"].values())


def test_services_admit_only_the_alb_on_their_port(prod):
    rules = {r.name: r for r in prod.of_type(INGRESS) if r.name.endswith("-from-alb")}
    assert sorted(n.removesuffix("-from-alb") for n in rules) == sorted(WEB)
    alb_sg = prod.one(SG, "alb-sg").urn
    for rule in rules.values():
        assert alb_sg in rule.property_dependencies["referencedSecurityGroupId"]


def test_host_rules_per_web_service_with_stable_priorities(prod):
    rules = {r.name.removesuffix("-rule"): r.inputs for r in prod.of_type(RULE)}
    assert set(rules) == set(WEB)
    expected = edge.stable_slots(WEB, edge.PRIORITIES)
    for name, rule in rules.items():
        assert rule["priority"] == expected[name]
        assert rule["conditions"][0]["hostHeader"]["values"] == [prod.outputs["urls"][name].removeprefix("https://")]
    assert prod.outputs["urls"]["twinkle-api"] == "https://api.twinkle.example.com"


def test_priorities_and_ports_do_not_move_when_services_come_and_go():
    base = edge.stable_slots(WEB, edge.PRIORITIES)
    grown = edge.stable_slots([*WEB, "newsys-api", "newsys-admin"], edge.PRIORITIES)
    shrunk = edge.stable_slots(WEB[1:], edge.PRIORITIES)
    assert all(grown[k] == v for k, v in base.items())
    assert all(shrunk[k] == base[k] for k in WEB[1:])
    assert len(set(edge.stable_slots([f"s{i}" for i in range(500)], edge.HTTP_PORTS).values())) == 500  # collisions probe


def test_certificates_cover_every_host_and_are_dns_validated(prod):
    # GIVEN prod's hosts under example.com: the listener's own certificate covers the domain, and each
    # host parent (one per system) has its own wildcard certificate, served by SNI
    certs = {r.inputs["domainName"]: r for r in prod.of_type("aws:acm/certificate:Certificate")}
    assert certs["example.com"].inputs["subjectAlternativeNames"] == ["*.example.com"]
    assert sorted(n for n in certs if n != "example.com") == [f"*.{s}.example.com" for s in ("aurum", "darwin", "offerhub", "starkdca", "twinkle")]
    assert all(c.inputs["validationMethod"] == "DNS" for c in certs.values())
    https = next(r for r in prod.of_type(LISTENER) if r.inputs["port"] == 443)
    default_validation = prod.one("aws:acm/certificateValidation:CertificateValidation", "alb-cert-validation")
    assert default_validation.urn in https.dependencies  # HTTPS serves only a validated certificate
    sni = prod.of_type("aws:lb/listenerCertificate:ListenerCertificate")
    assert len(sni) == 5 and all(https.urn in c.property_dependencies["listenerArn"] for c in sni)
    aliases = [r for r in prod.of_type("aws:route53/record:Record") if r.inputs["type"] == "A"]
    assert sorted(r.inputs["name"] for r in aliases) == sorted(u.removeprefix("https://") for u in prod.outputs["urls"].values())


def test_a_new_system_changes_no_existing_certificate(project):
    # GIVEN prod without aurum, WHEN aurum is added, THEN the existing certificates are untouched
    without = plan("test", project("prod", lambda c: c["platform:systems"].pop("aurum")))
    with_aurum = plan("test", project("prod"))
    before = {r.urn: r.inputs for r in without.resources if r.type.startswith("aws:acm/")}
    after = {r.urn: r.inputs for r in with_aurum.resources if r.type.startswith("aws:acm/")}
    assert all(after[urn] == inputs for urn, inputs in before.items())
    assert len(after) - len(before) == 2  # aurum's certificate and its validation


ISSUED = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-1111-2222-3333-444455556666"


def flat_hosts(c):
    """Every web service one label under the domain: what a wildcard certificate of the domain covers."""
    for name, hosts in {"twinkle": ("api", "facilitator"), "offerhub": ("api",), "starkdca": ("api",), "aurum": ("api",), "darwin": ("app",)}.items():
        c["platform:systems"][name]["hostnames"] = {h: f"{name}-{h}" for h in hosts}


def test_an_issued_certificate_is_used_as_given(project):
    def use_cert(c):
        del c["platform:hosted_zone_id"]
        c["platform:certificate_arn"] = ISSUED
        flat_hosts(c)

    cap = plan("test", project("prod", use_cert))
    assert cap.of_type("aws:acm/certificate:Certificate") == [] and cap.of_type("aws:route53/record:Record") == []
    assert cap.of_type("aws:lb/listenerCertificate:ListenerCertificate") == []
    assert next(r for r in cap.of_type(LISTENER) if r.inputs["port"] == 443).inputs["certificateArn"] == ISSUED
    assert cap.outputs["urls"]["twinkle-api"] == "https://twinkle-api.example.com"


def test_an_issued_certificate_cannot_cover_hosts_two_labels_down(project):
    # GIVEN an issued certificate (for example.com and *.example.com) and the default hosts
    # (api.offerhub.example.com): a wildcard covers one label, so TLS would fail for every host
    def use_cert(c):
        del c["platform:hosted_zone_id"]
        c["platform:certificate_arn"] = ISSUED

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("prod", use_cert))
    (problem,) = err.value.problems
    assert problem.key == "platform:certificate_arn" and "api.offerhub.example.com" in problem.message
    assert "platform:hosted_zone_id" in problem.message and "one label under the domain" in problem.message


def test_an_issued_certificate_with_a_zone_gets_the_host_parents_beside_it(project):
    # GIVEN an issued default certificate and the zone: the program requests one per host parent beside it
    cap = plan("test", project("prod", lambda c: c.update({"platform:certificate_arn": ISSUED})))
    https = next(r for r in cap.of_type(LISTENER) if r.inputs["port"] == 443)
    assert https.inputs["certificateArn"] == ISSUED
    assert sorted(r.inputs["domainName"] for r in cap.of_type("aws:acm/certificate:Certificate")) == [
        f"*.{s}.example.com" for s in ("aurum", "darwin", "offerhub", "starkdca", "twinkle")
    ]
    assert len(cap.of_type("aws:lb/listenerCertificate:ListenerCertificate")) == 5


def test_a_certificate_of_another_region_is_refused(project):
    def other_region(c):
        c["platform:certificate_arn"] = ISSUED.replace("us-east-1", "eu-west-1")

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("prod", other_region))
    assert err.value.problems[0].key == "platform:certificate_arn" and "eu-west-1" in err.value.problems[0].message


def test_the_apex_needs_no_certificate_of_its_own_and_names_stay_on_label_boundaries():
    assert edge.certificate_scopes("example.com", ["example.com"]) == []
    assert edge.certificate_scopes("example.com", ["api.example.com", "api.shop.example.com"]) == ["*.shop.example.com"]
    with pytest.raises(ValueError, match="not a name under"):
        edge.certificate_scopes("example.com", ["myexample.com"])
    assert not edge.is_under("myexample.com", "example.com") and edge.is_under("a.example.com", "example.com")
    assert edge.default_certificate_covers("a.example.com", "example.com") and not edge.default_certificate_covers("a.b.example.com", "example.com")


def test_a_hostname_that_only_looks_under_the_domain_is_refused(project):
    def lookalike(c):
        c["platform:systems"]["darwin"]["hostnames"] = {"app": "myexample.com"}

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("prod", lookalike))
    (problem,) = err.value.problems
    assert problem.key == "platform:systems.darwin.hostnames.app" and "not under the domain 'example.com'" in problem.message


def test_waf_rate_limits_and_managed_rules(prod):
    acl = prod.one("aws:wafv2/webAcl:WebAcl").inputs
    rules = {r["name"]: r for r in acl["rules"]}
    assert {"AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet", "rate-per-ip"} <= set(rules)
    assert rules["rate-per-ip"]["statement"]["rateBasedStatement"]["limit"] == 2000
    strict = rules["strict-darwin-app-admin"]["statement"]["rateBasedStatement"]
    assert strict["limit"] == 100
    scope = json.dumps(strict["scopeDownStatement"])
    assert '"searchString": "/admin"' in scope and '"searchString": "app.darwin.example.com"' in scope
    assert len({r["priority"] for r in acl["rules"]}) == len(acl["rules"])
    association = prod.one("aws:wafv2/webAclAssociation:WebAclAssociation")
    assert prod.one(LB).urn in association.dependencies


CRS = "awswaf:managed:aws:core-rule-set:"


# WAF text transformations this evaluator knows ("Text transformation", WAF API reference): URL_DECODE
# decodes %XX escapes, LOWERCASE lower-cases, NONE leaves the field as it is.
TRANSFORM = {"NONE": lambda v: v, "LOWERCASE": str.lower, "URL_DECODE": unquote}


def statement_matches(st: dict, host: str, path: str, labels: frozenset[str] | set[str] = frozenset()) -> bool:
    """Whether a rule statement matches a request for ``host`` and ``path``: transformations applied from
    the lowest priority up (WAF API reference, TextTransformation.Priority), then the comparison."""
    if "andStatement" in st:
        return all(statement_matches(s, host, path, labels) for s in st["andStatement"]["statements"])
    if "orStatement" in st:
        return any(statement_matches(s, host, path, labels) for s in st["orStatement"]["statements"])
    if "notStatement" in st:
        return not statement_matches(st["notStatement"]["statement"], host, path, labels)
    if "labelMatchStatement" in st:
        return st["labelMatchStatement"]["scope"] == "LABEL" and st["labelMatchStatement"]["key"] in labels
    if "byteMatchStatement" in st:
        b = st["byteMatchStatement"]
        value = host if b["fieldToMatch"].get("singleHeader", {}).get("name") == "host" else path
        for t in sorted(b["textTransformations"], key=lambda t: t["priority"]):
            value = TRANSFORM[t["type"]](value)
        return value == b["searchString"] if b["positionalConstraint"] == "EXACTLY" else value.startswith(b["searchString"])
    if "rateBasedStatement" in st:
        return False
    raise AssertionError(f"a statement this test cannot evaluate: {st}")


def waf_verdict(acl: dict, host: str, path: str, *, big_body: bool = False, user_agent: bool = True) -> str:
    """What the web ACL does with one request, evaluated as WAF does: rules by priority, a Count rule adds its
    labels and goes on, a label is visible to every later rule, Block ends it. The managed common rule set is
    reduced to the two rules under test (AWS WAF developer guide, "Core rule set (CRS) managed rule group"):
    SizeRestrictions_BODY (body over 8 KB) and NoUserAgent_HEADER, each labelling the request and blocking
    unless overridden to Count. Rate limits are never reached here."""
    labels: set[str] = set()

    def matches(st: dict) -> bool:
        return statement_matches(st, host, path, labels)

    for rule in sorted(acl["rules"], key=lambda r: r["priority"]):
        st = rule["statement"]
        if "managedRuleGroupStatement" in st:
            group = st["managedRuleGroupStatement"]
            overrides = {o["name"]: o["actionToUse"] for o in group.get("ruleActionOverrides") or []}
            if group["name"] == "AWSManagedRulesCommonRuleSet":
                for name, label, hit in (
                    ("SizeRestrictions_BODY", "SizeRestrictions_Body", big_body),
                    ("NoUserAgent_HEADER", "NoUserAgent_Header", not user_agent),
                ):
                    if hit:
                        labels.add(CRS + label)
                        if "count" not in overrides.get(name, {}):
                            return "BLOCK"
            continue
        if matches(st):
            labels.update(label["name"] for label in rule.get("ruleLabels") or [])
            if "block" in rule["action"]:
                return "BLOCK"
    return "ALLOW"


def depth(st: dict) -> int:
    """Nesting of and/or/not statements in a rule statement."""
    for kind, inner in (("andStatement", "statements"), ("orStatement", "statements"), ("notStatement", "statement")):
        if kind in st:
            children = st[kind][inner]
            return 1 + max(depth(c) for c in (children if isinstance(children, list) else [children]))
    return 0


def test_webhook_senders_pass_the_body_size_and_user_agent_rules_only_on_their_paths(plans):
    acl = plans["prod"].one("aws:wafv2/webAcl:WebAcl").inputs
    offerhub = "api.offerhub.example.com"
    # GIVEN offerhub's declared callbacks: a webhook over 8 KB without a User-Agent gets through on its host and path
    for path in ("/api/v1/webhooks/airtm", "/api/v1/webhooks/trustless-work"):
        assert waf_verdict(acl, offerhub, path, big_body=True, user_agent=False) == "ALLOW", path
        assert waf_verdict(acl, offerhub.upper(), path, big_body=True) == "ALLOW"  # host names are case-insensitive
    # THEN everywhere else each of the two rules still blocks: other paths, other hosts, longer paths
    for host, path in ((offerhub, "/api/v1/offers"), ("api.twinkle.example.com", "/api/v1/webhooks/airtm"), (offerhub, "/api/v1/webhooks/airtm/x")):
        assert waf_verdict(acl, host, path, big_body=True) == "BLOCK", (host, path)
        assert waf_verdict(acl, host, path, user_agent=False) == "BLOCK", (host, path)
    assert waf_verdict(acl, offerhub, "/api/v1/offers") == "ALLOW"
    # dev has no domain: the services share the load balancer's name, so the path alone decides
    dev = plans["dev"].one("aws:wafv2/webAcl:WebAcl").inputs
    lb = "alb-lb-1234567890.us-east-1.elb.amazonaws.com:8123"
    assert waf_verdict(dev, lb, "/api/v1/webhooks/airtm", big_body=True, user_agent=False) == "ALLOW"
    assert waf_verdict(dev, lb, "/api/v1/offers", big_body=True) == waf_verdict(dev, lb, "/", user_agent=False) == "BLOCK"


def test_waf_rules_stay_within_what_the_provider_accepts(plans):
    # terraform-provider-aws (bridged by pulumi-aws) takes and/or/not nested 3 deep in a web ACL rule
    # (internal/service/wafv2: webACLRootStatementSchemaLevel = 3); deeper needs rule_json, which has no drift detection
    for cap in plans.values():
        rules = cap.one("aws:wafv2/webAcl:WebAcl").inputs["rules"]
        assert all(depth(r["statement"]) <= 3 for r in rules)
        assert len({r["priority"] for r in rules}) == len(rules) and len({r["name"] for r in rules}) == len(rules)


def test_idle_timeout_fits_sse_and_websocket(prod):
    assert prod.one(LB).inputs["idleTimeout"] >= 3600


def test_access_log_bucket_private_encrypted_and_expiring(prod):
    block = prod.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock", "alb-logs-private").inputs
    assert all(block[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    sse = prod.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", "alb-logs-encryption").inputs
    assert sse["rules"][0]["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "AES256"  # the only one ALB logs support
    life = prod.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration", "alb-logs-lifecycle").inputs
    assert life["rules"][0]["expiration"]["days"] == 365
    policy = json.loads(prod.one("aws:s3/bucketPolicy:BucketPolicy", "alb-logs-policy").inputs["policy"])
    assert any(st["Effect"] == "Deny" and st["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} for st in policy["Statement"])


def test_outputs_urls_webhooks_and_names(prod):
    assert prod.outputs["webhook_urls"] == {
        "offerhub-api": {
            "airtm": "https://api.offerhub.example.com/api/v1/webhooks/airtm",
            "trustless-work": "https://api.offerhub.example.com/api/v1/webhooks/trustless-work",
        },
        "darwin-app": {"helius": "https://app.darwin.example.com/api/webhook/helius"},
    }
    assert prod.outputs["cluster_name"] == "platform-prod"
    assert len(prod.outputs["service_names"]) == 10


def test_security_group_descriptions_use_only_characters_ec2_accepts(plans):
    # EC2: up to 255 of a-z, A-Z, 0-9, spaces and ._-:/()#,@[]+=&;{}!$* (an apostrophe fails the API call)
    allowed = re.compile(r"^[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]{0,255}$")
    types = (SG, INGRESS, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule")
    for cap in plans.values():
        for r in (r for t in types for r in cap.of_type(t)):
            assert allowed.match(r.inputs.get("description", "")), (r.name, r.inputs.get("description"))


# ---------------------------------------------------------------- plain HTTP, ingress ranges (issue 15, part 4)

SHIPPED = ("dev", "staging", "prod", "staging-eks")


def without_domain(c):
    for key in ("platform:domain", "platform:hosted_zone_id", "platform:certificate_arn"):
        c.pop(key, None)
    for system in c["platform:systems"].values():
        system.pop("hostnames", None)


def edge_overrides(**values):
    return lambda c: c.setdefault("platform:overrides", {}).setdefault("edge", {}).update(values)


def both(*mutations):
    def mutate(c):
        for m in mutations:
            m(c)

    return mutate


def alb_ingress(cap):
    alb_sg = cap.one(SG, "alb-sg").urn
    return [r for r in cap.of_type(INGRESS) if alb_sg in r.property_dependencies["securityGroupId"]]


@pytest.mark.parametrize("preset", ["staging", "prod"])
def test_staging_and_prod_refuse_a_stack_without_a_domain(project, preset):
    # GIVEN the staging or prod preset (the file is named test: the preset decides, not the stack's name)
    # and no domain: every web service would be plain HTTP on the internet
    with pytest.raises(ConfigError) as err:
        load_platform("test", project(preset, without_domain))
    (problem,) = err.value.problems
    assert problem.file.endswith("Pulumi.test.yaml") and problem.key == "platform:domain"
    assert "plain HTTP" in problem.message and "platform:overrides.edge.acknowledge_plain_http: true" in problem.message


def test_the_refusal_comes_before_any_resource_with_one_message_and_exit_2(project, capsys):
    code = plan_cli.main(["--stack", "test", "--project-dir", str(project("prod", without_domain))])
    out = capsys.readouterr()
    assert code == 2 and out.out == "" and "Traceback" not in out.err
    assert out.err.startswith("error: invalid configuration:\n  Pulumi.test.yaml: platform:domain: required in this environment")


def test_plain_http_in_staging_when_the_stack_file_acknowledges_it(project):
    cap = plan("test", project("staging", both(without_domain, edge_overrides(acknowledge_plain_http=True))))
    assert all(8000 <= port < 9000 and ls["protocol"] == "HTTP" for port, ls in listeners(cap).items())
    assert all(u.startswith("http://") for u in cap.outputs["urls"].values())


def test_dev_serves_plain_http_without_acknowledging_it_and_a_preset_can_take_it_back(project):
    assert load_platform("test", project("dev")).preset.edge.acknowledge_plain_http is True
    # a dev stack that opts out of the preset's acknowledgement is held to a domain like staging
    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", edge_overrides(acknowledge_plain_http=False)))
    assert err.value.problems[0].key == "platform:domain"


@pytest.mark.parametrize("stack", SHIPPED)
def test_the_shipped_stacks_need_no_acknowledgement(stack):
    # staging, staging-eks and prod have a domain; dev's preset acknowledges plain HTTP
    cfg = load_platform(stack, ROOT)
    assert cfg.domain is not None if cfg.env != "dev" else cfg.domain is None and cfg.preset.edge.acknowledge_plain_http


OFFICE, VPN = "198.51.100.0/24", "203.0.113.7/32"


def test_dev_admits_only_its_office_and_vpn_on_every_plain_http_port(project):
    # GIVEN dev (one HTTP port per web service) restricted to an office range and a VPN exit
    cap = plan("test", project("dev", edge_overrides(ingress_cidrs=[OFFICE, "203.0.113.7"])))
    rules = alb_ingress(cap)
    ports = sorted(listeners(cap))
    # THEN each listener port admits exactly the two ranges, and nothing admits the internet
    assert sorted((r.inputs["fromPort"], r.inputs["cidrIpv4"]) for r in rules) == sorted((p, c) for p in ports for c in (OFFICE, VPN))
    assert all(r.inputs["fromPort"] == r.inputs["toPort"] and r.inputs["ipProtocol"] == "tcp" for r in rules)
    assert not [r for r in cap.of_type(INGRESS) if r.inputs.get("cidrIpv4") == "0.0.0.0/0" or r.inputs.get("cidrIpv6") == "::/0"]


def test_with_a_domain_the_ranges_apply_to_443_and_80(project):
    cap = plan("test", project("staging", edge_overrides(ingress_cidrs=[OFFICE])))
    assert sorted((r.inputs["fromPort"], r.inputs["cidrIpv4"]) for r in alb_ingress(cap)) == [(80, OFFICE), (443, OFFICE)]


def test_by_default_the_internet_reaches_the_open_ports_under_unchanged_names(plans):
    for stack, cap in plans.items():
        rules = alb_ingress(cap)
        assert rules and all(r.inputs["cidrIpv4"] == "0.0.0.0/0" and r.name.endswith("-in") for r in rules), stack
        assert not any("cidrIpv6" in r.inputs for r in rules)  # the load balancer is IPv4 only


@pytest.mark.parametrize(
    ("cidrs", "words"),
    [
        (["198.51.100.7/24"], "has host bits set: the range it names is '198.51.100.0/24'"),
        (["office"], "'office' is not an IPv4 range in CIDR notation"),
        (["2001:db8::/32"], "IPv4 addresses only"),
        (["::/0"], "IPv4 addresses only"),
        (["0.0.0.0/0", OFFICE], "admits the whole internet, so the other ranges restrict nothing"),
        (["0.0.0.0/1"], "the internet in all but name"),
        ([OFFICE, OFFICE], "is listed twice"),
        (["198.51.0.0/16", OFFICE], "'198.51.100.0/24' lies inside '198.51.0.0/16'"),
        ([], "an empty list admits nobody"),
    ],
)
def test_ingress_ranges_that_are_wrong_or_meaningless_are_refused(project, cidrs, words):
    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", edge_overrides(ingress_cidrs=cidrs)))
    (problem,) = err.value.problems
    assert problem.file.endswith("Pulumi.test.yaml") and problem.key == "platform:overrides.edge.ingress_cidrs"
    assert words in problem.message


def test_more_ingress_rules_than_a_security_group_takes_are_refused(project):
    # GIVEN dev's six plain-HTTP ports and eleven ranges: 66 inbound rules, over the 60 a group takes
    cidrs = [f"198.51.{i}.0/24" for i in range(11)]
    with pytest.raises(ConfigError) as err:
        load_platform("test", project("dev", edge_overrides(ingress_cidrs=cidrs)))
    (problem,) = err.value.problems
    assert problem.key == "platform:overrides.edge.ingress_cidrs" and "66 inbound rules" in problem.message
    # with a domain the same ranges open two ports: 22 rules
    assert load_platform("test", project("staging", edge_overrides(ingress_cidrs=cidrs))).preset.edge.ingress_cidrs == cidrs


def test_ingress_ranges_are_refused_where_this_program_does_not_make_the_load_balancer(project):
    def eks(c):
        c["platform:preset"] = "staging"
        edge_overrides(ingress_cidrs=[OFFICE])(c)

    with pytest.raises(ConfigError) as err:
        load_platform("test", project("staging-eks", eks))
    (problem,) = err.value.problems
    assert problem.key == "platform:overrides.edge.ingress_cidrs" and "compute: kubernetes" in problem.message


# ---------------------------------------------------------------- WAF logging (FSBP WAF.11)

WAF_LOGGING = "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
LOG_POLICY = "aws:cloudwatch/logResourcePolicy:LogResourcePolicy"


@pytest.mark.parametrize(("stack", "days"), [("dev", 7), ("staging", 30), ("prod", 365)])
def test_waf_logs_every_request_to_an_encrypted_aws_waf_logs_group(plans, stack, days):
    cap = plans[stack]
    group = cap.one(LOG_GROUP, "alb-waf-logs")
    logging = cap.one(WAF_LOGGING)
    # the name WAF requires, the environment key, the preset's retention
    assert group.inputs["name"] == f"aws-waf-logs-platform-{stack}"
    assert cap.one("aws:kms/key:Key", "key-key").urn in group.property_dependencies["kmsKeyId"]
    assert group.inputs["retentionInDays"] == days
    # the web ACL's logging goes to that group, with no filter: every inspected request is logged
    assert cap.one("aws:wafv2/webAcl:WebAcl").urn in logging.property_dependencies["resourceArn"]
    assert logging.property_dependencies["logDestinationConfigs"] == [group.urn]
    assert len(logging.inputs["logDestinationConfigs"]) == 1 and "loggingFilter" not in logging.inputs


def test_waf_logs_redact_credentials_and_sessions(plans):
    for cap in plans.values():
        redacted = cap.one(WAF_LOGGING).inputs["redactedFields"]
        # one field per entry, header names in lower case (as WAF requires)
        assert redacted == [{"singleHeader": {"name": "authorization"}}, {"singleHeader": {"name": "cookie"}}]


def test_waf_log_delivery_is_granted_on_the_group_itself_before_logging_starts(prod):
    group = prod.one(LOG_GROUP, "alb-waf-logs")
    policy = prod.one(LOG_POLICY, "alb-waf-logs-delivery")
    # scoped to the group (resource_arn, no policy_name): not one of the ten account-level policies a region allows
    assert "policyName" not in policy.inputs and policy.property_dependencies["resourceArn"] == [group.urn]
    (statement,) = json.loads(policy.inputs["policyDocument"])["Statement"]
    arn = policy.inputs["resourceArn"]
    assert statement["Principal"] == {"Service": ["delivery.logs.amazonaws.com"]} and statement["Effect"] == "Allow"
    assert statement["Action"] == ["logs:CreateLogStream", "logs:PutLogEvents"] and statement["Resource"] == [f"{arn}:log-stream:*"]
    assert statement["Condition"] == {
        "StringEquals": {"aws:SourceAccount": ["123456789012"]},
        "ArnLike": {"aws:SourceArn": ["arn:aws:logs:us-east-1:123456789012:*"]},
    }
    assert policy.urn in prod.one(WAF_LOGGING).dependencies  # WAF finds the permission when logging is turned on


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda i: i.update(logDestinationConfigs=["arn:aws:logs:us-east-1:123456789012:log-group:/platform/prod/waf"]), "named aws-waf-logs-"),
        (lambda i: i["redactedFields"][0]["singleHeader"].update(name="Authorization"), "a header name in lower case"),
        (lambda i: i["redactedFields"][1].update(uriPath={}), "FieldToMatch takes exactly one"),
    ],
)
def test_the_logging_request_is_what_waf_accepts(prod, change, expected):
    # GIVEN the WAF API's model and its documented rules (tools/awsshapes.py): the real request passes
    logging = prod.one(WAF_LOGGING)
    rewrite = awsshapes.arn_rewriter(prod)
    assert awsshapes.problems(prod, logging, rewrite) == []
    assert awsshapes.problems(prod, prod.one(LOG_POLICY, "alb-waf-logs-delivery"), rewrite) == []
    # WHEN the destination or a redacted field is one WAF refuses, THEN the check says so
    inputs = copy.deepcopy(logging.inputs)
    change(inputs)
    assert any(expected in p for p in awsshapes.problems(prod, logging, rewrite, inputs))


def test_the_environment_key_lets_cloudwatch_logs_encrypt_the_waf_log_group(prod):
    # the group's ARN (as AWS forms it) falls under the key policy's condition for CloudWatch Logs
    group_arn = f"arn:aws:logs:us-east-1:123456789012:log-group:{prod.one(LOG_GROUP, 'alb-waf-logs').inputs['name']}"
    policy = json.loads(prod.one("aws:kms/key:Key", "key-key").inputs["policy"])
    logs = [s for s in policy["Statement"] if s.get("Principal") == {"Service": "logs.us-east-1.amazonaws.com"}]
    assert any(
        "kms:GenerateDataKey*" in s["Action"] and fnmatch.fnmatchcase(group_arn, s["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"]) for s in logs
    )


# ---------------------------------------------------------------- the stricter /admin rule

DARWIN = "app.darwin.example.com"


def strict_scope(cap) -> dict:
    rules = {r["name"]: r for r in cap.one("aws:wafv2/webAcl:WebAcl").inputs["rules"]}
    return rules["strict-darwin-app-admin"]["statement"]["rateBasedStatement"]["scopeDownStatement"]


@pytest.mark.parametrize("path", ["/admin", "/Admin", "/ADMIN/users", "/%61dmin", "/%41DMIN/x", "/adm%69n", "/AdMiN/"])
def test_the_strict_admin_limit_counts_case_and_encoding_variants(prod, path):
    # GIVEN darwin's /admin, WHEN a client writes it in another case or percent-encodes letters, THEN the
    # stricter rate limit still counts the request
    assert statement_matches(strict_scope(prod), DARWIN, path)


@pytest.mark.parametrize(("host", "path"), [(DARWIN, "/api/health"), (DARWIN, "/"), ("api.twinkle.example.com", "/admin")])
def test_the_strict_admin_limit_stays_on_its_host_and_path(prod, host, path):
    assert not statement_matches(strict_scope(prod), host, path)


def test_the_path_is_decoded_before_it_is_lower_cased(plans):
    for cap in plans.values():
        by_path = _path_match(strict_scope(cap))
        assert [t["type"] for t in sorted(by_path["textTransformations"], key=lambda t: t["priority"])] == ["URL_DECODE", "LOWERCASE"]
        assert len({t["priority"] for t in by_path["textTransformations"]}) == 2  # WAF: priorities must differ
        assert by_path["searchString"] == by_path["searchString"].lower()


def _path_match(scope: dict) -> dict:
    statements = scope["andStatement"]["statements"] if "andStatement" in scope else [scope]
    (match,) = [s["byteMatchStatement"] for s in statements if "uriPath" in s["byteMatchStatement"]["fieldToMatch"]]
    return match
