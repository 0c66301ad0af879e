"""Drift: what the nightly refresh preview of a stack found, and what becomes of the stack's drift issue.

The drift workflow (.github/workflows/drift.yml) runs, per deployed stack and with that stack's
read-only role, ``pulumi preview --refresh --expect-no-changes`` of the commit the stack was last
deployed from (:func:`deployed_commit`), then:

    python3 -m tools.drift classify --stack dev --exit-code 255 --output drift.txt --json drift-dev.json
    python3 -m tools.drift decide --result drift-dev.json --issues open-issues.json --run-url URL --out action/

:func:`classify` reads the preview: ``clean`` (exit 0), ``drift`` (the CLI's "no changes were expected
but changes were proposed"), anything else ``error`` (the check itself failed: no issue is touched, the
run fails). :func:`decide` is the pure function of the issue: state in (the stack's open issue or none,
the result), action out: ``open``, ``update`` (the body always, a comment only when the drift itself
changed), ``close`` or ``nothing``. Only the Python standard library: the reporting job installs nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

LABEL = "drift"
NO_CHANGES_EXPECTED = re.compile(r"no changes were expected(?: for \S+)? but changes were proposed")
# Types whose refresh would read a secret value (Secrets Manager's GetSecretValue): left out of the
# drift check (``--exclude``), so the read-only role never needs the value nor the key to decrypt it.
EXCLUDED_TYPES = ("aws:secretsmanager/secretVersion:SecretVersion",)
MAX_OUTPUT = 50_000
"""Characters of the preview kept in the issue (GitHub takes 65,536 in a body)."""

Status = Literal["clean", "drift", "error"]
Kind = Literal["open", "update", "close", "nothing"]


@dataclass(frozen=True)
class Result:
    stack: str
    status: Status
    summary: str
    """The changed resources and the "Resources:" totals of the preview."""
    output: str
    """The preview's output, its last :data:`MAX_OUTPUT` characters."""
    commit: str = ""
    """The commit the stack was checked at (its last deployment's)."""


@dataclass(frozen=True)
class Issue:
    number: int
    title: str
    body: str


@dataclass(frozen=True)
class Action:
    kind: Kind
    number: int | None = None
    title: str = ""
    body: str = ""
    comment: str = ""


# ---------------------------------------------------------------- reading the preview

_STEP = re.compile(r"^\s*(\+-|-\+|\+\+|--|[+~-]|<=|>)\s+([\w:/.-]+): \(([\w-]+)\)\s*$")
_URN = re.compile(r"^\s*\[urn=(urn:pulumi:[^\]]+)\]\s*$")


def summary(output: str) -> str:
    """``<op> <type> <name>`` per changed resource, then the preview's ``Resources:`` block."""
    lines = output.splitlines()
    steps: list[str] = []
    for i, line in enumerate(lines):
        m = _STEP.match(line)
        if not m:
            continue
        name = ""
        for nxt in lines[i + 1 : i + 4]:
            u = _URN.match(nxt)
            if u:
                name = u.group(1).rsplit("::", 1)[-1]
                break
        steps.append(f"{m.group(1)} {m.group(3)} {m.group(2)} {name}".rstrip())
    totals: list[str] = []
    if "Resources:" in [x.strip() for x in lines]:
        start = next(i for i, x in enumerate(lines) if x.strip() == "Resources:")
        for x in lines[start:]:
            if not x.strip() and len(totals) > 1:
                break
            totals.append(x.rstrip())
    return "\n".join([*steps, *([""] if steps and totals else []), *totals]).strip()


def classify(stack: str, exit_code: int, output: str, commit: str = "") -> Result:
    if exit_code == 0:
        status: Status = "clean"
    elif NO_CHANGES_EXPECTED.search(output):
        status = "drift"
    else:
        status = "error"
    return Result(stack, status, summary(output) if status == "drift" else "", output[-MAX_OUTPUT:], commit)


def deployed_commit(history: Any) -> str | None:
    """The commit the stack's newest successful update ran from (``pulumi stack history --json``, newest
    first; the CLI records the working tree's ``git.head`` in each update's environment). None when the
    newest one recorded none (run outside a git checkout): then there is nothing better than main.

    ``git.dirty`` is not held against it: a promotion writes the target's stack file before its
    ``pulumi up`` and commits it after, so its updates are dirty by that file alone, and the drift check
    takes the stack file from main (where the promotion committed it)."""
    if not isinstance(history, list):
        return None
    for entry in history:
        if not isinstance(entry, Mapping) or entry.get("kind") != "update" or entry.get("result") != "succeeded":
            continue
        head = str((entry.get("environment") or {}).get("git.head") or "")
        return head if re.fullmatch(r"[0-9a-f]{40}", head) else None
    return None


def excluded_urns(state: Any) -> list[str]:
    """URNs of :data:`EXCLUDED_TYPES` in ``pulumi stack export`` output."""
    resources = ((state or {}).get("deployment") or {}).get("resources") or []
    return sorted(r["urn"] for r in resources if isinstance(r, Mapping) and r.get("type") in EXCLUDED_TYPES and r.get("urn"))


# ---------------------------------------------------------------- the issue


def marker(stack: str) -> str:
    return f"<!-- platform-drift stack={stack} -->"


def fingerprint(result: Result) -> str:
    return hashlib.sha256(result.summary.encode()).hexdigest()[:16]


def _fingerprint_line(fp: str) -> str:
    return f"<!-- fingerprint={fp} -->"


def find_issue(stack: str, issues: Iterable[Mapping[str, Any]]) -> Issue | None:
    """The stack's open drift issue among ``issues`` (the REST API's list; pull requests left out)."""
    for item in issues:
        if "pull_request" in item:
            continue
        body = item.get("body") or ""
        if marker(stack) in body:
            return Issue(int(item["number"]), str(item.get("title", "")), body)
    return None


def title(stack: str) -> str:
    return f"Drift: stack {stack} differs from its code"


def body(result: Result, run_url: str) -> str:
    commit = f" at `{result.commit[:12]}`" if result.commit else ""
    return "\n".join(
        [
            marker(result.stack),
            _fingerprint_line(fingerprint(result)),
            f"The nightly refresh preview of **{result.stack}**{commit} proposes changes: the account no longer matches what the stack "
            f"last deployed ([run]({run_url})).",
            "",
            "````",
            result.summary or "(no summary: see the output below)",
            "````",
            "",
            'Reconcile (README, "Drift"): adopt the change into the code (a pull request, then the normal deploy), or put the account back '
            f"with `pulumi up --stack {result.stack}` from the commit the stack runs. This issue closes itself when the stack is clean again.",
            "",
            "<details><summary>The preview</summary>",
            "",
            "````",
            result.output.strip(),
            "````",
            "</details>",
        ]
    )


def decide(result: Result, existing: Issue | None, run_url: str) -> Action:
    """What to do with the stack's drift issue: open one on new drift, update the open one (a comment
    only when the drift changed since it was last written), close it when the stack is clean, and leave
    everything as it is when the check failed or there is nothing to say."""
    if result.status == "error":
        return Action("nothing")
    if result.status == "clean":
        if existing is None:
            return Action("nothing")
        return Action("close", existing.number, comment=f"The refresh preview of {result.stack} is clean again ([run]({run_url})); closing.")
    new_body = body(result, run_url)
    if existing is None:
        return Action("open", None, title(result.stack), new_body)
    changed = _fingerprint_line(fingerprint(result)) not in existing.body
    comment = f"The drift changed ([run]({run_url})):\n\n````\n{result.summary}\n````" if changed else ""
    return Action("update", existing.number, existing.title or title(result.stack), new_body, comment)


# ---------------------------------------------------------------- command line


def _read_json(path: str) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tools.drift", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("classify", help="read a preview's exit status and output; exit 1 when the check itself failed")
    c.add_argument("--stack", required=True)
    c.add_argument("--exit-code", type=int, required=True)
    c.add_argument("--output", required=True, help="the preview's output")
    c.add_argument("--commit", default="")
    c.add_argument("--json", required=True, help="where the result goes")
    d = sub.add_parser("decide", help="the action on the stack's drift issue, as files in --out")
    d.add_argument("--result", required=True)
    d.add_argument("--issues", required=True, help="open issues labeled drift (GitHub REST API JSON)")
    d.add_argument("--run-url", required=True)
    d.add_argument("--out", required=True, help="directory: kind, number, title, body.md, comment.md")
    h = sub.add_parser("deployed-commit", help="print commit=<sha> of the stack's newest successful update")
    h.add_argument("--history", required=True, help="`pulumi stack history --json`")
    h.add_argument("--default", required=True, help="the commit when the history names none")
    x = sub.add_parser("excluded", help="print the URNs the drift check leaves out, one a line")
    x.add_argument("--state", required=True, help="`pulumi stack export`")
    args = parser.parse_args(argv)

    if args.command == "classify":
        output = Path(args.output).read_text(encoding="utf-8", errors="replace") if Path(args.output).exists() else ""
        result = classify(args.stack, args.exit_code, output, args.commit)
        Path(args.json).write_text(json.dumps(asdict(result)), encoding="utf-8")
        print(f"{result.stack}: {result.status}")
        if result.summary:
            print(result.summary)
        if result.status == "error":
            print(output[-4000:])
            return 1
        return 0
    if args.command == "decide":
        result = Result(**_read_json(args.result))
        action = decide(result, find_issue(result.stack, _read_json(args.issues)), args.run_url)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name, value in (("kind", action.kind), ("number", "" if action.number is None else str(action.number)), ("title", action.title)):
            (out / name).write_text(value, encoding="utf-8")
        (out / "body.md").write_text(action.body, encoding="utf-8")
        (out / "comment.md").write_text(action.comment, encoding="utf-8")
        print(f"{result.stack}: {result.status} -> {action.kind}{f' #{action.number}' if action.number else ''}")
        return 0
    if args.command == "deployed-commit":
        print(f"commit={deployed_commit(_read_json(args.history)) or args.default}")
        return 0
    print("\n".join(excluded_urns(_read_json(args.state))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
