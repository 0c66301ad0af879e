"""Build and push every image a stack runs, for the tasks' architecture, with the tag the stack file names.

    python -m tools.images --stack dev                                    # what must be built, and what is there
    python -m tools.images --stack dev --build twinkle/api=../twinkle:apps/api/Dockerfile --build ... --push

For each image of each system the stack deploys (``platform:systems.<system>.images``): a digest was
promoted from the previous environment and is never built here; a tag is looked up in the stack's ECR
repository ``<system>/<image>`` (``DescribeImages``). A tag that is there is left alone: the repositories
are ``IMMUTABLE`` (``components/registry.py``), so a fix ships as a new tag: bump it in the stack file in
a pull request, then build it here. A tag that is missing is built with ``docker buildx build --platform
linux/arm64`` (or ``linux/amd64``: the preset's ``compute.architecture``, the task definitions'
``runtimePlatform``) from the ``--build <system>/<image>=<context>[:<dockerfile>]`` the operator gives,
and pushed with ``--push``. Without ``--push`` the commands are printed, not run.

Docker logs in to ECR with a token from ``GetAuthorizationToken`` passed on stdin (``docker login
--password-stdin``): the token is never an argument, so no process list or shell history shows it.
Needs: docker with buildx, and credentials allowed ``ecr:GetAuthorizationToken``, ``ecr:DescribeImages``
and the push actions on the repositories (the deploy role of the dev stack has them).

Exit status: 0 every image is there (or was built and pushed); 1 something is missing (listed); 2 the
command cannot run (the message says why).
"""

from __future__ import annotations

import argparse
import base64
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stacks.config import PlatformConfig, load_platform
from stacks.errors import ConfigError

from .harness import PROJECT_DIR

PLATFORMS = {"ARM64": "linux/arm64", "X86_64": "linux/amd64"}
"""Preset ``compute.architecture`` -> docker's ``--platform`` (ECS ``runtimePlatform.cpuArchitecture``)."""


class ImagesError(Exception):
    """A reason the command cannot run."""


@dataclass(frozen=True)
class Image:
    system: str
    image: str
    tag: str | None
    digest: str | None

    @property
    def repository(self) -> str:
        return f"{self.system}/{self.image}"


@dataclass(frozen=True)
class Build:
    context: str
    dockerfile: str | None


def images_of(cfg: PlatformConfig) -> list[Image]:
    """Every image of our registry the stack runs (another registry's full references are not ours to build)."""
    return [
        Image(name, image, ref.tag, ref.digest)
        for name, system in cfg.systems.items()
        for image, ref in sorted(system.images.items())
        if ref.repository is None
    ]


def parse_build(values: Sequence[str], wanted: list[Image]) -> dict[str, Build]:
    """``<system>/<image>=<context>[:<dockerfile>]`` -> Build, refusing images the stack does not run."""
    known = {i.repository for i in wanted}
    out = {}
    for value in values:
        repo, sep, rest = value.partition("=")
        if not sep or not rest:
            raise ImagesError(f"--build {value!r}: write <system>/<image>=<context directory>[:<Dockerfile>]")
        if repo not in known:
            raise ImagesError(f"--build {value!r}: the stack runs no image {repo}; its images: {', '.join(sorted(known))}")
        context, _, dockerfile = rest.partition(":")
        out[repo] = Build(context, dockerfile or None)
    return out


def build_command(registry: str, image: Image, build: Build, platform: str) -> list[str]:
    """``docker buildx build`` for one image: the task architecture, the stack's tag, pushed to ECR.
    ``--provenance=false`` keeps the pushed manifest a single image for that platform (no attestation
    index), which is what ECS pulls and what ``DescribeImages`` reports for the tag."""
    command = ["docker", "buildx", "build", "--platform", platform, "--provenance=false", "--tag", f"{registry}/{image.repository}:{image.tag}", "--push"]
    if build.dockerfile:
        command += ["--file", str(Path(build.context) / build.dockerfile)]
    return [*command, build.context]


def login(ecr: Any, run: Callable[..., Any]) -> str:
    """Log docker in to the account's registry; returns the registry host. The token goes on stdin."""
    data = ecr.get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    host = data["proxyEndpoint"].removeprefix("https://")
    run(["docker", "login", "--username", user, "--password-stdin", host], input=password)
    return host


def present(ecr: Any, image: Image) -> bool:
    """Is ``image.tag`` in its repository? A missing repository is an error the caller reports."""
    try:
        ecr.describe_images(repositoryName=image.repository, imageIds=[{"imageTag": image.tag}])
    except ecr.exceptions.ImageNotFoundException:
        return False
    return True


def plan(cfg: PlatformConfig, ecr: Any, builds: dict[str, Build], out: Callable[[str], None]) -> tuple[list[Image], list[Image]]:
    """(to build, missing with no --build): prints one line per image."""
    todo, unbuildable = [], []
    for image in images_of(cfg):
        if image.digest:
            out(f"  {image.repository}@{image.digest[:19]}...  promoted from the previous environment; not built here")
            continue
        try:
            there = present(ecr, image)
        except ecr.exceptions.RepositoryNotFoundException:
            raise ImagesError(
                f"repository {image.repository} does not exist in this account and region ({cfg.region}): the stack's first "
                "`pulumi up` creates it (README, the first deploy of a new environment); run it, then build"
            ) from None
        if there:
            out(f"  {image.repository}:{image.tag}  in ECR (tags are immutable: a fix ships as a new tag)")
        elif image.repository in builds:
            out(f"  {image.repository}:{image.tag}  missing: build from {builds[image.repository].context}")
            todo.append(image)
        else:
            out(f"  {image.repository}:{image.tag}  missing: give --build {image.repository}=<context>[:<Dockerfile>]")
            unbuildable.append(image)
    return todo, unbuildable


def _run(command: list[str], input: str | None = None) -> None:
    subprocess.run(command, input=input, text=True, check=True)  # noqa: S603 - argv lists built here, no shell


def main(argv: list[str] | None = None, *, ecr: Any = None, run: Callable[..., Any] | None = None, project_dir: Path = PROJECT_DIR) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--build", action="append", default=[], metavar="SYSTEM/IMAGE=CONTEXT[:DOCKERFILE]")
    parser.add_argument("--push", action="store_true", help="log in, build and push (default: print the commands)")
    args = parser.parse_args(argv)
    run = run or _run
    try:
        cfg = load_platform(args.stack, project_dir)
        wanted = images_of(cfg)
        builds = parse_build(args.build, wanted)
        if ecr is None:
            import boto3

            ecr = boto3.client("ecr", region_name=cfg.region)
        platform = PLATFORMS[cfg.preset.compute.architecture]
        print(f"stack {cfg.stack}: {len(wanted)} images for {platform} in {cfg.region}")
        todo, unbuildable = plan(cfg, ecr, builds, print)
        if not todo:
            return 1 if unbuildable else 0
        if not args.push:
            print("\nto build and push them (add --push to run these):")
            registry = f"<account>.dkr.ecr.{cfg.region}.amazonaws.com"
            print(f"  aws ecr get-login-password --region {cfg.region} | docker login --username AWS --password-stdin {registry}")
            for image in todo:
                print("  " + " ".join(build_command(registry, image, builds[image.repository], platform)))
            return 1
        registry = login(ecr, run)
        for image in todo:
            print(f"building {image.repository}:{image.tag} for {platform}")
            run(build_command(registry, image, builds[image.repository], platform))
        print(f"pushed {len(todo)} images; the next `pulumi up` of {cfg.stack} releases the services that waited for them")
        return 1 if unbuildable else 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ImagesError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"error: `{' '.join(err.cmd[:3])} ...` exited {err.returncode}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
