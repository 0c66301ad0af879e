"""``status``: every service of the stack on one screen, and what needs attention under it.

Per service (``DescribeServices``, batched): running/desired tasks; the last deployment's state from
its PRIMARY deployment, judged against the task definition the last ``pulumi up`` registered exactly as
:func:`tools.verify_deploy.judge` does (so a circuit-breaker rollback that ECS calls COMPLETED shows as
ROLLED BACK); the image digest each running task's app container reports (``DescribeTasks``, one
``ListTasks`` for the whole cluster); for web services the target health of its target groups
(``DescribeTargetHealth``). Then the stack's open alarms: ``DescribeAlarms`` in state ALARM whose
actions notify the stack's ``alarm_topic_arn``, each put under the service or system its name starts
with (components/observability.py names them ``<system>-<service>-...`` and ``<system>-db-...``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from tools.verify_deploy import EVENTS_SHOWN, Expected, judge, short

from .stack import STARTED_BY, Stack, Target, task_id

BREAKER = re.compile(r"rolling back|rolled back|circuit breaker", re.IGNORECASE)
EVENTS_SEARCHED = 20
PROBLEM_STATES = ("FAILED", "ROLLING_BACK", "ROLLED_BACK", "OTHER_REVISION", "UNKNOWN")
UNHEALTHY = ("unhealthy", "unavailable")
"""Target states that need a look; ``initial`` and ``draining`` are a deployment's normal course."""


def rollout(target: Target, service: Mapping[str, Any]) -> tuple[str, str]:
    """(state, detail) of the service's last deployment.

    COMPLETED / IN_PROGRESS / FAILED as ECS reports them for the revision the stack registered;
    ROLLING_BACK or ROLLED_BACK when the PRIMARY deployment is another revision and a deployment failed or
    the events tell of the circuit breaker; OTHER_REVISION when another revision runs for another reason
    (someone deployed by hand)."""
    deployments = service.get("deployments", [])
    primary = next((d for d in deployments if d.get("status") == "PRIMARY"), None)
    if primary is None:
        return "UNKNOWN", "no PRIMARY deployment"
    if target.registered is None:  # outputs of an older program: ECS's word only
        state = primary.get("rolloutState") or "UNKNOWN"
        return state, f"{short(primary.get('taskDefinition', '?'))} {state}"
    verdict = judge(Expected(target.key, target.ecs_name, target.registered, target.service, None), service)
    if verdict.state == "ok":
        return "COMPLETED", verdict.detail
    if verdict.state == "pending":
        return "IN_PROGRESS", verdict.detail
    if primary.get("taskDefinition") != target.registered:
        failed = any(d.get("rolloutState") == "FAILED" for d in deployments)
        breaker = failed or any(BREAKER.search(e.get("message", "")) for e in service.get("events", [])[:EVENTS_SEARCHED])
        if not breaker:
            return "OTHER_REVISION", verdict.detail
        return ("ROLLING_BACK" if primary.get("rolloutState") == "IN_PROGRESS" else "ROLLED_BACK"), verdict.detail
    return "FAILED", verdict.detail


def target_health(elbv2: Any, service: Mapping[str, Any]) -> dict[str, Any] | None:
    """Health of the service's targets in each of its target groups; None for a service without one."""
    groups = [lb["targetGroupArn"] for lb in service.get("loadBalancers", []) if lb.get("targetGroupArn")]
    if not groups:
        return None
    targets = []
    for arn in groups:
        for d in elbv2.describe_target_health(TargetGroupArn=arn).get("TargetHealthDescriptions", []):
            health, target = d.get("TargetHealth", {}), d.get("Target", {})
            targets.append(
                {
                    "target": f"{target.get('Id')}:{target.get('Port')}",
                    "state": health.get("State"),
                    "reason": health.get("Reason"),
                    "description": health.get("Description"),
                }
            )
    return {"healthy": sum(t["state"] == "healthy" for t in targets), "total": len(targets), "targets": targets}


def owner(name: str, keys: Iterable[str], systems: Iterable[str]) -> str:
    """The service key (or system) an alarm belongs to, by the longest name prefix; ``environment`` else."""
    for prefix in sorted([*keys, *systems], key=len, reverse=True):
        if name.startswith(f"{prefix}-"):
            return prefix
    return "environment"


def open_alarms(cloudwatch: Any, topic: str | None, keys: Iterable[str], systems: Iterable[str]) -> list[dict[str, Any]]:
    """Alarms of this stack (their actions notify its topic) that are in state ALARM."""
    if not topic:
        return []
    keys, systems = list(keys), list(systems)
    out = []
    pages = cloudwatch.get_paginator("describe_alarms").paginate(StateValue="ALARM", ActionPrefix=topic, AlarmTypes=["MetricAlarm", "CompositeAlarm"])
    for page in pages:
        for alarm in [*page.get("MetricAlarms", []), *page.get("CompositeAlarms", [])]:
            if alarm.get("StateValue") != "ALARM" or topic not in alarm.get("AlarmActions", []):
                continue
            since = alarm.get("StateUpdatedTimestamp")
            out.append(
                {
                    "name": alarm["AlarmName"],
                    "owner": owner(alarm["AlarmName"], keys, systems),
                    "description": alarm.get("AlarmDescription", ""),
                    "reason": alarm.get("StateReason", ""),
                    "since": since.isoformat() if isinstance(since, dt.datetime) else since,
                    "actions_enabled": alarm.get("ActionsEnabled", True),
                }
            )
    return sorted(out, key=lambda a: (a["owner"], a["name"]))


def collect(stack: Stack, paused: Mapping[str, int] | None = None) -> dict[str, Any]:
    """The whole report, JSON-ready; ``problems`` lists what needs attention."""
    paused = paused or {}
    targets = stack.targets()
    services = stack.describe(targets.values())
    tasks = stack.tasks(stack.list_tasks())
    held = stack.outputs.get("held_services") or {}
    # both priorities' topics (alarm_topic_arns: critical, warning), or the one topic of an older stack
    topics = list((stack.outputs.get("alarm_topic_arns") or {}).values()) or [stack.outputs.get("alarm_topic_arn")]
    alarms = sorted(
        {a["name"]: a for t in topics for a in open_alarms(stack.aws("cloudwatch"), t, targets, stack.systems())}.values(),
        key=lambda a: (a["owner"], a["name"]),
    )
    rows, problems = [], []
    for key, target in targets.items():
        service = services[key]
        state, detail = rollout(target, service)
        mine = [t for t in tasks if t.get("group") == f"service:{target.ecs_name}"]
        apps = [c for t in mine if t.get("lastStatus") == "RUNNING" for c in t.get("containers", []) if c.get("name") == target.service]
        digests = Counter(c.get("imageDigest") or "unknown" for c in apps)
        health = target_health(stack.aws("elbv2"), service)
        row = {
            "key": key,
            "system": target.system,
            "service": target.service,
            "ecs_service": target.ecs_name,
            "running": service.get("runningCount", 0),
            "desired": service.get("desiredCount", 0),
            "pending": service.get("pendingCount", 0),
            "deployment": {"state": state, "task_definition": service.get("taskDefinition"), "registered": target.registered, "detail": detail},
            "images": dict(digests),
            "targets": health,
            "held": list(held.get(key) or []),
            "paused": paused.get(key),
            "alarms": [a["name"] for a in alarms if a["owner"] == key],
        }
        rows.append(row)
        why = []
        if state in PROBLEM_STATES:
            why.append(f"{state.replace('_', ' ').lower()}: {detail}")
        elif state == "COMPLETED" and row["running"] < row["desired"]:
            why.append(f"{row['running']} of {row['desired']} tasks running")
        if len(digests) > 1 and state == "COMPLETED":
            why.append(f"tasks run {len(digests)} different images")
        if health is not None:
            bad = [f"{t['target']} {t['state']}" + (f" ({t['reason']})" if t["reason"] else "") for t in health["targets"] if t["state"] in UNHEALTHY]
            if bad or (row["desired"] and not health["healthy"] and state == "COMPLETED"):
                why.append(f"{health['healthy']}/{health['total']} targets healthy" + (f": {', '.join(bad)}" if bad else ""))
        if why:
            events = [f"{e.get('createdAt', '')} {e.get('message', '')}" for e in service.get("events", [])[:EVENTS_SHOWN]]
            problems.append({"key": key, "problems": why, "events": events if state in PROBLEM_STATES else []})
    for alarm in alarms:
        problems.append({"key": alarm["owner"], "problems": [f"alarm {alarm['name']}: {alarm['description'] or alarm['reason']}"], "events": []})
    one_off = [
        {"task": task_id(t["taskArn"]), "group": t.get("group", ""), "status": t.get("lastStatus"), "started": _iso(t.get("startedAt") or t.get("createdAt"))}
        for t in tasks
        if t.get("startedBy") == STARTED_BY
    ]
    return {
        "stack": stack.label,
        "cluster": stack.cluster,
        "region": stack.region,
        "services": rows,
        "alarms": alarms,
        "one_off_tasks": one_off,
        "problems": problems,
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _digest(images: Mapping[str, int]) -> str:
    if not images:
        return "-"
    if len(images) > 1:
        return f"{len(images)} images"
    digest = next(iter(images))
    return digest[:19] if digest.startswith("sha256:") else digest


def _targets(health: Mapping[str, Any] | None) -> str:
    return "-" if health is None else f"{health['healthy']}/{health['total']} healthy"


def _deployment(row: Mapping[str, Any]) -> str:
    d = row["deployment"]
    revision = (d["task_definition"] or "?").rsplit(":", 1)[-1]
    return f"{d['state'].replace('_', ' ')} r{revision}"


def _note(row: Mapping[str, Any]) -> str:
    if row["paused"] is not None:
        return f"paused (resume: {row['paused']} tasks)"
    if row["held"]:
        return "held: " + "; ".join(row["held"])
    return ""


def render(report: Mapping[str, Any]) -> str:
    """The report as one screen of text."""
    rows = [("SERVICE", "TASKS", "DEPLOYMENT", "IMAGE", "TARGETS", "")]
    rows += [(r["key"], f"{r['running']}/{r['desired']}", _deployment(r), _digest(r["images"]), _targets(r["targets"]), _note(r)) for r in report["services"]]
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = [f"stack {report['stack']}  cluster {report['cluster']}  {report['region']}", ""]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths, strict=True)).rstrip() + (f"  {row[5]}" if row[5] else "") for row in rows]
    alarms = report["alarms"]
    lines += ["", f"open alarms: {len(alarms)}" if alarms else "open alarms: none"]
    for a in alarms:
        off = "" if a["actions_enabled"] else "  (actions off)"
        since = f"{a['since'][:16]}Z" if isinstance(a["since"], str) and a["since"][10:11] == "T" else a["since"]
        lines.append(f"  {a['name']}  {a['owner']}  since {since}{off}")
        lines.append(f"    {a['reason']}")
    if report["one_off_tasks"]:
        lines += ["", f"one-off tasks running ({STARTED_BY}):"]
        for t in report["one_off_tasks"]:
            started = f"{t['started'][:16]}Z" if isinstance(t["started"], str) and t["started"][10:11] == "T" else t["started"]
            lines.append(f"  {t['task']}  {t['group']}  {t['status']}  started {started}")
            lines.append(f"    stop: aws ecs stop-task --region {report['region']} --cluster {report['cluster']} --task {t['task']}")
    attention = [p for p in report["problems"] if not p["problems"][0].startswith("alarm ")]
    if attention:
        lines += ["", "needs attention:"]
        for p in attention:
            lines += [f"  {p['key']}: {why}" for why in p["problems"]]
            lines += [f"    {e}" for e in p["events"]]
    return "\n".join(lines)
