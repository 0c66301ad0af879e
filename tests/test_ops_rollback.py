"""python -m tools.ops rollback: starkdca's "Rollback Checklist" as one command.

The world is tests/test_ops.py's (moto, the network cut off). On top of it each test registers
releases of starkdca's ``backend`` image (api and worker share it) as new task definition revisions,
and ECS's deployments are played by a wrapper around moto's UpdateService: a new task definition
gets a COMPLETED primary deployment (or, for a failing rollback, the circuit breaker's: the current
revision back as primary, the new one FAILED). ``pulumi config set/rm --path`` is played on a stack
file in tmp_path, so ``pause`` records and ``resume`` reads the key as they do for real.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
from pathlib import Path

import boto3
import pytest
import yaml
from moto.ecs.models import ecs_backends
from moto.elbv2.models import FakeHealthStatus, elbv2_backends

from tests import test_ops as base
from tests.test_ops import ACCOUNT, CALLS, CLUSTER, REGION, REPO, Io, World, allowed_actions, recording_client
from tools import ops
from tools.ops import pause as pause_
from tools.ops import rollback as rollback_

D = {c: "sha256:" + c * 64 for c in "abcdef"}
BACKEND = f"{REPO}/starkdca/backend"
READS = ("Describe", "List", "Get")


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """tests/test_ops.py's: no connection leaves this machine."""
    base.offline.__wrapped__(monkeypatch)


@pytest.fixture
def world(tmp_path):
    """tests/test_ops.py's world in moto: starkdca (api behind the load balancer, worker) and twinkle."""
    yield from base.aws.__wrapped__(tmp_path)


# ---------------------------------------------------------------------- the stack file and pulumi


@dataclasses.dataclass
class PulumiIo(Io):
    """tests/test_ops.py's Io, whose ``pulumi config set/rm --path`` edits ``project/Pulumi.<stack>.yaml``."""

    project: Path = Path()

    def io(self):
        return dataclasses.replace(super().io(), run=self.pulumi)

    def pulumi(self, command, **kwargs):
        self.runs.append(command)
        verb, stack, path = command[2], command[command.index("--stack") + 1], command[command.index("--path") + 1]
        file = self.project / f"Pulumi.{stack}.yaml"
        data = yaml.safe_load(file.read_text())
        namespace, *keys = path.split(".")
        node = data["config"].setdefault(namespace, {})
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if verb == "set":
            node[keys[-1]] = command[-1]
        else:
            node.pop(keys[-1])
        file.write_text(yaml.safe_dump(data))
        return subprocess.CompletedProcess(command, 0, "", "")


def stack_file(tmp_path: Path, backend: str = "1.0.0") -> Path:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(
        yaml.safe_dump({"config": {"platform:systems": {"starkdca": {"images": {"backend": backend}}, "twinkle": {"images": {"indexer": "1.0.0"}}}}})
    )
    return path


def config(tmp_path: Path) -> dict:
    return yaml.safe_load((tmp_path / "Pulumi.dev.yaml").read_text())["config"]["platform:systems"]["starkdca"]


# ---------------------------------------------------------------------- releases and ECS deployments


def release(world: World, digest: str, key: str = "starkdca-api", repository: str = BACKEND) -> str:
    """A `pulumi up` of starkdca with ``digest``: a new revision of ``key`` runs it, the service on it."""
    _, service = world.split(key)
    containers = ("api", "migrate", "otel-collector") if service == "api" else (service,)
    arn = world.ecs.register_task_definition(
        family=f"dev-{key}",
        networkMode="awsvpc",
        requiresCompatibilities=["FARGATE"],
        cpu="256",
        memory="512",
        containerDefinitions=[{"name": n, "image": f"{repository}@{digest}", "essential": n == service, "memory": 512} for n in containers],
    )["taskDefinition"]["taskDefinitionArn"]
    model = world.model(key)
    model.task_definition = arn
    model.deployments = [world.deployment(arn, "COMPLETED", model.desired_count)]
    world.outputs["task_definitions"][key] = arn
    return arn


def releases(world: World, *digests: str) -> dict[str, list[str]]:
    """Each digest released to both starkdca services (one image, two services); the last one runs."""
    return {key: [release(world, d, key) for d in digests] for key in ("starkdca-api", "starkdca-worker")}


@pytest.fixture
def ecs(world, monkeypatch):
    """Moto's UpdateService as ECS deploys: ``ecs["outcome"] = "FAILED"`` makes the circuit breaker roll back."""
    state = {"outcome": "COMPLETED"}
    backend = type(ecs_backends[ACCOUNT][REGION])
    real = backend.update_service

    def update_service(self, properties):
        wanted = properties.get("task_definition")
        name = properties["service"].rsplit("/", 1)[-1]
        before = self.services[f"{CLUSTER}:{name}"].task_definition
        service = real(self, properties)
        if wanted:
            arn = self.describe_task_definition(wanted).arn
            if state["outcome"] == "COMPLETED":
                service.deployments = [World.deployment(arn, "COMPLETED", service.desired_count)]
            else:
                service.task_definition = before
                reason = "ECS deployment circuit breaker: tasks failed to start."
                service.deployments = [
                    World.deployment(before, "COMPLETED", service.desired_count),
                    World.deployment(arn, "FAILED", service.desired_count, status="ACTIVE", reason=reason),
                ]
                at = dt.datetime(2026, 12, 1, 20, 5, tzinfo=dt.UTC)
                service.events = [{"id": "e1", "createdAt": at, "message": f"(service {name}) rolling back to deployment ecs-svc/1."}]
        return service

    monkeypatch.setattr(backend, "update_service", update_service)
    return state


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The project directory of the CLI: a dev stack file that pins tags."""
    monkeypatch.setattr(pause_, "PROJECT_DIR", tmp_path)
    stack_file(tmp_path)
    return tmp_path


def run(world: World, project: Path, *argv: str, calls: list | None = None) -> tuple[int, PulumiIo]:
    """``python -m tools.ops ARGV --outputs <outputs>``; ``calls`` gets (operation, parameters) of every AWS call in order."""
    io_ = PulumiIo(project=project)
    log = calls if calls is not None else []

    def client(service, region):
        c = recording_client(service, region)
        c.meta.events.register("provide-client-params", lambda params, model, **_: log.append((model.name, dict(params))))
        return c

    return ops.main([*argv, "--outputs", world.outputs_file()], io_.io(), client), io_


def changes(calls: list) -> list[tuple[str, dict]]:
    return [(name, params) for name, params in calls if not name.startswith(READS)]


def updates(calls: list, world: World) -> list[tuple[str, str]]:
    """UpdateService calls as (service key, what changed): ``desired=N`` or the task definition's ``family:revision``."""
    keys = {name: key for key, name in world.outputs["service_names"].items()}
    out = []
    for name, params in changes(calls):
        if name == "UpdateService":
            what = f"desired={params['desiredCount']}" if "desiredCount" in params else params["taskDefinition"].rsplit("/", 1)[-1]
            out.append((keys[params["service"]], what))
    return out


# ---------------------------------------------------------------------- the runbook's order


def test_rollback_stops_the_worker_first_rolls_back_the_web_service_then_resumes_the_worker_and_writes_the_stack_file(world, ecs, project):
    releases(world, D["a"], D["c"])  # revisions 2 (a, the good one) and 3 (c, the bad one)
    calls: list = []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", calls=calls)
    assert code == 0, io_.text
    assert updates(calls, world) == [
        ("starkdca-worker", "desired=0"),  # stopped first
        ("starkdca-api", "dev-starkdca-api:2"),  # the web service rolled back
        ("starkdca-worker", "dev-starkdca-worker:2"),  # the worker rolled back while stopped
        ("starkdca-worker", "desired=2"),  # and resumed last
    ]
    # autoscaling suspended before the stop and resumed with the worker
    suspended = [p["SuspendedState"]["DynamicScalingInSuspended"] for n, p in changes(calls) if n == "RegisterScalableTarget"]
    assert suspended == [True, False]
    assert io_.runs == [
        ["pulumi", "config", "set", "--stack", "dev", "--path", "platform:systems.starkdca.paused.worker", "2"],
        ["pulumi", "config", "rm", "--stack", "dev", "--path", "platform:systems.starkdca.paused.worker"],
        ["pulumi", "config", "set", "--stack", "dev", "--path", "platform:systems.starkdca.images.backend", D["a"]],
    ]
    assert config(project)["images"] == {"backend": D["a"]} and not config(project).get("paused")  # what runs now, and no pause left behind
    assert world.model("starkdca-api").task_definition.endswith(":2") and world.model("starkdca-worker").desired_count == 2
    assert "restore the database first" in io_.err[0] and 'README, "Recovery"' in io_.err[0]  # before anything else
    assert "ok    starkdca/api  dev-starkdca-api:2  2/2 targets healthy" in io_.out
    assert "Commit Pulumi.dev.yaml" in io_.out[-1] and "api dev-starkdca-api:3 -> dev-starkdca-api:2" in io_.out[-1]
    assert "twinkle" not in "\n".join(f"{n} {p}" for n, p in changes(calls))  # another system is left alone


def test_the_default_is_the_newest_earlier_revision_that_runs_another_image(world, ecs, project):
    arns = releases(world, D["a"], D["b"], D["c"], D["c"])  # r2 a, r3 b, r4 c, r5 c (a config change, same image)
    later = world.ecs.register_task_definition(
        family="dev-starkdca-api-canary", containerDefinitions=[{"name": "api", "image": f"{BACKEND}@{D['d']}", "memory": 512}]
    )
    assert later["taskDefinition"]["revision"] == 1  # another family that starts with the same name: never a candidate
    stack = world.stack()
    moves, notes = rollback_.plan(stack, "starkdca", None, rollback_.Finder(stack))
    assert [(m.target.key, m.current.arn, m.to.arn) for m in moves] == [
        ("starkdca-api", arns["starkdca-api"][3], arns["starkdca-api"][1]),  # r5 -> r3 (b): r4 runs c too
        ("starkdca-worker", arns["starkdca-worker"][3], arns["starkdca-worker"][1]),
    ]
    assert notes == []
    # ECS cannot move a service to an INACTIVE revision: a deregistered one is skipped
    world.ecs.deregister_task_definition(taskDefinition=arns["starkdca-api"][1])
    moves, _ = rollback_.plan(stack, "starkdca", None, rollback_.Finder(stack))
    assert [short(m.to.arn) for m in moves] == ["dev-starkdca-api:2", "dev-starkdca-worker:2"]  # r2 (a) for both: one image, two services


def short(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def test_to_names_the_revision_by_digest_or_by_tag(world, ecs, project):
    arns = releases(world, D["a"], D["b"], D["c"])
    stack = world.stack()
    moves, _ = rollback_.plan(stack, "starkdca", D["a"], rollback_.Finder(stack))
    assert [m.to.arn for m in moves] == [arns["starkdca-api"][0], arns["starkdca-worker"][0]]  # not the previous one (b)

    # a tag: the task definitions name digests, ECR says which one the tag points at
    ecr = boto3.client("ecr", region_name=REGION)
    ecr.create_repository(repositoryName="starkdca/backend")
    manifest = '{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "config": {}, "layers": []}'
    digest = ecr.put_image(repositoryName="starkdca/backend", imageManifest=manifest, imageTag="1.4.2")["image"]["imageId"]["imageDigest"]
    tagged = {key: release(world, digest, key) for key in ("starkdca-api", "starkdca-worker")}
    releases(world, D["e"])
    calls: list = []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", "--to", "1.4.2", calls=calls)
    assert code == 0, io_.text
    assert [u for u in updates(calls, world) if "dev-" in u[1]] == [
        ("starkdca-api", short(tagged["starkdca-api"])),
        ("starkdca-worker", short(tagged["starkdca-worker"])),
    ]
    assert ("DescribeImages", {"registryId": ACCOUNT, "repositoryName": "starkdca/backend", "imageIds": [{"imageTag": "1.4.2"}]}) in calls
    assert config(project)["images"]["backend"] == digest  # the stack file pins what runs


# ---------------------------------------------------------------------- refusals


def test_it_refuses_an_unknown_system_no_earlier_image_a_to_that_matches_nothing_and_no_stack(world, ecs, project):
    code, io_ = run(world, project, "rollback", "starkdka", "--stack", "dev")
    assert code == 2 and "'starkdka' is not a system of stack dev; did you mean starkdca?" in io_.text
    # one revision each: nothing earlier
    calls: list = []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", calls=calls)
    assert code == 2 and "starkdca/api runs dev-starkdca-api:1" in io_.text and "no earlier ACTIVE revision of dev-starkdca-api runs another image" in io_.text
    assert changes(calls) == [] and io_.runs == []
    # an earlier revision with the same image only
    releases(world, D["a"])
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev")
    assert code == 2 and "no earlier ACTIVE revision" in io_.text
    releases(world, D["c"])
    calls = []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", "--to", D["f"], calls=calls)
    assert code == 2 and f"--to {D['f']} matches no ACTIVE revision of dev-starkdca-api, dev-starkdca-worker" in io_.text
    assert changes(calls) == [] and io_.runs == []
    code, io_ = run(world, project, "rollback", "starkdca")
    assert code == 2 and "give --stack" in io_.text


def test_an_image_only_in_an_inactive_revision_is_refused_with_the_way_through_the_stack_file(world, ecs, project):
    arns = releases(world, D["b"], D["c"])
    for key in ("starkdca-api", "starkdca-worker"):  # what pulumi up does to the revision it replaces
        for arn in [world.registered[key], arns[key][0]]:
            world.ecs.deregister_task_definition(taskDefinition=arn)
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev")
    assert code == 2 and "dev-starkdca-api:2 (sha256:bbbbbbbbbbbb) has it but is INACTIVE" in io_.text
    assert f"pulumi config set --stack dev --path platform:systems.starkdca.images.backend {D['b']}, then pulumi up" in io_.text


def test_a_stack_that_pins_digests_needs_yes_after_the_database_warning(world, ecs, project):
    releases(world, D["a"], D["c"])
    stack_file(project, backend=D["c"])
    calls: list = []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", calls=calls)
    assert code == 2 and "restore the database first" in io_.text and "run it again with --yes" in io_.text
    assert changes(calls) == [] and io_.runs == []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", "--yes")
    assert code == 0, io_.text
    assert config(project)["images"]["backend"] == D["a"]


def test_dry_run_prints_every_step_and_changes_nothing(world, ecs, project):
    releases(world, D["a"], D["c"])
    before = (project / "Pulumi.dev.yaml").read_text()
    calls: list = []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", "--dry-run", calls=calls)
    assert code == 0, io_.text
    assert changes(calls) == [] and io_.runs == [] and (project / "Pulumi.dev.yaml").read_text() == before
    assert world.model("starkdca-worker").desired_count == 2 and world.model("starkdca-api").task_definition.endswith(":3")
    would = [line for line in io_.err if line.startswith("would: ")]
    assert would == [
        "would: $ pulumi config set --stack dev --path platform:systems.starkdca.paused.worker 2",
        "would: suspend its autoscaling (RegisterScalableTarget SuspendedState)",
        "would: turn off the actions of starkdca-worker-memory-1a2b3c4",
        f"would: set {world.outputs['service_names']['starkdca-worker']}'s desired count to 0 (was 2)",
        f"would: update {world.outputs['service_names']['starkdca-api']} to dev-starkdca-api:2 (sha256:aaaaaaaaaaaa) (UpdateService)",
        f"would: update {world.outputs['service_names']['starkdca-worker']} to dev-starkdca-worker:2 (sha256:aaaaaaaaaaaa) (UpdateService)",
        "would: resume starkdca/worker (python -m tools.ops resume starkdca/worker --stack dev: the recorded tasks, its autoscaling and alarm actions)",
        "would: check the target health of starkdca/api (DescribeTargetHealth: every target healthy)",
        f"would: $ pulumi config set --stack dev --path platform:systems.starkdca.images.backend {D['a']}",
    ]


# ---------------------------------------------------------------------- when it does not work


def test_a_rollback_the_circuit_breaker_undoes_is_reported_with_its_events_and_the_worker_stays_paused(world, ecs, project):
    releases(world, D["a"], D["c"])
    ecs["outcome"] = "FAILED"
    calls: list = []
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", calls=calls)
    assert code == 1
    assert "starkdca/api: the rollback to dev-starkdca-api:2 ROLLED BACK: primary deployment runs dev-starkdca-api:3" in io_.text
    assert "rolling back to deployment ecs-svc/1." in io_.text  # the service's events
    assert "starkdca/worker stay paused" in io_.text
    assert updates(calls, world) == [("starkdca-worker", "desired=0"), ("starkdca-api", "dev-starkdca-api:2")]  # nothing after the failure
    assert config(project) == {"images": {"backend": "1.0.0"}, "paused": {"worker": "2"}}  # no image written; the pause recorded


def test_unhealthy_targets_after_the_rollback_fail_the_check(world, ecs, project):
    releases(world, D["a"], D["c"])

    def unhealthy(target, ec2_backend):
        return FakeHealthStatus(target["Id"], target["Port"], None, "unhealthy", "Target.ResponseCodeMismatch", "Health checks failed with these codes: [502]")

    elbv2_backends[ACCOUNT][REGION].target_groups[world.target_group].health_for = unhealthy
    code, io_ = run(world, project, "rollback", "starkdca", "--stack", "dev", "--timeout", "30")
    assert code == 1
    assert "FAIL  starkdca/api  dev-starkdca-api:2  0/2 targets healthy: " in "\n".join(io_.out) and "unhealthy (Target.ResponseCodeMismatch)" in io_.text
    assert config(project)["images"]["backend"] == D["a"]  # it runs: the stack file says so, whatever its health


# ---------------------------------------------------------------------- the operator's IAM policy


def test_the_operator_policy_allows_every_call_rollback_made():
    """Runs last in this file: CALLS holds what the tests above made the tool call (with -k, a part of it)."""
    called = {f"{prefix}:{operation}" for prefix, operation in CALLS}
    assert called <= allowed_actions(), sorted(called - allowed_actions())
    assert {"ecs:ListTaskDefinitions", "ecs:DescribeTaskDefinition", "ecs:UpdateService", "ecr:DescribeImages"} <= allowed_actions()
