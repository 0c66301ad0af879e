"""The Kubernetes target (``compute: kubernetes``) on the example stack ``Pulumi.staging-eks.yaml``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest

from components import postgres
from components.kubernetes import SUPPORTED_VERSIONS
from stacks.catalog import ServiceKind, load_catalog
from stacks.config import load_platform
from stacks.errors import ConfigError
from tests.conftest import ROOT, load_stack_yaml, plan, plan_released, set_every_secret
from tools import plan as plan_cli

STACK = "staging-eks"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
JOB = "kubernetes:batch/v1:Job"
INGRESS = "kubernetes:networking.k8s.io/v1:Ingress"
SERVICE = "kubernetes:core/v1:Service"
TGB = "kubernetes:elbv2.k8s.aws/v1beta1:TargetGroupBinding"
TARGET_GROUP = "aws:lb/targetGroup:TargetGroup"
LISTENER_RULE = "aws:lb/listenerRule:ListenerRule"
ALARM = "aws:cloudwatch/metricAlarm:MetricAlarm"
ESO = "external-secrets.io"
CUSTOM = (ESO, "elbv2.k8s.aws")
"""API groups of custom resources: no built-in schema, so ``kubernetes-validate`` does not know them."""
CLUSTER_GROUP = "sg-0123456789abcdef0"
TGB_SCHEMA = Path(__file__).parent / "crds" / "targetgroupbinding-v1beta1.json"
WEB = ("twinkle/api", "twinkle/facilitator", "offerhub/api", "starkdca/api", "aurum/api", "darwin/app")
ECS_ONLY_ALARMS = ("-not-running", "-deploy-5xx", "-deploy-p95")
"""Alarm name endings with no Kubernetes equivalent (README, "Kubernetes instead of ECS"): a singleton's
running-task count (ECS Container Insights), and the alarms ECS rolls a deployment back on."""
REQUIRED_LABELS = {"app.kubernetes.io/part-of", "app.kubernetes.io/managed-by", "platform/environment"}
WORKLOAD_LABELS = REQUIRED_LABELS | {"app.kubernetes.io/name", "app.kubernetes.io/version"}


@pytest.fixture(scope="module")
def eks(tmp_path_factory):
    """The example stack once its external secrets are set (a first deploy holds every workload at zero)."""
    return plan_released(STACK, tmp_path_factory.mktemp("eks-released"))


def kube_objects(cap, *, custom: bool = False):
    """Captured Kubernetes objects: the built-in kinds, or with ``custom`` the custom resources (External
    Secrets, the load balancer controller's TargetGroupBinding)."""
    out = [r for r in cap.resources if r.type.startswith("kubernetes:") and r.custom]
    return [r for r in out if any(group in r.type for group in CUSTOM) == custom]


def strict(schema):
    """A CRD's structural schema as the API server applies it with strict field validation (the default of
    ``kubectl`` since 1.27): an object with ``properties`` refuses any other field, unless it keeps unknown
    fields or names ``additionalProperties`` itself."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items() if k != "$comment"}
    if "properties" in out and "additionalProperties" not in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


def tgb_validator():
    """The TargetGroupBinding schema vendored from the controller's helm chart (``tests/crds/``, source in the file)."""
    schema = strict(json.loads(TGB_SCHEMA.read_text()))
    return jsonschema.Draft7Validator(schema)


def monitoring_alarms(cap) -> set[str]:
    """The platform's alarms (components/observability.py: each system's ``<system>-monitoring`` and the load
    balancer's ``alb-monitoring``) and the deploy alarms ECS rolls back on. Not the apps' own alarms
    (components/alerting.py, ``<system>-alerting``), which are wired for ECS only so far."""
    return {r.name for r in cap.of_type(ALARM) if cap.top_component(r.urn).endswith("-monitoring") or r.name.endswith(ECS_ONLY_ALARMS)}


def web_keys():
    return [w.replace("/", "-") for w in WEB]


def pod_specs(cap):
    for r in cap.of_type(DEPLOYMENT) + cap.of_type(JOB):
        yield r, r.inputs["spec"]["template"]["spec"]


def deployment(cap, namespace: str, name: str):
    return next(r for r in cap.of_type(DEPLOYMENT) if r.inputs["metadata"]["namespace"] == namespace and r.inputs["metadata"]["name"] == name)


def hostname(system: str, service: str) -> str:
    """The host the example stack gives a web service (``hostnames`` in the stack file, or the default)."""
    return load_platform(STACK, ROOT).systems[system].services[service].hostname


def jobs_by_namespace(cap) -> dict[str, str]:
    return {r.inputs["metadata"]["namespace"]: r.inputs["metadata"]["name"] for r in cap.of_type(JOB)}


def released(mutate=None):
    """A ``project`` mutator: the example stack with every external secret set, then ``mutate``."""

    def change(c):
        c["platform:preset"] = "staging"
        set_every_secret(c)
        if mutate:
            mutate(c)

    return change


# ------------------------------------------------------------------ independent validation


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_object_passes_kubernetes_validate_strict(eks, version):
    objects = kube_objects(eks)
    kinds = {r.inputs["kind"] for r in objects}
    assert kinds >= {"Namespace", "ServiceAccount", "Deployment", "Job", "Service", "PodDisruptionBudget"}
    for r in objects:
        kubernetes_validate.validate(r.inputs, f"{version}.0", strict=True)


def test_validator_rejects_an_unknown_field_and_a_wrong_type(eks):
    # the check above can fail: strict mode refuses a misspelt field, and a string where an int belongs
    dep = copy.deepcopy(deployment(eks, "darwin-staging", "app").inputs)
    dep["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, f"{SUPPORTED_VERSIONS[-1]}.0", strict=True)
    dep = copy.deepcopy(deployment(eks, "darwin-staging", "app").inputs)
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "fifteen"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, f"{SUPPORTED_VERSIONS[0]}.0", strict=True)


# ------------------------------------------------------------------ what the seeds ask


def test_darwin_probes_and_resources_from_its_guide(eks):
    pod = deployment(eks, "darwin-staging", "app").inputs["spec"]["template"]["spec"]
    app = pod["containers"][0]
    assert app["resources"] == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}}
    live, ready = app["livenessProbe"], app["readinessProbe"]
    assert live["httpGet"] == ready["httpGet"] == {"path": "/api/health", "port": "http"}
    assert (live["initialDelaySeconds"], live["periodSeconds"]) == (30, 10)
    assert (ready["initialDelaySeconds"], ready["periodSeconds"]) == (5, 5)
    assert app["ports"] == [{"name": "http", "containerPort": 3000, "protocol": "TCP"}]
    assert deployment(eks, "darwin-staging", "app").inputs["spec"]["replicas"] == 3  # "Instance 1, 2, 3"


def test_container_checks_become_probes_and_the_indexer_gates_the_api(eks):
    # twinkle's guide, "Service Startup Order": the API starts after the indexer; Ponder's /ready says the
    # backfill is done. On Kubernetes a readiness probe holds the indexer's rollout without restarting it,
    # and the API's Deployment waits for that rollout (pulumi-kubernetes awaits a Deployment's readiness).
    indexer = deployment(eks, "twinkle-staging", "indexer")
    app = indexer.inputs["spec"]["template"]["spec"]["containers"][0]
    assert app["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 42069} and "livenessProbe" not in app
    assert indexer.urn in deployment(eks, "twinkle-staging", "api").dependencies
    assert int(indexer.options["customTimeouts"]["create"].removesuffix("m")) * 60 > 300 + 300 * 10
    # starkdca's worker: its heartbeat is a liveness check, as ECS's container check replaces a stuck task
    worker = deployment(eks, "starkdca-staging", "worker").inputs["spec"]["template"]["spec"]["containers"][0]
    assert worker["livenessProbe"]["exec"]["command"][:2] == ["node", "-e"] and "/tmp/worker-heartbeat" in worker["livenessProbe"]["exec"]["command"][2]


def test_every_web_service_probes_its_own_health_path(eks):
    catalog = load_catalog()
    for r in eks.of_type(DEPLOYMENT):
        system = r.inputs["metadata"]["namespace"].removesuffix("-staging")
        spec = catalog[system].services[r.inputs["metadata"]["name"]]
        container = r.inputs["spec"]["template"]["spec"]["containers"][0]
        if spec.health:
            assert container["readinessProbe"]["httpGet"]["path"] == spec.health.path
        elif spec.container_health and spec.container_health.http:  # a readiness gate (Ponder's /ready), no port
            assert container["readinessProbe"]["httpGet"]["path"] == spec.container_health.http and "ports" not in container
        else:
            assert "readinessProbe" not in container and "ports" not in container


def test_pods_run_non_root_read_only_without_capabilities(eks):
    catalog = load_catalog()
    seen = 0
    for r, pod in pod_specs(eks):
        meta = r.inputs["metadata"]
        service = meta["name"].split("-migrate-")[0].split("-db-roles-")[0]
        writable = set(catalog[meta["namespace"].removesuffix("-staging")].services[service].writable_paths)
        sc = pod["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0 and sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            csc = c["securityContext"]
            assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False and csc["runAsNonRoot"] is True
            assert csc["capabilities"] == {"drop": ["ALL"]} and csc["seccompProfile"] == {"type": "RuntimeDefault"}
            if c["name"] == postgres.BOOTSTRAP_CONTAINER:  # psql writes nothing: no volume at all
                assert "volumeMounts" not in c and csc["runAsUser"] == 70
                continue
            mounts = {m["mountPath"] for m in c["volumeMounts"]}
            assert mounts == writable  # each writable path is a scratch volume, nothing else is writable
            assert {v["name"] for v in pod["volumes"]} == {m["name"] for m in c["volumeMounts"]}
            seen += 1
    # 10 Deployments, 3 migration Jobs; the 2 bootstrap-only Jobs (darwin, twinkle) run psql alone
    assert seen == len(eks.of_type(DEPLOYMENT)) + len(eks.of_type(JOB)) - 2 == 13
    darwin = deployment(eks, "darwin-staging", "app").inputs["spec"]["template"]["spec"]["containers"][0]
    assert {m["mountPath"] for m in darwin["volumeMounts"]} == {"/tmp", "/app/.next/cache"}
    namespaces = [r.inputs for r in eks.of_type("kubernetes:core/v1:Namespace")]
    assert all(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted" for ns in namespaces)


def test_singletons_run_one_replica_and_never_two_at_once(eks):
    catalog = load_catalog()
    singletons = {(s, n) for s, sys_ in catalog.items() for n, svc in sys_.services.items() if svc.kind == "singleton"}
    found = set()
    for r in eks.of_type(DEPLOYMENT):
        key = (r.inputs["metadata"]["namespace"].removesuffix("-staging"), r.inputs["metadata"]["name"])
        strategy = r.inputs["spec"]["strategy"]
        if key in singletons:
            found.add(key)
            assert strategy == {"type": "Recreate"} and r.inputs["spec"]["replicas"] == 1
        else:
            assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0
    assert found == {("twinkle", "indexer"), ("aurum", "indexer")}


def test_grace_period_and_zone_spread(eks):
    catalog = load_catalog()
    for r in eks.of_type(DEPLOYMENT):
        system = r.inputs["metadata"]["namespace"].removesuffix("-staging")
        pod = r.inputs["spec"]["template"]["spec"]
        spec = catalog[system].services[r.inputs["metadata"]["name"]]
        sleep = pod["containers"][0].get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert pod["terminationGracePeriodSeconds"] == sleep + spec.shutdown_seconds + 5  # SIGKILL only after both
        spread = pod["topologySpreadConstraints"][0]
        assert spread["topologyKey"] == "topology.kubernetes.io/zone" and spread["labelSelector"]["matchLabels"] == r.inputs["spec"]["selector"]["matchLabels"]


def test_every_object_is_labelled(eks):
    for r in kube_objects(eks) + kube_objects(eks, custom=True):
        labels = r.inputs["metadata"]["labels"]
        need = REQUIRED_LABELS if r.inputs["kind"] == "Namespace" else WORKLOAD_LABELS
        assert need <= set(labels), (r.name, labels)
        assert labels["platform/environment"] == "staging"
    for r in eks.of_type(DEPLOYMENT):
        assert r.inputs["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"].startswith("sha256-")
        assert "app.kubernetes.io/version" not in r.inputs["spec"]["selector"]["matchLabels"]  # a selector is immutable


# ------------------------------------------------------------------ secrets


def test_no_secret_value_in_plain_env(eks):
    declared = {name for system in load_catalog().values() for name in system.secrets}
    for r, pod in pod_specs(eks):
        for c in pod["containers"]:
            for e in c["env"]:
                if e["name"] in declared:
                    assert set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"], (r.name, e["name"])
                else:
                    assert e.get("value") != "[secret]", (r.name, e["name"])
    assert not eks.of_type("kubernetes:core/v1:Secret")  # the operator writes them from Secrets Manager


def test_external_secrets_read_exactly_the_service_secrets_through_its_own_role(eks):
    facilitator = next(r for r in eks.of_type(f"kubernetes:{ESO}/v1:ExternalSecret") if r.name == "twinkle-facilitator-external-secret")
    keys = {d["secretKey"]: d["remoteRef"]["key"] for d in facilitator.inputs["spec"]["data"]}
    assert keys["FACILITATOR_PRIVATE_KEY"] == "staging/twinkle/FACILITATOR_PRIVATE_KEY"
    assert set(keys) == set(load_catalog()["twinkle"].services["facilitator"].secrets)
    target = facilitator.inputs["spec"]["target"]["name"]
    pod = deployment(eks, "twinkle-staging", "facilitator").inputs["spec"]["template"]["spec"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in pod["containers"][0]["env"] if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]}
    assert refs == {target}
    role = next(r for r in eks.of_type("aws:iam/role:Role") if r.name == "twinkle-facilitator-irsa")
    condition = json.loads(role.inputs["assumeRolePolicy"])["Statement"][0]["Condition"]["StringEquals"]
    assert "system:serviceaccount:twinkle-staging:facilitator" in condition.values()
    policy = json.loads(next(r for r in eks.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "twinkle-facilitator-irsa").inputs["policy"])
    assert len(policy["Statement"][0]["Resource"]) == len(keys)
    api_policy = json.loads(next(r for r in eks.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == "twinkle-api-irsa").inputs["policy"])
    assert len(api_policy["Statement"][0]["Resource"]) == len(load_catalog()["twinkle"].services["api"].secrets)
    sa = next(r for r in eks.of_type("kubernetes:core/v1:ServiceAccount") if r.name == "twinkle-facilitator-sa")
    assert "eks.amazonaws.com/role-arn" in sa.inputs["metadata"]["annotations"]


def test_a_rotation_renames_the_secret_and_rolls_only_its_users(project):
    def bump(c):
        c["platform:preset"] = "staging"
        c["platform:systems"]["darwin"]["rotate"] = {"ADMIN_SECRET": 1}

    before, after = plan(STACK), plan("test", project(STACK, bump))

    def targets(cap):
        return {r.name: r.inputs["spec"]["target"]["name"] for r in cap.of_type(f"kubernetes:{ESO}/v1:ExternalSecret")}

    changed = {k for k, v in targets(after).items() if targets(before)[k] != v}
    assert changed == {"darwin-app-external-secret"}


def test_plain_secret_mode_writes_immutable_secrets_pulumi_knows(project):
    def plain(c):
        c["platform:preset"] = "staging"
        c["platform:kubernetes"]["secrets"] = "kubernetes"
        c["platform:kubernetes"].pop("oidc_provider_arn")
        c["platform:systems"] = {"aurum": c["platform:systems"]["aurum"]}
        c["platform:secrets"] = {"aurum": {"PRIVATE_KEY": {"secure": "v1:abc"}, "SENTRY_DSN": {"secure": "v1:def"}}}

    cap = plan("test", project(STACK, plain))
    secrets = cap.of_type("kubernetes:core/v1:Secret")
    # the provider marks the whole of stringData secret: the capture (like state and plan) sees no value
    assert secrets and all(s.inputs["immutable"] is True and s.inputs["stringData"] == "[secret]" for s in secrets)
    assert not [r for r in cap.resources if ESO in r.type] and not [r for r in cap.of_type("aws:iam/role:Role") if r.name.endswith("-irsa")]
    for version in SUPPORTED_VERSIONS:
        for s in secrets:
            kubernetes_validate.validate({**s.inputs, "stringData": {"REDACTED": "x"}}, f"{version}.0", strict=True)


def test_plain_secret_mode_needs_every_external_value(project):
    def plain(c):
        c["platform:preset"] = "staging"
        c["platform:kubernetes"]["secrets"] = "kubernetes"

    with pytest.raises(ConfigError) as info:
        load_platform("test", project(STACK, plain))
    keys = {p.key for p in info.value.problems}
    assert "platform:secrets.darwin.HELIUS_API_KEY" in keys
    assert all("pulumi config set --secret --path" in p.message for p in info.value.problems)


# ------------------------------------------------------------------ web, scaling, migrations, data


def test_web_services_are_bound_to_their_own_target_group_on_the_platform_alb(eks):
    # GIVEN the released example stack: THEN each web service has a Service and a TargetGroupBinding
    services = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r for r in eks.of_type(SERVICE)}
    bindings = {(r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]): r for r in eks.of_type(TGB)}
    expected = {(w.split("/")[0] + "-staging", w.split("/")[1]) for w in WEB}
    assert set(bindings) == set(services) == expected
    assert not eks.of_type(INGRESS)  # the program's ALB serves them, not one the controller makes
    groups = {r.name: r for r in eks.of_type(TARGET_GROUP)}
    rules = {r.name: r for r in eks.of_type(LISTENER_RULE)}
    vpc = load_stack_yaml(STACK)["config"]["platform:network"]["existing"]["vpc_id"]
    arns = set()
    for (ns, name), binding in bindings.items():
        key = f"{ns.removesuffix('-staging')}-{name}"
        spec = binding.inputs["spec"]
        port = services[(ns, name)].inputs["spec"]["ports"][0]
        assert spec["serviceRef"] == {"name": name, "port": port["port"]} and port["targetPort"] == "http"
        assert spec["targetType"] == "ip" and spec["ipAddressType"] == "ipv4" and spec["vpcID"] == vpc
        assert "networking" not in spec  # the controller changes no security group; the program's rules admit the ALB
        # AND the binding points at the service's own target group: the one its listener rule forwards to
        group, rule = groups[f"{key}-tg"], rules[f"{key}-rule"]
        assert group.urn in binding.property_dependencies["spec"] and rule.urn in binding.dependencies
        assert spec["targetGroupARN"] == rule.inputs["actions"][0]["targetGroupArn"] and spec["targetGroupARN"].startswith("arn:aws:lb:")
        assert rule.inputs["conditions"] == [{"hostHeader": {"values": [hostname(*key.split("-", 1))]}}]
        assert group.inputs["targetType"] == "ip" and group.inputs["vpcId"] == vpc
        assert group.inputs["healthCheck"]["path"] == load_catalog()[key.split("-")[0]].services[name].health.path
        arns.add(spec["targetGroupARN"])
    assert len(arns) == 6
    assert len(eks.of_type("kubernetes:policy/v1:PodDisruptionBudget")) == 6


def test_target_group_bindings_match_the_controllers_crd(eks):
    validator = tgb_validator()
    bindings = [r.inputs for r in eks.of_type(TGB)]
    assert len(bindings) == 6
    for binding in bindings:
        assert binding["apiVersion"] == "elbv2.k8s.aws/v1beta1" and binding["kind"] == "TargetGroupBinding"
        validator.validate(binding)
    # the check can fail: a misspelt field, a target type the CRD does not know, a missing service reference
    wrong = copy.deepcopy(bindings[0])
    wrong["spec"]["targetGroupArn"] = wrong["spec"].pop("targetGroupARN")
    bad_type = copy.deepcopy(bindings[0])
    bad_type["spec"]["targetType"] = "pod"
    no_service = copy.deepcopy(bindings[0])
    del no_service["spec"]["serviceRef"]
    for broken in (wrong, bad_type, no_service):
        with pytest.raises(jsonschema.ValidationError):
            validator.validate(broken)


def test_the_alb_and_its_waf_guard_the_cluster_too(eks):
    # GIVEN compute: kubernetes: THEN the edge is the one ECS has, WAF included
    lb = eks.one("aws:lb/loadBalancer:LoadBalancer")
    public = load_stack_yaml(STACK)["config"]["platform:network"]["existing"]["public_subnet_ids"]
    assert lb.inputs["subnets"] == public and lb.inputs["internal"] is False and lb.inputs["dropInvalidHeaderFields"] is True
    acl = eks.one("aws:wafv2/webAcl:WebAcl")
    association = eks.one("aws:wafv2/webAclAssociation:WebAclAssociation")
    assert association.property_dependencies["resourceArn"] == [lb.urn]
    assert association.property_dependencies["webAclArn"] == [acl.urn]
    assert eks.one("aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration")
    https = next(r for r in eks.of_type("aws:lb/listener:Listener") if r.inputs["port"] == 443)
    assert https.inputs["certificateArn"] == load_stack_yaml(STACK)["config"]["platform:certificate_arn"]
    assert eks.one("aws:cloudwatch/metricAlarm:MetricAlarm", "alb-monitoring-5xx-rate")


def test_darwin_admin_keeps_its_stricter_waf_limit_on_kubernetes(eks):
    rules = {r["name"]: r for r in eks.one("aws:wafv2/webAcl:WebAcl").inputs["rules"]}
    admin = rules["strict-darwin-app-admin"]["statement"]["rateBasedStatement"]
    assert admin["limit"] < rules["rate-per-ip"]["statement"]["rateBasedStatement"]["limit"]
    host, path = admin["scopeDownStatement"]["andStatement"]["statements"]
    assert host["byteMatchStatement"]["searchString"] == hostname("darwin", "app") == "darwin-app.k8s.staging.example.com"
    assert path["byteMatchStatement"]["searchString"] == "/admin"
    assert "webhooks" in rules  # offerhub's callbacks keep their exemption too
    assert eks.outputs["webhook_urls"]["offerhub-api"]["airtm"] == "https://offerhub-api.k8s.staging.example.com/api/v1/webhooks/airtm"


def test_the_alb_reaches_pods_through_the_cluster_group(eks):
    # the pods carry the cluster's group: it admits the ALB on each web port, once per port (systems share ports)
    lb_group = eks.one("aws:ec2/securityGroup:SecurityGroup", "alb-sg")
    ports = {s.port for system in load_catalog().values() for s in system.services.values() if s.kind is ServiceKind.web}
    ingress = [r for r in eks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.name.startswith("cluster-from-alb-")]
    egress = [r for r in eks.of_type("aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule") if r.name.startswith("alb-to-cluster-")]
    assert {r.inputs["fromPort"] for r in ingress} == {r.inputs["toPort"] for r in egress} == ports and len(ingress) == len(ports)
    for r in ingress:
        assert r.inputs["securityGroupId"] == CLUSTER_GROUP and r.property_dependencies["referencedSecurityGroupId"] == [lb_group.urn]
    for r in egress:
        assert r.inputs["referencedSecurityGroupId"] == CLUSTER_GROUP and r.property_dependencies["securityGroupId"] == [lb_group.urn]
    # AND a web Deployment rolls out only once its pods can pass the health check (readiness gate)
    for w in WEB:
        system, name = w.split("/")
        deps = set(deployment(eks, f"{system}-staging", name).dependencies)
        assert {r.urn for r in ingress + egress} <= deps
        assert next(r.urn for r in eks.of_type(TGB) if r.name == f"{system}-{name}-tgb") in deps


def test_kubernetes_keeps_every_alarm_but_the_ecs_only_ones(eks, tmp_path_factory):
    # GIVEN the same systems on ECS (staging) and on Kubernetes (staging-eks), both released
    ecs = plan_released("staging", tmp_path_factory.mktemp("staging-released"))
    ecs_alarms, eks_alarms = monitoring_alarms(ecs), monitoring_alarms(eks)
    ecs_only = {n for n in ecs_alarms if n.endswith(ECS_ONLY_ALARMS)}
    singletons = [f"{s}-{n}" for s, system in load_catalog().items() for n, svc in system.services.items() if svc.kind is ServiceKind.singleton]
    assert {f"{key}-not-running" for key in singletons} <= ecs_only
    # THEN Kubernetes has every other alarm (target groups, load balancer, RDS, Redis), and only those
    assert eks_alarms == ecs_alarms - ecs_only
    assert len(eks_alarms) == len(ecs_alarms) - len(ecs_only)
    for key in web_keys():
        assert {f"{key}-no-healthy-targets", f"{key}-failing-health-checks", f"{key}-5xx-rate", f"{key}-p95-latency"} <= eks_alarms
    groups = {r.name: r.urn for r in eks.of_type(TARGET_GROUP)}
    healthy = eks.one(ALARM, "darwin-app-no-healthy-targets")
    assert healthy.inputs["dimensions"]["TargetGroup"].startswith("targetgroup/darwin-app-tg/")
    assert groups["darwin-app-tg"] in healthy.property_dependencies["dimensions"]


def test_autoscaler_on_cpu_owns_the_replica_count(project):
    def prod_like(c):
        c["platform:preset"] = "prod"
        c["aws:defaultTags"]["tags"]["environment"] = "prod"
        c["platform:systems"] = {"darwin": c["platform:systems"]["darwin"]}
        set_every_secret(c)
        for tier, ids in c["platform:network"]["existing"].items():
            if tier != "vpc_id":
                ids.append(ids[-1][:-1] + "3")  # prod spans three AZs

    cap = plan("test", project(STACK, prod_like))
    hpa = cap.one("kubernetes:autoscaling/v2:HorizontalPodAutoscaler").inputs
    metric = hpa["spec"]["metrics"][0]["resource"]
    assert hpa["apiVersion"] == "autoscaling/v2" and metric["name"] == "cpu" and metric["target"]["averageUtilization"] == 70
    assert hpa["spec"]["minReplicas"] == 3 and hpa["spec"]["maxReplicas"] >= 3
    assert "replicas" not in cap.one(DEPLOYMENT).inputs["spec"]  # pulumi up does not fight the autoscaler
    for version in SUPPORTED_VERSIONS:
        kubernetes_validate.validate(hpa, f"{version}.0", strict=True)


def test_migration_job_gates_the_rollout(eks):
    for system in ("offerhub", "aurum", "starkdca"):
        job = next(r for r in eks.of_type(JOB) if r.inputs["metadata"]["namespace"] == f"{system}-staging")
        migration = load_catalog()[system].migration
        container = job.inputs["spec"]["template"]["spec"]["containers"][0]
        assert container["name"] == "migrate" and container["args"] == migration.command
        assert job.inputs["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        # the roles first (init container), then the migration as the owner
        assert [c["name"] for c in job.inputs["spec"]["template"]["spec"]["initContainers"]] == [postgres.BOOTSTRAP_CONTAINER]
        url = next(e for e in container["env"] if e["name"] == "DATABASE_URL")["valueFrom"]["secretKeyRef"]
        assert url["name"].startswith("db-owner-") and url["key"] == "DATABASE_URL"
        dep = deployment(eks, f"{system}-staging", migration.service)
        assert job.urn in dep.dependencies
        assert container["image"] == dep.inputs["spec"]["template"]["spec"]["containers"][0]["image"]
        assert job.options["customTimeouts"]["create"] == "20m"


def test_app_pods_get_the_app_role_and_only_the_jobs_the_owner(eks):
    # GIVEN every pod template of the released example stack
    for r, pod in pod_specs(eks):
        ns = r.inputs["metadata"]["namespace"]
        for c in pod["containers"] + pod.get("initContainers", []):
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
            owner = {n for n, secret in refs.items() if secret.startswith("db-owner-")}
            if r.type == JOB and c["name"] in (postgres.BOOTSTRAP_CONTAINER, "migrate"):
                assert owner == ({"DATABASE_URL"} if c["name"] == "migrate" else set(refs)), (ns, c["name"])
            else:
                assert owner == set(), (ns, c["name"])  # THEN no app pod mounts the owner's credentials
    # AND the owner's secret is read through its own account and role, which read nothing else
    for system in ("offerhub", "darwin"):
        policy = json.loads(next(r for r in eks.of_type("aws:iam/rolePolicy:RolePolicy") if r.name == f"{system}-db-owner-irsa").inputs["policy"])
        assert len(policy["Statement"][0]["Resource"]) == 1 and "-database-owner-" in policy["Statement"][0]["Resource"][0]
        store = next(r for r in eks.of_type(f"kubernetes:{ESO}/v1:ExternalSecret") if r.name == f"{system}-db-owner-external-secret")
        assert {d["remoteRef"]["key"] for d in store.inputs["spec"]["data"]} == {f"staging/{system}/DATABASE_OWNER"}
        assert {d["remoteRef"]["property"] for d in store.inputs["spec"]["data"]} >= {"url", "password", "host", "app_verifier"}


def test_every_service_that_waits_on_a_migration_depends_on_its_job(eks):
    # starkdca's worker and aurum's indexer read the schema their api's migration writes
    catalog = load_catalog()
    jobs = {r.inputs["metadata"]["namespace"]: r for r in eks.of_type(JOB)}
    checked = set()
    for name, system in catalog.items():
        if system.migration is None:
            continue
        job = jobs[f"{name}-staging"]
        assert "-migrate-" in job.inputs["metadata"]["name"]
        for service in system.services:
            if service == system.migration.service or system.migration.service in system.waits_for(service):
                assert job.urn in deployment(eks, f"{name}-staging", service).dependencies, (name, service)
                checked.add(f"{name}/{service}")
    assert {"starkdca/worker", "aurum/indexer", "starkdca/api", "aurum/api", "offerhub/api"} <= checked


def test_deployments_follow_the_systems_start_order(eks):
    # as on ECS: a Deployment is created (or updated) once those it starts after are rolled out
    catalog = load_catalog()
    pairs = set()
    for name, system in catalog.items():
        for service in system.services:
            if service in {p.name for p in system.not_deployed}:
                continue
            deps = set(deployment(eks, f"{name}-staging", service).dependencies)
            for before in system.waits_for(service):
                assert deployment(eks, f"{name}-staging", before).urn in deps, (name, service, before)
                pairs.add((f"{name}/{before}", f"{name}/{service}"))
    assert {("aurum/api", "aurum/indexer"), ("starkdca/api", "starkdca/worker"), ("twinkle/indexer", "twinkle/api")} <= pairs
    assert {("twinkle/api", "twinkle/facilitator"), ("twinkle/facilitator", "twinkle/worker")} <= pairs


def test_a_system_without_migration_bootstraps_its_roles_before_its_database_users(eks):
    jobs = {r.inputs["metadata"]["namespace"]: r for r in eks.of_type(JOB)}
    for system, users in (("darwin", ["app"]), ("twinkle", ["indexer", "api", "worker"])):
        job = jobs[f"{system}-staging"]
        assert "-db-roles-" in job.inputs["metadata"]["name"]
        assert [c["name"] for c in job.inputs["spec"]["template"]["spec"]["containers"]] == [postgres.BOOTSTRAP_CONTAINER]
        for name in users:
            assert job.urn in deployment(eks, f"{system}-staging", name).dependencies, name
    assert jobs["twinkle-staging"].urn in deployment(eks, "twinkle-staging", "facilitator").dependencies  # it reads DATABASE_URL too
    # the migration's Job gates the other users of the database too
    assert jobs["starkdca-staging"].urn in deployment(eks, "starkdca-staging", "worker").dependencies


def test_migration_job_is_named_by_its_whole_spec_and_rerun_when_it_failed(eks, project):
    # pulumi-kubernetes replaces a Job that is not complete instead of awaiting it again (Diff: ReplaceUnready)
    for job in eks.of_type(JOB):
        assert job.inputs["metadata"]["annotations"] == {"pulumi.com/replaceUnready": "true"}
    before = jobs_by_namespace(eks)
    same = jobs_by_namespace(plan("test", project(STACK, released())))
    assert same == before  # the same spec is the same Job: nothing runs again

    def new_env(c):
        c["platform:systems"]["offerhub"]["env"] = {"LOG_LEVEL": "debug"}  # same image, another pod template

    after = jobs_by_namespace(plan("test", project(STACK, released(new_env))))
    assert after["offerhub-staging"] != before["offerhub-staging"]  # a new Job beside the old one, not a same-name delete-and-recreate
    assert {ns: n for ns, n in after.items() if ns != "offerhub-staging"} == {ns: n for ns, n in before.items() if ns != "offerhub-staging"}


def test_migration_pods_are_not_behind_the_service(eks):
    # the readiness-gate webhook gates every new pod the Service selects; a migration pod is no target
    services = [s.inputs for s in eks.of_type("kubernetes:core/v1:Service")]
    for job in eks.of_type(JOB):
        labels = job.inputs["spec"]["template"]["metadata"]["labels"]
        assert labels["app.kubernetes.io/component"] == "migration"
        for svc in services:
            if svc["metadata"]["namespace"] == job.inputs["metadata"]["namespace"]:
                assert not svc["spec"]["selector"].items() <= labels.items()


def test_a_held_service_runs_no_migration():
    # as shipped every service is held: its ExternalSecret cannot sync, so a Job's pod could never start
    cap = plan(STACK)
    assert not cap.of_type(JOB)
    assert all(r.inputs["spec"]["replicas"] == 0 for r in cap.of_type(DEPLOYMENT))


def test_web_pods_outlast_their_targets_draining(eks):
    catalog = load_catalog()
    groups = {r.name: r.inputs for r in eks.of_type(TARGET_GROUP)}
    seen = 0
    for r in eks.of_type(DEPLOYMENT):
        key = (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"])
        spec = catalog[key[0].removesuffix("-staging")].services[key[1]]
        pod = r.inputs["spec"]["template"]["spec"]
        container = pod["containers"][0]
        group = groups.get(f"{key[0].removesuffix('-staging')}-{key[1]}-tg")
        if group is None:
            assert "lifecycle" not in container
            continue
        delay = int(group["deregistrationDelay"])
        assert delay == spec.shutdown_seconds  # as the ECS target group
        # the kubelet's own sleep: no shell or sleep binary needed in the read-only image
        assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": delay}}}
        assert pod["terminationGracePeriodSeconds"] > delay + spec.shutdown_seconds
        seen += 1
    assert seen == 6
    for job in eks.of_type(JOB):
        assert "lifecycle" not in job.inputs["spec"]["template"]["spec"]["containers"][0]


def test_namespaces_behind_the_alb_inject_readiness_gates(eks, project):
    gate = "elbv2.k8s.aws/pod-readiness-gate-inject"
    namespaces = eks.of_type("kubernetes:core/v1:Namespace")
    assert len(namespaces) == 5 and all(ns.inputs["metadata"]["labels"][gate] == "enabled" for ns in namespaces)

    def nginx(c):
        c["platform:kubernetes"]["ingress_class"] = "nginx"
        c.pop("platform:certificate_arn")  # nginx serves the Secret <service>-tls instead
        c["platform:systems"] = {"darwin": c["platform:systems"]["darwin"]}

    cap = plan("test", project(STACK, released(nginx)))
    assert gate not in cap.one("kubernetes:core/v1:Namespace").inputs["metadata"]["labels"]  # the webhook is the ALB controller's
    ingress = cap.one(INGRESS).inputs
    assert ingress["spec"]["tls"] == [{"hosts": [hostname("darwin", "app")], "secretName": "app-tls"}]
    assert not any(k.startswith("alb.ingress.kubernetes.io/") for k in ingress["metadata"].get("annotations") or {})


def test_data_stores_admit_the_cluster_and_no_ecs_is_declared(eks):
    rules = [r for r in eks.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule") if r.name.endswith("-from-cluster")]
    stores = [(s, kind) for s, system in load_catalog().items() for kind in ("db", "cache") if getattr(system, "postgres" if kind == "db" else "redis")]
    assert sorted(r.name for r in rules) == sorted(f"{s}-{kind}-from-cluster" for s, kind in stores)  # every database and cache
    assert {r.inputs["referencedSecurityGroupId"] for r in rules} == {CLUSTER_GROUP}
    assert not [r for r in eks.resources if r.type.startswith("aws:ecs/")]
    assert len(eks.of_type("aws:rds/instance:Instance")) == sum(kind == "db" for _, kind in stores)
    assert len(eks.of_type("aws:elasticache/replicationGroup:ReplicationGroup")) == sum(kind == "cache" for _, kind in stores)


def test_otel_points_at_the_configured_collector(eks):
    env = {e["name"]: e for e in deployment(eks, "offerhub-staging", "api").inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == "http://$(HOST_IP):4318"
    assert env["HOST_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.hostIP"
    names = [e["name"] for e in deployment(eks, "offerhub-staging", "api").inputs["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert names.index("HOST_IP") < names.index("OTEL_EXPORTER_OTLP_ENDPOINT")  # referenced variables come first
    assert env["PUBLIC_BASE_URL"]["value"] == "https://offerhub-api.k8s.staging.example.com"


def test_offline_plan_lists_every_workload(capsys):
    assert plan_cli.main(["--stack", STACK]) == 0
    out = capsys.readouterr().out
    section = out.split("kubernetes workloads", 1)[1].split("estimated monthly cost", 1)[0]
    for ns, name in (("twinkle-staging", n) for n in ("indexer", "api", "facilitator", "worker")):
        assert f"namespace {ns}" in section and f"Deployment               {name}" in section
    # as shipped every service is held (external secrets without values): no migration Job can finish yet
    assert section.count("Deployment ") == 10 and section.count("Job ") == 0 and section.count("TargetGroupBinding ") == 6


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("mutate", "key", "words"),
    [
        (lambda c: c.pop("platform:kubernetes"), "platform:kubernetes", "required with 'compute: kubernetes'"),
        (lambda c: c["platform:kubernetes"].pop("oidc_provider_arn"), "platform:kubernetes.oidc_provider_arn", "IAM role for its service account"),
        (lambda c: c["platform:network"].pop("existing"), "platform:network.existing", "the cluster's VPC"),
        (lambda c: c["platform:kubernetes"].update(kubeconfig="config"), "kubernetes:kubeconfig", "pulumi config set --secret kubernetes:kubeconfig"),
        (lambda c: c["platform:kubernetes"].update(ingress_class="ALB!"), "platform:kubernetes.ingress_class", "pattern"),
        (lambda c: c["platform:kubernetes"].pop("cluster_security_group_id"), "platform:kubernetes.cluster_security_group_id", "required"),
        (lambda c: c["platform:kubernetes"].update(cluster_security_group_id="eks-nodes"), "platform:kubernetes.cluster_security_group_id", "pattern"),
    ],
    ids=["no cluster block", "no OIDC provider", "no existing VPC", "kubeconfig secret missing", "bad ingress class", "no pod group", "pod group not an id"],
)
def test_kubernetes_mistakes_name_the_key(project, mutate, key, words):
    def change(c):
        c["platform:preset"] = "staging"
        mutate(c)

    with pytest.raises(ConfigError) as info:
        load_platform("test", project(STACK, change))
    assert any(p.key == key and words in p.message for p in info.value.problems), [str(p) for p in info.value.problems]


def test_domain_rules_on_kubernetes_are_the_ecs_ones_behind_the_platform_alb(project):
    # the program's ALB serves the hosts: a zone (certificates and alias records) or an issued certificate
    def change(mutate):
        def inner(c):
            c["platform:preset"] = "staging"
            mutate(c)

        return inner

    def problems(mutate):
        with pytest.raises(ConfigError) as info:
            load_platform("test", project(STACK, change(mutate)))
        assert all("Pulumi.test.yaml" in p.file for p in info.value.problems)  # the file, or a hint naming it
        return {p.key: p.message for p in info.value.problems}

    load_platform("test", project(STACK, change(lambda c: c.update({"platform:hosted_zone_id": "Z0123456789ABCDEFGHIJ"}))))

    def zone_instead(c):
        c["platform:hosted_zone_id"] = "Z0123456789ABCDEFGHIJ"
        c.pop("platform:certificate_arn")

    cap = plan("test", project(STACK, change(zone_instead)))
    records = {r.inputs["name"] for r in cap.of_type("aws:route53/record:Record") if r.inputs["type"] == "A"}
    assert hostname("darwin", "app") in records and len(records) == 6  # one alias per web host, as on ECS

    neither = problems(lambda c: c.pop("platform:certificate_arn"))
    assert set(neither) == {"platform:domain"} and "certificate" in neither["platform:domain"]

    def deep_host(c):
        c["platform:systems"]["darwin"]["hostnames"] = {"app": "app.darwin"}

    assert "one label only" in problems(deep_host)["platform:certificate_arn"]

    def nginx(mutate):
        def inner(c):
            c["platform:kubernetes"]["ingress_class"] = "nginx"
            mutate(c)

        return inner

    assert "only applies with 'kubernetes.ingress_class: alb'" in problems(nginx(lambda c: None))["platform:certificate_arn"]
    zone = problems(nginx(lambda c: (c.pop("platform:certificate_arn"), c.update({"platform:hosted_zone_id": "Z0123456789ABCDEFGHIJ"}))))
    assert set(zone) == {"platform:hosted_zone_id"} and "external-dns" in zone["platform:hosted_zone_id"]

    # without a domain: HTTP on the load balancer's name, nothing to certify; the staging preset wants that acknowledged
    def plain_http(c):
        c.pop("platform:domain")
        c.pop("platform:certificate_arn")
        c.setdefault("platform:overrides", {}).setdefault("edge", {})["acknowledge_plain_http"] = True

    assert set(problems(lambda c: (c.pop("platform:domain"), c.pop("platform:certificate_arn")))) == {"platform:domain"}
    load_platform("test", project(STACK, change(plain_http)))


def test_kubernetes_block_on_an_ecs_stack_is_refused(project):
    with pytest.raises(ConfigError) as info:
        load_platform("test", project("dev", lambda c: c.update({"platform:kubernetes": {"cluster_security_group_id": "sg-0123456789abcdef0"}})))
    assert any(p.key == "platform:kubernetes" and "only applies with 'compute: kubernetes'" in p.message for p in info.value.problems)


def test_provider_takes_the_context_and_an_encrypted_kubeconfig(eks, project):
    provider = next(r for r in eks.resources if r.type == "pulumi:providers:kubernetes")
    assert provider.inputs == {"context": "platform-staging"}  # KUBECONFIG from the environment

    def from_config(c):
        c["platform:preset"] = "staging"
        c["platform:kubernetes"]["kubeconfig"] = "config"
        c["kubernetes:kubeconfig"] = {"secure": "v1:abcdef"}
        c["platform:systems"] = {"darwin": c["platform:systems"]["darwin"]}

    cap = plan("test", project(STACK, from_config))
    provider = next(r for r in cap.resources if r.type == "pulumi:providers:kubernetes")
    assert provider.inputs["kubeconfig"] == "[secret]"
    # every object goes to that cluster, none to an ambient default provider
    assert {r.options["provider"] for r in kube_objects(cap)} == {provider.urn}
