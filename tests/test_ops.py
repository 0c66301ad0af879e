"""python -m tools.ops: day-2 commands over a stack's outputs and AWS.

AWS is moto (``mock_aws``) with the network cut off: ECS services, tasks and task definitions,
CloudWatch Logs, ELBv2 target health, CloudWatch alarms, RDS, Secrets Manager and Application Auto
Scaling are served by it. What moto does not model is set on its objects directly (a service's
capacity provider strategy and ECS Exec flag, its deployments, a task's image digest, runtime id and
ECS Exec agent). Moto 5.2.5's Fargate RunTask reads ``NetworkInterface.private_dns_name``, which its ENI
model lacks: the ``aws`` fixture gives it one. The calls that hand the terminal to the AWS CLI
(ECS ExecuteCommand, SSM StartSession) are checked against botocore's service model instead, as the
RunTask request is too (tools/awsshapes.py).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import socket
import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
import yaml
from moto import mock_aws
from moto.ec2.models.elastic_network_interfaces import NetworkInterface
from moto.ecs.models import ecs_backends
from moto.elbv2.models import FakeHealthStatus, elbv2_backends
from moto.moto_api import state_manager

from tests.conftest import ROOT
from tests.test_delivery import _actions, lint
from tools import ops
from tools.awsshapes import check
from tools.ops import logs as logs_
from tools.ops import pause as pause_
from tools.ops import stack as stack_
from tools.ops import status as status_
from tools.ops import tasks as tasks_

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's
CLUSTER = "platform-dev"
D = {c: "sha256:" + c * 64 for c in "abc"}
REPO = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
NAMES = {
    "starkdca-api": "starkdca-api-service-5007602",
    "starkdca-worker": "starkdca-worker-service-046d4d6",
    "twinkle-indexer": "twinkle-indexer-service-77ab1c2",
}
SECRET_VALUE = "Zq8vN3kLr2Tx7Wm1Pd4Hs9Gb6Yc5Fe0J"
POLICY = ROOT / "docs" / "iam" / "operator" / "operator-permissions.json"
CALLS: set[tuple[str, str]] = set()
"""(IAM prefix, operation) of every AWS call the tool made in these tests."""
IAM_PREFIX = {"monitoring": "cloudwatch"}  # CloudWatch's endpoint and signing name differ from its IAM prefix


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test here reaches the network: a connection to anything but this machine fails."""
    real = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"the network is cut off in these tests: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")


# ---------------------------------------------------------------------- the world in moto


@dataclass
class Io:
    """What the tool prints and runs; ``sleep`` advances a clock and runs the test's hooks."""

    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)
    runs: list[list[str]] = field(default_factory=list)
    tools: tuple[str, ...] = ("aws", "session-manager-plugin")
    hooks: list = field(default_factory=list)
    now: float = 0.0
    progress: io.StringIO = field(default_factory=io.StringIO)

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.hooks:
            self.hooks.pop(0)()

    def io(self) -> stack_.Io:
        def run(command, **kwargs):
            self.runs.append(command)
            return subprocess.CompletedProcess(command, 0, "", "")

        def call(argv):
            self.calls.append(argv)
            return 0

        return stack_.Io(
            out=self.out.append,
            err=self.err.append,
            call=call,
            run=run,
            which=lambda name: f"/usr/bin/{name}" if name in self.tools else None,
            sleep=self.sleep,
            clock=lambda: self.now,
            progress_stream=self.progress,
        )

    @property
    def text(self) -> str:
        return "\n".join(self.out + self.err) + self.progress.getvalue()


def recording_client(service: str, region: str):
    """The tool's boto3 clients; each call is noted in CALLS (for the IAM policy test)."""
    client = boto3.session.Session().client(service, region_name=region)

    def note(model, **_):
        prefix = client.meta.service_model.signing_name or client.meta.service_model.endpoint_prefix
        CALLS.add((IAM_PREFIX.get(prefix, prefix), model.name))

    client.meta.events.register("before-call", note)
    return client


class World:
    """Two systems as the program deploys them: starkdca (api behind the load balancer, runs the
    migration; worker, autoscaled) and twinkle (indexer, a singleton), in cluster platform-dev."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        s = boto3.session.Session(region_name=REGION)
        self.ec2, self.ecs, self.logs = s.client("ec2"), s.client("ecs"), s.client("logs")
        self.elbv2, self.cloudwatch, self.rds = s.client("elbv2"), s.client("cloudwatch"), s.client("rds")
        self.secrets, self.aas = s.client("secretsmanager"), s.client("application-autoscaling")
        vpc = self.ec2.create_vpc(CidrBlock="10.10.0.0/16")["Vpc"]["VpcId"]
        self.subnets = [self.ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.10.{i}.0/24")["Subnet"]["SubnetId"] for i in (1, 2)]
        self.groups = {key: self.ec2.create_security_group(GroupName=f"{key}-sg", Description=f"{key} tasks", VpcId=vpc)["GroupId"] for key in NAMES}
        self.ecs.create_cluster(clusterName=CLUSTER)
        self.secret = self.secrets.create_secret(Name="dev/starkdca/DATABASE_URL", SecretString=f"postgresql://app:{SECRET_VALUE}@db:5432/starkdca")["ARN"]
        db = self.rds.create_db_instance(
            DBInstanceIdentifier="starkdca-dev",
            Engine="postgres",
            DBInstanceClass="db.t4g.micro",
            MasterUsername="app",
            MasterUserPassword=SECRET_VALUE,
            DBName="starkdca",
            AllocatedStorage=20,
        )["DBInstance"]
        self.db_host = db["Endpoint"]["Address"]
        self.target_group = self.elbv2.create_target_group(Name="starkdca-api-tg", Protocol="HTTP", Port=3000, VpcId=vpc, TargetType="ip")["TargetGroups"][0][
            "TargetGroupArn"
        ]
        self.topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:alarms-7d1e2f3"
        self.registered: dict[str, str] = {}
        for key, containers in (("starkdca-api", ("api", "migrate", "otel-collector")), ("starkdca-worker", ("worker",)), ("twinkle-indexer", ("indexer",))):
            self.registered[key] = self.register(key, containers)
            self.logs.create_log_group(logGroupName=self.group(key))
        self.service("starkdca-api", 2, web=True)
        self.service("starkdca-worker", 2)
        self.service("twinkle-indexer", 1)
        self.aas.register_scalable_target(
            ServiceNamespace="ecs",
            ResourceId=f"service/{CLUSTER}/{NAMES['starkdca-worker']}",
            ScalableDimension="ecs:service:DesiredCount",
            MinCapacity=2,
            MaxCapacity=4,
        )
        self.tasks = {key: [self.start(key) for _ in range(n)] for key, n in (("starkdca-api", 2), ("starkdca-worker", 2), ("twinkle-indexer", 1))}
        for arn in self.tasks["starkdca-api"]:
            ip = self.ecs.describe_tasks(cluster=CLUSTER, tasks=[arn])["tasks"][0]["attachments"][0]["details"][-1]["value"]
            self.elbv2.register_targets(TargetGroupArn=self.target_group, Targets=[{"Id": ip, "Port": 3000}])
        self.alarm("twinkle-indexer-not-running-5c6d7e8", "twinkle-indexer: the singleton is not running")
        self.alarm("starkdca-worker-memory-1a2b3c4", "starkdca-worker: memory", state="OK")
        self.alarm("starkdca-api-5xx-rate-9f8e7d6", "starkdca-api: 5xx above 5 % of requests", state="OK")
        self.alarm("offerhub-api-5xx-rate-0a1b2c3", "another stack's alarm", topic=f"arn:aws:sns:{REGION}:{ACCOUNT}:other-stack")
        self.outputs = {
            "environment": "dev",
            "cluster_name": CLUSTER,
            "service_names": NAMES,
            "task_definitions": dict(self.registered),
            "image_digests": {"starkdca": {"backend": D["a"]}, "twinkle": {"indexer": D["b"]}},
            "databases": {"starkdca": self.db_host},
            "alarm_topic_arn": self.topic,
            "held_services": {},
        }

    # -------------------------------------------------------------- building it

    @staticmethod
    def split(key: str) -> tuple[str, str]:
        system, service = key.split("-", 1)
        return system, service

    def group(self, key: str) -> str:
        system, service = self.split(key)
        return f"/platform/dev/{system}/{service}"

    def register(self, key: str, containers: tuple[str, ...], image: str = D["a"]) -> str:
        """The task definition as components/service.py writes it; the app container first (moto runs the first one only)."""
        system, service = self.split(key)

        def container(name: str) -> dict:
            options = {"awslogs-group": self.group(key), "awslogs-region": REGION, "awslogs-stream-prefix": name, "mode": "non-blocking"}
            c = {"name": name, "image": f"{REPO}/{system}/{service}@{image}", "essential": name == service, "memory": 512}
            c["logConfiguration"] = {"logDriver": "awslogs", "options": options}
            if system == "starkdca" and name in (service, "migrate"):
                c["secrets"] = [{"name": "DATABASE_URL", "valueFrom": self.secret}]
            return c

        return self.ecs.register_task_definition(
            family=f"dev-{key}",
            networkMode="awsvpc",
            requiresCompatibilities=["FARGATE"],
            cpu="256",
            memory="512",
            containerDefinitions=[container(n) for n in containers],
        )["taskDefinition"]["taskDefinitionArn"]

    def service(self, key: str, count: int, web: bool = False) -> None:
        _, service = self.split(key)
        self.ecs.create_service(
            cluster=CLUSTER,
            serviceName=NAMES[key],
            taskDefinition=self.registered[key],
            desiredCount=count,
            networkConfiguration={"awsvpcConfiguration": {"subnets": self.subnets, "securityGroups": [self.groups[key]], "assignPublicIp": "DISABLED"}},
            loadBalancers=[{"targetGroupArn": self.target_group, "containerName": service, "containerPort": 3000}] if web else [],
        )
        model = self.model(key)
        model.enable_execute_command = True
        model.capacity_provider_strategy = [{"capacityProvider": "FARGATE_SPOT", "weight": 1}]
        model.launch_type = None
        model.platform_version = "LATEST"
        model.running_count, model.pending_count = count, 0
        model.deployments = [self.deployment(self.registered[key], "COMPLETED", count)]

    @staticmethod
    def deployment(arn: str, rollout: str, count: int, status: str = "PRIMARY", reason: str = "") -> dict:
        at = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
        return {
            "id": f"ecs-svc/{abs(hash((arn, status))) % 10**12}",
            "status": status,
            "taskDefinition": arn,
            "desiredCount": count,
            "pendingCount": 0,
            "runningCount": count if rollout != "FAILED" else 0,
            "failedTasks": 3 if rollout == "FAILED" else 0,
            "createdAt": at,
            "updatedAt": at,
            "rolloutState": rollout,
            "rolloutStateReason": reason or f"ECS deployment {rollout.lower()}.",
        }

    def model(self, key: str):
        return ecs_backends[ACCOUNT][REGION].services[f"{CLUSTER}:{NAMES[key]}"]

    def task_model(self, arn: str):
        return ecs_backends[ACCOUNT][REGION].tasks[CLUSTER][arn]

    def start(self, key: str, digest: str = D["a"], agent: bool = True) -> str:
        """A task of the service, as ECS starts it (group ``service:<name>``)."""
        task = self.ecs.run_task(
            cluster=CLUSTER,
            taskDefinition=self.model(key).task_definition,
            group=f"service:{NAMES[key]}",
            startedBy="ecs-svc/1234567890",
            launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": {"subnets": self.subnets, "securityGroups": [self.groups[key]]}},
        )["tasks"][0]
        container = self.task_model(task["taskArn"]).containers[0]
        container.image_digest = digest
        container.runtime_id = f"{task['taskArn'].rsplit('/', 1)[-1]}-1234567890"
        container.last_status = "RUNNING"
        container.managed_agents = [{"name": "ExecuteCommandAgent", "lastStatus": "RUNNING" if agent else "PENDING"}]
        return task["taskArn"]

    def alarm(self, name: str, description: str, state: str = "ALARM", topic: str | None = None) -> None:
        topic = topic or self.topic
        self.cloudwatch.put_metric_alarm(
            AlarmName=name,
            AlarmDescription=description,
            Namespace="ECS/ContainerInsights",
            MetricName="RunningTaskCount",
            Statistic="Minimum",
            Period=60,
            EvaluationPeriods=3,
            Threshold=1,
            ComparisonOperator="LessThanThreshold",
            AlarmActions=[topic],
            OKActions=[topic],
        )
        self.cloudwatch.set_alarm_state(AlarmName=name, StateValue=state, StateReason=f"Threshold Crossed: {description}")

    def put_logs(self, stream: str, group: str, *lines: tuple[int, str]) -> None:
        try:
            self.logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except self.logs.exceptions.ResourceAlreadyExistsException:
            pass
        self.logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=[{"timestamp": ts, "message": m} for ts, m in lines])

    # -------------------------------------------------------------- running the tool

    def outputs_file(self) -> str:
        path = self.tmp / "outputs.json"
        path.write_text(json.dumps(self.outputs))
        return str(path)

    def stack(self, name: str | None = "dev") -> stack_.Stack:
        return stack_.Stack(name, self.outputs, REGION, lambda service: recording_client(service, REGION))

    def main(self, *argv: str, io_: Io | None = None, outputs: str | None = None) -> tuple[int, Io]:
        """``python -m tools.ops ARGV --outputs <this world's outputs>``."""
        io_ = io_ or Io()
        cut = argv.index("--") if "--" in argv else len(argv)
        argv = (*argv[:cut], "--outputs", outputs or self.outputs_file(), *argv[cut:])
        return ops.main(list(argv), io_.io(), recording_client), io_


@pytest.fixture
def aws(tmp_path):
    NetworkInterface.private_dns_name = property(lambda eni: f"ip-{eni.private_ip_address.replace('.', '-')}.ec2.internal")
    with mock_aws():
        state_manager.set_transition("ecs::task", {"progression": "manual", "times": 10**6})  # tasks keep running
        try:
            yield World(tmp_path)
        finally:
            state_manager.unset_transition("ecs::task")
    del NetworkInterface.private_dns_name


# ---------------------------------------------------------------------- the stack and its names


def test_a_target_is_system_slash_service_and_a_typo_gets_a_suggestion(aws):
    stack = aws.stack()
    assert stack.target("starkdca/worker") == stack_.Target("starkdca", "worker", NAMES["starkdca-worker"], aws.registered["starkdca-worker"])
    assert stack.target("starkdca-worker").key == "starkdca-worker"
    with pytest.raises(stack_.OpsError, match="did you mean starkdca/worker"):
        stack.target("starkdca/wroker")


def test_region_comes_from_the_task_definition_arns_and_kubernetes_stacks_are_told_to_use_kubectl(aws, tmp_path):
    outputs = aws.outputs_file()
    stack = stack_.load(None, outputs, None, lambda s, r: None, lambda: None)
    assert stack.region == REGION and stack.cluster == CLUSTER
    eks = tmp_path / "eks.json"
    eks.write_text(json.dumps({"environment": "staging", "namespaces": {"twinkle": "twinkle"}, "deployments": {}}))
    code, io_ = aws.main("status", outputs=str(eks))
    assert code == 2 and "runs on Kubernetes" in io_.text and "kubectl" in io_.text


# ---------------------------------------------------------------------- status


def test_status_shows_tasks_rollout_image_and_targets_of_each_service_and_the_stacks_open_alarms(aws):
    code, io_ = aws.main("status")
    screen = "\n".join(io_.out)
    rows = {line.split()[0]: line for line in screen.splitlines()[3:6]}
    assert rows["starkdca-api"].split()[1:6] == ["2/2", "COMPLETED", "r1", D["a"][:19], "2/2"]
    assert rows["starkdca-worker"].split()[1:4] == ["2/2", "COMPLETED", "r1"] and rows["twinkle-indexer"].split()[1] == "1/1"
    # the open alarm of this stack, not the other stack's (its actions notify another topic), not the OK ones
    assert "open alarms: 1" in screen and "twinkle-indexer-not-running-5c6d7e8  twinkle-indexer" in screen
    assert "offerhub" not in screen and "starkdca-worker-memory" not in screen
    assert code == 1  # an open alarm needs attention

    code, io_ = aws.main("status", "--json")
    report = json.loads("\n".join(io_.out))
    api = next(s for s in report["services"] if s["key"] == "starkdca-api")
    assert api["images"] == {D["a"]: 2} and api["targets"]["healthy"] == 2 and api["deployment"]["state"] == "COMPLETED"
    assert [p["key"] for p in report["problems"]] == ["twinkle-indexer"] and report["one_off_tasks"] == []


def test_status_is_clean_when_nothing_needs_attention(aws):
    aws.cloudwatch.set_alarm_state(AlarmName="twinkle-indexer-not-running-5c6d7e8", StateValue="OK", StateReason="back")
    code, io_ = aws.main("status")
    assert code == 0 and "open alarms: none" in io_.out[0] and "needs attention" not in io_.out[0]


def test_status_calls_a_circuit_breaker_rollback_rolled_back_although_ecs_says_completed(aws):
    new = aws.register("starkdca-worker", ("worker",), image=D["c"])
    aws.outputs["task_definitions"]["starkdca-worker"] = new  # what the last pulumi up registered
    model = aws.model("starkdca-worker")
    model.deployments = [aws.deployment(aws.registered["starkdca-worker"], "COMPLETED", 2)]  # the failed one drained
    model.events = [
        {"id": "e1", "createdAt": dt.datetime(2026, 12, 1, 20, 5, tzinfo=dt.UTC), "message": "(service x) rolling back to deployment ecs-svc/1."},
        {"id": "e2", "createdAt": dt.datetime(2026, 12, 1, 20, 4, tzinfo=dt.UTC), "message": "(service x) deployment failed: tasks failed to start."},
    ]
    code, io_ = aws.main("status")
    screen = io_.out[0]
    assert "starkdca-worker  2/2    ROLLED BACK r1" in screen
    assert "starkdca-worker: rolled back: primary deployment runs dev-starkdca-worker:1, not dev-starkdca-worker:2" in screen
    assert "rolling back to deployment" in screen and code == 1
    # while the failed deployment is still there and the old revision is coming back: rolling back
    model.deployments = [
        aws.deployment(aws.registered["starkdca-worker"], "IN_PROGRESS", 2),
        aws.deployment(new, "FAILED", 2, status="ACTIVE", reason="ECS deployment circuit breaker: tasks failed to start."),
    ]
    model.events = []
    assert status_.rollout(aws.stack().target("starkdca/worker"), aws.stack().service(aws.stack().target("starkdca/worker")))[0] == "ROLLING_BACK"


def test_status_flags_unhealthy_targets_and_mixed_images(aws):
    def unhealthy(target, ec2_backend):
        return FakeHealthStatus(target["Id"], target["Port"], None, "unhealthy", "Target.ResponseCodeMismatch", "Health checks failed with these codes: [502]")

    elbv2_backends[ACCOUNT][REGION].target_groups[aws.target_group].health_for = unhealthy
    aws.task_model(aws.tasks["starkdca-worker"][0]).containers[0].image_digest = D["b"]
    _, io_ = aws.main("status", "--json")
    problems = {p["key"]: p["problems"] for p in json.loads(io_.out[0])["problems"]}
    assert problems["starkdca-api"][0].startswith("0/2 targets healthy: ") and "unhealthy (Target.ResponseCodeMismatch)" in problems["starkdca-api"][0]
    assert problems["starkdca-worker"] == ["tasks run 2 different images"]


def test_status_shows_held_and_paused_services_and_one_off_tasks(aws, tmp_path, monkeypatch):
    aws.outputs["held_services"] = {"starkdca-worker": ["secrets.starkdca.RPC_URL"]}
    stack_file = tmp_path / "Pulumi.dev.yaml"
    stack_file.write_text(yaml.safe_dump({"config": {"platform:systems": {"twinkle": {"images": {"indexer": "1.0.0"}, "paused": {"indexer": 1}}}}}))
    monkeypatch.setattr(pause_, "PROJECT_DIR", tmp_path)
    stack = aws.stack()
    service = stack.service(stack.target("starkdca/api"))
    tasks_.start(stack, tasks_.run_task_request(stack, stack.target("starkdca/api"), service, ["node", "backfill.js"]))
    report = status_.collect(stack, pause_.paused_in_file("dev", tmp_path))
    screen = status_.render(report)
    assert "held: secrets.starkdca.RPC_URL" in screen and "paused (resume: 1 tasks)" in screen
    assert "one-off tasks running (tools.ops):" in screen and "tools.ops:starkdca-api  RUNNING" in screen
    assert f"stop: aws ecs stop-task --region {REGION} --cluster {CLUSTER} --task " in screen


# ---------------------------------------------------------------------- logs


def test_logs_come_from_the_task_definitions_log_configuration_newest_last(aws):
    now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
    group = aws.group("starkdca-api")
    aws.put_logs("api/api/0a1b2c3d4e5f", group, (now - 3000, "listening on 3000"), (now - 1000, "GET /health 200"))
    aws.put_logs("migrate/migrate/0a1b2c3d4e5f", group, (now - 5000, "No pending migrations to apply."))
    aws.put_logs("otel-collector/otel-collector/0a1b2c3d4e5f", group, (now - 4000, "Everything is ready."))
    aws.put_logs("api/api/99", group, (now - 7200_000, "too old"))
    _, io_ = aws.main("logs", "starkdca/api", "--since", "1h")
    assert [line.split("  ", 1)[1] for line in io_.out] == ["No pending migrations to apply.", "Everything is ready.", "listening on 3000", "GET /health 200"]
    assert io_.out[0].split()[1] == "migrate/0a1b2c3d"
    _, io_ = aws.main("logs", "starkdca/api", "--container", "app")
    assert [line.split("  ", 1)[1] for line in io_.out] == ["listening on 3000", "GET /health 200"]
    code, io_ = aws.main("logs", "starkdca/api", "--container", "nginx")
    assert code == 2 and "these do: app (api), migrate, otel-collector" in io_.text


def test_follow_polls_from_the_newest_event_a_little_back_and_prints_each_event_once(aws):
    group, stream = aws.group("starkdca-worker"), "worker/worker/5e6f"
    t = int(dt.datetime.now(dt.UTC).timestamp() * 1000) - 60_000  # CloudWatch takes no event older than 14 days
    aws.put_logs(stream, group, (t, "one"), (t + 1000, "two"))
    tail = logs_.Tail(recording_client("logs", REGION), group, t - 60_000, prefix="worker/")
    assert [e["message"] for e in tail.poll()] == ["one", "two"]
    aws.put_logs(stream, group, (t + 500, "late, out of order"), (t + 2000, "three"))
    assert [e["message"] for e in tail.poll()] == ["late, out of order", "three"]
    assert tail.poll() == [] and tail.start == t + 2000 - logs_.LOOKBACK_MS

    printed, sleeps = [], []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 1:
            aws.put_logs(stream, group, (t + 3000, "four"))
        else:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        logs_.tail(tail, follow=True, out=printed.append, sleep=sleep)
    assert [p.split("  ", 1)[1] for p in printed] == ["four"] and sleeps == [logs_.POLL_SECONDS] * 2


def test_since_takes_a_duration_or_a_time():
    now = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
    assert logs_.since_ms("90s", now) == int((now - dt.timedelta(seconds=90)).timestamp() * 1000)
    assert logs_.since_ms("2d", now) == int((now - dt.timedelta(days=2)).timestamp() * 1000)
    assert logs_.since_ms("2026-12-01T19:00:00Z", now) == int(dt.datetime(2026, 12, 1, 19, tzinfo=dt.UTC).timestamp() * 1000)
    with pytest.raises(stack_.OpsError, match="give a duration"):
        logs_.since_ms("yesterday", now)


def test_the_tool_finds_the_logs_of_every_service_the_program_declares(plans):
    """The contract with components/service.py: each container logs to /platform/<env>/<system>/<service>
    under the prefix the tool reads, and the app container is named after the service."""
    for td in plans["dev"].of_type("aws:ecs/taskDefinition:TaskDefinition"):
        key = td.name.removesuffix("-task")
        system, service = key.split("-", 1)
        definition = {"containerDefinitions": json.loads(td.inputs["containerDefinitions"])}
        streams = stack_.log_streams(definition)
        assert {group for group, _ in streams.values()} == {f"/platform/dev/{system}/{service}"}
        assert service in streams and all(prefix == f"{name}/{name}/" for name, (_, prefix) in streams.items())
        assert logs_.containers(definition, streams, service, "app") == (f"/platform/dev/{system}/{service}", f"{service}/{service}/")


# ---------------------------------------------------------------------- run


def test_the_run_task_request_is_the_services_network_and_capacity_and_valid_for_the_api(aws):
    stack = aws.stack()
    target = stack.target("starkdca/api")
    request = tasks_.run_task_request(stack, target, stack.service(target), ["node", "dist/scripts/backfill.js", "--since", "2026-11-01"])
    assert check("ecs", "RunTask", request) == []
    assert request["networkConfiguration"] == {
        "awsvpcConfiguration": {"subnets": aws.subnets, "securityGroups": [aws.groups["starkdca-api"]], "assignPublicIp": "DISABLED"}
    }
    assert request["capacityProviderStrategy"] == [{"capacityProvider": "FARGATE_SPOT", "weight": 1}] and "launchType" not in request
    assert request["taskDefinition"] == aws.registered["starkdca-api"] and request["startedBy"] == "tools.ops"
    assert request["overrides"] == {"containerOverrides": [{"name": "api", "command": ["node", "dist/scripts/backfill.js", "--since", "2026-11-01"]}]}
    assert request["enableExecuteCommand"] is False
    # a service on a launch type instead of a strategy
    service = {**stack.service(target), "capacityProviderStrategy": [], "launchType": "FARGATE"}
    assert tasks_.run_task_request(stack, target, service, ["true"])["launchType"] == "FARGATE"


def test_run_streams_the_tasks_logs_waits_with_progress_and_exits_with_its_status(aws):
    state_manager.set_transition("ecs::task", {"progression": "manual", "times": 2})
    io_ = Io()

    def first_lines():
        [arn] = [a for a in aws.ecs.list_tasks(cluster=CLUSTER)["taskArns"] if aws.task_model(a).started_by == "tools.ops"]
        aws.task_model(arn).containers[0].exitCode = 3
        tid = arn.rsplit("/", 1)[-1]
        now = int(dt.datetime.now(dt.UTC).timestamp() * 1000)
        aws.put_logs(f"migrate/migrate/{tid}", aws.group("starkdca-api"), (now, "All migrations have been successfully applied."))
        aws.put_logs(f"api/api/{tid}", aws.group("starkdca-api"), (now + 1, "backfilled 120 plans"), (now + 2, "Error: RPC timeout"))
        aws.put_logs(f"api/api/{aws.tasks['starkdca-api'][0].rsplit('/', 1)[-1]}", aws.group("starkdca-api"), (now, "the service's own task"))

    io_.hooks.append(first_lines)
    code, io_ = aws.main("run", "starkdca/api", "--", "node", "dist/scripts/backfill.js", io_=io_)
    assert code == 3
    assert [line.split("  ", 1)[1] for line in io_.out] == ["All migrations have been successfully applied.", "backfilled 120 plans", "Error: RPC timeout"]
    assert io_.err[0].startswith("started task ") and "(dev-starkdca-api:1) in platform-dev: node dist/scripts/backfill.js" in io_.err[0]
    assert io_.err[-1].endswith("stopped: api exited 3")
    progress = io_.progress.getvalue()  # not a terminal: one line per change of state, with the time it took
    assert "RUNNING (0s)" in progress and "STOPPED (" in progress and progress.count("RUNNING") == 1


def test_ctrl_c_during_run_leaves_the_task_running_and_says_how_to_stop_it(aws):
    def interrupt():
        raise KeyboardInterrupt

    io_ = Io(hooks=[interrupt])
    code, io_ = aws.main("run", "starkdca/worker", "--", "node", "sweep.js", io_=io_)
    [arn] = [a for a in aws.ecs.list_tasks(cluster=CLUSTER)["taskArns"] if aws.task_model(a).started_by == "tools.ops"]
    assert code == 130 and aws.task_model(arn).desired_status == "RUNNING"
    assert "keeps running (Ctrl-C never stops it)" in io_.text
    assert f"stop: aws ecs stop-task --region {REGION} --cluster {CLUSTER} --task {arn.rsplit('/', 1)[-1]}" in io_.text
    assert "logs: python -m tools.ops logs starkdca/worker --follow" in io_.text

    code, io_ = aws.main("run", "--stop-on-interrupt", "starkdca/worker", "--", "node", "sweep.js", io_=Io(hooks=[interrupt]))
    [stopped] = [a for a in aws.ecs.list_tasks(cluster=CLUSTER)["taskArns"] if aws.task_model(a).started_by == "tools.ops" and a != arn]
    assert code == 130 and aws.task_model(stopped).desired_status == "STOPPED" and "stopped task" in io_.text


def test_run_without_a_command_or_with_detach():
    # parse only: no AWS needed
    with pytest.raises(SystemExit):
        ops.parse(["db", "starkdca", "--", "ls"])
    assert ops.parse(["run", "starkdca/api", "--detach", "--stack", "dev", "--", "node", "-e", "1"]).cmd == ["node", "-e", "1"]


def test_run_detached_prints_the_task_id_and_how_to_follow_and_stop_it(aws):
    code, io_ = aws.main("run", "starkdca/api", "--detach", "--", "node", "x.js")
    assert code == 0 and len(io_.out) == 1 and "stop: aws ecs stop-task" in io_.text and "logs: python -m tools.ops logs starkdca/api --follow" in io_.text
    code, io_ = aws.main("run", "starkdca/api")
    assert code == 2 and "give the command after --" in io_.text


def test_a_failed_migration_is_the_exit_status_of_a_task_whose_app_never_ran():
    task = {
        "stoppedReason": "Essential container in task exited",
        "containers": [{"name": "migrate", "exitCode": 1, "reason": ""}, {"name": "api"}, {"name": "otel-collector", "exitCode": 0}],
    }
    assert tasks_.outcome(task, "api") == (1, "api never ran: container migrate exited 1; task: Essential container in task exited")
    assert tasks_.outcome({"stoppedReason": "CannotPullContainerError: not found", "containers": [{"name": "api"}]}, "api") == (
        1,
        "api never ran: CannotPullContainerError: not found",
    )


# ---------------------------------------------------------------------- exec


def test_exec_hands_the_terminal_to_execute_command_in_a_task_whose_agent_runs(aws):
    first = aws.tasks["starkdca-api"][0]
    aws.task_model(first).containers[0].managed_agents = [{"name": "ExecuteCommandAgent", "lastStatus": "PENDING"}]
    second = aws.tasks["starkdca-api"][1]
    code, io_ = aws.main("exec", "starkdca/api", "--", "sh", "-c", "ls -la /tmp")
    [argv] = io_.calls
    assert code == 0 and argv[:3] == ["aws", "ecs", "execute-command"] and argv[argv.index("--task") + 1] == second
    assert argv[argv.index("--command") + 1] == "sh -c 'ls -la /tmp'" and argv[argv.index("--container") + 1] == "api"
    request = tasks_.execute_command_request(CLUSTER, second, "api", [])
    assert check("ecs", "ExecuteCommand", request) == [] and request["command"] == "/bin/sh"


def test_exec_where_the_stack_turns_it_off_names_the_setting(aws):
    aws.model("starkdca-api").enable_execute_command = False
    code, io_ = aws.main("exec", "starkdca/api")
    assert code == 2 and "compute.exec_enabled" in io_.text and "python -m tools.ops run starkdca/api -- <command>" in io_.text and io_.calls == []


def test_exec_without_the_session_manager_plugin_says_how_to_install_it(aws):
    code, io_ = aws.main("exec", "starkdca/api", io_=Io(tools=("aws",)))
    assert code == 2 and "session-manager-plugin" in io_.text and "brew install --cask session-manager-plugin" in io_.text and io_.calls == []


# ---------------------------------------------------------------------- db


def test_db_forwards_through_a_running_task_and_prints_how_to_connect_never_the_secret(aws):
    code, io_ = aws.main("db", "starkdca")
    assert code == 0
    [argv] = io_.calls
    assert argv[:3] == ["aws", "ssm", "start-session"]
    task = aws.tasks["starkdca-api"][0]
    tid = task.rsplit("/", 1)[-1]
    request = tasks_.port_forward_request(CLUSTER, task, f"{tid}-1234567890", aws.db_host, 5432, 15432, "tools.ops db starkdca")
    assert check("ssm", "StartSession", request) == []
    assert argv[argv.index("--target") + 1] == f"ecs:{CLUSTER}_{tid}_{tid}-1234567890"
    assert json.loads(argv[argv.index("--parameters") + 1]) == {"host": [aws.db_host], "portNumber": ["5432"], "localPortNumber": ["15432"]}
    assert argv[argv.index("--document-name") + 1] == "AWS-StartPortForwardingSessionToRemoteHost"
    text = io_.text
    assert f"aws secretsmanager get-secret-value --region {REGION} --secret-id dev/starkdca/DATABASE_URL --query SecretString --output text" in text
    # the user is DATABASE_URL's (the app role), not the master user: the password is that role's
    assert f"host={aws.db_host} hostaddr=127.0.0.1 port=15432 dbname=starkdca sslmode=verify-full" in text
    assert "user=app" not in text and "PGUSER=" in text
    assert SECRET_VALUE not in text and ("secretsmanager", "GetSecretValue") not in CALLS


def test_db_without_ecs_exec_explains_why_there_is_no_tunnel(aws):
    for key in ("starkdca-api", "starkdca-worker"):
        aws.model(key).enable_execute_command = False
    code, io_ = aws.main("db", "starkdca")
    assert code == 2 and "ECS Exec is off" in io_.text and "compute.exec_enabled" in io_.text and "no bastion" in io_.text
    code, io_ = aws.main("db", "twinkle")
    assert code == 2 and "twinkle has no Postgres" in io_.text


def test_db_start_task_opens_the_tunnel_through_a_short_lived_task_and_stops_it(aws):
    for key in ("starkdca-api", "starkdca-worker"):
        for arn in aws.tasks[key]:
            aws.ecs.stop_task(cluster=CLUSTER, task=arn)
            aws.task_model(arn).status = "STOPPED"
    code, io_ = aws.main("db", "starkdca")
    assert code == 2 and "--start-task" in io_.text

    def agent_up():
        [arn] = [a for a in aws.ecs.list_tasks(cluster=CLUSTER)["taskArns"] if aws.task_model(a).started_by == "tools.ops"]
        container = aws.task_model(arn).containers[0]
        container.runtime_id, container.managed_agents = "rt-1", [{"name": "ExecuteCommandAgent", "lastStatus": "RUNNING"}]

    io_ = Io(hooks=[agent_up])
    code, io_ = aws.main("db", "starkdca", "--start-task", "--local-port", "25432", io_=io_)
    [arn] = [a for a in aws.ecs.list_tasks(cluster=CLUSTER)["taskArns"] if aws.task_model(a).started_by == "tools.ops"]
    model = aws.task_model(arn)
    assert code == 0 and model.overrides["containerOverrides"] == [{"name": "api", "command": ["sleep", "3600"]}]
    assert io_.calls[0][io_.calls[0].index("--target") + 1] == f"ecs:{CLUSTER}_{arn.rsplit('/', 1)[-1]}_rt-1"
    assert model.desired_status == "STOPPED" and io_.err[-1] == f"stopped task {arn.rsplit('/', 1)[-1]}"


# ---------------------------------------------------------------------- pause and resume


def test_pause_records_the_count_in_the_stack_config_then_stops_the_service(aws, tmp_path, monkeypatch):
    monkeypatch.setattr(pause_, "PROJECT_DIR", tmp_path)
    stack = aws.stack()
    target = stack.target("starkdca/worker")
    io_ = Io()
    assert pause_.pause(stack, target, io_.io(), options=pause_.Options(dry_run=True, project_dir=tmp_path)) == 0
    assert io_.runs == [] and aws.model("starkdca-worker").desired_count == 2  # a dry run changes nothing
    assert io_.err[0] == "would: $ pulumi config set --stack dev --path platform:systems.starkdca.paused.worker 2"

    aws.alarm("starkdca-worker-not-running-3e4f5a6", "starkdca-worker: not running")
    io_ = Io()
    assert pause_.pause(stack, target, io_.io(), options=pause_.Options(project_dir=tmp_path)) == 0
    assert io_.runs == [["pulumi", "config", "set", "--stack", "dev", "--path", "platform:systems.starkdca.paused.worker", "2"]]
    assert aws.model("starkdca-worker").desired_count == 0
    [scaling] = aws.aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert scaling["SuspendedState"] == dict.fromkeys(pause_.SCALING, True) and scaling["MinCapacity"] == 2
    alarms = {a["AlarmName"]: a["ActionsEnabled"] for a in aws.cloudwatch.describe_alarms(AlarmNamePrefix="starkdca-")["MetricAlarms"]}
    assert alarms == {"starkdca-worker-not-running-3e4f5a6": False, "starkdca-worker-memory-1a2b3c4": False, "starkdca-api-5xx-rate-9f8e7d6": True}
    assert "Commit Pulumi.dev.yaml" in io_.err[-1]


def test_resume_gives_back_the_recorded_tasks_scaling_and_alarms(aws, tmp_path):
    stack = aws.stack()
    target = stack.target("starkdca/worker")
    (tmp_path / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": {"platform:systems": {"starkdca": {"images": {}, "paused": {"worker": 3}}}}}))
    assert pause_.pause(stack, target, Io().io(), options=pause_.Options(project_dir=tmp_path)) == 0
    io_ = Io()
    assert pause_.pause(stack, target, io_.io(), options=pause_.Options(project_dir=tmp_path)) == 0 and "already paused" in io_.err[0]
    io_ = Io()
    assert pause_.resume(stack, target, io_.io(), options=pause_.Options(project_dir=tmp_path)) == 0
    assert io_.runs == [["pulumi", "config", "rm", "--stack", "dev", "--path", "platform:systems.starkdca.paused.worker"]]
    assert aws.model("starkdca-worker").desired_count == 3
    [scaling] = aws.aas.describe_scalable_targets(ServiceNamespace="ecs")["ScalableTargets"]
    assert scaling["SuspendedState"] == dict.fromkeys(pause_.SCALING, False)
    assert aws.cloudwatch.describe_alarms(AlarmNames=["starkdca-worker-memory-1a2b3c4"])["MetricAlarms"][0]["ActionsEnabled"] is True


def test_pause_refuses_a_web_service_without_yes_and_resume_needs_a_count_it_does_not_know(aws, tmp_path):
    code, io_ = aws.main("pause", "starkdca/api", "--stack", "dev")
    assert code == 2 and "serves traffic behind the load balancer" in io_.text and io_.runs == []
    code, io_ = aws.main("resume", "twinkle/indexer", "--stack", "dev")
    assert code == 2 and "--count N" in io_.text
    code, io_ = aws.main("pause", "twinkle/indexer")
    assert code == 2 and "give --stack" in io_.text


def test_pause_waits_for_the_tasks_to_stop_and_says_so_when_they_do_not(aws, tmp_path):
    stack = aws.stack()
    target = stack.target("twinkle/indexer")
    model = aws.model("twinkle-indexer")

    io_ = Io()
    original = stack.aws("ecs").update_service

    def update_without_stopping(**kwargs):
        original(**kwargs)
        model.running_count = 1  # ECS takes its time to stop the tasks

    stack.aws("ecs").update_service = update_without_stopping
    assert pause_.pause(stack, target, io_.io(), options=pause_.Options(timeout=30, poll=5, project_dir=tmp_path)) == 1
    assert "tasks still run after 30 s" in io_.text and io_.now == 30


# ---------------------------------------------------------------------- the CLI and the operator's IAM policy


@pytest.mark.parametrize("command", sorted(ops.COMMANDS))
def test_help_documents_every_command_with_an_example(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        ops.main([command, "--help"])
    text = capsys.readouterr().out
    assert exit_.value.code == 0 and f"python -m tools.ops {command}" in text and "--stack" in text


def load_policy() -> dict:
    return json.loads(POLICY.read_text())


def allowed_actions() -> set[str]:
    return {a for s in load_policy()["Statement"] if s["Effect"] == "Allow" for a in _actions(s)}


ALLOWED_FINDINGS = {
    "RESOURCE_STAR": "ecs:ListTasks authorizes on the cluster through the ecs:cluster condition (ECS's own policy example uses Resource * with it)",
    "PERMISSIONS_MANAGEMENT_ACTIONS": "iam:PassRole of the task roles to ecs-tasks.amazonaws.com only: RunTask passes the task definition's roles",
}


def test_the_operator_policy_passes_parliament():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        findings = lint(load_policy())
    assert [f for f in findings if f[0] not in ALLOWED_FINDINGS] == []
    assert ("RESOURCE_STAR", "['ecs:ListTasks']") in findings  # the one star, with its condition
    list_tasks = next(s for s in load_policy()["Statement"] if _actions(s) == ["ecs:ListTasks"])
    assert list_tasks["Condition"] == {"ArnLike": {"ecs:cluster": "arn:aws:ecs:<REGION>:<ACCOUNT_ID>:cluster/platform-*"}}


def test_the_operator_policy_changes_nothing_but_services_tasks_and_alarm_actions():
    verbs = ("Describe", "List", "Get", "Filter")
    writes = sorted(a for a in allowed_actions() if not a.split(":")[1].startswith(verbs))
    assert writes == [
        "application-autoscaling:RegisterScalableTarget",
        "cloudwatch:DisableAlarmActions",
        "cloudwatch:EnableAlarmActions",
        "ecs:ExecuteCommand",
        "ecs:RunTask",
        "ecs:StopTask",
        "ecs:TagResource",
        "ecs:UpdateService",
        "iam:PassRole",
        "kms:Decrypt",
        "ssm:ResumeSession",
        "ssm:StartSession",
        "ssm:TerminateSession",
    ]
    secrets = [s for s in load_policy()["Statement"] if "secretsmanager:GetSecretValue" in _actions(s)]
    assert [s["Resource"] for s in secrets] == ["arn:aws:secretsmanager:<REGION>:<ACCOUNT_ID>:secret:*/DATABASE_URL-*"]  # no other secret


def test_the_operator_policy_allows_every_call_the_tool_made_in_these_tests():
    """Runs last in this file: CALLS holds what the tests above made the tool call (with -k, a part of it)."""
    called = {f"{prefix}:{operation}" for prefix, operation in CALLS}
    assert called <= allowed_actions(), sorted(called - allowed_actions())
    # the two the AWS CLI makes for exec and db, and the ones RunTask needs besides its own
    assert {"ecs:ExecuteCommand", "ssm:StartSession", "iam:PassRole", "ecs:TagResource"} <= allowed_actions()


def test_the_program_keeps_a_paused_service_stopped(project):
    """``pause`` writes ``platform:systems.<s>.paused.<service>``; the next ``pulumi up`` must agree with it:
    desired 0, no autoscaling, its alarms notify no one, and what starts after it is not held."""
    from tests.conftest import plan, set_every_secret

    def pause_indexer(config: dict) -> None:
        set_every_secret(config)
        config["platform:systems"]["twinkle"]["paused"] = {"indexer": 1}

    cap = plan("test", project("dev", pause_indexer))
    services = {r.name: r for r in cap.of_type("aws:ecs/service:Service")}
    assert services["twinkle-indexer-service"].inputs["desiredCount"] == 0
    assert services["twinkle-api-service"].inputs["desiredCount"] >= 1
    alarm = next(r for r in cap.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if r.name == "twinkle-indexer-not-running")
    assert alarm.inputs["actionsEnabled"] is False
    others = [r for r in cap.of_type("aws:cloudwatch/metricAlarm:MetricAlarm") if r.name.startswith("twinkle-api-")]
    assert others and all(r.inputs.get("actionsEnabled", True) is True for r in others)
