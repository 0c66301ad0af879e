"""``pause`` and ``resume``: stop a service's tasks and bring them back, in a way ``pulumi up`` keeps.

The stack file holds the decision, ``platform:systems.<system>.paused.<service>: <tasks>`` (the value
is how many tasks the service ran when it was paused: what ``resume`` gives back), written and removed
with ``pulumi config set/rm --path``. The program holds a paused service at zero tasks, without
autoscaling, as it holds a service whose secret has no value yet; so a ``pulumi up`` (a laptop's or
the deploy workflow's, once the stack file is committed) keeps it stopped, and the ``up`` after
``resume`` gives it its count and its scaling back.

Besides the key, each command acts at once:

- ``pause``: suspends the service's Application Auto Scaling target (where it has one; else the
  autoscaler could start tasks again), turns off the actions of its alarms (a stopped singleton is the
  ``not-running`` alarm's very condition: nobody should be paged for a pause), sets the desired count
  to 0 (``UpdateService``) and waits until no task runs.
- ``resume``: removes the key, resumes the scaling target, turns the alarm actions back on, sets the
  desired count to the recorded number (or ``--count``) and waits until that many run.

The key is written first: if it cannot be, nothing has changed. ``--dry-run`` prints every step and
changes nothing. A web service (one behind the load balancer) is paused only with ``--yes``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .progress import Progress
from .stack import PROJECT_DIR, Io, OpsError, Stack, Target
from .status import owner

PAUSED_KEY = "platform:systems.{system}.paused.{service}"
DIMENSION = "ecs:service:DesiredCount"
SCALING = ("DynamicScalingInSuspended", "DynamicScalingOutSuspended", "ScheduledScalingSuspended")
WAIT_SECONDS = 600.0
POLL_SECONDS = 5.0


def key(target: Target) -> str:
    return PAUSED_KEY.format(system=target.system, service=target.service)


def set_command(stack: str, target: Target, count: int) -> list[str]:
    return ["pulumi", "config", "set", "--stack", stack, "--path", key(target), str(count)]


def rm_command(stack: str, target: Target) -> list[str]:
    return ["pulumi", "config", "rm", "--stack", stack, "--path", key(target)]


def stack_file(stack: str, project_dir: Path = PROJECT_DIR) -> Path:
    return project_dir / f"Pulumi.{stack.rsplit('/', 1)[-1]}.yaml"


def paused_in_file(stack: str, project_dir: Path = PROJECT_DIR) -> dict[str, int]:
    """``{<system>-<service>: tasks}`` of the services the stack file pauses; empty without the file."""
    path = stack_file(stack, project_dir)
    if not path.exists():
        return {}
    systems = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("config") or {}).get("platform:systems") or {}
    return {
        f"{system}-{service}": int(count)
        for system, deployment in systems.items()
        if isinstance(deployment, Mapping)
        for service, count in (deployment.get("paused") or {}).items()
    }


def scalable_target(stack: Stack, target: Target) -> dict[str, Any] | None:
    found = stack.aws("application-autoscaling").describe_scalable_targets(
        ServiceNamespace="ecs", ResourceIds=[f"service/{stack.cluster}/{target.ecs_name}"], ScalableDimension=DIMENSION
    )
    return (found.get("ScalableTargets") or [None])[0]


def scaling_request(target: Mapping[str, Any], suspend: bool) -> dict[str, Any]:
    """``RegisterScalableTarget`` on the existing target: only its suspended state changes."""
    return {
        "ServiceNamespace": "ecs",
        "ResourceId": target["ResourceId"],
        "ScalableDimension": DIMENSION,
        "SuspendedState": dict.fromkeys(SCALING, suspend),
    }


def alarms_of(stack: Stack, target: Target) -> list[str]:
    """The service's own alarms (named ``<system>-<service>-...``, notifying the stack's topic)."""
    keys = list(stack.targets())
    # both priorities' topics (alarm_topic_arns: critical, warning), or the one topic of an older stack
    topics = set((stack.outputs.get("alarm_topic_arns") or {}).values())
    if not topics and stack.outputs.get("alarm_topic_arn"):
        topics = {stack.outputs["alarm_topic_arn"]}
    names = []
    for page in stack.aws("cloudwatch").get_paginator("describe_alarms").paginate(AlarmNamePrefix=f"{target.key}-"):
        for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
            if owner(alarm["AlarmName"], keys, []) == target.key and (not topics or topics & set(alarm.get("AlarmActions", []))):
                names.append(alarm["AlarmName"])
    return sorted(names)


class Steps:
    """Print each step; do it unless it is a dry run."""

    def __init__(self, stack: Stack, io: Io, dry_run: bool) -> None:
        self.stack, self.io, self.dry_run = stack, io, dry_run

    def scaling(self, target: Mapping[str, Any], suspend: bool) -> None:
        self.stack.aws("application-autoscaling").register_scalable_target(**scaling_request(target, suspend))

    def desired(self, target: Target, count: int) -> None:
        self.stack.aws("ecs").update_service(cluster=self.stack.cluster, service=target.ecs_name, desiredCount=count)

    def __call__(self, what: str, action: Callable[[], Any]) -> None:
        self.io.err(("would: " if self.dry_run else "") + what)
        if not self.dry_run:
            action()

    def config(self, command: list[str], project_dir: Path) -> None:
        def run() -> None:
            result = self.io.run(command, cwd=project_dir, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise OpsError(f"`{shlex.join(command)}` failed, nothing changed: {(result.stderr or '').strip()}")

        self("$ " + shlex.join(command), run)


def _stack_name(stack: Stack) -> str:
    if not stack.name:
        raise OpsError("pause and resume write the stack's config: give --stack (with or without --outputs)")
    return stack.name


def _migration_service(target: Target) -> bool:
    from stacks.catalog import load_catalog

    system = load_catalog().get(target.system)
    return bool(system and system.migration and system.migration.service == target.service)


@dataclass(frozen=True)
class Options:
    dry_run: bool = False
    wait: bool = True
    timeout: float = WAIT_SECONDS
    poll: float = POLL_SECONDS
    project_dir: Path = PROJECT_DIR


def wait_for(stack: Stack, target: Target, done: Callable[[Mapping[str, Any]], bool], what: str, io: Io, options: Options) -> bool | None:
    """Poll ``DescribeServices`` until ``done(service)``: True; False after the timeout; None on Ctrl-C."""
    if not options.wait:
        return True
    progress = Progress(io.progress_stream, io.clock)
    deadline = io.clock() + options.timeout
    try:
        while True:
            service = stack.describe([target])[target.key]
            if done(service):
                progress.done(f"{target.path}: {service.get('runningCount', 0)} running")
                return True
            if io.clock() >= deadline:
                progress.clear()
                return False
            progress.update(f"{target.path}: {service.get('runningCount', 0)} running, {service.get('pendingCount', 0)} pending; {what}")
            io.sleep(options.poll)
    except KeyboardInterrupt:
        progress.clear()
        return None


def pause(stack: Stack, target: Target, io: Io, yes: bool = False, options: Options = Options()) -> int:
    name = _stack_name(stack)
    service = stack.service(target)
    desired = int(service.get("desiredCount", 0))
    file = stack_file(name, options.project_dir).name
    recorded = paused_in_file(name, options.project_dir).get(target.key)
    if recorded is not None and desired == 0:
        io.err(f"{target.path} is already paused in {file} (resume gives it {recorded} tasks)")
        return 0
    if service.get("loadBalancers") and not yes:
        raise OpsError(f"{target.path} serves traffic behind the load balancer: pausing it takes it offline. Add --yes if that is what you want")
    if _migration_service(target):
        io.err(f"note: {target.path} runs {target.system}'s migration; while it is paused, a deploy migrates nothing")
    count = recorded if recorded is not None else desired
    if count == 0:
        io.err(f"note: {target.path} runs no task now (held?); resume will need --count")
    step = Steps(stack, io, options.dry_run)
    step.config(set_command(name, target, count), options.project_dir)
    scaling = scalable_target(stack, target)
    if scaling:
        step("suspend its autoscaling (RegisterScalableTarget SuspendedState)", lambda: step.scaling(scaling, True))
    alarms = alarms_of(stack, target)
    if alarms:
        step(f"turn off the actions of {', '.join(alarms)}", lambda: stack.aws("cloudwatch").disable_alarm_actions(AlarmNames=alarms))
    step(f"set {target.ecs_name}'s desired count to 0 (was {desired})", lambda: step.desired(target, 0))
    if options.dry_run:
        return 0
    stopped = wait_for(stack, target, lambda s: s.get("runningCount", 0) == 0 and s.get("pendingCount", 0) == 0, "stopping", io, options)
    status = f"python -m tools.ops status --stack {name}"
    if stopped is None:
        io.err(f"\n{target.path} is paused; its tasks are still stopping ({status})")
        return 130
    if not stopped:
        io.err(f"{target.path} is paused but tasks still run after {options.timeout:.0f} s; {status}")
    io.err(
        f"paused {target.path} ({count} tasks before). Commit {file}: the deploy workflow reads it, and `pulumi up` keeps the service at 0 tasks "
        f"while the key is there. Bring it back: python -m tools.ops resume {target.path} --stack {name}"
    )
    return 0 if stopped else 1


def resume(stack: Stack, target: Target, io: Io, count: int | None = None, options: Options = Options()) -> int:
    name = _stack_name(stack)
    stack.service(target)
    file = stack_file(name, options.project_dir).name
    recorded = paused_in_file(name, options.project_dir).get(target.key)
    tasks = count if count is not None else recorded
    if tasks is None:
        raise OpsError(f"{target.path} is not paused in {file} ({key(target)}); --count N sets its tasks anyway")
    if tasks < 1:
        raise OpsError(f"{target.path} was paused with 0 tasks; give the number to run: --count N")
    step = Steps(stack, io, options.dry_run)
    if recorded is not None:
        step.config(rm_command(name, target), options.project_dir)
    scaling = scalable_target(stack, target)
    if scaling and any((scaling.get("SuspendedState") or {}).get(k) for k in SCALING):
        step("resume its autoscaling (RegisterScalableTarget SuspendedState)", lambda: step.scaling(scaling, False))
    alarms = alarms_of(stack, target)
    if alarms:
        step(f"turn the actions of {', '.join(alarms)} back on", lambda: stack.aws("cloudwatch").enable_alarm_actions(AlarmNames=alarms))
    step(f"set {target.ecs_name}'s desired count to {tasks}", lambda: step.desired(target, tasks))
    if options.dry_run:
        return 0
    running = wait_for(stack, target, lambda s: s.get("runningCount", 0) >= tasks, f"starting {tasks}", io, options)
    if running is None:
        io.err(f"\n{target.path} is resumed; ECS is still starting its tasks (python -m tools.ops status --stack {name})")
        return 130
    if not running:
        io.err(
            f"{target.path} is resumed but fewer than {tasks} tasks run after {options.timeout:.0f} s: python -m tools.ops logs {target.path} --stack {name}"
        )
    io.err(
        f"resumed {target.path} with {tasks} tasks. Commit {file}; the next `pulumi up` gives back anything an up removed while it was paused (its autoscaling)"
    )
    return 0 if running else 1
