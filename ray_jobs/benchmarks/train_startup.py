"""Benchmark: how long `creason train` takes to reach its first step, in a fresh process each run.

Each run is `creason train --config <config>` for one step (no validation) on questions built once,
in a new process with its own local Ray cluster and output folder. Start-up = the time from the
process's launch to its first step's record, less that step's own phases (`time_*_s`): the
imports, the Ray cluster, the rollout actors' engines, the Ray Train workers, DeepSpeed, the
first weight push. With `--checkout A --checkout B` the runs alternate between two checkouts of
creason (each run imports the package from its checkout), so two versions compare side by side.

    python ray_jobs/benchmarks/train_startup.py --checkout /path/to/old --checkout . --runs 3 \\
        --out docs/benchmarks/train_startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line, run_or_exit, set_args

STEP_PHASES = ("generate", "score", "reference", "train", "sync")  # a step's own time (sync's parts are inside sync)


def build_questions(config: str, overrides: list[str], out: Path) -> Path:
    """The training questions, built once for every run."""
    cmd = [sys.executable, "-m", "creason.cli", "build-questions", "--config", config,
           *set_args([*overrides, f"output_dir={out}"])]
    run_or_exit(cmd, out.parent / "build.log", "build-questions")
    return out / "questions"


def one_run(checkout: Path, config: str, overrides: list[str], questions: Path, out: Path) -> dict:
    """One `creason train` of one step from `checkout`: wall, start-up and step seconds, peak GiB."""
    settings = [*overrides, f"output_dir={out}", f"train.questions_dir={questions}", "train.steps=1",
                "train.eval_every=0", "train.checkpoint_every=1"]
    cmd = [sys.executable, "-m", "creason.cli", "train", "--config", config, *set_args(settings)]
    env = {**os.environ, "PYTHONPATH": str(checkout)}  # the driver and, through its local cluster, every worker
    launched = time.time()
    wall, peak, _ = run_or_exit(cmd, out.parent / f"{out.name}.log", "creason train", env=env, cwd=checkout)
    first = json.loads((out / "train" / "metrics.jsonl").read_text().splitlines()[0])
    return {"checkout": str(checkout), "wall_s": round(wall, 1), **startup_times(first, launched),
            "peak_gib": round(peak / 2**30, 2)}


def startup_times(first: dict, launched: float) -> dict:
    """From the first step's record and the launch time: when the step ended, how long it took
    (its phases), and the start-up before it.

    >>> startup_times({"time": 1100.0, "time_generate_s": 10.0, "time_score_s": 0.5, "time_train_s": 20.0,
    ...                "time_sync_s": 1.0, "time_sync_gather_s": 0.4, "time_sync_engine_load_s": 0.5}, 1000.0)
    {'first_step_at_s': 100.0, 'startup_s': 68.5, 'step_s': 31.5}
    """
    step_s = sum(first.get(f"time_{phase}_s", 0.0) for phase in STEP_PHASES)
    at = first["time"] - launched
    return {"first_step_at_s": round(at, 1), "startup_s": round(at - step_s, 1), "step_s": round(step_s, 1)}


def summarize(rows: list[dict]) -> dict:
    """Median start-up, first step, wall and peak of each checkout's runs."""
    out = {}
    for checkout in dict.fromkeys(r["checkout"] for r in rows):
        mine = [r for r in rows if r["checkout"] == checkout]
        out[checkout] = {k: statistics.median(r[k] for r in mine) for k in ("startup_s", "first_step_at_s", "wall_s", "peak_gib")}
        out[checkout]["runs"] = len(mine)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--checkout", action="append", type=Path, help="a creason checkout (repeatable; default: this one)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each checkout, alternating")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--out", required=True, help="JSON results")
    args = parser.parse_args()
    checkouts = [c.resolve() for c in (args.checkout or [Path(__file__).resolve().parents[2]])]
    machine = machine_line()
    work = Path(tempfile.mkdtemp(prefix="train-startup-"))
    questions = build_questions(args.config, args.overrides, work / "questions-run")
    rows = []
    for i in range(args.runs):
        for j, checkout in enumerate(checkouts):
            rows.append(one_run(checkout, args.config, args.overrides, questions, work / f"run{i}-{j}"))
            print(json.dumps(rows[-1]), flush=True)
    result = {"machine": machine, "config": args.config, "overrides": args.overrides, "runs": rows,
              "median": summarize(rows)}
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{machine}\n{json.dumps(result['median'], indent=2)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
