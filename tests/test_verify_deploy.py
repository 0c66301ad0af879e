"""After `pulumi up`: every ECS service must end on the task definition revision the update registered
(pulumi/pulumi-aws#4487: a circuit-breaker rollback can still be reported as a successful update).

ECS is botocore's real client behind Stubber, which checks every request (and response) against the
service model; the responses have the shape `aws ecs describe-services` returns."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import re

import botocore.session
import pytest
from botocore.stub import Stubber

from stacks.catalog import load_catalog
from tests.conftest import ROOT
from tools import verify_deploy as tool

CLUSTER = "platform-dev"
ACCOUNT = "123456789012"
REGION = "eu-west-1"
AT = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)
D = {c: "sha256:" + c * 64 for c in "abc"}
REPO = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"


def td(family: str, revision: int) -> str:
    return f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:{revision}"


# offerhub-api runs image api; starkdca's api and worker share image backend; the worker is held at zero
NEW = {
    "offerhub-api": td("offerhub-api-task-33de2554", 7),
    "starkdca-api": td("starkdca-api-task-dbbc1c72", 4),
    "starkdca-worker": td("starkdca-worker-task-4d6", 4),
}
OLD = {key: arn.rsplit(":", 1)[0] + f":{int(arn.rsplit(':', 1)[1]) - 1}" for key, arn in NEW.items()}
NAMES = {"offerhub-api": "offerhub-api-service-89b0b30", "starkdca-api": "starkdca-api-service-5007602", "starkdca-worker": "starkdca-worker-service-046d4d6"}
OUTPUTS = {
    "environment": "dev",
    "cluster_name": CLUSTER,
    "service_names": NAMES,
    "task_definitions": NEW,
    "image_digests": {"offerhub": {"api": D["a"]}, "starkdca": {"backend": D["b"]}},
    "repository_urls": {"offerhub/api": f"{REPO}/offerhub/api"},
}
IMAGE = {"offerhub-api": ("api", f"{REPO}/offerhub/api@{D['a']}"), "starkdca-api": ("api", f"{REPO}/starkdca/backend@{D['b']}")}
IMAGE["starkdca-worker"] = ("worker", IMAGE["starkdca-api"][1])


def image_of(system: str, service: str) -> str:
    return load_catalog()[system].image_of(service)


def deployment(arn: str, rollout: str, status: str = "PRIMARY", running: int = 2, desired: int = 2, reason: str | None = None) -> dict:
    ident = f"ecs-svc/{abs(hash((arn, status))) % 10**19}"
    reasons = {"COMPLETED": f"ECS deployment {ident} completed.", "IN_PROGRESS": f"ECS deployment {ident} in progress."}
    return {
        "id": ident,
        "status": status,
        "taskDefinition": arn,
        "desiredCount": desired,
        "pendingCount": 0,
        "runningCount": running,
        "failedTasks": 0 if rollout != "FAILED" else 3,
        "createdAt": AT,
        "updatedAt": AT,
        "launchType": "FARGATE",
        "platformVersion": "1.4.0",
        "rolloutState": rollout,
        "rolloutStateReason": reason or reasons.get(rollout, ""),
    }


def service(key: str, *deployments: dict, events: tuple[str, ...] = ()) -> dict:
    name = NAMES[key]
    return {
        "serviceArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/{name}",
        "serviceName": name,
        "clusterArn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:cluster/{CLUSTER}",
        "status": "ACTIVE",
        "desiredCount": deployments[0]["desiredCount"],
        "runningCount": deployments[0]["runningCount"],
        "pendingCount": 0,
        "taskDefinition": deployments[0]["taskDefinition"],
        "deployments": list(deployments),
        "events": [{"id": f"e{i}", "createdAt": AT, "message": f"(service {name}) {m}"} for i, m in enumerate(events or ("has reached a steady state.",))],
    }


def completed(key: str, desired: int = 2) -> dict:
    return service(key, deployment(NEW[key], "COMPLETED", running=desired, desired=desired))


def rolled_back(key: str, rollback: str = "COMPLETED") -> dict:
    """What ECS shows after the circuit breaker: the previous revision is PRIMARY again."""
    return service(
        key,
        deployment(OLD[key], rollback),
        deployment(NEW[key], "FAILED", status="ACTIVE", running=0, reason="ECS deployment circuit breaker: tasks failed to start."),
        events=("deployment failed: tasks failed to start.", "rolling back to deployment ecs-svc/123.", "has started 1 tasks: (task 0a1b)."),
    )


class Ecs:
    """A stubbed ECS client; every expected call is checked against the service model."""

    def __init__(self) -> None:
        session = botocore.session.get_session()
        self.client = session.create_client("ecs", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x")
        self.stub = Stubber(self.client)

    def describe(self, *services: dict, failures: tuple[dict, ...] = ()) -> None:
        names = sorted([s["serviceName"] for s in services] + [f["arn"].rsplit("/", 1)[-1] for f in failures])
        self.stub.add_response("describe_services", {"services": list(services), "failures": list(failures)}, {"cluster": CLUSTER, "services": names})

    def task_definition(self, key: str, image: str | None = None) -> None:
        container, default = IMAGE[key]
        arn = NEW[key]
        definition = {
            "taskDefinitionArn": arn,
            "family": arn.rsplit("/", 1)[1].split(":")[0],
            "revision": int(arn.rsplit(":", 1)[1]),
            "status": "ACTIVE",
            "containerDefinitions": [
                {"name": "otel-collector", "image": "public.ecr.aws/aws-observability/aws-otel-collector:v0.47.0", "essential": True},
                {"name": container, "image": image or default, "essential": True},
            ],
        }
        self.stub.add_response("describe_task_definition", {"taskDefinition": definition}, {"taskDefinition": arn})


class Clock:
    def __init__(self) -> None:
        self.now, self.sleeps = 0.0, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run(ecs: Ecs, outputs: dict = OUTPUTS, timeout: float = 60, poll: float = 15) -> tuple[list[str], list[str], Clock]:
    lines: list[str] = []
    clock = Clock()
    with ecs.stub:
        problems = tool.verify(
            ecs.client, CLUSTER, tool.expectations(outputs, image_of), timeout=timeout, poll=poll, sleep=clock.sleep, clock=clock, out=lines.append
        )
        ecs.stub.assert_no_pending_responses()
    return problems, lines, clock


def test_completed_deploy_passes_with_a_service_held_at_zero():
    ecs = Ecs()
    ecs.describe(completed("offerhub-api"), completed("starkdca-api"), completed("starkdca-worker", desired=0))
    for key in ("offerhub-api", "starkdca-api", "starkdca-worker"):
        ecs.task_definition(key)
    problems, lines, clock = run(ecs)
    assert problems == [] and clock.sleeps == []
    assert [line.split()[:2] for line in lines] == [["ok", "offerhub-api"], ["ok", "starkdca-api"], ["ok", "starkdca-worker"]]
    assert "offerhub-api-task-33de2554:7 COMPLETED, 2/2 tasks" in lines[0] and "0/0 tasks (held at zero)" in lines[2]


def test_rolled_back_service_fails_even_though_ecs_is_steady():
    ecs = Ecs()
    ecs.describe(completed("offerhub-api"), completed("starkdca-api"), rolled_back("starkdca-worker"))
    ecs.task_definition("offerhub-api")
    ecs.task_definition("starkdca-api")
    problems, lines, clock = run(ecs)
    assert len(problems) == 1 and clock.sleeps == []
    assert problems[0].startswith("starkdca-worker: primary deployment runs starkdca-worker-task-4d6:3, not starkdca-worker-task-4d6:4")
    assert "FAILED: ECS deployment circuit breaker: tasks failed to start." in problems[0]
    assert any("rolling back to deployment" in line for line in lines)  # the service's events say why


def test_rollback_still_running_fails_at_once():
    ecs = Ecs()
    ecs.describe(rolled_back("offerhub-api", rollback="IN_PROGRESS"))
    outputs = {**OUTPUTS, "service_names": {"offerhub-api": NAMES["offerhub-api"]}, "task_definitions": {"offerhub-api": NEW["offerhub-api"]}}
    problems, _, clock = run(ecs, outputs)
    assert "runs offerhub-api-task-33de2554:6, not offerhub-api-task-33de2554:7" in problems[0] and clock.sleeps == []


def test_rolled_back_after_the_failed_deployment_drained_still_fails():
    # GIVEN the failed deployment is gone: only the previous revision is left, COMPLETED
    ecs = Ecs()
    ecs.describe(service("offerhub-api", deployment(OLD["offerhub-api"], "COMPLETED")))
    outputs = {**OUTPUTS, "service_names": {"offerhub-api": NAMES["offerhub-api"]}, "task_definitions": {"offerhub-api": NEW["offerhub-api"]}}
    problems, _, _ = run(ecs, outputs)
    assert problems == ["offerhub-api: primary deployment runs offerhub-api-task-33de2554:6, not offerhub-api-task-33de2554:7 (rolled back, or replaced)"]


def test_new_revision_whose_rollout_failed_fails():
    ecs = Ecs()
    reason = "ECS deployment circuit breaker: tasks failed to start."
    ecs.describe(service("offerhub-api", deployment(NEW["offerhub-api"], "FAILED", running=0, reason=reason)))
    outputs = {**OUTPUTS, "service_names": {"offerhub-api": NAMES["offerhub-api"]}, "task_definitions": {"offerhub-api": NEW["offerhub-api"]}}
    problems, _, _ = run(ecs, outputs)
    assert problems == [f"offerhub-api: deployment of offerhub-api-task-33de2554:7 FAILED: {reason}"]


def test_deployment_in_progress_is_polled_until_it_completes():
    ecs = Ecs()
    rolling = service("starkdca-api", deployment(NEW["starkdca-api"], "IN_PROGRESS", running=1), deployment(OLD["starkdca-api"], "COMPLETED", status="ACTIVE"))
    ecs.describe(completed("offerhub-api"), rolling, completed("starkdca-worker", desired=0))
    ecs.task_definition("offerhub-api")
    ecs.task_definition("starkdca-worker")
    ecs.describe(rolling)  # only the one still rolling out is asked again
    ecs.describe(completed("starkdca-api"))
    ecs.task_definition("starkdca-api")
    problems, lines, clock = run(ecs)
    assert problems == [] and clock.sleeps == [15, 15]
    assert "waiting 15 s for 1 deployment(s) in progress: starkdca-api" in lines


def test_deployment_still_in_progress_at_the_timeout_fails():
    ecs = Ecs()
    rolling = service("starkdca-api", deployment(NEW["starkdca-api"], "IN_PROGRESS", running=1))
    outputs = {**OUTPUTS, "service_names": {"starkdca-api": NAMES["starkdca-api"]}, "task_definitions": {"starkdca-api": NEW["starkdca-api"]}}
    for _ in range(3):  # at 0, 15 and 30 s; the next poll would pass the 40 s timeout
        ecs.describe(rolling)
    problems, _, clock = run(ecs, outputs, timeout=40)
    assert problems == ["starkdca-api: still rolling out after 40 s: starkdca-api-task-dbbc1c72:4 IN_PROGRESS, 1/2 tasks"] and clock.sleeps == [15, 15]


def test_app_container_on_another_digest_fails():
    ecs = Ecs()
    ecs.describe(completed("offerhub-api"), completed("starkdca-api"), completed("starkdca-worker", desired=0))
    ecs.task_definition("offerhub-api", image=f"{REPO}/offerhub/api@{D['c']}")
    ecs.task_definition("starkdca-api")
    ecs.task_definition("starkdca-worker")
    problems, _, _ = run(ecs)
    assert problems == [f"offerhub-api: offerhub-api-task-33de2554:7 COMPLETED, 2/2 tasks, container api runs {REPO}/offerhub/api@{D['c']}, not {D['a']}"]


def test_image_not_pinned_by_digest_is_not_looked_up():
    # an image from another registry pinned by tag: the stack exports no digest for it
    ecs = Ecs()
    ecs.describe(completed("offerhub-api"))
    outputs = {
        **OUTPUTS,
        "service_names": {"offerhub-api": NAMES["offerhub-api"]},
        "task_definitions": {"offerhub-api": NEW["offerhub-api"]},
        "image_digests": {"offerhub": {"api": ""}},
    }
    problems, lines, _ = run(ecs, outputs)
    assert problems == [] and lines[0].endswith("image not pinned by digest (not checked)")


def test_missing_service_fails():
    ecs = Ecs()
    missing = {"arn": f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{CLUSTER}/{NAMES['starkdca-worker']}", "reason": "MISSING"}
    ecs.describe(completed("offerhub-api"), completed("starkdca-api"), failures=(missing,))
    ecs.task_definition("offerhub-api")
    ecs.task_definition("starkdca-api")
    problems, _, _ = run(ecs)
    assert problems == ["starkdca-worker: DescribeServices: MISSING"]


def test_services_are_described_ten_at_a_time():
    keys = [f"offerhub-api{i:02}" for i in range(12)]
    names = {k: f"{k}-service" for k in keys}
    definitions = {k: td(f"{k}-task", 1) for k in keys}
    expected = [tool.Expected(k, names[k], definitions[k], "api", None) for k in keys]
    ecs = Ecs()
    for batch in (keys[:10], keys[10:]):
        answer = [{"serviceName": names[k], "status": "ACTIVE", "deployments": [deployment(definitions[k], "COMPLETED")]} for k in batch]
        ecs.stub.add_response("describe_services", {"services": answer}, {"cluster": CLUSTER, "services": sorted(names[k] for k in batch)})
    with ecs.stub:
        assert tool.verify(ecs.client, CLUSTER, expected, out=lambda _: None) == []


# --- the command line ------------------------------------------------------------------------------


def cli(argv: list[str], ecs: Ecs, capsys) -> tuple[int, str, str, list[str]]:
    regions: list[str] = []

    def client(region: str):
        regions.append(region)
        return ecs.client

    with ecs.stub:
        code = tool.main(argv, client=client, sleep=lambda _: None)
    out, err = capsys.readouterr()
    return code, out, err, regions


def test_cli_passes_and_takes_the_region_from_the_task_definitions(tmp_path, capsys):
    (tmp_path / "outputs.json").write_text(json.dumps(OUTPUTS))
    ecs = Ecs()
    ecs.describe(completed("offerhub-api"), completed("starkdca-api"), completed("starkdca-worker", desired=0))
    for key in ("offerhub-api", "starkdca-api", "starkdca-worker"):
        ecs.task_definition(key)
    code, out, _, regions = cli(["--outputs", str(tmp_path / "outputs.json")], ecs, capsys)
    assert code == 0 and regions == [REGION]
    assert out.splitlines()[0] == f"verifying 3 services in {CLUSTER} ({REGION})"
    assert out.splitlines()[-1] == "all 3 services run this update's task definitions"


def test_cli_fails_with_a_summary_reading_stdin(monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(OUTPUTS)))
    ecs = Ecs()
    ecs.describe(completed("offerhub-api"), rolled_back("starkdca-api"), completed("starkdca-worker", desired=0))
    ecs.task_definition("offerhub-api")
    ecs.task_definition("starkdca-worker")
    code, out, err, _ = cli(["--outputs", "-", "--region", "us-east-2"], ecs, capsys)
    assert code == 1
    assert re.search(r"^FAIL  starkdca-api ", out, re.M) and re.search(r"^ok    offerhub-api ", out, re.M)
    assert "FAILED: 1 of 3 services did not end on what this update registered:\n  - starkdca-api: primary deployment runs" in err
    assert "pulumi up --refresh" in err


def test_cli_asks_the_pulumi_cli_for_the_stack_outputs(tmp_path, monkeypatch, capsys):
    # GIVEN a `pulumi` on PATH that answers `pulumi stack output --json --stack org/dev` for a registry-only run
    fake = tmp_path / "pulumi"
    fake.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\necho \'{"repository_urls": {}}\'\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    code, out, _, _ = cli(["--stack", "org/dev"], Ecs(), capsys)
    assert code == 0 and "nothing to verify" in out
    assert (tmp_path / "args").read_text().split() == ["stack", "output", "--json", "--stack", "org/dev"]


def test_boto3_client_for_the_region():
    assert tool.ecs_client("eu-west-1").meta.region_name == "eu-west-1"


def test_cli_refuses_outputs_without_task_definitions(tmp_path, capsys):
    (tmp_path / "outputs.json").write_text(json.dumps({k: v for k, v in OUTPUTS.items() if k != "task_definitions"}))
    code, _, err, _ = cli(["--outputs", str(tmp_path / "outputs.json")], Ecs(), capsys)
    assert code == 2 and "no 'task_definitions' output" in err


def test_cli_refuses_outputs_that_miss_a_services_image(tmp_path, capsys):
    (tmp_path / "outputs.json").write_text(json.dumps({**OUTPUTS, "image_digests": {"offerhub": {"api": D["a"]}, "starkdca": {}}}))
    code, _, err, _ = cli(["--outputs", str(tmp_path / "outputs.json")], Ecs(), capsys)
    assert code == 2 and "image_digests has no starkdca.backend, the image starkdca-api runs" in err


def test_cli_registry_only_run_has_nothing_to_verify(tmp_path, capsys):
    (tmp_path / "outputs.json").write_text(json.dumps({"repository_urls": OUTPUTS["repository_urls"]}))
    code, out, _, regions = cli(["--outputs", str(tmp_path / "outputs.json")], Ecs(), capsys)
    assert code == 0 and "nothing to verify" in out and regions == []


# --- against the real program ----------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_real_outputs_name_each_app_container_and_the_digest_it_runs(plans, stack):
    cap = plans[stack]
    expected = tool.expectations(cap.outputs, tool.catalog_images())
    assert {e.key for e in expected} == set(cap.outputs["service_names"]) and len(expected) >= 10
    definitions = {r.urn: r for r in cap.of_type("aws:ecs/taskDefinition:TaskDefinition")}
    for e in expected:
        assert e.digest and e.digest.startswith("sha256:"), e.key
        # the task definition this output names (the mock ARN carries the resource's name)
        task = next(r for r in definitions.values() if e.task_definition.rsplit("/", 1)[1].startswith(f"{r.name}-"))
        containers = {c["name"]: c["image"] for c in json.loads(task.inputs["containerDefinitions"])}
        assert containers[e.container].endswith(f"@{e.digest}"), e.key
    assert tool.region_of(expected[0].task_definition) == "us-east-1"


def test_catalog_maps_services_that_share_an_image():
    image_of = tool.catalog_images()
    assert image_of("starkdca", "worker") == "backend" and image_of("aurum", "indexer") == "api" and image_of("darwin", "app") == "app"
    with pytest.raises(tool.OutputsError, match="not in the catalog"):
        image_of("darwin", "nope")


def test_ops_pins_match_the_dev_pins():
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(line.split("==") for line in lines if "==" in line and not line.startswith("#"))

    ops, dev = pins("requirements-ops.txt"), pins("requirements-dev.txt")
    assert ops["boto3"] == ops["botocore"] == dev["botocore"]  # boto3 X.Y.Z requires botocore X.Y.Z
    assert {name: dev[name] for name in ops.keys() & dev.keys()} == {name: ops[name] for name in ops.keys() & dev.keys()}
    assert "-r requirements-ops.txt" in (ROOT / "requirements-dev.txt").read_text()
