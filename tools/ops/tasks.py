"""``run``, ``exec`` and ``db``: a one-off task, a shell in a running task, a tunnel to Postgres.

``run`` starts one task from the service's current task definition (``DescribeServices``'
``taskDefinition``: same image, environment, secrets, roles) in the service's subnets and security
groups, never with a public IP, on the service's capacity provider strategy (Fargate Spot in dev), with
the app container's command overridden. It streams the task's log streams, waits for it to stop and
exits with the app container's exit code. The task starts as the service's tasks do: in the service
that runs the system's migration, the ``migrate`` container runs first and the command only after it
succeeded.

Ctrl-C while ``run`` waits does **not** stop the task: a migration or a backfill killed half-way is
worse than one left to finish, and a dropped laptop connection must not decide. It says that the task
keeps running and prints the command that follows its logs and the one that stops it; ``status`` lists
every task this tool started that still runs. ``--stop-on-interrupt`` stops it instead.

``exec`` and ``db`` need ECS Exec (the preset's ``compute.exec_enabled``: on in dev, refused by a
production preset), the AWS CLI and the Session Manager plugin; they build the request, check the
service and the task's agent, and hand the terminal to ``aws ecs execute-command`` or ``aws ssm
start-session``, as the AWS documentation does.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from tools.verify_deploy import short

from .logs import Tail, line
from .progress import Progress
from .stack import STARTED_BY, Io, OpsError, Stack, Target, app_container, log_streams, task_id

EXEC_SETTING = "compute.exec_enabled"
EXEC_AGENT = "ExecuteCommandAgent"
PLUGIN = "session-manager-plugin"
PLUGIN_HELP = (
    f"`{PLUGIN}` is not on PATH; ECS Exec and Session Manager tunnels need it beside the AWS CLI:\n"
    "  macOS: brew install --cask session-manager-plugin\n"
    "  Debian/Ubuntu: curl -fsSLo /tmp/ssm.deb https://s3.amazonaws.com/session-manager-downloads/plugin/latest/ubuntu_64bit/session-manager-plugin.deb"
    " && sudo dpkg -i /tmp/ssm.deb\n"
    "  others: https://docs.aws.amazon.com/systems-manager/latest/userguide/session-manager-working-with-install-plugin.html"
)
PORT_FORWARD_DOCUMENT = "AWS-StartPortForwardingSessionToRemoteHost"
POLL_SECONDS = 3.0
DRAIN_POLLS = 3
"""Polls of the logs after the task stopped: its last lines reach CloudWatch a moment later."""
TUNNEL_TASK_SECONDS = 3600
"""A task ``db --start-task`` starts sleeps this long, then exits by itself whatever happens here."""
RDS_CA_URL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"


def exec_off(stack: Stack, target: Target) -> str:
    return (
        f"ECS Exec is off for {target.path} in stack {stack.label}: the preset setting {EXEC_SETTING} (stacks/presets.py) turns it on, "
        "in dev only (a production preset refuses it). Instead, `python -m tools.ops run "
        f"{target.path} -- <command>` runs a command in a one-off task of the service, and `python -m tools.ops logs {target.path}` shows its logs."
    )


def require_cli(io: Io) -> None:
    if io.which("aws") is None:
        raise OpsError("the AWS CLI (`aws`) is not on PATH: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html")
    if io.which(PLUGIN) is None:
        raise OpsError(PLUGIN_HELP)


def container_of(task: Mapping[str, Any], name: str) -> dict[str, Any]:
    return next((c for c in task.get("containers", []) if c.get("name") == name), {})


def agent_running(container: Mapping[str, Any]) -> bool:
    return any(a.get("name") == EXEC_AGENT and a.get("lastStatus") == "RUNNING" for a in container.get("managedAgents", []))


def ready_task(tasks: Sequence[Mapping[str, Any]], container: str, wanted: str | None = None) -> Mapping[str, Any]:
    """A RUNNING task (``wanted``: whose id starts so) whose ``container`` runs ECS Exec's agent."""
    running = [t for t in tasks if t.get("lastStatus") == "RUNNING" and (wanted is None or task_id(t["taskArn"]).startswith(wanted))]
    if not running:
        raise OpsError(f"no running task{f' {wanted}' if wanted else ''} (python -m tools.ops status)")
    for task in running:
        if agent_running(container_of(task, container)):
            return task
    raise OpsError(
        f"ECS Exec's agent is not running in container {container!r} of {len(running)} running task(s); tasks started before ECS Exec was "
        "turned on have none: `aws ecs update-service --force-new-deployment` replaces them"
    )


# ---------------------------------------------------------------------- the requests


def run_task_request(stack: Stack, target: Target, service: Mapping[str, Any], command: Sequence[str], exec_enabled: bool = False) -> dict[str, Any]:
    """``RunTask`` for one task like the service's, the app container's command replaced."""
    network = (service.get("networkConfiguration") or {}).get("awsvpcConfiguration")
    if not network or not network.get("subnets"):
        raise OpsError(f"{target.path} has no awsvpc network configuration to run a task in")
    awsvpc = {"subnets": list(network["subnets"]), "securityGroups": list(network.get("securityGroups", [])), "assignPublicIp": "DISABLED"}
    request: dict[str, Any] = {
        "cluster": stack.cluster,
        "taskDefinition": service["taskDefinition"],
        "count": 1,
        "startedBy": STARTED_BY,
        "group": f"{STARTED_BY}:{target.key}",
        "networkConfiguration": {"awsvpcConfiguration": awsvpc},
        "overrides": {"containerOverrides": [{"name": target.service, "command": list(command)}]},
        "propagateTags": "TASK_DEFINITION",
        "enableExecuteCommand": exec_enabled,
    }
    strategy = service.get("capacityProviderStrategy")
    if strategy:
        request["capacityProviderStrategy"] = [{k: s[k] for k in ("capacityProvider", "weight", "base") if k in s} for s in strategy]
    else:
        request["launchType"] = service.get("launchType") or "FARGATE"
    if service.get("platformVersion"):
        request["platformVersion"] = service["platformVersion"]
    return request


def execute_command_request(cluster: str, task_arn: str, container: str, command: Sequence[str]) -> dict[str, Any]:
    """``ExecuteCommand``; the agent runs ``command`` without a shell (wrap shell syntax in ``sh -c``)."""
    return {"cluster": cluster, "task": task_arn, "container": container, "interactive": True, "command": shlex.join(command) if command else "/bin/sh"}


def execute_command_cli(region: str, request: Mapping[str, Any]) -> list[str]:
    return [
        "aws", "ecs", "execute-command", "--region", region, "--cluster", request["cluster"], "--task", request["task"],
        "--container", request["container"], "--interactive", "--command", request["command"],
    ]  # fmt: skip


def port_forward_request(cluster: str, task_arn: str, runtime_id: str, host: str, port: int, local_port: int, reason: str) -> dict[str, Any]:
    """SSM ``StartSession`` to ``host:port`` through the ECS Exec agent of one container of a task."""
    return {
        "Target": f"ecs:{cluster}_{task_id(task_arn)}_{runtime_id}",
        "DocumentName": PORT_FORWARD_DOCUMENT,
        "Parameters": {"host": [host], "portNumber": [str(port)], "localPortNumber": [str(local_port)]},
        "Reason": reason,
    }


def start_session_cli(region: str, request: Mapping[str, Any]) -> list[str]:
    return [
        "aws", "ssm", "start-session", "--region", region, "--target", request["Target"], "--document-name", request["DocumentName"],
        "--parameters", json.dumps(request["Parameters"], separators=(",", ":")), "--reason", request["Reason"],
    ]  # fmt: skip


def stop_command(stack: Stack, arn: str) -> str:
    return f"aws ecs stop-task --region {stack.region} --cluster {stack.cluster} --task {task_id(arn)}"


# ---------------------------------------------------------------------- run


def start(stack: Stack, request: Mapping[str, Any]) -> dict[str, Any]:
    answer = stack.aws("ecs").run_task(**request)
    failures = answer.get("failures") or []
    if failures or not answer.get("tasks"):
        reasons = "; ".join(f"{f.get('reason', '?')} {f.get('detail', '')}".strip() for f in failures) or "no task returned"
        raise OpsError(f"RunTask failed: {reasons}")
    return answer["tasks"][0]


def described(stack: Stack, arn: str) -> dict[str, Any]:
    found = stack.tasks([arn])
    if not found:
        raise OpsError(f"ECS no longer describes task {task_id(arn)} (it keeps a stopped task for about an hour)")
    return found[0]


def outcome(task: Mapping[str, Any], container: str) -> tuple[int, str]:
    """(exit status, what happened) of a stopped task, for its ``container``."""
    app = container_of(task, container)
    stopped = task.get("stoppedReason") or task.get("stopCode") or ""
    if app.get("exitCode") is not None:
        return int(app["exitCode"]), f"{container} exited {app['exitCode']}"
    failed = [c for c in task.get("containers", []) if c.get("exitCode") not in (None, 0)]
    if failed:
        c = failed[0]
        why = f" ({c['reason']})" if c.get("reason") else ""
        return int(c["exitCode"]), f"{container} never ran: container {c['name']} exited {c['exitCode']}{why}; task: {stopped or '?'}"
    return 1, f"{container} never ran: {app.get('reason') or stopped or 'no exit code'}"


def run(stack: Stack, target: Target, command: Sequence[str], io: Io, detach: bool = False, stop_on_interrupt: bool = False, poll: float = POLL_SECONDS) -> int:
    if not command:
        raise OpsError(f"give the command after --: python -m tools.ops run {target.path} -- node scripts/backfill.js")
    service = stack.service(target)
    definition = stack.task_definition(service["taskDefinition"])
    app_container(definition, target)
    task = start(stack, run_task_request(stack, target, service, command))
    arn, tid = task["taskArn"], task_id(task["taskArn"])
    io.err(f"started task {tid} ({short(service['taskDefinition'])}) in {stack.cluster}: {shlex.join(command)}")
    follow = f"python -m tools.ops logs {target.path} --follow" + (f" --stack {stack.name}" if stack.name else "")
    if detach:
        io.err(f"  logs: {follow}\n  stop: {stop_command(stack, arn)}")
        io.out(tid)
        return 0
    group, _ = log_streams(definition).get(target.service, (None, None))
    streams = [f"{prefix}{tid}" for g, prefix in log_streams(definition).values() if g == group]
    tail = Tail(stack.aws("logs"), group, 0, streams=streams) if group else None
    progress = Progress(io.progress_stream, io.clock)
    try:
        task = wait(stack, arn, tail, progress, io, poll)
    except KeyboardInterrupt:
        progress.clear()
        if stop_on_interrupt:
            stack.aws("ecs").stop_task(cluster=stack.cluster, task=arn, reason=f"interrupted: {STARTED_BY} run")
            io.err(f"\ninterrupted: stopped task {tid}")
        else:
            io.err(f"\ninterrupted: task {tid} keeps running (Ctrl-C never stops it)\n  logs: {follow}\n  stop: {stop_command(stack, arn)}")
        return 130
    code, what = outcome(task, target.service)
    io.err(f"task {tid} stopped: {what}")
    return code


def wait(stack: Stack, arn: str, tail: Tail | None, progress: Progress, io: Io, poll: float) -> dict[str, Any]:
    """Poll the task until it stopped, printing its new log lines; then the lines that arrive late."""
    tid = task_id(arn)

    def logs() -> None:
        for event in tail.poll() if tail else []:
            progress.clear()
            io.out(line(event))

    while True:
        task = described(stack, arn)
        status = task.get("lastStatus", "?")
        progress.update(f"task {tid} {status}")
        logs()
        if status == "STOPPED":
            break
        io.sleep(poll)
    for _ in range(DRAIN_POLLS if tail else 0):
        io.sleep(poll)
        logs()
    progress.done(f"task {tid} STOPPED")
    return task


# ---------------------------------------------------------------------- exec


def exec_(stack: Stack, target: Target, command: Sequence[str], io: Io, task: str | None = None, container: str | None = None) -> int:
    service = stack.service(target)
    if not service.get("enableExecuteCommand"):
        raise OpsError(exec_off(stack, target))
    container = target.service if container in (None, "app") else container
    chosen = ready_task(stack.running_tasks(target), container, task)
    argv = execute_command_cli(stack.region, execute_command_request(stack.cluster, chosen["taskArn"], container, command))
    require_cli(io)
    io.err("$ " + shlex.join(argv))
    return io.call(argv)


# ---------------------------------------------------------------------- db


def database(rds: Any, host: str) -> dict[str, Any]:
    """The RDS instance whose endpoint is ``host`` (``DescribeDBInstances`` of the identifier, the endpoint's
    first label): its user, database and port."""
    try:
        found = rds.describe_db_instances(DBInstanceIdentifier=host.split(".", 1)[0]).get("DBInstances", [])
    except rds.exceptions.DBInstanceNotFoundFault:
        found = []
    instance = next((i for i in found if (i.get("Endpoint") or {}).get("Address") == host), None)
    if instance is None:
        raise OpsError(f"no RDS instance has the endpoint {host} (the 'databases' output); is the stack's region right?")
    return instance


def connect_help(stack: Stack, instance: Mapping[str, Any], secret: str, local_port: int) -> list[str]:
    """How to connect through the tunnel. The password stays in Secrets Manager: the commands fetch it."""
    host = instance["Endpoint"]["Address"]
    fetch = f"aws secretsmanager get-secret-value --region {stack.region} --secret-id {shlex.quote(secret)} --query SecretString --output text"
    # the user comes from the URL too: DATABASE_URL carries the app role (<db>_app), not the master user
    database = instance.get("DBName", "postgres")
    conninfo = f"host={host} hostaddr=127.0.0.1 port={local_port} dbname={database} sslmode=verify-full sslrootcert=rds-global-bundle.pem"
    return [
        "# the RDS CAs, once (psql checks the server's certificate and name through the tunnel):",
        f"curl -fsSo rds-global-bundle.pem {RDS_CA_URL}",
        "# DATABASE_URL, the app role's, password included (this tool never reads it):",
        f'url="$({fetch})"',
        "# psql as that role, with the user and password from it:",
        'PGUSER="$(printf %s "$url" | sed -E \'s#^[^:]+://([^:]*):.*#\\1#\')" '
        'PGPASSWORD="$(printf %s "$url" | sed -E \'s#^[^:]+://[^:]*:([^@]*)@.*#\\1#\')" '
        f"psql {shlex.quote(conninfo)}",
    ]


def db(stack: Stack, system: str, io: Io, local_port: int = 15432, start_task: bool = False, dry_run: bool = False, poll: float = POLL_SECONDS) -> int:
    system = stack.system(system)
    host = (stack.outputs.get("databases") or {}).get(system)
    if not host:
        raise OpsError(f"{system} has no Postgres in stack {stack.label} (the 'databases' output)")
    targets = [t for t in stack.targets().values() if t.system == system]
    services = stack.describe(targets)
    readers = []  # services that read DATABASE_URL: the database's security group admits them
    for t in targets:
        definition = stack.task_definition(services[t.key]["taskDefinition"])
        arn = next((s["valueFrom"] for s in app_container(definition, t).get("secrets", []) if s.get("name") == "DATABASE_URL"), None)
        if arn:
            readers.append((t, services[t.key], arn))
    if not readers:
        raise OpsError(f"no service of {system} reads DATABASE_URL, so none may reach its database")
    usable = [(t, s) for t, s, _ in readers if s.get("enableExecuteCommand")]
    if not usable:
        t = readers[0][0]
        raise OpsError(
            f"the tunnel to {system}'s database goes through ECS Exec's agent in a task of {', '.join(r[0].path for r in readers)}, and ECS Exec is off "
            f"in stack {stack.label} ({EXEC_SETTING}, dev only). There is no bastion and no public endpoint by design; run SQL from a one-off task "
            f"instead: python -m tools.ops run {t.path} -- <command>"
        )
    instance = database(stack.aws("rds"), host)
    if not instance.get("DBName"):  # a shared instance (dev, components/shared_data.py): the system's database is the catalog's
        from stacks.catalog import load_catalog

        spec = load_catalog().get(system)
        instance = {**instance, "DBName": spec.postgres.database if spec and spec.postgres else "postgres"}
    secret = stack.aws("secretsmanager").describe_secret(SecretId=readers[0][2])["Name"]
    port = int((instance.get("Endpoint") or {}).get("Port") or 5432)
    task, via = None, usable[0][0]
    for t, _ in usable:
        try:
            task, via = ready_task(stack.running_tasks(t), t.service), t
            break
        except OpsError:
            continue
    if task is None and not start_task:
        raise OpsError(f"no running task of {', '.join(t.path for t, _ in usable)} runs ECS Exec's agent; --start-task starts one for the tunnel")
    if not dry_run:
        require_cli(io)
    started = None
    try:
        if task is None and not dry_run:
            t, service = usable[0]
            started = start(stack, run_task_request(stack, t, service, ["sleep", str(TUNNEL_TASK_SECONDS)], exec_enabled=True))["taskArn"]
            io.err(f"started task {task_id(started)} of {t.path} for the tunnel (it exits by itself after {TUNNEL_TASK_SECONDS // 60} min)")
            task, via = wait_for_agent(stack, started, t.service, io, poll), t
        runtime = container_of(task, via.service).get("runtimeId", "<runtime id>") if task else "<runtime id>"
        arn = task["taskArn"] if task else f"arn:aws:ecs:{stack.region}:<account>:task/{stack.cluster}/<task id>"
        request = port_forward_request(stack.cluster, arn, runtime, host, port, local_port, f"{STARTED_BY} db {system}")
        argv = start_session_cli(stack.region, request)
        io.out(f"Postgres of {system}: {host}:{port}, database {instance.get('DBName')}, as the role in DATABASE_URL ({instance.get('DBName')}_app)")
        io.out(f"forwarding localhost:{local_port} through task {task_id(arn)} of {via.path}; while it runs, in another shell:\n")
        io.out("\n".join(f"  {text}" for text in connect_help(stack, instance, secret, local_port)) + "\n")
        io.err("$ " + shlex.join(argv))
        return 0 if dry_run else io.call(argv)
    finally:
        if started:  # also on Ctrl-C and on errors: the tunnel's task never outlives the command
            stack.aws("ecs").stop_task(cluster=stack.cluster, task=started, reason=f"{STARTED_BY} db: tunnel closed")
            io.err(f"stopped task {task_id(started)}")


def wait_for_agent(stack: Stack, arn: str, container: str, io: Io, poll: float) -> dict[str, Any]:
    """Wait until the task runs and its ``container``'s ECS Exec agent is up."""
    progress = Progress(io.progress_stream, io.clock)
    while True:
        task = described(stack, arn)
        status = task.get("lastStatus", "?")
        if status == "STOPPED":
            progress.clear()
            raise OpsError(f"the tunnel's task stopped: {outcome(task, container)[1]}")
        if status == "RUNNING" and agent_running(container_of(task, container)):
            progress.done(f"task {task_id(arn)} RUNNING, ECS Exec's agent up")
            return task
        progress.update(f"task {task_id(arn)} {status}" + (", waiting for ECS Exec's agent" if status == "RUNNING" else ""))
        io.sleep(poll)
