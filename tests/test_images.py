"""tools.images: build and push what a stack runs, checked against moto's ECR."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from tests.conftest import ROOT
from tools import images

MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json", "config": {}, "layers": []})


@pytest.fixture
def ecr(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("ecr", region_name="us-east-1")
        for repo in ("twinkle/api", "twinkle/facilitator", "twinkle/indexer", "twinkle/worker", "offerhub/api", "starkdca/backend", "aurum/api", "darwin/app"):
            client.create_repository(repositoryName=repo, imageTagMutability="IMMUTABLE")
        yield client


def push(client, repo: str, tag: str) -> None:
    client.put_image(repositoryName=repo, imageManifest=MANIFEST, imageTag=tag)


def test_prints_what_to_build_for_the_task_architecture(ecr, capsys):
    # GIVEN dev (tags 1.0.0, ARM64 tasks) with only darwin's image pushed
    push(ecr, "darwin/app", "1.0.0")
    ran = []
    code = images.main(["--stack", "dev", "--build", "offerhub/api=../offerhub:docker/Dockerfile"], ecr=ecr, run=lambda *a, **k: ran.append(a))
    out = capsys.readouterr().out
    # THEN nothing runs without --push, and the plan says what is there and what is missing
    assert code == 1 and ran == []
    assert "darwin/app:1.0.0  in ECR (tags are immutable" in out
    assert "offerhub/api:1.0.0  missing: build from ../offerhub" in out
    assert "twinkle/api:1.0.0  missing: give --build twinkle/api=" in out
    line = next(x for x in out.splitlines() if "docker buildx build" in x)
    # the tasks run ARM64 (preset compute.architecture; components/service.py runtimePlatform): build for it
    assert "--platform linux/arm64" in line and ":1.0.0 --push --file ../offerhub/docker/Dockerfile ../offerhub" in line


def test_push_logs_in_on_stdin_then_builds_only_what_is_missing(ecr, capsys):
    for repo in ("twinkle/api", "twinkle/facilitator", "twinkle/indexer", "twinkle/worker", "starkdca/backend", "aurum/api", "darwin/app"):
        push(ecr, repo, "1.0.0")
    calls = []
    code = images.main(["--stack", "dev", "--build", "offerhub/api=../offerhub", "--push"], ecr=ecr, run=lambda cmd, input=None: calls.append((cmd, input)))
    assert code == 0
    (login, password), (build, _) = calls
    assert login[:3] == ["docker", "login", "--username"] and "--password-stdin" in login
    assert password and password not in " ".join(login)  # the token only on stdin, never an argument
    registry = login[-1]
    tag = f"{registry}/offerhub/api:1.0.0"
    assert build == ["docker", "buildx", "build", "--platform", "linux/arm64", "--provenance=false", "--tag", tag, "--push", "../offerhub"]


def test_digests_are_promoted_not_built(ecr, capsys):
    code = images.main(["--stack", "prod"], ecr=ecr, run=lambda *a, **k: pytest.fail("nothing to run"))
    out = capsys.readouterr().out
    assert code == 0 and out.count("promoted from the previous environment; not built here") == 8


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--stack", "dev", "--build", "twinkle/nope=."], "the stack runs no image twinkle/nope"),
        (["--stack", "dev", "--build", "twinkle/api"], "write <system>/<image>=<context directory>"),
        (["--stack", "nosuch"], "Pulumi.nosuch.yaml"),
    ],
)
def test_bad_input_is_one_message_and_exit_2(ecr, capsys, argv, words):
    assert images.main(argv, ecr=ecr, project_dir=ROOT) == 2
    assert words in capsys.readouterr().err


def test_a_missing_repository_points_at_the_repositories_only_up(ecr, capsys):
    ecr.delete_repository(repositoryName="offerhub/api", force=True)
    assert images.main(["--stack", "dev"], ecr=ecr) == 2
    err = capsys.readouterr().err
    assert "repository offerhub/api does not exist" in err and "first `pulumi up` creates it" in err
