"""The load balancer by control id, the only door to the internet, WAF, certificates and stable rules."""

from __future__ import annotations

import json
import re

import pytest

from stacks import edge
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import plan

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


def waf_verdict(acl: dict, host: str, path: str, *, big_body: bool = False, user_agent: bool = True) -> str:
    """What the web ACL does with one request, evaluated as WAF does: rules by priority, a Count rule adds its
    labels and goes on, a label is visible to every later rule, Block ends it. The managed common rule set is
    reduced to the two rules under test (AWS WAF developer guide, "Core rule set (CRS) managed rule group"):
    SizeRestrictions_BODY (body over 8 KB) and NoUserAgent_HEADER, each labelling the request and blocking
    unless overridden to Count. Rate limits are never reached here."""
    labels: set[str] = set()

    def matches(st: dict) -> bool:
        if "andStatement" in st:
            return all(matches(s) for s in st["andStatement"]["statements"])
        if "orStatement" in st:
            return any(matches(s) for s in st["orStatement"]["statements"])
        if "notStatement" in st:
            return not matches(st["notStatement"]["statement"])
        if "labelMatchStatement" in st:
            return st["labelMatchStatement"]["scope"] == "LABEL" and st["labelMatchStatement"]["key"] in labels
        if "byteMatchStatement" in st:
            b = st["byteMatchStatement"]
            value = host if b["fieldToMatch"].get("singleHeader", {}).get("name") == "host" else path
            for t in b["textTransformations"]:
                value = value.lower() if t["type"] == "LOWERCASE" else value
            return value == b["searchString"] if b["positionalConstraint"] == "EXACTLY" else value.startswith(b["searchString"])
        if "rateBasedStatement" in st:
            return False
        raise AssertionError(f"a statement this test cannot evaluate: {st}")

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
        }
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
