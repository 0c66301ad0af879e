"""The load balancer by control id, the only door to the internet, WAF, certificates and stable rules."""

from __future__ import annotations

import json
import re

import pytest

from stacks import edge
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


def test_an_issued_certificate_is_used_as_given(project):
    arn = "arn:aws:acm:us-east-1:123456789012:certificate/0a1b2c3d-1111-2222-3333-444455556666"

    def use_cert(c):
        del c["platform:hosted_zone_id"]
        c["platform:certificate_arn"] = arn

    cap = plan("test", project("prod", use_cert))
    assert cap.of_type("aws:acm/certificate:Certificate") == [] and cap.of_type("aws:route53/record:Record") == []
    assert cap.of_type("aws:lb/listenerCertificate:ListenerCertificate") == []
    assert next(r for r in cap.of_type(LISTENER) if r.inputs["port"] == 443).inputs["certificateArn"] == arn


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
