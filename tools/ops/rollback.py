"""``rollback``: a system back to the image it ran before, in the order starkdca's guide gives
("Rollback Checklist": stop the worker first, roll back the web service, re-enable the worker, verify
the health check), and kept by the next ``pulumi up``.

1. The system's ECS services come from the stack outputs. Those without a load balancer (workers,
   singletons) are stopped first with ``pause`` (recorded in the stack file, autoscaling suspended,
   desired count 0, waited for), so nothing runs jobs while the code changes under it.
2. Each web service is updated (``UpdateService``) to the revision of its task definition family that
   runs the ``--to`` image (a ``sha256:`` digest, a tag, or a full reference; a tag of our ECR
   repository is looked up with ``DescribeImages``), or by default to the newest earlier ACTIVE
   revision whose app image differs from the one running now. Services that share an image (starkdca's
   api and worker run ``backend``) go to the same image. The command waits until the deployment is
   COMPLETED; ROLLED BACK (the circuit breaker put the current revision back) or FAILED prints the
   service's events and ends with exit 1, leaving the stopped services stopped.
3. The stopped services get the same treatment, then ``resume`` gives them back their tasks.
4. The target health of each web service's target groups is checked: every target healthy.
5. The image now running goes into the stack file, ``platform:systems.<system>.images.<image>``, with
   ``pulumi config set --path``, so the next ``pulumi up`` keeps it instead of redeploying the bad
   image. Commit the file.

A schema change that is not backward-compatible makes a code rollback not enough: the guide restores
the database first. The command prints that warning before it starts, and on a stack that pins its
images by digest (staging, prod) it goes on only with ``--yes``. ``--dry-run`` prints every step and
changes nothing.

ECS refuses to update a service to an INACTIVE (deregistered) revision, so only ACTIVE revisions are
candidates; when the earlier image is only in an INACTIVE revision, the refusal names it and the way
back through the stack file and ``pulumi up``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from tools.verify_deploy import EVENTS_SHOWN, Expected, judge, short

from . import pause as pause_
from .progress import Progress
from .stack import Io, OpsError, Stack, Target, app_container

IMAGE_KEY = "platform:systems.{system}.images.{image}"
WARNING = (
    "warning: rolling back the code does not roll back the database. If the release you are leaving changed the "
    "schema in a way the earlier code cannot read (not backward-compatible), restore the database first "
    '(README, "Recovery": point-in-time restore), then roll back the code (starkdca\'s guide, "Rollback Checklist", step 1).'
)
ECR_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
HEALTHY_STATES = ("healthy", "draining")
"""A draining target belongs to the revision being replaced; it is on its way out."""


# ---------------------------------------------------------------------- names and images


def family_of(arn: str) -> str:
    return short(arn).rsplit(":", 1)[0]


def revision_of(arn: str) -> int:
    return int(arn.rsplit(":", 1)[-1])


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` of an image reference (``host/path:tag@sha256:...``)."""
    name, _, digest = image.partition("@")
    last = name.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else None
    repository = name[: -(len(tag) + 1)] if tag else name
    return repository, tag, digest or None


def same(a: str, b: str) -> bool:
    """The same bytes: equal digests (whatever repository path names them), else equal references."""
    da, db = split_image(a)[2], split_image(b)[2]
    return da == db if da and db else a == b


def matches(image: str, to: str) -> bool:
    """``image`` (a task definition's) is what ``--to`` names: its digest, its tag, or all of it."""
    _, tag, digest = split_image(image)
    if to.startswith("sha256:"):
        return digest == to
    if "/" in to:
        return image == to
    return tag == to


def stack_value(image: str, current: str | None) -> str:
    """What the stack file's ``images.<image>`` should say for ``image``: the digest (a task definition
    names our images by digest), or the whole reference where the file gives one (another registry)."""
    _, tag, digest = split_image(image)
    if current is not None and "/" in current:
        return image
    return digest or tag or image


def images_in_file(stack: str, system: str, project_dir: Any) -> dict[str, str] | None:
    """``platform:systems.<system>.images`` of the stack file; None without the file."""
    path = pause_.stack_file(stack, project_dir)
    if not path.exists():
        return None
    systems = ((yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("config") or {}).get("platform:systems") or {}
    deployment = systems.get(system) or {}
    return {str(k): str(v) for k, v in (deployment.get("images") or {}).items()} if isinstance(deployment, Mapping) else {}


def pins_digests(images: Mapping[str, str] | None) -> bool:
    """A production-like stack: its images are ``sha256:`` digests (or no stack file to tell: assume so)."""
    return images is None or any(v.startswith("sha256:") or "@sha256:" in v for v in images.values())


def image_names(system: str, services: list[str]) -> dict[str, str]:
    """Service -> its image name in the stack file (the catalog's ``image``, default the service's name)."""
    from stacks.catalog import load_catalog

    entry = load_catalog().get(system)
    return {s: (entry.image_of(s) if entry and s in entry.services else s) for s in services}


# ---------------------------------------------------------------------- revisions


@dataclass(frozen=True)
class Revision:
    arn: str
    image: str

    @property
    def label(self) -> str:
        return f"{short(self.arn)} ({_brief(self.image)})"


def _brief(image: str) -> str:
    _, tag, digest = split_image(image)
    return digest[:19] if digest else tag or image


@dataclass
class Move:
    target: Target
    service: dict[str, Any]
    image_name: str
    current: Revision
    to: Revision

    @property
    def web(self) -> bool:
        return bool(self.service.get("loadBalancers"))


@dataclass
class Finder:
    """Revisions of the task definition families, each described once (a revision never changes)."""

    stack: Stack
    _images: dict[str, str] = field(default_factory=dict)

    def arns(self, family: str, status: str = "ACTIVE") -> list[str]:
        """The family's revisions in ``status``, newest first (``familyPrefix`` is a prefix: keep the family's own)."""
        pages = self.stack.aws("ecs").get_paginator("list_task_definitions").paginate(familyPrefix=family, status=status, sort="DESC")
        arns = [a for page in pages for a in page.get("taskDefinitionArns", []) if family_of(a) == family]
        return sorted(arns, key=revision_of, reverse=True)

    def image(self, arn: str, target: Target) -> str:
        if arn not in self._images:
            self._images[arn] = str(app_container(self.stack.task_definition(arn), target).get("image", ""))
        return self._images[arn]

    def revision(self, arn: str, target: Target) -> Revision:
        return Revision(arn, self.image(arn, target))

    def earlier_other(self, target: Target, current: Revision, status: str = "ACTIVE") -> Revision | None:
        """The newest revision before ``current`` whose app image is another one."""
        for arn in self.arns(family_of(current.arn), status):
            if revision_of(arn) < revision_of(current.arn) and not same(self.image(arn, target), current.image):
                return self.revision(arn, target)
        return None

    def newest(self, target: Target, current: Revision, wanted: Callable[[str], bool], status: str = "ACTIVE") -> Revision | None:
        """The newest revision of the family whose app image is ``wanted``."""
        for arn in self.arns(family_of(current.arn), status):
            if wanted(self.image(arn, target)):
                return self.revision(arn, target)
        return None

    def digest_of_tag(self, image: str, tag: str) -> str | None:
        """The digest ``tag`` points at in the ECR repository of ``image`` (None: not ours, or no such tag)."""
        repository, _, _ = split_image(image)
        host, _, name = repository.partition("/")
        ecr = ECR_HOST.match(host)
        if not ecr or not name or ecr["region"] != self.stack.region:
            return None
        from botocore.exceptions import ClientError

        try:
            found = self.stack.aws("ecr").describe_images(registryId=ecr["account"], repositoryName=name, imageIds=[{"imageTag": tag}])
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("ImageNotFoundException", "RepositoryNotFoundException"):
                return None
            raise
        details = found.get("imageDetails") or [{}]
        return details[0].get("imageDigest")


# ---------------------------------------------------------------------- the plan


def _inactive_hint(stack: Stack, target: Target, image_name: str, revision: Revision | None) -> str:
    if revision is None:
        return ""
    name = stack.name or "<stack>"
    command = f"pulumi config set --stack {name} --path {IMAGE_KEY.format(system=target.system, image=image_name)} {stack_value(revision.image, None)}"
    return (
        f"; {revision.label} has it but is INACTIVE (a pulumi up deregisters the revision it replaces, and ECS moves no service "
        f"to an INACTIVE one). Roll back through the stack file instead: {command}, then pulumi up (the worker paused first: python -m tools.ops pause)"
    )


def plan(stack: Stack, system: str, to: str | None, finder: Finder) -> tuple[list[Move], list[str]]:
    """What each service of ``system`` goes back to, and notes on those that stay. Refuses (OpsError)
    when there is nothing to roll back to."""
    targets = [t for t in stack.targets().values() if t.system == system]
    if not targets:
        raise OpsError(f"stack {stack.label} runs no ECS service of {system}")
    services = stack.describe(targets)
    names = image_names(system, [t.service for t in targets])
    current = {t.key: finder.revision(services[t.key]["taskDefinition"], t) for t in targets}
    # the web service leads its image: the others that run the same image follow it
    leads: dict[str, Target] = {}
    for t in sorted(targets, key=lambda t: (not services[t.key].get("loadBalancers"), t.service)):
        leads.setdefault(names[t.service], t)

    chosen: dict[str, Revision] = {}  # image name -> the image it goes back to (the lead's revision)
    notes: list[str] = []
    if to is None:
        for image_name, lead in sorted(leads.items()):
            found = finder.earlier_other(lead, current[lead.key])
            if found is None:
                hint = _inactive_hint(stack, lead, image_name, finder.earlier_other(lead, current[lead.key], "INACTIVE"))
                if len(leads) == 1:
                    family = family_of(current[lead.key].arn)
                    raise OpsError(f"{lead.path} runs {current[lead.key].label}: no earlier ACTIVE revision of {family} runs another image{hint}")
                notes.append(f"{lead.path} stays on {current[lead.key].label}: no earlier ACTIVE revision runs another image{hint}")
                continue
            chosen[image_name] = found
        if not chosen:
            raise OpsError(f"no service of {system} has an earlier ACTIVE revision with another image: " + "; ".join(notes))
    else:
        wanted = _wanted(to, targets, current, finder)
        for image_name, lead in sorted(leads.items()):
            if wanted(current[lead.key].image):
                notes.append(f"{lead.path} already runs {to}")
                continue
            found = finder.newest(lead, current[lead.key], wanted)
            if found is not None:
                chosen[image_name] = found
        if not chosen and not any(n.endswith(f"already runs {to}") for n in notes):
            lead = next(iter(sorted(leads.values(), key=lambda t: t.service)))
            inactive = next((r for t in leads.values() if (r := finder.newest(t, current[t.key], wanted, "INACTIVE"))), None)
            families = ", ".join(sorted(family_of(c.arn) for c in current.values()))
            raise OpsError(f"--to {to} matches no ACTIVE revision of {families}{_inactive_hint(stack, lead, names[lead.service], inactive)}")

    moves = []
    for t in sorted(targets, key=lambda t: t.service):
        image_name = names[t.service]
        if image_name not in chosen:
            continue
        goal = chosen[image_name]
        if same(current[t.key].image, goal.image):
            notes.append(f"{t.path} already runs {_brief(goal.image)}")
            continue
        revision = goal if family_of(goal.arn) == family_of(current[t.key].arn) else finder.newest(t, current[t.key], lambda i, g=goal.image: same(i, g))
        if revision is None:
            raise OpsError(
                f"{t.path} runs the image {image_name} too, and no ACTIVE revision of {family_of(current[t.key].arn)} runs {_brief(goal.image)}; "
                f"rolling back {leads[image_name].path} alone would leave them on different code"
            )
        moves.append(Move(t, services[t.key], image_name, current[t.key], revision))
    if not moves:
        raise OpsError(f"nothing to roll back in {system}: " + "; ".join(notes))
    return moves, notes


def _wanted(to: str, targets: list[Target], current: Mapping[str, Revision], finder: Finder) -> Callable[[str], bool]:
    """What ``--to`` names: its text, or for a tag of our ECR repositories also the digest it points at."""
    if to.startswith("sha256:") or "/" in to:
        return lambda image: matches(image, to)
    digests = {d for t in targets if (d := finder.digest_of_tag(current[t.key].image, to))}
    return lambda image: matches(image, to) or split_image(image)[2] in digests


# ---------------------------------------------------------------------- doing it


def wait_deployment(stack: Stack, move: Move, io: Io, options: pause_.Options) -> int:
    """Wait until the deployment of ``move.to`` is COMPLETED: 0; ROLLED BACK / FAILED (events printed) or a timeout: 1."""
    target = move.target
    expected = Expected(target.key, target.ecs_name, move.to.arn, target.service, None)
    done = pause_.wait_for(stack, target, lambda s: judge(expected, s).state != "pending", f"deploying {short(move.to.arn)}", io, options)
    if done is None:
        raise KeyboardInterrupt
    service = stack.describe([target])[target.key]
    verdict = judge(expected, service)
    if verdict.state == "ok":
        io.err(f"{target.path}: {verdict.detail}")
        return 0
    primary = next((d for d in service.get("deployments", []) if d.get("status") == "PRIMARY"), {})
    state = "still in progress" if verdict.state == "pending" else "ROLLED BACK" if primary.get("taskDefinition") != move.to.arn else "FAILED"
    io.err(f"{target.path}: the rollback to {short(move.to.arn)} {state}: {verdict.detail}")
    for event in service.get("events", [])[:EVENTS_SHOWN]:
        io.err(f"    {event.get('createdAt', '')}  {event.get('message', '')}")
    return 1


def target_groups(service: Mapping[str, Any]) -> list[str]:
    """The service's target groups, with the alternate one of a blue/green deployment."""
    groups = []
    for lb in service.get("loadBalancers", []):
        for arn in (lb.get("targetGroupArn"), (lb.get("advancedConfiguration") or {}).get("alternateTargetGroupArn")):
            if arn and arn not in groups:
                groups.append(arn)
    return groups


def health(stack: Stack, service: Mapping[str, Any]) -> tuple[bool, str]:
    """(every target healthy, "n/m healthy: <the others>") over the service's target groups."""
    states = []
    for arn in target_groups(service):
        for d in stack.aws("elbv2").describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions", []):
            t, h = d.get("Target", {}), d.get("TargetHealth", {})
            states.append((f"{t.get('Id')}:{t.get('Port')}", h.get("State"), h.get("Reason")))
    healthy = sum(s == "healthy" for _, s, _ in states)
    bad = [f"{who} {s}" + (f" ({why})" if why else "") for who, s, why in states if s not in HEALTHY_STATES]
    return healthy > 0 and not bad, f"{healthy}/{len(states)} targets healthy" + (f": {', '.join(bad)}" if bad else "")


def verify(stack: Stack, move: Move, io: Io, options: pause_.Options) -> bool:
    """Poll the target health of a web service until every target is healthy, up to the timeout."""
    progress = Progress(io.progress_stream, io.clock)
    deadline = io.clock() + options.timeout
    while True:
        ok, detail = health(stack, move.service)
        if ok or io.clock() >= deadline:
            progress.clear()
            io.out(f"{'ok  ' if ok else 'FAIL'}  {move.target.path}  {short(move.to.arn)}  {detail}")
            return ok
        progress.update(f"{move.target.path}: {detail}; waiting for the health check")
        io.sleep(options.poll)


def rollback(stack: Stack, system: str, io: Io, to: str | None = None, yes: bool = False, options: pause_.Options | None = None) -> int:
    options = options or pause_.Options()
    if not stack.name:
        raise OpsError("rollback writes the stack's config (the paused workers, the image it goes back to): give --stack (with or without --outputs)")
    name = stack.name
    system = stack.system(system)
    file = pause_.stack_file(name, options.project_dir).name
    in_file = images_in_file(name, system, options.project_dir)
    io.err(WARNING)
    if pins_digests(in_file) and not yes and not options.dry_run:
        raise OpsError(f"stack {name} pins its images by digest (or has no {file}): read the warning above, then run it again with --yes (or --dry-run)")
    moves, notes = plan(stack, system, to, Finder(stack))
    for note in notes:
        io.err(f"note: {note}")
    io.err(f"rollback of {system} in stack {name}:")
    for m in moves:
        io.err(f"  {m.target.path}: {m.current.label} -> {m.to.label}")

    step = pause_.Steps(stack, io, options.dry_run)
    # 1. stop the services without a load balancer (what runs jobs), recording it as pause does
    services = stack.describe([t for t in stack.targets().values() if t.system == system])
    others = [t for t in stack.targets().values() if t.key in services and not services[t.key].get("loadBalancers")]
    stopped: list[Target] = []
    for t in sorted(others, key=lambda t: t.service):
        if int(services[t.key].get("desiredCount", 0)) == 0:
            io.err(f"note: {t.path} runs no task (paused or held); it is neither stopped nor resumed")
            continue
        io.err(f"stop {t.path} first (pause)")
        code = pause_.pause(stack, t, io, options=options)
        if code != 0:
            io.err(f"stopped before the rollback: {t.path} did not stop; nothing was rolled back (python -m tools.ops status --stack {name})")
            return code
        stopped.append(t)

    def deploy(move: Move) -> int:
        what = f"update {move.target.ecs_name} to {move.to.label} (UpdateService)"
        ecs = stack.aws("ecs")
        step(what, lambda: ecs.update_service(cluster=stack.cluster, service=move.target.ecs_name, taskDefinition=move.to.arn))
        return 0 if options.dry_run else wait_deployment(stack, move, io, options)

    resume = f"python -m tools.ops resume <service> --stack {name}"
    # 2. the web services, then 3. the stopped ones, which are then resumed
    for move in [m for m in moves if m.web] + [m for m in moves if not m.web]:
        if deploy(move):
            left = ", ".join(t.path for t in stopped)
            io.err(f"the rollback of {system} stopped at {move.target.path}" + (f"; {left} stay paused ({resume})" if left else ""))
            return 1
    for t in stopped:
        if options.dry_run:
            io.err(f"would: resume {t.path} (python -m tools.ops resume {t.path} --stack {name}: the recorded tasks, its autoscaling and alarm actions)")
            continue
        code = pause_.resume(stack, t, io, options=options)
        if code != 0:
            return code

    # 4. the health check of the web services
    healthy = True
    for move in [m for m in moves if m.web]:
        if options.dry_run:
            io.err(f"would: check the target health of {move.target.path} (DescribeTargetHealth: every target healthy)")
        else:
            healthy = verify(stack, move, io, options) and healthy

    # 5. what runs now, into the stack file, so the next pulumi up keeps it
    written = set()
    for move in moves:
        if move.image_name in written:
            continue
        written.add(move.image_name)
        key = IMAGE_KEY.format(system=system, image=move.image_name)
        value = stack_value(move.to.image, (in_file or {}).get(move.image_name))
        if (in_file or {}).get(move.image_name) == value:
            io.err(f"{file} already sets {key}: {value}")
            continue
        step.config(["pulumi", "config", "set", "--stack", name, "--path", key, value], options.project_dir)
    if options.dry_run:
        return 0
    io.out(
        f"rolled back {system}: "
        + ", ".join(f"{m.target.service} {short(m.current.arn)} -> {short(m.to.arn)}" for m in moves)
        + f". Commit {file}: the next pulumi up keeps this image (it registers it as a new revision) instead of redeploying the one you left."
    )
    return 0 if healthy else 1
