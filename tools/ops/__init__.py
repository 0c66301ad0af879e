"""Day-2 operations on a stack this program deployed: status, logs, one-off tasks, a shell, a database
tunnel, and pausing a service.

    python -m tools.ops status   [--stack dev] [--json]
    python -m tools.ops logs     starkdca/api [--since 1h] [--follow] [--container app|migrate|otel-collector]
    python -m tools.ops run      starkdca/api -- node scripts/backfill.js
    python -m tools.ops exec     starkdca/api [-- /bin/sh]
    python -m tools.ops db       starkdca [--local-port 15432]
    python -m tools.ops pause    starkdca/worker --stack dev
    python -m tools.ops resume   starkdca/worker --stack dev
    python -m tools.ops rollback starkdca --stack dev [--to sha256:...]

Each command reads the stack outputs (``pulumi stack output --json --stack S``, the selected stack
without ``--stack``, or ``--outputs FILE`` as ``tools.promote`` and ``tools.verify_deploy`` take them)
and calls AWS with boto3 in the stack's region (the one in its task definition ARNs, or ``--region``).
``exec`` and ``db`` hand the terminal to the AWS CLI with the Session Manager plugin. No command prints
a secret value: ``db`` prints the ``aws secretsmanager get-secret-value`` command for the operator to
run. What each command needs from IAM is docs/iam/operator/operator-permissions.json.

Exit status: 0 done; 1 ``status`` found something that needs attention, a one-off task failed (``run``
exits with its container's status), or a wait timed out; 2 the command cannot run (the message says
why); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from . import logs as logs_
from . import pause as pause_
from . import rollback as rollback_
from . import status as status_
from . import tasks as tasks_
from .stack import Io, OpsError, Stack, load, log_streams

COMMANDS = {
    "status": "every service: tasks, last deployment, image digest, target health; open alarms",
    "logs": "a service's CloudWatch Logs, newest last; --follow like tail -f",
    "run": "a one-off task from the service's task definition with another command; waits, streams its logs, exits with its status",
    "exec": "a shell (or a command) in a running task, through ECS Exec (where the preset turns it on: dev)",
    "db": "a tunnel from localhost to the system's Postgres through a task (SSM port forwarding), and how to psql through it",
    "pause": "stop a service (desired count 0) and record it in the stack config, so pulumi up keeps it stopped",
    "resume": "bring a paused service back to the tasks it ran",
    "rollback": "a system back to its previous image: workers stopped first, web services rolled back, workers resumed, health checked, stack file updated",
}
DETAILS = {
    "status": """One line per ECS service: running/desired tasks; the last deployment (COMPLETED, IN PROGRESS,
FAILED, ROLLING BACK / ROLLED BACK when the circuit breaker put the previous revision back, OTHER
REVISION when something else replaced what pulumi up registered) and its revision; the image digest
the running tasks report; for web services, healthy/registered targets. Then the stack's open alarms,
the one-off tasks this tool started that still run (with their stop commands), and what needs
attention, with the service's latest ECS events. Exit 1 when anything needs attention.

  python -m tools.ops status --stack prod
  python -m tools.ops status --outputs prod-outputs.json --json | jq '.problems'
""",
    "logs": """The service's log group and stream prefixes come from its task definition (awslogs). Lines read
`<time> <container>/<task> <message>`, newest last.

  python -m tools.ops logs starkdca/api --since 1h --filter ERROR
  python -m tools.ops logs offerhub/api --container migrate --since 2d
  python -m tools.ops logs twinkle/indexer -f
""",
    "run": """Same image, environment, secrets, subnets and security groups as the service (no public IP), on its
capacity provider (Fargate Spot in dev); the app container runs COMMAND. In the service that runs its
system's migration, the migrate container runs first, as in every task of that service. Its logs
stream here; the exit status is the app container's. Ctrl-C leaves the task running (a migration or
backfill is not killed half-way by a dropped connection) and prints how to stop it; --stop-on-interrupt
stops it instead. `status` lists the one-off tasks still running.

  python -m tools.ops run offerhub/api -- node_modules/.bin/prisma migrate status --schema packages/database/prisma/schema.prisma
  python -m tools.ops run starkdca/api --detach -- node dist/scripts/backfill.js
""",
    "exec": """Needs ECS Exec on the service (the preset setting compute.exec_enabled: dev only), the AWS CLI and
the Session Manager plugin; runs `aws ecs execute-command --interactive` in the first running task
whose ECS Exec agent is up (--task to choose). Every command and its output are logged to
/platform/<env>/ecs-exec.

  python -m tools.ops exec starkdca/api
  python -m tools.ops exec twinkle/indexer -- sh -c 'ls -la /tmp'
""",
    "db": """A Session Manager port forward (AWS-StartPortForwardingSessionToRemoteHost) from localhost:LOCAL_PORT
to the system's RDS endpoint, through the ECS Exec agent of a running task of a service that reads
DATABASE_URL (the database admits its security group): no bastion, no public endpoint. Needs ECS Exec
(dev), the AWS CLI and the Session Manager plugin. Prints the psql command and the `aws secretsmanager
get-secret-value` command for DATABASE_URL; it never reads or prints the value itself.

  python -m tools.ops db starkdca
  python -m tools.ops db offerhub --local-port 25432 --start-task
""",
    "pause": """Writes platform:systems.<system>.paused.<service>: <tasks it ran> into the stack's config (pulumi config
set --path), so the program keeps it at zero tasks on every pulumi up; then suspends its autoscaling,
turns off its alarms' actions, sets its desired count to 0 and waits until its tasks stopped. Commit the
stack file afterwards. A web service needs --yes. --dry-run prints every step and changes nothing.

  python -m tools.ops pause starkdca/worker --stack prod
""",
    "resume": """Removes the paused key (pulumi config rm --path), resumes its autoscaling and alarm actions, sets its
desired count back to the tasks recorded when it was paused (or --count) and waits until they run.

  python -m tools.ops resume starkdca/worker --stack prod
""",
    "rollback": """starkdca's "Rollback Checklist" as one command. Stops the system's services without a load balancer
(pause: recorded in the stack file, autoscaling suspended, desired 0, waited for); updates each web
service to the revision of its task definition that runs the --to image (digest, tag or full
reference), or by default to the newest earlier ACTIVE revision with another app image, and waits
until the deployment is COMPLETED (ROLLED BACK or FAILED: its events, exit 1, the workers stay
paused); does the same for the stopped services and resumes them; checks that every target of the web
services is healthy; writes the image now running into platform:systems.<system>.images.<image>
(pulumi config set --path), so the next pulumi up keeps it. Commit the stack file afterwards.
It does not roll back the database: when the release changed the schema in a way the earlier code
cannot read, restore the database first (README, "Recovery"). A stack that pins digests (staging,
prod) needs --yes. --dry-run prints every step and changes nothing.

  python -m tools.ops rollback starkdca --stack dev --dry-run
  python -m tools.ops rollback starkdca --stack prod --to sha256:9e7ef831... --yes
""",
}


def boto3_client(service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def boto3_region() -> str | None:
    import boto3

    return boto3.session.Session().region_name


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    where = common.add_argument_group("which stack")
    where.add_argument("--stack", help="the Pulumi stack (default: the selected one); pause and resume need it")
    where.add_argument("--outputs", metavar="FILE", help="`pulumi stack output --json` of the stack, or - for stdin, instead of asking the Pulumi CLI")
    where.add_argument("--region", help="default: the region of the stack's task definitions")
    top = argparse.ArgumentParser(
        prog="python -m tools.ops",
        description=__doc__.split("\n\n")[0],
        epilog="Each command takes --stack, --outputs and --region; `python -m tools.ops COMMAND --help` says more.",
    )
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str) -> argparse.ArgumentParser:
        description = f"{COMMANDS[name][0].upper()}{COMMANDS[name][1:]}.\n\n{DETAILS[name]}"
        return sub.add_parser(name, parents=[common], help=COMMANDS[name], description=description, formatter_class=argparse.RawDescriptionHelpFormatter)

    p = command("status")
    p.add_argument("--json", action="store_true", help="the report as JSON, for scripts")

    p = command("logs")
    p.add_argument("target", metavar="SYSTEM/SERVICE")
    p.add_argument("--since", default="10m", help="how far back: 90s, 10m, 1h, 2d, or a time like 2026-12-01T20:00:00Z (default %(default)s)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines until Ctrl-C")
    p.add_argument("--container", help="one container's logs: app (the service's own), migrate, otel-collector; default: all")
    p.add_argument("--filter", dest="pattern", help="a CloudWatch Logs filter pattern, e.g. ERROR or '\"timed out\"'")

    p = command("run")
    p.usage = "python -m tools.ops run [options] SYSTEM/SERVICE -- COMMAND [ARG ...]"
    p.add_argument("target", metavar="SYSTEM/SERVICE")
    p.add_argument("--detach", action="store_true", help="start it, print its id, and do not wait")
    p.add_argument("--stop-on-interrupt", action="store_true", help="Ctrl-C stops the task (default: it keeps running, and you are told how to stop it)")

    p = command("exec")
    p.usage = "python -m tools.ops exec [options] SYSTEM/SERVICE [-- COMMAND [ARG ...]] (default /bin/sh; no shell: wrap shell syntax in sh -c '...')"
    p.add_argument("target", metavar="SYSTEM/SERVICE")
    p.add_argument("--task", help="the id (or its start) of the task to enter; default: the first running one")
    p.add_argument("--container", help="default: app, the service's own container")

    p = command("db")
    p.add_argument("system", metavar="SYSTEM")
    p.add_argument("--local-port", type=int, default=15432, help="default %(default)s")
    p.add_argument("--start-task", action="store_true", help="when no task runs ECS Exec's agent, start one for the tunnel (stopped when it closes)")
    p.add_argument("--dry-run", action="store_true", help="print the session command and how to connect, open nothing")

    for name in ("pause", "resume"):
        p = command(name)
        p.add_argument("target", metavar="SYSTEM/SERVICE")
        p.add_argument("--dry-run", action="store_true", help="print each step (the pulumi command, the AWS calls) and change nothing")
        p.add_argument("--no-wait", dest="wait", action="store_false", help="do not wait for the tasks to stop (or start)")
        p.add_argument("--timeout", type=float, default=pause_.WAIT_SECONDS, help="seconds to wait (default %(default)s)")
    sub.choices["pause"].add_argument("--yes", action="store_true", help="pause a web service (it stops serving)")
    sub.choices["resume"].add_argument("--count", type=int, help="tasks to run (default: the number recorded when it was paused)")

    p = command("rollback")
    p.add_argument("system", metavar="SYSTEM")
    p.add_argument("--to", metavar="IMAGE", help="the image to go back to: a sha256: digest, a tag, or a full reference (default: the previous one)")
    p.add_argument("--dry-run", action="store_true", help="print each step (the pulumi commands, the AWS calls) and change nothing")
    p.add_argument("--yes", action="store_true", help="go on in a stack that pins digests (staging, prod), having read the database warning")
    p.add_argument("--timeout", type=float, default=pause_.WAIT_SECONDS, help="seconds to wait for each step (default %(default)s)")
    return top


def parse(argv: list[str]) -> argparse.Namespace:
    """The options, and the command after the first ``--`` (``run``, ``exec``) as ``args.cmd``."""
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser().parse_args(argv[:cut])
    args.cmd = argv[cut + 1 :]
    if args.cmd and args.command not in ("run", "exec"):
        parser().error(f"{args.command} takes no command after --")
    return args


def show_logs(stack: Stack, args: argparse.Namespace, io: Io) -> int:
    target = stack.target(args.target)
    service = stack.service(target)
    definition = stack.task_definition(service["taskDefinition"])
    group, prefix = logs_.containers(definition, log_streams(definition), target.service, args.container)
    start = logs_.since_ms(args.since, logs_.now())
    source = logs_.Tail(stack.aws("logs"), group, start, prefix=prefix, pattern=args.pattern)
    try:
        logs_.tail(source, args.follow, out=io.out, sleep=io.sleep)
    except KeyboardInterrupt:
        return 130
    return 0


def dispatch(stack: Stack, args: argparse.Namespace, io: Io) -> int:
    if args.command == "status":
        report = status_.collect(stack, pause_.paused_in_file(stack.name) if stack.name else {})
        io.out(json.dumps(report, indent=2, default=str) if args.json else status_.render(report))
        return 1 if report["problems"] else 0
    if args.command == "logs":
        return show_logs(stack, args, io)
    if args.command == "run":
        target = stack.target(args.target)
        return tasks_.run(stack, target, args.cmd, io, detach=args.detach, stop_on_interrupt=args.stop_on_interrupt)
    if args.command == "exec":
        return tasks_.exec_(stack, stack.target(args.target), args.cmd, io, task=args.task, container=args.container)
    if args.command == "db":
        return tasks_.db(stack, args.system, io, local_port=args.local_port, start_task=args.start_task, dry_run=args.dry_run)
    if args.command == "rollback":
        options = pause_.Options(dry_run=args.dry_run, timeout=args.timeout, project_dir=pause_.PROJECT_DIR)
        return rollback_.rollback(stack, args.system, io, to=args.to, yes=args.yes, options=options)
    target = stack.target(args.target)
    options = pause_.Options(dry_run=args.dry_run, wait=args.wait, timeout=args.timeout)
    if args.command == "pause":
        return pause_.pause(stack, target, io, yes=args.yes, options=options)
    return pause_.resume(stack, target, io, count=args.count, options=options)


def main(
    argv: list[str] | None = None,
    io: Io | None = None,
    client: Callable[[str, str], Any] = boto3_client,
    default_region: Callable[[], str | None] = boto3_region,
) -> int:
    args = parse(sys.argv[1:] if argv is None else list(argv))
    io = io or Io()
    try:
        stack = load(args.stack, args.outputs, args.region, client, default_region)
        return dispatch(stack, args, io)
    except OpsError as err:
        io.err(f"error: {err}")
        return 2
    except KeyboardInterrupt:
        io.err("\ninterrupted")
        return 130
