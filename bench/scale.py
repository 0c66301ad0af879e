"""Scale (measured) in both layouts, and preview environments (modeled).

    python -m bench.scale                        # both layouts, N = 5, 25, 50, 100; each plan in a fresh process
    python -m bench.scale --layout split         # one layout: all-in-one, split or both (default)
    python -m bench.scale --sizes 5 25 50        # other N
    python -m bench.scale --repeat 3             # each plan three times, the median kept (a busy machine)
    python -m bench.scale --json rows.json       # also write every row (with its resource types) as JSON
    python -m bench.scale --one 25               # one all-in-one plan (what the loop calls)
    python -m bench.scale --one 25 --layout split --part core --save core.json      # one core plan, its outputs saved
    python -m bench.scale --one 25 --layout split --part system --core core.json    # one system stack on that core
    python -m bench.scale --previews             # preview environments of the five systems: first up, hourly cost

Scale. Each synthetic system is starkdca's shape: Postgres, Redis, secrets, a web service (the api, which
runs the migration) and a worker, each system with its own stores (``overrides: {data: {shared: false}}``:
the shared data tier of dev holds one database name per system and at most 15 caches, which identical
synthetic systems do not meet). dev has no domain, so each web service takes a listener of the load
balancer, 50 per ALB: N = 100 makes two ALBs (``alb`` and ``alb-2``), 50 and fewer one.

- all-in-one: one stack ``dev`` holds the core and the N systems.
- split: the core ``core-dev`` (``platform:layout: {core: true}``, the N systems listed for their
  repositories and listeners), then one system stack ``<system>-dev`` (``{system: <name>, core: core-dev}``)
  planned with the core's outputs as its StackReference reads them: the first system (on the first
  ALB) and the last one (on the last ALB). The core's outputs go from its process to the system's
  through a JSON file, so each plan runs, and is timed, in a process of its own.

Plan time is ``tools.harness.run`` (validation, the program, the capture) inside one process; peak
memory is that process's peak RSS. Resources are custom (cloud) resources.

Preview environments (``--previews``). The dev core is planned once (``Pulumi.core-dev.yaml``); each
system's preview environment is the stack file the preview workflow writes (``tools.preview_env.generate``
from ``Pulumi.<system>-dev.yaml``: ``layout.environment: pr-7``, the ``environment`` tag, the smallest
data tier with stores of its own), planned on that core's outputs. A second variant models a preview
that is a tenant of dev's shared instance and cache (a database of its own there instead of an RDS
instance): the program never makes an ephemeral environment a tenant (the tenant's database and roles
would be dev's own), so the variant is the same stack file without ``environment`` and with
``data.shared`` on, which plans as a tenant; its time and cost are what a per-preview database on the
shared instance would take (that database is made by the system's ``db-roles`` bootstrap, in a task,
not by an AWS resource). Time: ``tools.deploytime.schedule`` over the capture (p50, p90; durations of
``tools/data/aws-create-times.json``). Cost: ``tools.cost.estimate`` with every service at its
released task count, monthly (730 h) / 730; "Render" is ``tools.cost.render_equivalent`` of the same
capture. Also printed: dev's first ``pulumi up`` (all-in-one) and the dev core's, and what the previews
take of the dev core's load balancer quotas.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from components.platform import build
from stacks.catalog import System, load_catalog
from stacks.config import LISTENERS_PER_ALB, load_platform
from tools.harness import PROJECT_DIR, Capture, run

SIZES = (5, 25, 50, 100)
PR = 7
"""The pull request number of the modeled preview environments."""
OWN_STORES = {"data": {"shared": False}}
LB = "aws:lb/loadBalancer:LoadBalancer"
SG_RULES_PER_DIRECTION = 60
"""Amazon VPC quotas, "Inbound or outbound rules per security group": 60 per direction (default)."""


def synthetic(n: int) -> dict[str, System]:
    """``n`` systems of starkdca's shape (its web service included), named ``s000``, ``s001``..."""
    base = load_catalog()["starkdca"].model_dump(exclude_none=True)
    return {f"s{i:03d}": System.model_validate({**base, "name": f"s{i:03d}"}) for i in range(n)}


def _stack_file(directory: Path, stack: str, config: dict) -> None:
    base = {"aws:region": "us-east-1", "platform:preset": "dev", "platform:overrides": OWN_STORES}
    (directory / f"Pulumi.{stack}.yaml").write_text(yaml.safe_dump({"config": {**base, **config}}))
    (directory / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())


def _deployment() -> dict:
    """A synthetic system's entry of ``platform:systems``: starkdca's in its dev stack file (images, settings)."""
    return yaml.safe_load((PROJECT_DIR / "Pulumi.starkdca-dev.yaml").read_text())["config"]["platform:systems"]["starkdca"]


def _row(layout: str, n: int, stack: str, capture: Capture, seconds: float) -> dict:
    custom = [r for r in capture.resources if r.custom]
    return {
        "layout": layout,
        "systems": n,
        "stack": stack,
        "resources": len(custom),
        "seconds": round(seconds, 2),
        "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "albs": sum(r.type == LB for r in custom),
        "types": dict(Counter(r.type for r in custom)),
    }


def one(n: int) -> dict:
    """The all-in-one stack of ``n`` synthetic systems."""
    catalog = synthetic(n)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _stack_file(directory, "dev", {"platform:network": {"cidr": "10.10.0.0/16"}, "platform:systems": {name: _deployment() for name in catalog}})
        started = time.perf_counter()
        capture = run("dev", directory, program=lambda: build(load_platform("dev", directory, catalog=catalog)))
        seconds = time.perf_counter() - started
    return _row("all-in-one", n, "dev", capture, seconds)


def one_core(n: int, save: Path | None) -> dict:
    """The split layout's core serving ``n`` synthetic systems; its outputs written to ``save``."""
    catalog = synthetic(n)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        config = {"platform:layout": {"core": True}, "platform:network": {"cidr": "10.10.0.0/16"}, "platform:systems": {name: {} for name in catalog}}
        _stack_file(directory, "core-dev", config)
        started = time.perf_counter()
        capture = run("core-dev", directory, program=lambda: build(load_platform("core-dev", directory, catalog=catalog)))
        seconds = time.perf_counter() - started
    if save:
        save.write_text(json.dumps(capture.outputs))
    return _row("split", n, "core-dev", capture, seconds)


def one_system(n: int, system: str, core: Path) -> dict:
    """One system stack of the split layout, ``system`` of ``n``, on the core whose outputs ``core`` holds."""
    catalog = synthetic(n)
    outputs = json.loads(core.read_text())
    stack = f"{system}-dev"
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _stack_file(directory, stack, {"platform:layout": {"system": system, "core": "core-dev"}, "platform:systems": {system: _deployment()}})
        started = time.perf_counter()
        capture = run(stack, directory, program=lambda: build(load_platform(stack, directory, catalog=catalog)), stacks={"core-dev": outputs})
        seconds = time.perf_counter() - started
    row = _row("split", n, stack, capture, seconds)
    row["load_balancer"] = outputs["platform_core"]["load_balancer_of"][system]
    return row


# ---------------------------------------------------------------- the loop, each plan in a fresh process


def _child(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.scale", *args], capture_output=True, text=True, cwd=PROJECT_DIR)  # noqa: S603
    if out.returncode != 0:
        raise SystemExit(f"python -m bench.scale {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _median(args: list[str], repeat: int) -> dict:
    """One plan run ``repeat`` times, each in a fresh process: the run of median plan time (its peak
    memory with it), and the spread of the times."""
    runs = sorted((_child(*args) for _ in range(repeat)), key=lambda r: r["seconds"])
    row = runs[len(runs) // 2]
    if repeat > 1:
        row["spread"] = [runs[0]["seconds"], runs[-1]["seconds"]]
    return row


def measure(layouts: list[str], sizes: list[int], repeat: int = 1) -> list[dict]:
    rows = []
    for n in sizes:
        if "all-in-one" in layouts:
            rows.append(_median(["--one", str(n)], repeat))
        if "split" in layouts:
            with tempfile.TemporaryDirectory() as tmp:
                saved = Path(tmp) / "core.json"
                rows.append(_median(["--one", str(n), "--layout", "split", "--part", "core", "--save", str(saved)], repeat))
                for system in dict.fromkeys((f"s{0:03d}", f"s{n - 1:03d}")):
                    rows.append(_median(["--one", str(n), "--layout", "split", "--part", "system", "--system", system, "--core", str(saved)], repeat))
    return rows


def _label(type_: str) -> str:
    """``aws:rds/parameterGroup:ParameterGroup`` -> ``rds ParameterGroup``."""
    package, module = type_.split(":")[0], type_.split(":")[1].split("/")[0]
    return f"{package if module == 'index' else module} {type_.rsplit(':', 1)[-1]}"


def _growth(rows: list[dict], detail: bool = True) -> list[str]:
    """What a series of one stack adds per system, and per load balancer beyond the first, by resource type."""
    first, last = rows[0], rows[-1]
    same = [r for r in rows if r["albs"] == first["albs"]]
    top = same[-1]
    out = []
    if top["systems"] > first["systems"]:
        span = top["systems"] - first["systems"]
        per = {t: (top["types"].get(t, 0) - first["types"].get(t, 0)) / span for t in {*first["types"], *top["types"]}}
        per = {t: v for t, v in per.items() if v}
        total = sum(per.values())
        kinds = ", ".join(f"{v:g} {_label(t)}" for t, v in sorted(per.items(), key=lambda kv: (-kv[1], kv[0])))
        out.append(f"    + {total:g} resources per system" + (f" ({kinds})" if detail and per else ""))
        if last["albs"] > top["albs"]:
            more = last["albs"] - top["albs"]
            span = last["systems"] - top["systems"]
            extra = {t: (last["types"].get(t, 0) - top["types"].get(t, 0) - per.get(t, 0) * span) / more for t in {*top["types"], *last["types"]}}
            extra = {t: v for t, v in extra.items() if v}
            kinds = ", ".join(f"{v:g} {_label(t)}" for t, v in sorted(extra.items(), key=lambda kv: (-kv[1], kv[0])))
            out.append(f"    + {sum(extra.values()):g} resources per load balancer beyond the first" + (f" ({kinds})" if detail else ""))
    return out


def report(rows: list[dict]) -> None:
    print(f"{'layout':<11} {'N':>4}  {'stack':<9} {'ALBs':>4} {'resources':>9} {'plan s':>7} {'peak MB':>7}")
    for r in rows:
        lb = f" (on ALB {r['load_balancer']})" if "load_balancer" in r else ""
        spread = f"  [{r['spread'][0]:.2f}-{r['spread'][1]:.2f} s]" if "spread" in r else ""
        print(f"{r['layout']:<11} {r['systems']:>4}  {r['stack']:<9} {r['albs']:>4} {r['resources']:>9,} {r['seconds']:>7.2f} {r['peak_mb']:>7}{lb}{spread}")
    whole = [r for r in rows if r["layout"] == "all-in-one"]
    if len(whole) >= 2:
        a, b = whole[0], whole[-1]
        per_system = (b["seconds"] - a["seconds"]) / (b["systems"] - a["systems"])
        per_resource_ms = 1000 * (b["seconds"] - a["seconds"]) / (b["resources"] - a["resources"])
        mb_per_system = (b["peak_mb"] - a["peak_mb"]) / (b["systems"] - a["systems"])
        print(f"\nall-in-one: {per_system:.3f} s and {mb_per_system:.2f} MB per system, {per_resource_ms:.1f} ms per resource")
        for mid in whole[1:-1]:
            predicted = a["seconds"] + per_system * (mid["systems"] - a["systems"])
            print(
                f"  linearity: {mid['systems']} systems took {mid['seconds']:.2f} s; the line through {a['systems']} and {b['systems']} "
                f"predicts {predicted:.2f} s"
            )
        print("  what grows:")
        for line in _growth(whole, detail=False):
            print(line)
    cores = [r for r in rows if r["stack"] == "core-dev"]
    if cores:
        print(f"\nsplit, core: {cores[0]['resources']}-{cores[-1]['resources']} resources, {cores[0]['seconds']:.2f}-{cores[-1]['seconds']:.2f} s")
        for line in _growth(cores):
            print(line)
    systems = [r for r in rows if r["layout"] == "split" and r["stack"] != "core-dev"]
    if systems:
        res = sorted({r["resources"] for r in systems})
        secs = [r["seconds"] for r in systems]
        mbs = [r["peak_mb"] for r in systems]
        print(
            f"split, one system stack: {', '.join(map(str, res))} resources; {min(secs):.2f}-{max(secs):.2f} s; {min(mbs)}-{max(mbs)} MB "
            f"(N = {', '.join(str(n) for n in dict.fromkeys(r['systems'] for r in systems))})"
        )


# ---------------------------------------------------------------- preview environments (modeled)


def previews(pr: int = PR) -> dict[str, Any]:
    """Each system's preview environment on the dev core: modeled first ``pulumi up`` and hourly cost, with
    stores of its own (as generated) and as a tenant of dev's shared stores; dev's and the dev core's first up."""
    from components.platform import run_stack
    from stacks.presets import deep_merge
    from tools import cost, deploytime, preview_env

    times = deploytime.load_times()
    prices = cost.load_prices()
    hours = prices["hours_per_month"]

    def model(capture: Capture, cfg: Any) -> dict[str, Any]:
        p50, p90 = deploytime.schedule(capture, "p50", times), deploytime.schedule(capture, "p90", times)
        running = cost.running_counts(cfg)
        lines = cost.estimate(capture, cfg.systems, prices, running)
        monthly = sum(line.monthly for line in lines)
        return {
            "resources": sum(r.custom for r in capture.resources),
            "p50_min": round(p50.total, 1),
            "p90_min": round(p90.total, 1),
            "critical_path": [r.name for r in p50.critical_path()],
            "monthly": round(monthly, 2),
            "hourly": round(monthly / hours, 4),
            "lines": [(line.item, round(line.monthly, 2), line.confidence) for line in sorted(lines, key=lambda x: -x.monthly)],
            "render_monthly": round(cost.render_equivalent(capture, prices, running), 2),
            "databases_created": created_databases(capture),
            "stores": [
                f"{r.type.rsplit(':', 1)[-1]} {r.name}"
                for r in capture.resources
                if r.type.endswith(("Instance", "ReplicationGroup", "PostgresTenant", "RedisTenant"))
            ],
        }

    def created_databases(capture: Capture) -> list[str]:
        """The databases a ``db-roles`` bootstrap of the plan creates in a shared instance (its SQL, in the task definitions)."""
        text = json.dumps([r.inputs for r in capture.of_type("aws:ecs/taskDefinition:TaskDefinition")])
        return sorted(set(re.findall(r"CREATE DATABASE %I', '([^'\\]+)'", text)))

    out: dict[str, Any] = {"pr": pr, "environments": {}}
    core = run("core-dev", PROJECT_DIR)
    core_cfg = load_platform("core-dev", PROJECT_DIR)
    out["core-dev"] = model(core, core_cfg)
    first = core.outputs["platform_core"]["load_balancers"]["1"]
    group = first["security_group_id"]

    def on_core(capture: Capture) -> dict[str, int]:
        """What a stack puts on the core's first load balancer: listeners, and inbound rules of its security group."""
        listeners = [r for r in capture.of_type("aws:lb/listener:Listener") if r.inputs.get("loadBalancerArn") == first["arn"]]
        rules = {
            direction: sum(r.inputs.get("securityGroupId") == group for r in capture.of_type(f"aws:vpc/securityGroup{kind}Rule:SecurityGroup{kind}Rule"))
            for direction, kind in (("inbound_rules", "Ingress"), ("outbound_rules", "Egress"))
        }
        return {"listeners": len(listeners), **rules, "ports": sorted(int(r.inputs["port"]) for r in listeners)}

    out["core-dev"]["on_core"] = on_core(core)
    dev = run("dev", PROJECT_DIR)
    out["dev"] = model(dev, load_platform("dev", PROJECT_DIR))
    out["dev"]["on_core"] = on_core(dev)  # the same names, ids and ARNs as the core and its five system stacks (tests/test_layouts.py)
    systems = list(core_cfg.systems)
    for system in systems:
        source = yaml.safe_load((PROJECT_DIR / f"Pulumi.{system}-dev.yaml").read_text())
        stack = preview_env.pr_stack(system, pr)
        for variant in ("generated", "tenant"):
            key = f"{system}/{variant}"
            name = stack
            try:
                document = preview_env.generate(system, pr, source)
                if variant == "tenant":
                    # The program never makes an ephemeral environment a tenant of dev's shared stores (their
                    # database and roles would be dev's own: components/platform.py, _from_core). What a
                    # database of its own on the shared instance would take is modeled by the same stack
                    # without `environment` (so named as dev's system stack) and with data.shared on.
                    config = document["config"]
                    config["platform:layout"].pop("environment")
                    config["aws:defaultTags"]["tags"]["environment"] = preview_env.ENV
                    config["platform:overrides"] = deep_merge(config["platform:overrides"], {"data": {"shared": True}})
                    name = f"{system}-{preview_env.ENV}"
                with tempfile.TemporaryDirectory() as tmp:
                    directory = Path(tmp)
                    shutil.copy(PROJECT_DIR / "Pulumi.yaml", directory / "Pulumi.yaml")
                    shutil.copy(PROJECT_DIR / "Pulumi.core-dev.yaml", directory / "Pulumi.core-dev.yaml")
                    (directory / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
                    cfg = load_platform(name, directory)
                    capture = run(name, directory, program=lambda d=directory: run_stack(d), stacks={"core-dev": core.outputs})
                out["environments"][key] = {**model(capture, cfg), "on_core": on_core(capture)}
            except Exception as err:  # a variant that does not plan is reported, not fatal
                out["environments"][key] = {"error": f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}",
                                            "where": traceback.format_exc().strip().splitlines()[-3:]}  # fmt: skip
    return out


def report_previews(data: dict[str, Any]) -> None:
    def when(m: dict) -> str:
        return f"{m['p50_min']:.1f} / {m['p90_min']:.1f} min"

    print(f"preview environments <system>-pr-{data['pr']} on the dev core (modeled: tools.deploytime p50/p90, tools.cost; hourly = monthly / 730)")
    print(
        "stores: 'own' as tools.preview_env generates it (its own smallest RDS instance and cache); 'tenant': the same as a tenant of\n"
        "dev's shared instance and cache where the system may share (modeled by the stack without `environment`: the program never\n"
        "makes a preview a tenant, whose database and roles would be dev's own)"
    )
    print(f"{'system':<9} {'stores':<10} {'res':>4} {'p50 min':>7} {'p90':>5} {'$/hour':>7} {'$/month':>8} {'Render $/h':>10}  critical path (p50), last steps")
    for key, m in data["environments"].items():
        system, variant = key.split("/")
        stores = "tenant" if variant == "tenant" else "own"
        if "error" in m:
            print(f"{system:<9} {stores:<10} does not plan: {m['error']}")
            continue
        path = " -> ".join(dict.fromkeys(m["critical_path"][-4:]))
        print(
            f"{system:<9} {stores:<10} {m['resources']:>4} {m['p50_min']:>7.1f} {m['p90_min']:>5.1f} {m['hourly']:>7.3f} {m['monthly']:>8.2f} "
            f"{m['render_monthly'] / 730:>10.3f}  ...{path}"
        )
    for stack in ("dev", "core-dev"):
        m = data[stack]
        print(f"for comparison, {stack}: {m['resources']} resources, first `pulumi up` {when(m)}, ${m['monthly']:,.2f}/month (${m['hourly']:.3f}/h)")
    # what the previews take of the dev core's first load balancer, against its default quotas
    quotas = {"listeners": LISTENERS_PER_ALB, "inbound_rules": SG_RULES_PER_DIRECTION, "outbound_rules": SG_RULES_PER_DIRECTION}
    used = data["dev"]["on_core"]
    print("the dev core's first ALB: " + ", ".join(f"{used[k]} of {q} {k.replace('_', ' ')}" for k, q in quotas.items()) + " taken by dev's services")
    for key, m in data["environments"].items():
        if "error" not in m and key.endswith("/generated"):
            per = m["on_core"]
            print(f"  a {key.split('/')[0]} preview adds " + ", ".join(f"{per[k]} {k.replace('_', ' ')}" for k in quotas))
    ports: dict[int, list[str]] = {}
    for key, m in data["environments"].items():
        if "error" not in m and key.endswith("/generated"):
            for port in m["on_core"]["ports"]:
                ports.setdefault(port, []).append(key.split("/")[0])
    for port, systems in sorted(ports.items()):
        if len(systems) > 1:
            print(
                f"  PORT {port}: the pr-{data['pr']} previews of {', '.join(systems)} each take it (one pull request changing two of them: DuplicateListener)"
            )
    left = {k: q - used[k] for k, q in quotas.items()}
    room = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in left.items())
    print(f"  left: {room}; one of each per preview web service: at most {min(left.values())} preview web services at once")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--layout", choices=("all-in-one", "split", "both"), default="both")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--repeat", type=int, default=1, help="plan each stack this many times (fresh processes) and keep the median time")
    parser.add_argument("--json", metavar="FILE", help="also write the rows (or the preview model) as JSON")
    parser.add_argument("--one", type=int, help="one plan of N systems in this process (what the loop calls)")
    parser.add_argument("--part", choices=("core", "system"), help="with --one --layout split: the core, or one system stack")
    parser.add_argument("--system", default="s000", help="with --part system: which synthetic system")
    parser.add_argument("--save", type=Path, help="with --part core: write the core's outputs here")
    parser.add_argument("--core", type=Path, help="with --part system: the core's outputs (from --save)")
    parser.add_argument("--previews", action="store_true", help="model the five systems' preview environments")
    args = parser.parse_args()
    if args.one:
        if args.layout != "split":
            row = one(args.one)
        elif args.part == "system":
            if not args.core:
                parser.error("--part system needs --core FILE (a core's outputs, from --part core --save FILE)")
            row = one_system(args.one, args.system, args.core)
        else:
            row = one_core(args.one, args.save)
        print(json.dumps(row))
        return 0
    if args.previews:
        data = previews()
        report_previews(data)
        if args.json:
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
        return 0
    layouts = ["all-in-one", "split"] if args.layout == "both" else [args.layout]
    print(f"{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f} at start; "
          f"each plan in a fresh process{f', median of {args.repeat}' if args.repeat > 1 else ''}\n")  # fmt: skip
    rows = measure(layouts, args.sizes, args.repeat)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
