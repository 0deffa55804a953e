"""Benchmark: what each training fault costs. Runs the fault tests (tests/test_train_faults.py:
a Ray Train worker, a rollout actor and the driver SIGKILLed during a 4-step run of the tiny
model) with $CREASON_FAULT_REPORT set, so that each test records the steps recorded before the
kill, the step resumed from, the seconds until the next new step and until the end, and whether
batches and final weights equal the uninterrupted run's; prints them as a Markdown table.

    python ray_jobs/benchmarks/train_faults.py --out docs/benchmarks/train_faults.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import machine_line

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    machine = machine_line()
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as report:
        env = {**os.environ, "CREASON_FAULT_REPORT": report.name}
        done = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_train_faults.py"], cwd=ROOT, env=env)
        rows = [json.loads(line) for line in Path(report.name).read_text().splitlines()]
    args.out.write_text(json.dumps({"machine": machine, "pytest_exit_code": done.returncode, "faults": rows}, indent=2))
    print(f"\n{machine}\n\n| fault | killed | steps recorded before | resumed from | actor restarts | "
          "s to next step | s to end | same batches | same final weights |\n|" + "---|" * 9)
    for r in rows:
        print(f"| {r['scenario']} | {r['killed']} | {r['steps_recorded_before_kill']} | {r['resumed_from'] or '-'} | "
              f"{r['actor_restarts']} | {r['seconds_to_next_step']:.1f} | {r['seconds_to_end']:.1f} | "
              f"{r['same_batches']} | {r['same_final_weights']} |")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
