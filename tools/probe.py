"""Probe a stack on a real account, and turn `pulumi up` event logs into measured timings.

    python -m tools.probe check --outputs outputs.json [--catalog-dir smoke/catalog] [--external-sha256 HEX] [--json probe.json]
    python -m tools.probe timings --events first=up-1.jsonl --wall first=1234 ... --out timings.json

``check`` (the smoke workflow runs it after `pulumi up`; any stack works) reads ``pulumi stack output
--json`` and checks, one line each, exit 1 on any failure:

- ``health``: every URL of ``urls`` answers its catalog health path with 200 (GET, retried);
- ``deployments``: every service's PRIMARY deployment runs the task definition this update registered,
  rollout COMPLETED, app container on the exported digest (:mod:`tools.verify_deploy`, reused as is);
- ``smoke``: for a system with a ``/smoke`` endpoint (the stand-in, ``smoke/server.mjs``), the migration
  row exists, Postgres is on TLS, a Redis write/read round trip works, the worker's and the singleton's
  heartbeats are recent, the generated secret has its catalog length, the external one the expected hash;
- ``running``: every worker runs its desired count (at least one), every singleton exactly one task;
- ``webhooks``: each ``webhook_urls`` path takes a POST the WAF's common rules would block elsewhere (a
  body over 8 KB, no ``User-Agent``), and the same request to another path of the service is blocked (403);
- ``alarms``: every alarm the program declares exists (found by the alarm topic as their action,
  ``DescribeAlarms ActionPrefix``) and none is in ALARM (polled: new alarms settle within minutes);
- ``redis-export``: when the stack exports Redis snapshots (output ``redis_dr_bucket``), its function
  ``platform-<env>-redis-export`` ran at least once (a log stream in its log group; polled, it runs
  every 15 minutes); otherwise reported as not enabled.

``timings`` reads the engine event logs of each `pulumi up` (``PULUMI_DEBUG_COMMANDS=true pulumi up
--event-log FILE``: one JSON engine event a line, each with a Unix ``timestamp`` in seconds) and
writes, per up, the wall time, the phases (network, data stores, services steady: first start to
last finish of the resources of each) and every resource operation with its seconds and its entry of
``tools/data/aws-create-times.json`` (``measured`` there says how to fold them in).

Needs (read-only): ecs:DescribeServices, ecs:DescribeTaskDefinition, ecs:ListTasks,
cloudwatch:DescribeAlarms, logs:DescribeLogStreams.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tools import verify_deploy

HTTP_ATTEMPTS = 20
HTTP_DELAY_SECONDS = 15
ALARM_TIMEOUT_SECONDS = 900
EXPORT_TIMEOUT_SECONDS = 1200
POLL_SECONDS = 30
HEARTBEAT_MAX_AGE_SECONDS = 60
WEBHOOK_BODY_BYTES = 9 * 1024  # the AWS common rule set blocks bodies over 8 KB (SizeRestrictions_BODY)

WEB_ALARMS = ("no-healthy-targets", "failing-health-checks", "5xx-rate", "p95-latency")
DB_ALARMS = ("db-cpu", "db-storage", "db-connections")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------- the catalog the update ran with


def load_systems(extra_dirs: Iterable[Path] = ()) -> dict[str, Any]:
    """``stacks/apps`` plus any other catalog directory (the smoke workflow copies its file into
    stacks/apps; ``--catalog-dir smoke/catalog`` reads it where it is)."""
    from stacks.catalog import load_catalog

    systems = dict(load_catalog())
    for d in extra_dirs:
        systems.update(load_catalog(Path(d)))
    return systems


def split_key(key: str, systems: Iterable[str]) -> tuple[str, str]:
    """``smoke-web`` -> (``smoke``, ``web``): the longest system name that prefixes the key."""
    system = next((s for s in sorted(systems, key=len, reverse=True) if key.startswith(f"{s}-")), None)
    if system is None:
        raise verify_deploy.OutputsError(f"{key!r} belongs to no system of the catalog")
    return system, key.removeprefix(f"{system}-")


# ---------------------------------------------------------------- HTTP


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes


def request(url: str, method: str = "GET", body: bytes | None = None, timeout: float = 10) -> Response:
    """One HTTP request with exactly the headers given: http.client adds Host (and Content-Length),
    never a User-Agent, so the webhook check can send none."""
    u = urllib.parse.urlsplit(url)
    conn_type = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    conn = conn_type(u.hostname or "", u.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/octet-stream"} if body else {}
        conn.request(method, (u.path or "/") + (f"?{u.query}" if u.query else ""), body=body, headers=headers)
        answer = conn.getresponse()
        return Response(answer.status, answer.read())
    finally:
        conn.close()


def get_with_retries(
    url: str, want: Callable[[Response], bool], attempts: int, delay: float, sleep: Callable[[float], None]
) -> tuple[bool, str, Response | None]:
    last = "no attempt"
    answer = None
    for attempt in range(1, attempts + 1):
        try:
            answer = request(url)
            if want(answer):
                return True, f"{answer.status} after {attempt} attempt(s)", answer
            last = f"{answer.status} {answer.body[:200].decode(errors='replace')}"
        except OSError as err:
            last = f"{type(err).__name__}: {err}"
        if attempt < attempts:
            sleep(delay)
    return False, f"{last} (after {attempts} attempts)", answer


def check_health(outputs: Mapping[str, Any], systems: Mapping[str, Any], attempts: int, delay: float, sleep: Callable[[float], None]) -> list[Check]:
    checks = []
    for key, url in sorted((outputs.get("urls") or {}).items()):
        system, service = split_key(key, systems)
        path = systems[system].services[service].health.path
        ok, detail, _ = get_with_retries(url.rstrip("/") + path, lambda r: r.status == 200, attempts, delay, sleep)
        checks.append(Check(f"health {key}", ok, f"GET {path}: {detail}"))
    if not checks:
        checks.append(Check("health", False, "the stack has no 'urls' output"))
    return checks


def generated_length(length: int, encoding: str) -> int:
    """Characters of a generated secret (components/secrets.py: RandomBytes as hex or base64, or a RandomPassword)."""
    return {"hex": 2 * length, "base64": 4 * -(-length // 3)}.get(encoding, length)


def check_smoke(
    outputs: Mapping[str, Any], systems: Mapping[str, Any], external_sha256: str | None, attempts: int, delay: float, sleep: Callable[[float], None]
) -> list[Check]:
    """The stand-in's own report (``GET /smoke``): migration, TLS, Redis, heartbeats, secrets."""
    checks = []
    for key, url in sorted((outputs.get("urls") or {}).items()):
        system, _ = split_key(key, systems)
        if system != "smoke":
            continue
        ok, detail, answer = get_with_retries(url.rstrip("/") + "/smoke", lambda r: r.status == 200, attempts, delay, sleep)
        if not ok or answer is None:
            checks.append(Check(f"smoke {key}", False, f"GET /smoke: {detail}"))
            continue
        report = json.loads(answer.body)
        spec = systems[system].secrets["SMOKE_GENERATED"]
        generated = generated_length(spec.length or 32, spec.encoding or "alphanumeric")
        problems = []
        if (report.get("migration") or {}).get("id") != 1:
            problems.append(f"no migration row (smoke_migrations): {report.get('postgres_error') or report.get('migration')}")
        if report.get("postgres_tls") is not True:
            problems.append("the Postgres connection is not TLS")
        if report.get("redis_roundtrip") is not True:
            problems.append(f"no Redis round trip: {report.get('redis_error', '')}")
        for kind in ("worker", "singleton"):
            age = report.get(f"{kind}_heartbeat_age_seconds")
            if age is None or age > HEARTBEAT_MAX_AGE_SECONDS:
                problems.append(f"{kind} heartbeat {'missing' if age is None else f'{age} s old'}")
        if report.get("generated_secret_length") != generated:
            problems.append(f"generated secret has {report.get('generated_secret_length')} characters, expected {generated}")
        if external_sha256 and report.get("external_secret_sha256") != external_sha256[:16]:
            problems.append("the external secret is not the value the workflow set")
        detail = "; ".join(problems) or (
            f"migration row 1 ({report['migration'].get('applied_at')}), Postgres TLS, Redis round trip, heartbeats "
            f"{report.get('worker_heartbeat_age_seconds')} s / {report.get('singleton_heartbeat_age_seconds')} s, secrets as set"
        )
        checks.append(Check(f"smoke {key}", not problems, detail, report))
    return checks


def check_webhooks(outputs: Mapping[str, Any], urls: Mapping[str, str]) -> list[Check]:
    """What the WAF exception is for: an oversized, agent-less POST passes on the path, not beside it."""
    checks = []
    body = b"x" * WEBHOOK_BODY_BYTES
    for key, hooks in sorted((outputs.get("webhook_urls") or {}).items()):
        for name, url in sorted(hooks.items()):
            try:
                on_path = request(url, "POST", body).status
                beside = request(urls[key].rstrip("/") + "/not-a-webhook", "POST", body).status if key in urls else None
            except OSError as err:
                checks.append(Check(f"webhook {key} {name}", False, f"{type(err).__name__}: {err}"))
                continue
            ok = on_path == 200 and beside in (403, None)
            detail = f"9 KB POST without User-Agent: {on_path} on the webhook path (want 200), {beside} beside it (want 403)"
            checks.append(Check(f"webhook {key} {name}", ok, detail))
    return checks


# ---------------------------------------------------------------- ECS


def check_running(ecs: Any, cluster: str, outputs: Mapping[str, Any], systems: Mapping[str, Any]) -> list[Check]:
    checks = []
    for key, name in sorted((outputs.get("service_names") or {}).items()):
        system, service = split_key(key, systems)
        kind = str(systems[system].services[service].kind)
        if kind not in ("worker", "singleton"):
            continue
        described = ecs.describe_services(cluster=cluster, services=[name])["services"]
        if not described:
            checks.append(Check(f"running {key}", False, "not returned by DescribeServices"))
            continue
        svc = described[0]
        running, desired = svc.get("runningCount", 0), svc.get("desiredCount", 0)
        tasks = ecs.list_tasks(cluster=cluster, serviceName=name, desiredStatus="RUNNING").get("taskArns", [])
        if kind == "singleton":
            ok = running == desired == len(tasks) == 1
            detail = f"{running} running, {desired} desired, {len(tasks)} task(s): exactly one wanted"
        else:
            ok = desired >= 1 and running == desired
            detail = f"{running} running of {desired} desired"
        checks.append(Check(f"running {key}", ok, detail))
    return checks


def check_deployments(ecs: Any, outputs: Mapping[str, Any], systems: Mapping[str, Any], timeout: float, sleep: Callable[[float], None]) -> Check:
    def image_of(system: str, service: str) -> str:
        if system not in systems or service not in systems[system].services:
            raise verify_deploy.OutputsError(f"{system}-{service} is not in the catalog")
        return systems[system].image_of(service)

    lines: list[str] = []
    expected = verify_deploy.expectations(outputs, image_of)
    problems = verify_deploy.verify(ecs, str(outputs["cluster_name"]), expected, timeout=timeout, sleep=sleep, out=lines.append)
    return Check("deployments", not problems, "; ".join(problems) or f"{len(expected)} services on this update's task definitions", {"lines": lines})


# ---------------------------------------------------------------- CloudWatch


def expected_alarms(outputs: Mapping[str, Any], systems: Mapping[str, Any]) -> list[str]:
    """Logical names of the alarms ``components/observability.py`` declares for the stack."""
    names = []
    for key in outputs.get("urls") or {}:
        names += [f"{key}-{a}" for a in WEB_ALARMS]
    for key in outputs.get("service_names") or {}:
        system, service = split_key(key, systems)
        if str(systems[system].services[service].kind) == "singleton":
            names.append(f"{key}-not-running")
    # a shared data tier (dev, components/shared_data.py): the shared instance's and cache's alarms, once
    shared = outputs.get("platform_shared_data") or {}
    on_shared_db = set((shared.get("postgres") or {}).get("databases") or {})
    on_shared_cache = set((shared.get("redis") or {}).get("databases") or {})
    for system in outputs.get("databases") or {}:
        names += [f"{'shared' if system in on_shared_db else system}-{a}" for a in DB_ALARMS]
        if systems[system].redis is not None:
            cache = "shared" if system in on_shared_cache else system
            names += [f"{cache}-cache-001-cpu", f"{cache}-cache-001-memory"]  # the first node; replicas add -002...
    if outputs.get("urls"):
        names.append("alb-monitoring-5xx-rate")
    return sorted(set(names))


def _alarms(cloudwatch: Any, topic_arn: str) -> list[dict[str, Any]]:
    found = []
    for page in cloudwatch.get_paginator("describe_alarms").paginate(ActionPrefix=topic_arn, AlarmTypes=["MetricAlarm", "CompositeAlarm"]):
        found += [a for a in page.get("MetricAlarms", []) + page.get("CompositeAlarms", []) if topic_arn in a.get("AlarmActions", [])]
    return found


def check_alarms(
    cloudwatch: Any,
    outputs: Mapping[str, Any],
    systems: Mapping[str, Any],
    timeout: float,
    poll: float,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> Check:
    topic = outputs.get("alarm_topic_arn")
    if not isinstance(topic, str):
        return Check("alarms", False, "the stack has no 'alarm_topic_arn' output")
    want = expected_alarms(outputs, systems)
    deadline = clock() + timeout
    while True:
        # both priorities' topics (alarm_topic_arns: critical, warning); the warning one holds CPU, memory, latency
        topics = list(dict.fromkeys([topic, *(outputs.get("alarm_topic_arns") or {}).values()]))
        alarms = list({a["AlarmName"]: a for t in topics for a in _alarms(cloudwatch, t)}.values())
        logical = {re.sub(r"-[0-9a-f]{7}$", "", a["AlarmName"]): a for a in alarms}  # Pulumi's auto-name suffix
        missing = [n for n in want if n not in logical]
        firing = sorted(a["AlarmName"] for a in alarms if a.get("StateValue") == "ALARM")
        if missing:
            return Check("alarms", False, f"missing: {', '.join(missing)} ({len(alarms)} alarms act on {topic})")
        if not firing:
            states = sorted({a.get("StateValue", "?") for a in alarms})
            return Check("alarms", True, f"{len(alarms)} alarms, none in ALARM ({', '.join(states)})", {"alarms": sorted(logical)})
        if clock() + poll > deadline:
            reasons = {a["AlarmName"]: a.get("StateReason", "") for a in alarms if a["AlarmName"] in firing}
            return Check("alarms", False, f"in ALARM after {timeout:.0f} s: {', '.join(firing)}", {"reasons": reasons})
        sleep(poll)


def check_redis_export(logs: Any, outputs: Mapping[str, Any], timeout: float, poll: float, sleep: Callable[[float], None], clock: Callable[[], float]) -> Check:
    if "redis_dr_bucket" not in outputs:
        return Check("redis-export", True, "not enabled in this stack (no recovery.dr_region): skipped", {"skipped": True})
    group = f"/aws/lambda/platform-{outputs.get('environment')}-redis-export"
    deadline = clock() + timeout
    while True:
        try:
            streams = logs.describe_log_streams(logGroupName=group, orderBy="LastEventTime", descending=True, limit=1).get("logStreams", [])
        except logs.exceptions.ResourceNotFoundException:
            return Check("redis-export", False, f"no log group {group}")
        if streams:
            return Check("redis-export", True, f"ran: newest log stream {streams[0].get('logStreamName')} in {group}")
        if clock() + poll > deadline:
            return Check("redis-export", False, f"no run in {timeout:.0f} s (no log stream in {group}); it is scheduled every 15 minutes")
        sleep(poll)


# ---------------------------------------------------------------- the whole probe


def probe(
    outputs: Mapping[str, Any],
    systems: Mapping[str, Any],
    client: Callable[[str, str], Any],
    *,
    external_sha256: str | None = None,
    attempts: int = HTTP_ATTEMPTS,
    delay: float = HTTP_DELAY_SECONDS,
    deploy_timeout: float = verify_deploy.DEFAULT_TIMEOUT_SECONDS,
    alarm_timeout: float = ALARM_TIMEOUT_SECONDS,
    export_timeout: float = EXPORT_TIMEOUT_SECONDS,
    poll: float = POLL_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    out: Callable[[str], None] = print,
) -> list[Check]:
    """Every check above, in order; ``client(service, region)`` makes the AWS clients."""
    cluster = outputs.get("cluster_name")
    definitions = outputs.get("task_definitions") or {}
    if not isinstance(cluster, str) or not definitions:
        raise verify_deploy.OutputsError("the stack has no 'cluster_name' or 'task_definitions' output (not an ECS stack?)")
    region = verify_deploy.region_of(next(iter(definitions.values())))
    ecs = client("ecs", region)
    checks: list[Check] = []

    def run(found: Check | list[Check]) -> None:
        for c in found if isinstance(found, list) else [found]:
            checks.append(c)
            out(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<28} {c.detail}")

    run(check_health(outputs, systems, attempts, delay, sleep))
    run(check_deployments(ecs, outputs, systems, deploy_timeout, sleep))
    run(check_smoke(outputs, systems, external_sha256, attempts, delay, sleep))
    run(check_running(ecs, cluster, outputs, systems))
    run(check_webhooks(outputs, outputs.get("urls") or {}))
    run(check_alarms(client("cloudwatch", region), outputs, systems, alarm_timeout, poll, sleep, clock))
    run(check_redis_export(client("logs", region), outputs, export_timeout, poll, sleep, clock))
    return checks


# ---------------------------------------------------------------- timings from engine event logs

PHASES = {
    "network": lambda urn, typ: "platform:network:Network" in urn,
    "data_stores": lambda urn, typ: typ in ("aws:rds/instance:Instance", "aws:elasticache/replicationGroup:ReplicationGroup"),
    "services_steady": lambda urn, typ: typ == "aws:ecs/service:Service",
}
TIMED_OPS = {"create", "update", "replace", "create-replacement", "delete", "delete-replaced"}


def model_entry(typ: str, inputs: Mapping[str, Any]) -> str | None:
    """The ``aws-create-times.json`` entry a created resource of ``typ`` measures (as tools.deploytime
    picks it), or None for the types the model counts as a second."""
    from tools import deploytime

    if typ == "aws:rds/instance:Instance":
        return "rds_postgres_multi_az" if inputs.get("multiAz") else "rds_postgres_single_az"
    if typ == "aws:elasticache/replicationGroup:ReplicationGroup":
        return "elasticache_replication_group_multi_az" if inputs.get("multiAzEnabled") else "elasticache_replication_group"
    if typ in deploytime.FAST:
        return None
    return deploytime.KIND.get(typ, deploytime.SMALL)


def operations(events: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Each timed resource operation of one update: start (its pre event), end (outputs or failure)."""
    started: dict[tuple[str, str], tuple[int, Mapping[str, Any]]] = {}
    done = []
    for e in events:
        for kind in ("resourcePreEvent", "resOutputsEvent", "resOpFailedEvent"):
            if kind not in e:
                continue
            meta = e[kind].get("metadata", {})
            op, urn = meta.get("op", ""), meta.get("urn", "")
            if op not in TIMED_OPS or e[kind].get("planning"):
                continue
            if kind == "resourcePreEvent":
                started[(urn, op)] = (int(e["timestamp"]), meta)
            elif (urn, op) in started:
                start, pre = started.pop((urn, op))
                typ = meta.get("type") or pre.get("type", "")
                inputs = ((pre.get("new") or {}).get("inputs")) or {}
                done.append(
                    {
                        "urn": urn,
                        "type": typ,
                        "op": op,
                        "start": start,
                        "end": int(e["timestamp"]),
                        "seconds": int(e["timestamp"]) - start,
                        "failed": kind == "resOpFailedEvent",
                        "model_entry": model_entry(typ, inputs) if op == "create" else None,
                    }
                )
    return done


def phases(ops: list[dict[str, Any]]) -> dict[str, dict[str, int] | None]:
    """Per phase: seconds from its first resource's start to its last one's end, and when it ended
    counted from the update's first operation."""
    if not ops:
        return dict.fromkeys(PHASES)
    origin = min(o["start"] for o in ops)
    result: dict[str, dict[str, int] | None] = {}
    for name, member in PHASES.items():
        mine = [o for o in ops if member(o["urn"], o["type"])]
        result[name] = (
            {"seconds": max(o["end"] for o in mine) - min(o["start"] for o in mine), "ended_after_seconds": max(o["end"] for o in mine) - origin}
            if mine
            else None
        )
    return result


def read_events(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def timings(events: Mapping[str, Path], wall: Mapping[str, float], meta: Mapping[str, Any]) -> dict[str, Any]:
    ups: dict[str, Any] = {}
    measured: dict[str, list[float]] = {}
    for name in dict.fromkeys([*wall, *events]):
        ops = operations(read_events(events[name])) if name in events and events[name].exists() else []
        ups[name] = {"wall_seconds": wall.get(name), "phases": phases(ops), "operations": sorted(ops, key=lambda o: (o["start"], o["urn"]))}
        for o in ops:
            if o["model_entry"] and not o["failed"]:
                measured.setdefault(o["model_entry"], []).append(round(o["seconds"] / 60, 2))
    return {**meta, "unit": "seconds (measured: minutes, as in tools/data/aws-create-times.json)", "ups": ups, "measured": measured}


# ---------------------------------------------------------------- command line


def aws_client(service: str, region: str) -> Any:
    import boto3

    return boto3.client(service, region_name=region)


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for v in values:
        name, sep, rest = v.partition("=")
        if not sep or not name:
            raise SystemExit(f"--{what} takes NAME=VALUE, got {v!r}")
        out[name] = rest
    return out


def main(argv: list[str] | None = None, client: Callable[[str, str], Any] = aws_client, sleep: Callable[[float], None] = time.sleep) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.probe", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="probe a deployed stack")
    c.add_argument("--outputs", required=True, metavar="FILE", help="`pulumi stack output --json`, or - for stdin")
    c.add_argument("--catalog-dir", action="append", default=[], type=Path, help="another catalog directory (smoke/catalog)")
    c.add_argument("--external-sha256", help="sha256 hex of the value the workflow set for SMOKE_EXTERNAL")
    c.add_argument("--attempts", type=int, default=HTTP_ATTEMPTS)
    c.add_argument("--delay", type=float, default=HTTP_DELAY_SECONDS)
    c.add_argument("--alarm-timeout", type=float, default=ALARM_TIMEOUT_SECONDS)
    c.add_argument("--export-timeout", type=float, default=EXPORT_TIMEOUT_SECONDS)
    c.add_argument("--json", type=Path, help="write the checks here")
    t = sub.add_parser("timings", help="timings JSON from `pulumi up --event-log` files")
    t.add_argument("--events", action="append", default=[], metavar="NAME=FILE")
    t.add_argument("--wall", action="append", default=[], metavar="NAME=SECONDS")
    t.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "timings":
        result = timings(
            {k: Path(v) for k, v in _pairs(args.events, "events").items()},
            {k: float(v) for k, v in _pairs(args.wall, "wall").items()},
            _pairs(args.meta, "meta"),
        )
        args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        for name, up in result["ups"].items():
            steps = ", ".join(f"{p} {v['seconds']} s" for p, v in up["phases"].items() if v)
            print(f"{name}: wall {up['wall_seconds']} s; {steps or 'no event log'}")
        return 0
    try:
        outputs = verify_deploy.read_outputs(str(args.outputs))
        checks = probe(
            outputs,
            load_systems(args.catalog_dir),
            client,
            external_sha256=args.external_sha256,
            attempts=args.attempts,
            delay=args.delay,
            alarm_timeout=args.alarm_timeout,
            export_timeout=args.export_timeout,
            sleep=sleep,
        )
    except verify_deploy.OutputsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps([asdict(c) for c in checks], indent=2, default=str) + "\n", encoding="utf-8")
    failed = [c for c in checks if not c.ok]
    print(f"\n{len(checks) - len(failed)} of {len(checks)} checks passed" + (f"; FAILED: {', '.join(c.name for c in failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
