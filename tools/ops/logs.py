"""CloudWatch Logs of a service: ``FilterLogEvents`` over its log group, newest last, ``--follow`` polls.

Where the logs are is read from the service's task definition: each container's ``awslogs-group`` and
``awslogs-stream-prefix`` (components/service.py: ``/platform/<env>/<system>/<service>``, one stream per
container and task, ``<prefix>/<container>/<task id>``). ``--container`` keeps one container's
streams (``app`` is the service's own container); ``--follow`` asks again every few seconds from the
newest event seen, a few seconds back (events reach CloudWatch out of order) and never prints an event
twice.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from .stack import OpsError

POLL_SECONDS = 2.0
LOOKBACK_MS = 10_000
"""How far behind the newest event seen each poll starts again: CloudWatch ingests out of order."""
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def since_ms(text: str, now: dt.datetime) -> int:
    """``--since``: ``90s``, ``10m``, ``1h``, ``2d``, ``1w`` ago, or an ISO 8601 time (UTC unless it says)."""
    m = re.fullmatch(r"(\d+)([smhdw])", text.strip())
    if m:
        return int((now - dt.timedelta(seconds=int(m[1]) * UNITS[m[2]])).timestamp() * 1000)
    try:
        at = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise OpsError(f"--since {text!r}: give a duration (90s, 10m, 1h, 2d) or a time (2026-12-01T20:00:00Z)") from None
    return int((at if at.tzinfo else at.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def fetch(logs: Any, group: str, start: int, *, prefix: str | None = None, streams: list[str] | None = None, pattern: str | None = None) -> list[dict]:
    """Every event from ``start`` (ms), all pages, in time order. ``prefix`` or ``streams`` narrow it."""
    request: dict[str, Any] = {"logGroupName": group, "startTime": start}
    if streams:
        request["logStreamNames"] = streams
    elif prefix:
        request["logStreamNamePrefix"] = prefix
    if pattern:
        request["filterPattern"] = pattern
    events: list[dict] = []
    try:
        while True:
            page = logs.filter_log_events(**request)
            events += page.get("events", [])
            token = page.get("nextToken")
            if not token or token == request.get("nextToken"):
                break
            request["nextToken"] = token
    except logs.exceptions.ResourceNotFoundException:
        if streams:  # the task's streams appear when its containers start
            return []
        raise OpsError(f"log group {group} does not exist (has any task of this service started?)") from None
    if prefix and not streams:
        events = [e for e in events if e.get("logStreamName", "").startswith(prefix)]
    return sorted(events, key=lambda e: (e.get("timestamp", 0), e.get("eventId", "")))


class Tail:
    """Successive polls of one log group that return each event once."""

    def __init__(self, logs: Any, group: str, start: int, *, prefix: str | None = None, streams: list[str] | None = None, pattern: str | None = None):
        self.logs, self.group, self.start = logs, group, start
        self.prefix, self.streams, self.pattern = prefix, streams, pattern
        self.seen: dict[str, int] = {}

    def poll(self) -> list[dict]:
        events = fetch(self.logs, self.group, self.start, prefix=self.prefix, streams=self.streams, pattern=self.pattern)
        new = [e for e in events if e["eventId"] not in self.seen]
        for e in new:
            self.seen[e["eventId"]] = e["timestamp"]
        if events:
            self.start = max(self.start, events[-1]["timestamp"] - LOOKBACK_MS)
            self.seen = {k: ts for k, ts in self.seen.items() if ts >= self.start}
        return new


def line(event: Mapping[str, Any]) -> str:
    """``2026-12-01T20:00:01Z api/4f2c9a1b  message``: time, container and task of the stream."""
    at = dt.datetime.fromtimestamp(event["timestamp"] / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    parts = event.get("logStreamName", "").split("/")
    source = f"{parts[-2]}/{parts[-1][:8]}" if len(parts) >= 3 else event.get("logStreamName", "?")
    return f"{at} {source}  {event.get('message', '').rstrip()}"


def tail(
    source: Tail,
    follow: bool,
    out: Callable[[str], None] = print,
    sleep: Callable[[float], None] = time.sleep,
    poll: float = POLL_SECONDS,
) -> None:
    """Print what is there, then (``follow``) what arrives, until interrupted."""
    for event in source.poll():
        out(line(event))
    while follow:
        sleep(poll)
        for event in source.poll():
            out(line(event))


def containers(definition: Mapping[str, Any], streams: Mapping[str, tuple[str, str]], service: str, wanted: str | None) -> tuple[str, str | None]:
    """(log group, stream prefix or None for every container) for ``--container`` (``app`` = ``service``)."""
    if not streams:
        raise OpsError(f"task definition {definition.get('taskDefinitionArn', '?')} has no container that logs to CloudWatch (awslogs)")
    groups = {group for group, _ in streams.values()}
    if wanted is None:
        if len(groups) > 1:
            raise OpsError(f"its containers log to {len(groups)} groups ({', '.join(sorted(groups))}); pass --container")
        return groups.pop(), None
    name = service if wanted == "app" else wanted
    if name not in streams:
        names = ", ".join(f"app ({n})" if n == service else n for n in sorted(streams))
        raise OpsError(f"no container {wanted!r} in {service}'s task definition logs to CloudWatch; these do: {names}")
    return streams[name]
