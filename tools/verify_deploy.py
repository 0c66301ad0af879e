"""After a `pulumi up`: check that every ECS service ended on what this update registered.

    python -m tools.verify_deploy --stack dev                     # reads `pulumi stack output`
    python -m tools.verify_deploy --outputs dev-outputs.json      # or `--outputs -` for stdin

Why: with the deployment circuit breaker's rollback on, a failed ECS deployment can be reported by
the provider as a successful update: ECS rolls the service back to the previous task definition, the
service reaches a steady state on it, and ``pulumi up`` exits 0 (pulumi/pulumi-aws#4487). So for each
service in the stack outputs (``cluster_name``, ``service_names``, ``task_definitions``,
``image_digests``) this asks ECS (``DescribeServices``):

- the PRIMARY deployment runs the task definition ARN this update exported (same family *and*
  revision); anything else means ECS rolled back, or someone else deployed;
- its ``rolloutState`` is ``COMPLETED``; while ``IN_PROGRESS`` it polls, up to ``--timeout``;
- no deployment is ``FAILED``.

Then ``DescribeTaskDefinition``: the app container (named after the service) runs the digest in
``image_digests`` for its image (when that image is pinned by digest). A service held at zero tasks
(``desiredCount`` 0) passes when its primary deployment is the new revision: there is nothing to run.

One line per service; exit 0 when all pass, 1 on any mismatch (with a summary), 2 when the outputs
cannot be read. The region is the one in the task definition ARNs unless ``--region`` says otherwise.
Needs ``ecs:DescribeServices`` and ``ecs:DescribeTaskDefinition`` (read-only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 900
POLL_SECONDS = 15
DESCRIBE_BATCH = 10  # DescribeServices takes at most 10 services per call
EVENTS_SHOWN = 3

HINT = (
    "A service whose primary deployment is an older revision was rolled back by the circuit breaker: its events\n"
    "(above, and `aws ecs describe-services`) and its log group say why. Pulumi's state still records the new\n"
    "revision, so after fixing the cause redeploy with `pulumi up --refresh` (a plain `pulumi up` sees no change)."
)


class OutputsError(Exception):
    """The stack outputs do not say what to verify; the message says what is missing."""


@dataclass(frozen=True)
class Expected:
    """What one service must be running after this update."""

    key: str  # <system>-<service>, the key of the stack outputs
    service: str  # the ECS service name
    task_definition: str  # full ARN with revision, registered by this update
    container: str  # the app container's name (the service's catalog name)
    digest: str | None  # sha256:... the app container must run; None when its image is not pinned by digest


@dataclass(frozen=True)
class Verdict:
    state: str  # "ok", "pending" or "failed"
    detail: str


def short(arn: str) -> str:
    """``family:revision`` of a task definition ARN, for humans."""
    return arn.rsplit("/", 1)[-1]


def region_of(arn: str) -> str:
    parts = arn.split(":")
    if len(parts) < 6 or not parts[3]:
        raise OutputsError(f"{arn!r} is not a task definition ARN")
    return parts[3]


def expectations(outputs: Mapping[str, Any], image_of: Callable[[str, str], str]) -> list[Expected]:
    """What each service must run, from the stack outputs. ``image_of(system, service)`` names the
    image a service runs (the catalog's ``image``, default the service name)."""
    names, definitions, digests = outputs.get("service_names"), outputs.get("task_definitions"), outputs.get("image_digests")
    for key, value in (("service_names", names), ("task_definitions", definitions), ("image_digests", digests)):
        if not isinstance(value, Mapping):
            raise OutputsError(f"the stack has no {key!r} output; was it updated with this program?")
    if set(names) != set(definitions):
        raise OutputsError(f"service_names and task_definitions name different services: {sorted(set(names) ^ set(definitions))}")
    expected = []
    for key in sorted(names):
        system = next((s for s in sorted(digests, key=len, reverse=True) if key.startswith(f"{s}-")), None)
        if system is None:
            raise OutputsError(f"service {key!r} belongs to no system of image_digests ({', '.join(sorted(digests))})")
        service = key.removeprefix(f"{system}-")
        image = image_of(system, service)
        if not isinstance(digests[system], Mapping) or image not in digests[system]:
            raise OutputsError(f"image_digests has no {system}.{image}, the image {key} runs (stacks/apps/{system}.yaml)")
        digest = digests[system][image]
        if digest is not None and not isinstance(digest, str):
            raise OutputsError(f"image_digests.{system}.{image} is {digest!r}, not a string")
        expected.append(Expected(key, str(names[key]), str(definitions[key]), service, digest or None))
    return expected


def catalog_images() -> Callable[[str, str], str]:
    """``image_of`` from the catalog in ``stacks/apps`` (the same checkout the update ran)."""
    from stacks.catalog import load_catalog

    catalog = load_catalog()

    def image_of(system: str, service: str) -> str:
        if system not in catalog or service not in catalog[system].services:
            raise OutputsError(f"{system}-{service} is not in the catalog (stacks/apps/{system}.yaml)")
        return catalog[system].image_of(service)

    return image_of


def judge(expected: Expected, service: Mapping[str, Any]) -> Verdict:
    """Where one service stands, from its DescribeServices entry."""
    if service.get("status") != "ACTIVE":
        return Verdict("failed", f"service is {service.get('status')}, not ACTIVE")
    deployments = service.get("deployments", [])
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None:
        return Verdict("failed", "no PRIMARY deployment")
    counts = f"{primary.get('runningCount', 0)}/{primary.get('desiredCount', 0)} tasks"
    if primary.get("desiredCount", 0) == 0:
        counts += " (held at zero)"
    new = [d for d in deployments if d.get("taskDefinition") == expected.task_definition]
    failed = next((d for d in new if d.get("rolloutState") == "FAILED"), None)
    why = f"; the deployment of {short(expected.task_definition)} FAILED: {failed.get('rolloutStateReason', '')}" if failed else ""
    if primary.get("taskDefinition") != expected.task_definition:
        return Verdict(
            "failed",
            f"primary deployment runs {short(primary.get('taskDefinition', '?'))}, not {short(expected.task_definition)} (rolled back, or replaced){why}",
        )
    state = primary.get("rolloutState")
    if state == "FAILED" or failed:
        return Verdict("failed", f"deployment of {short(expected.task_definition)} FAILED: {(failed or primary).get('rolloutStateReason', '')}")
    if state == "IN_PROGRESS":
        return Verdict("pending", f"{short(expected.task_definition)} IN_PROGRESS, {counts}")
    if state != "COMPLETED":
        return Verdict("failed", f"primary deployment has rolloutState {state!r}, expected COMPLETED (is the service on the ECS deployment controller?)")
    others = [d for d in deployments if d.get("rolloutState") == "FAILED"]
    if others:
        return Verdict("failed", f"a deployment of {short(others[0].get('taskDefinition', '?'))} is FAILED beside the completed primary")
    return Verdict("ok", f"{short(expected.task_definition)} COMPLETED, {counts}")


def check_image(expected: Expected, task_definition: Mapping[str, Any]) -> Verdict:
    """The app container of the registered task definition runs the exported digest."""
    if expected.digest is None:
        return Verdict("ok", "image not pinned by digest (not checked)")
    container = next((c for c in task_definition.get("containerDefinitions", []) if c.get("name") == expected.container), None)
    if container is None:
        return Verdict("failed", f"{short(expected.task_definition)} has no container {expected.container!r}")
    image = container.get("image", "")
    if expected.digest not in image:
        return Verdict("failed", f"container {expected.container} runs {image}, not {expected.digest}")
    return Verdict("ok", f"image {expected.digest[:19]}")


def _events(service: Mapping[str, Any]) -> list[str]:
    return [f"    {e.get('createdAt', '')}  {e.get('message', '')}" for e in service.get("events", [])[:EVENTS_SHOWN]]


def verify(
    ecs: Any,
    cluster: str,
    expected: list[Expected],
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    out: Callable[[str], None] = print,
) -> list[str]:
    """Check every service, polling those still rolling out; print one line each. Returns the problems."""
    deadline = clock() + timeout
    pending = {e.service: e for e in expected}
    problems: list[str] = []
    width = max((len(e.key) for e in expected), default=0)

    def report(ok: bool, e: Expected, detail: str, service: Mapping[str, Any] | None = None) -> None:
        out(f"{'ok  ' if ok else 'FAIL'}  {e.key:<{width}}  {e.service}  {detail}")
        if not ok:
            problems.append(f"{e.key}: {detail}")
            for line in _events(service or {}):
                out(line)

    while pending:
        last: dict[str, Verdict] = {}
        names = sorted(pending)
        for start in range(0, len(names), DESCRIBE_BATCH):
            answer = ecs.describe_services(cluster=cluster, services=names[start : start + DESCRIBE_BATCH])
            for failure in answer.get("failures", []):
                name = failure.get("arn", "").rsplit("/", 1)[-1]
                if name in pending:
                    report(False, pending.pop(name), f"DescribeServices: {failure.get('reason', 'unknown')} {failure.get('detail', '')}".rstrip())
            for service in answer.get("services", []):
                e = pending.get(service.get("serviceName", ""))
                if e is None:
                    continue
                verdict = judge(e, service)
                if verdict.state == "pending":
                    last[e.service] = verdict
                    continue
                del pending[e.service]
                if verdict.state == "failed":
                    report(False, e, verdict.detail, service)
                    continue
                image = check_image(e, ecs.describe_task_definition(taskDefinition=e.task_definition)["taskDefinition"] if e.digest else {})
                report(image.state == "ok", e, f"{verdict.detail}, {image.detail}")
        for name in [n for n in pending if n not in last]:  # asked for, not described, not reported missing
            report(False, pending.pop(name), "not returned by DescribeServices")
        if not pending:
            break
        if clock() + poll > deadline:
            for e in pending.values():
                report(False, e, f"still rolling out after {timeout:.0f} s: {last[e.service].detail}")
            break
        out(f"waiting {poll:.0f} s for {len(pending)} deployment(s) in progress: {', '.join(sorted(e.key for e in pending.values()))}")
        sleep(poll)
    return problems


def stack_outputs(stack: str) -> dict[str, Any]:
    """The stack's outputs, from the Pulumi CLI."""
    try:
        result = subprocess.run(["pulumi", "stack", "output", "--json", "--stack", stack], capture_output=True, text=True, check=False)  # noqa: S603,S607
    except OSError as err:
        raise OutputsError(f"cannot run the Pulumi CLI ({err}); pass --outputs with `pulumi stack output --json` instead") from None
    if result.returncode != 0:
        raise OutputsError(f"`pulumi stack output --stack {stack}` failed: {result.stderr.strip()}")
    return json.loads(result.stdout)


def read_outputs(source: str) -> dict[str, Any]:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as err:
        raise OutputsError(f"{source}: not the JSON of `pulumi stack output --json`: {err}") from None
    if not isinstance(outputs, dict):
        raise OutputsError(f"{source}: expected a JSON object of stack outputs")
    return outputs


def ecs_client(region: str) -> Any:
    import boto3

    return boto3.client("ecs", region_name=region)


def main(argv: list[str] | None = None, client: Callable[[str], Any] = ecs_client, sleep: Callable[[float], None] = time.sleep) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.verify_deploy", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--stack", help="ask the Pulumi CLI for this stack's outputs")
    source.add_argument("--outputs", metavar="FILE", help="`pulumi stack output --json` of the stack, or - for stdin")
    parser.add_argument("--region", help="default: the region in the task definition ARNs")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_SECONDS, help="seconds to wait for deployments in progress (default %(default)s)")
    parser.add_argument("--poll", type=float, default=POLL_SECONDS, help="seconds between checks (default %(default)s)")
    args = parser.parse_args(argv)
    try:
        outputs = read_outputs(args.outputs) if args.outputs else stack_outputs(args.stack)
        if "service_names" not in outputs and "cluster_name" not in outputs:
            print("no ECS services in the stack outputs (a registry.only run, or compute: kubernetes): nothing to verify")
            return 0
        cluster = outputs.get("cluster_name")
        if not isinstance(cluster, str) or not cluster:
            raise OutputsError("the stack has no 'cluster_name' output")
        expected = expectations(outputs, catalog_images())
        if not expected:
            print(f"cluster {cluster} has no services: nothing to verify")
            return 0
        region = args.region or region_of(expected[0].task_definition)
    except OutputsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"verifying {len(expected)} services in {cluster} ({region})")
    problems = verify(client(region), cluster, expected, timeout=args.timeout, poll=args.poll, sleep=sleep)
    if problems:
        print(f"\nFAILED: {len(problems)} of {len(expected)} services did not end on what this update registered:", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        print(HINT, file=sys.stderr)
        return 1
    print(f"all {len(expected)} services run this update's task definitions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
