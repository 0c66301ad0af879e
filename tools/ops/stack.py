"""The stack an operations command works on: its outputs, its region, AWS clients, and what names what.

Everything comes from the stack outputs (``pulumi stack output --json``, read by
:mod:`tools.verify_deploy`) and from AWS itself: ``cluster_name``; ``service_names`` and
``task_definitions`` (keyed ``<system>-<service>``); ``image_digests`` (its keys are the systems);
``databases`` (``{system: endpoint}``); ``alarm_topic_arn`` (every alarm of the stack notifies it);
``held_services``. A service's log group, log stream prefixes, secrets and network come from its task
definition and ``DescribeServices``, so they are always what ECS runs.
"""

from __future__ import annotations

import difflib
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tools.verify_deploy import DESCRIBE_BATCH, OutputsError, read_outputs, region_of, stack_outputs

PROJECT_DIR = Path(__file__).resolve().parent.parent.parent
STARTED_BY = "tools.ops"
"""``startedBy`` of every task this tool starts: ``status`` lists them, ``ListTasks`` filters on it."""
DESCRIBE_TASKS_BATCH = 100  # DescribeTasks takes at most 100 tasks per call


class OpsError(Exception):
    """A command that cannot go on; the message says why and what to do (exit status 2)."""


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def interactive(argv: list[str]) -> int:
    """Run ``argv`` on this terminal and return its exit status. Ctrl-C belongs to it meanwhile: this
    process only waits (a no-op handler, which unlike SIG_IGN is not inherited), as the AWS CLI does
    for the Session Manager plugin."""
    previous = signal.signal(signal.SIGINT, lambda *_: None)
    try:
        return subprocess.call(argv)  # noqa: S603
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class Io:
    """Everything a command does outside AWS: print, run a program, wait. Tests replace it."""

    out: Callable[[str], None] = print
    """Results (stdout)."""
    err: Callable[[str], None] = _stderr
    """What the tool is doing, hints, errors (stderr)."""
    call: Callable[[list[str]], int] = interactive
    """Run an interactive program (the AWS CLI with the Session Manager plugin) on this terminal."""
    run: Callable[..., Any] = subprocess.run
    which: Callable[[str], str | None] = shutil.which
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    progress_stream: TextIO | None = None
    """Where progress lines go (default stderr)."""


@dataclass(frozen=True)
class Target:
    """One ECS service of the stack, as the commands name it (``starkdca/worker``)."""

    system: str
    service: str
    """The catalog's name, which is also the app container's name in the task definition."""
    ecs_name: str
    registered: str | None = None
    """The task definition ARN the last ``pulumi up`` registered (``task_definitions``), when exported."""

    @property
    def key(self) -> str:
        return f"{self.system}-{self.service}"

    @property
    def path(self) -> str:
        return f"{self.system}/{self.service}"


@dataclass
class Stack:
    name: str | None
    """The stack's name for the Pulumi CLI; None when only an outputs file was given."""
    outputs: Mapping[str, Any]
    region: str
    client: Callable[[str], Any]
    """``client("ecs")``: a boto3 client in the stack's region."""
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def aws(self, service: str) -> Any:
        if service not in self._cache:
            self._cache[service] = self.client(service)
        return self._cache[service]

    @property
    def cluster(self) -> str:
        cluster = self.outputs.get("cluster_name")
        if not isinstance(cluster, str) or not cluster:
            raise OpsError("the stack has no 'cluster_name' output; was it updated with this program?")
        return cluster

    @property
    def label(self) -> str:
        return self.name or str(self.outputs.get("environment", "?"))

    def systems(self) -> list[str]:
        digests = self.outputs.get("image_digests")
        return sorted(digests) if isinstance(digests, Mapping) else []

    def targets(self) -> dict[str, Target]:
        """Every ECS service of the stack by key, ``<system>-<service>``."""
        names = self.outputs.get("service_names")
        if not isinstance(names, Mapping):
            raise OpsError("the stack has no 'service_names' output; was it updated with this program?")
        registered = self.outputs.get("task_definitions") or {}
        systems = sorted(self.systems(), key=len, reverse=True)
        out = {}
        for key, ecs_name in sorted(names.items()):
            system = next((s for s in systems if key.startswith(f"{s}-")), None)
            if system is None:
                raise OpsError(f"service {key!r} belongs to no system of the 'image_digests' output ({', '.join(self.systems())})")
            out[key] = Target(system, key.removeprefix(f"{system}-"), str(ecs_name), registered.get(key))
        return out

    def target(self, spec: str) -> Target:
        """``starkdca/worker`` (or the key ``starkdca-worker``) as a :class:`Target`."""
        targets = self.targets()
        key = spec.replace("/", "-", 1)
        if key in targets:
            return targets[key]
        known = [t.path for t in targets.values()]
        close = difflib.get_close_matches(spec.replace("-", "/", 1) if "/" not in spec else spec, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; the stack runs {', '.join(known)}"
        raise OpsError(f"{spec!r} is not a service of stack {self.label} (SYSTEM/SERVICE){hint}")

    def system(self, name: str) -> str:
        if name not in self.systems():
            close = difflib.get_close_matches(name, self.systems(), n=1)
            raise OpsError(f"{name!r} is not a system of stack {self.label}" + (f"; did you mean {close[0]}?" if close else f" ({', '.join(self.systems())})"))
        return name

    # ------------------------------------------------------------------ ECS reads every command shares

    def describe(self, targets: Iterable[Target]) -> dict[str, dict[str, Any]]:
        """``DescribeServices`` of each target, by key; a service ECS does not return is an error."""
        by_name = {t.ecs_name: t for t in targets}
        out: dict[str, dict[str, Any]] = {}
        for names in batches(sorted(by_name), DESCRIBE_BATCH):
            answer = self.aws("ecs").describe_services(cluster=self.cluster, services=names)
            for service in answer.get("services", []):
                if service.get("serviceName") in by_name:
                    out[by_name[service["serviceName"]].key] = service
        missing = [t.path for t in by_name.values() if t.key not in out]
        if missing:
            raise OpsError(f"ECS has no service for {', '.join(missing)} in cluster {self.cluster} (deleted, or the outputs are stale)")
        return out

    def service(self, target: Target) -> dict[str, Any]:
        service = self.describe([target])[target.key]
        if service.get("status") != "ACTIVE":
            raise OpsError(f"{target.path} is {service.get('status')}, not ACTIVE")
        return service

    def tasks(self, arns: list[str]) -> list[dict[str, Any]]:
        return [t for chunk in batches(arns, DESCRIBE_TASKS_BATCH) for t in self.aws("ecs").describe_tasks(cluster=self.cluster, tasks=chunk).get("tasks", [])]

    def list_tasks(self, **filters: str) -> list[str]:
        pages = self.aws("ecs").get_paginator("list_tasks").paginate(cluster=self.cluster, desiredStatus="RUNNING", **filters)
        return [arn for page in pages for arn in page.get("taskArns", [])]

    def running_tasks(self, target: Target) -> list[dict[str, Any]]:
        """The service's tasks ECS wants running (``group`` is ``service:<name>`` for a service's tasks)."""
        tasks = self.tasks(self.list_tasks(serviceName=target.ecs_name))
        return [t for t in tasks if t.get("group") == f"service:{target.ecs_name}"]

    def one_off_tasks(self) -> list[dict[str, Any]]:
        """Tasks this tool started (``run``, ``db --start-task``) that are still running."""
        return self.tasks(self.list_tasks(startedBy=STARTED_BY))

    def task_definition(self, arn: str) -> dict[str, Any]:
        return self.aws("ecs").describe_task_definition(taskDefinition=arn)["taskDefinition"]


def task_id(task_arn: str) -> str:
    return task_arn.rsplit("/", 1)[-1]


def app_container(definition: Mapping[str, Any], target: Target) -> dict[str, Any]:
    """The app container of a task definition: named after the service (components/service.py)."""
    container = next((c for c in definition.get("containerDefinitions", []) if c.get("name") == target.service), None)
    if container is None:
        names = ", ".join(c.get("name", "?") for c in definition.get("containerDefinitions", []))
        raise OpsError(f"task definition {definition.get('taskDefinitionArn', '?')} has no container {target.service!r} ({names})")
    return container


def log_streams(definition: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """Container name -> (log group, stream prefix) for every container that logs with ``awslogs``.

    The awslogs driver names a task's stream ``<awslogs-stream-prefix>/<container name>/<task id>``
    (ECS developer guide, "Using the awslogs log driver"); the prefix returned ends with ``/``."""
    out = {}
    for container in definition.get("containerDefinitions", []):
        config = container.get("logConfiguration") or {}
        options = config.get("options") or {}
        if config.get("logDriver") == "awslogs" and options.get("awslogs-group"):
            out[container["name"]] = (options["awslogs-group"], f"{options.get('awslogs-stream-prefix', '')}/{container['name']}/".lstrip("/"))
    return out


def batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ---------------------------------------------------------------------- finding the stack


def selected_stack(run: Callable[..., Any] = subprocess.run) -> str:
    """The stack the Pulumi CLI has selected in this project (``pulumi stack --show-name``)."""
    try:
        result = run(["pulumi", "stack", "--show-name"], capture_output=True, text=True, check=False, cwd=PROJECT_DIR)
    except OSError as err:
        raise OpsError(f"cannot run the Pulumi CLI ({err}); pass --outputs with `pulumi stack output --json` instead") from None
    if result.returncode != 0 or not result.stdout.strip():
        raise OpsError(f"no stack given and none selected ({result.stderr.strip() or 'pulumi stack --show-name printed nothing'}); pass --stack or --outputs")
    return result.stdout.strip()


def load(
    stack: str | None,
    outputs_file: str | None,
    region: str | None,
    client_factory: Callable[[str, str], Any],
    default_region: Callable[[], str | None],
) -> Stack:
    """The stack from ``--stack`` and/or ``--outputs`` (neither: the selected stack)."""
    try:
        if outputs_file:
            outputs = read_outputs(outputs_file)
        else:
            stack = stack or selected_stack()
            outputs = stack_outputs(stack)
    except (OutputsError, OSError, json.JSONDecodeError) as err:
        raise OpsError(str(err)) from None
    if "cluster_name" not in outputs and ("namespaces" in outputs or "deployments" in outputs):
        namespaces = ", ".join(sorted(outputs.get("namespaces") or {})) or "?"
        raise OpsError(
            f"stack {stack or outputs.get('environment', '?')} runs on Kubernetes (platform:compute: kubernetes): these commands drive ECS. "
            f"Use kubectl in the system's namespace ({namespaces}): kubectl -n <namespace> get pods / logs / exec / scale"
        )
    if not region:
        arns = [a for a in (outputs.get("task_definitions") or {}).values() if isinstance(a, str)]
        try:
            region = region_of(arns[0]) if arns else default_region()
        except OutputsError as err:
            raise OpsError(str(err)) from None
    if not region:
        raise OpsError("cannot tell the stack's region from its outputs; pass --region")
    return Stack(stack, outputs, region, lambda service: client_factory(service, region))
