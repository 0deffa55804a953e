"""Benchmark: the whole quickstart (`creason quickstart --fresh`) in a fresh process, with the wall
time and the peak memory of its whole process tree (driver, local Ray cluster, vLLM actors,
DeepSpeed workers, Serve replica), sampled every 0.5 s.

    python ray_jobs/benchmarks/quickstart.py --out docs/benchmarks/quickstart.json --log docs/quickstart_run.log

Targets (issues 3 and 6): under 30 minutes and under 12 GiB peak on a 2-core, 24 GiB machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import gib_by_process, machine_line, run_monitored, set_args


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON results")
    parser.add_argument("--log", required=True, help="the quickstart's own output")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    args = parser.parse_args()
    cmd = [sys.executable, "-m", "creason.cli", "quickstart", "--fresh", *set_args(args.overrides)]
    machine = machine_line()
    at_peak: dict[str, int] = {}
    rc, wall, peak = run_monitored(cmd, args.log, every_s=2.0, at_peak=at_peak)  # sampling ~40 processes costs CPU
    summary_path = Path("runs/quickstart/summary.json")
    for s in args.overrides:
        if s.startswith("output_dir="):
            summary_path = Path(s.split("=", 1)[1]) / "summary.json"
    result = {"machine": machine, "command": cmd[2:], "exit_code": rc, "wall_s": wall, "peak_pss_gib": peak / 2**30,
              "peak_pss_gib_by_process": gib_by_process(at_peak),
              "summary": json.loads(summary_path.read_text()) if summary_path.exists() else None}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{machine}\nexit {rc}, {wall / 60:.1f} min, peak memory {peak / 2**30:.2f} GiB (PSS of the process tree)")
    return rc


if __name__ == "__main__":
    sys.exit(main())
