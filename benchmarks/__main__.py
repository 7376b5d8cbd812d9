"""Run every benchmarks/bench_*.py in its own process and print a summary table."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("-k", dest="only", default="", help="run modules whose name contains this")
    args = parser.parse_args()

    env = dict(os.environ)
    if args.quick:
        env["EMBEDDB_BENCH_QUICK"] = "1"
    here = Path(__file__).parent
    modules = sorted(p.stem for p in here.glob("bench_*.py") if args.only in p.stem)
    results, failed = [], []
    for module in modules:
        print(f"# {module}", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, "-m", f"benchmarks.{module}"],
            cwd=here.parent, env=env, stdout=subprocess.PIPE, text=True,
        )
        for line in proc.stdout.splitlines():
            print(line, flush=True)
            if line.startswith("{"):
                results.append(json.loads(line))
        if proc.returncode:
            failed.append(module)
    _table(results)
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _table(results: list[dict]) -> None:
    if not results:
        return
    print(f"\n{'benchmark':<44} {'unit':<10} {'embeddb':>12} {'raw':>12} {'ratio':>7} {'RSS MiB':>8}")
    for r in results:
        print(
            f"{r['name']:<44} {r['unit']:<10} {r['embeddb']:>12} {r['raw']:>12} "
            f"{r['ratio'] if r['ratio'] is not None else '-':>7} {r['peak_rss_mb']:>8}"
        )


if __name__ == "__main__":
    sys.exit(main())
