"""Scale (measured): the offline plan of N synthetic systems, its time and peak memory.

    python -m bench.scale            # N = 5, 25, 100, each in a fresh process
    python -m bench.scale --one 25   # one run (what the loop calls)

Each synthetic system is starkdca's shape without its web service (Postgres, Redis, secrets, one
worker), because one load balancer takes at most 50 web services by AWS's default quotas and the
loader stops past that (see bench/README.md). So this measures how the program grows, not the edge.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from components.platform import build
from stacks.catalog import System, load_catalog
from stacks.config import load_platform
from tools.harness import PROJECT_DIR, run


def synthetic(n: int) -> dict[str, System]:
    base = load_catalog()["starkdca"].model_dump(exclude_none=True)
    base["services"] = {"worker": base["services"]["worker"]}
    base["migration"] = None
    base["secrets"] = {k: v for k, v in base["secrets"].items() if k in base["services"]["worker"]["secrets"]}
    return {f"s{i:03d}": System.model_validate({**base, "name": f"s{i:03d}", "migration": None}) for i in range(n)}


def one(n: int) -> dict:
    catalog = synthetic(n)
    with tempfile.TemporaryDirectory() as tmp:
        config = {"aws:region": "us-east-1", "platform:network": {"cidr": "10.10.0.0/16"},
                  "platform:systems": {name: {"images": {"backend": "1.0.0"}} for name in catalog}}  # fmt: skip
        (Path(tmp) / "Pulumi.dev.yaml").write_text(yaml.safe_dump({"config": config}))
        (Path(tmp) / "Pulumi.yaml").write_text((PROJECT_DIR / "Pulumi.yaml").read_text())
        started = time.perf_counter()
        capture = run("dev", Path(tmp), program=lambda: build(load_platform("dev", Path(tmp), catalog=catalog)))
        seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"systems": n, "resources": sum(r.custom for r in capture.resources), "seconds": round(seconds, 2), "peak_mb": round(peak_mb)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--one", type=int)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return 0
    rows = []
    for n in (5, 25, 100):
        out = subprocess.run([sys.executable, "-m", "bench.scale", "--one", str(n)], capture_output=True, text=True, check=True, cwd=PROJECT_DIR)  # noqa: S603
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in rows:
        print(f"{r['systems']:>4} systems  {r['resources']:>5} resources  {r['seconds']:>6.2f} s  {r['peak_mb']:>5} MB peak")
    (a, b) = rows[0], rows[-1]
    per_system = (b["seconds"] - a["seconds"]) / (b["systems"] - a["systems"])
    per_resource_ms = 1000 * (b["seconds"] - a["seconds"]) / (b["resources"] - a["resources"])
    mb_per_system = (b["peak_mb"] - a["peak_mb"]) / (b["systems"] - a["systems"])
    print(f"marginal: {per_system:.3f} s and {mb_per_system:.2f} MB per system (one service each), {per_resource_ms:.1f} ms per resource")
    mid = rows[1]
    predicted = a["seconds"] + per_system * (mid["systems"] - a["systems"])
    print(f"linearity: 25 systems took {mid['seconds']:.2f} s; the line through 5 and 100 predicts {predicted:.2f} s")
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)
