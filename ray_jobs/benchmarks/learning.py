"""Benchmark: does GRPO make the model better? base -> format warm-up -> GRPO -> evaluation of all
three on held-out test questions, under the study's protocol (forced letter), with the time of
every stage and the peak memory of the whole process tree.

    python ray_jobs/benchmarks/learning.py --out docs/benchmarks/learning.json --log /tmp/learning.log
    python ray_jobs/benchmarks/learning.py --registry-seed 7 --out ... --log ...   # another registry
    python ray_jobs/benchmarks/learning.py --out docs/benchmarks/learning.json --log x --render   # tables only

It runs `creason quickstart --config learning --fresh` (the pipeline with the warm-up stage) in a
fresh process. With `--registry-seed S`, a registry is first written by `creason generate-registry`
under seed S and read back as a user's file (`data.source=files`), so the recipe is shown on a
registry it was not tuned on. The results: each model's accuracy with its 95% interval, the
majority-answer, record-regression and chance baselines (the record regression reads the record:
its gap over the majority answer is what the records tell), McNemar's test of trained vs base,
trained vs warm-up (what GRPO itself adds), trained vs the majority answer and trained vs the record
regression, accuracy by question kind (outcome questions are the transfer task when training sees
masked values only), and the learning curve
(validation accuracy every `train.eval_every` steps; reward, letters, completion length and
entropy per step).

Targets (issue 12): trained - base >= 15 points with p < 0.01; trained > majority with p < 0.01;
trained - warm-up >= 5 points with p < 0.05; everything within 2 hours on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import gib_by_process, machine_line, run_monitored, set_args, step_quarters

CURVE_KEYS = ("reward_mean", "accuracy", "completion_length", "entropy", "zero_variance_fraction", "truncated_fraction")


def registry_overrides(seed: int, output_dir: Path, config: str, overrides: list[str]) -> list[str]:
    """Write the synthetic registry of `seed` as a CSV file; the overrides that read it back as a user's registry."""
    path = output_dir.parent / f"{output_dir.name}-registry-seed{seed}.csv"
    subprocess.run([sys.executable, "-m", "creason.cli", "generate-registry", "--config", config,
                    *set_args([*overrides, f"seed={seed}"]), "--out", str(path)], check=True)
    return ["data.source=files", f"data.paths=[{path}]", f"seed={seed}"]


def system_rows(results: dict) -> list[dict]:
    """Each system's accuracy, interval and by-kind accuracies; for a model also the accuracy of the
    letter it boxed itself (the training reward's parse) and how often the forced letter agrees."""
    rows = []
    for s in results["systems"]:
        kinds = s.get("breakdowns", {}).get("question_kind", {})
        row = {"system": s["name"], "kind": s["kind"], "accuracy": s["overall"]["accuracy"],
               "ci": [s["overall"]["ci_low"], s["overall"]["ci_high"]],
               "by_kind": {k: v["accuracy"] for k, v in kinds.items()}}
        if "boxed" in s:
            row.update(boxed=s["boxed"]["accuracy"], boxed_forced_agreement=s["boxed_forced_agreement"])
        rows.append(row)
    return rows


def comparison(results: dict, a: str, b: str) -> dict | None:
    """a - b: difference, its interval and McNemar's p, whichever order the results hold them in."""
    for c in results["comparisons"]:
        if {c["a"], c["b"]} == {a, b}:
            sign = 1 if c["a"] == a else -1
            low, high = sorted((sign * c["difference_ci_low"], sign * c["difference_ci_high"]))
            return {"a": a, "b": b, "difference": sign * c["difference"], "ci": [low, high], "p_value": c["p_value"]}
    return None


def reported_pairs(results: dict) -> list[tuple[str, str]]:
    """The trained model (the last) against the base model (the first), the majority answer, the
    record regression, and each model between them (the warm-up)."""
    models = [s["name"] for s in results["systems"] if s["kind"] == "model"]
    base, trained = models[0], models[-1]
    baselines = [s["name"] for s in results["systems"] if s["name"].lower().startswith(("majority", "record"))]
    return [(trained, base)] + [(trained, b) for b in baselines] + [(trained, m) for m in models[1:-1]]


def curve(metrics_path: Path) -> dict:
    """The learning curve: validation checks, and per step the rollout metrics and boxed-letter shares."""
    records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    checks = [{k: r[k] for k in r if k == "step" or k.startswith("val_")} for r in records if "val_accuracy" in r]
    steps = [{"step": r["step"], **{k: r[k] for k in CURVE_KEYS if k in r},
              **{k: r[k] for k in r if k.startswith("letter_")}} for r in records if "reward_mean" in r]
    return {"validation": checks, "steps": steps}


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_markdown(result: dict) -> str:
    """The results as the Markdown tables docs/results.md shows."""
    peak = result["peak_pss_gib"]
    memory = f"peak memory {peak:.2f} GiB (PSS of the process tree)" if peak is not None else "peak memory not recorded"
    lines = [f"Machine and date: {result['machine']}; exit {result['exit_code']}, {result['wall_s'] / 60:.1f} min, "
             f"{memory}.", ""]
    if "systems" not in result:
        return "\n".join(lines + ["(no results: the run did not finish)"])
    kinds = sorted({k for row in result["systems"] for k in row["by_kind"]})
    lines += ["| system | accuracy | 95% interval | " + " | ".join(kinds) + " | boxed letter right | box = forced |",
              "|---|---|---|" + "---|" * len(kinds) + "---|---|"]
    for row in result["systems"]:
        by_kind = " | ".join(pct(row["by_kind"][k]) if k in row["by_kind"] else "" for k in kinds)
        boxed = f"{pct(row['boxed'])} | {pct(row['boxed_forced_agreement'])}" if "boxed" in row else " | "
        lines.append(f"| {row['system']} | **{pct(row['accuracy'])}** | {pct(row['ci'][0])} to {pct(row['ci'][1])} | "
                     f"{by_kind} | {boxed} |")
    lines += ["", "| comparison | difference | 95% interval | McNemar p |", "|---|---|---|---|"]
    for c in result["comparisons"]:
        lines.append(f"| {c['a']} - {c['b']} | {100 * c['difference']:+.1f} points | "
                     f"{100 * c['ci'][0]:+.1f} to {100 * c['ci'][1]:+.1f} | {c['p_value']:.3g} |")
    lines += ["", "| stage | seconds |", "|---|---|"] + [f"| {k} | {v:.0f} |" for k, v in result["seconds"].items()]
    checks = result["curve"]["validation"]
    if checks:
        lines += ["", "| step | " + " | ".join(str(c["step"]) for c in checks) + " |",
                  "|---|" + "---|" * len(checks),
                  "| validation accuracy (forced letter) | " + " | ".join(pct(c["val_accuracy"]) for c in checks) + " |"]
        for key in sorted({k for c in checks for k in c if k.startswith("val_accuracy_")}):
            lines.append(f"| {key.removeprefix('val_accuracy_')} | " + " | ".join(pct(c.get(key, 0.0)) for c in checks) + " |")
    steps = result["curve"]["steps"]
    if steps:
        quarters = step_quarters(steps)
        keys = ["reward_mean", "entropy", "completion_length", "zero_variance_fraction",
                *sorted(k for k in steps[0] if k.startswith("letter_"))]
        lines += ["", "| steps | " + " | ".join(k for k in keys) + " |", "|---|" + "---|" * len(keys)]
        for part in quarters:
            means = [sum(r.get(k, 0.0) for r in part) / len(part) for k in keys]
            lines.append(f"| {part[0]['step']}-{part[-1]['step']} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON results")
    parser.add_argument("--log", required=True, help="the pipeline's own output")
    parser.add_argument("--config", default="learning", help="config to run (default: the shipped `learning`)")
    parser.add_argument("--registry-seed", type=int, default=None,
                        help="write the synthetic registry under this seed and read it back as a user's file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override (repeatable)")
    parser.add_argument("--render", action="store_true", help="only print the Markdown tables of an existing --out")
    parser.add_argument("--collect", action="store_true", help="do not run: read the outputs of a finished run")
    args = parser.parse_args()
    if args.render:
        print(render_markdown(json.loads(Path(args.out).read_text())))
        return 0
    from creason.config import load_config

    output_dir = Path(load_config(args.config, args.overrides).output_dir)
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    overrides = list(args.overrides)
    if args.registry_seed is not None:
        overrides += registry_overrides(args.registry_seed, output_dir, args.config, overrides)
    cmd = [sys.executable, "-m", "creason.cli", "quickstart", "--config", args.config, "--fresh", *set_args(overrides)]
    machine = machine_line()
    if args.collect:  # read a finished run's outputs: its time from the stages, its memory unknown
        seconds = json.loads((output_dir / "summary.json").read_text())["seconds"]
        result = {"machine": machine, "command": cmd[2:], "exit_code": 0, "wall_s": sum(seconds.values()),
                  "peak_pss_gib": None, "peak_pss_gib_by_process": {}}
    else:
        at_peak: dict[str, int] = {}
        rc, wall, peak = run_monitored(cmd, args.log, every_s=2.0, at_peak=at_peak)
        result = {"machine": machine, "command": cmd[2:], "exit_code": rc, "wall_s": wall, "peak_pss_gib": peak / 2**30,
                  "peak_pss_gib_by_process": gib_by_process(at_peak)}
    summary_path, results_path = output_dir / "summary.json", output_dir / "eval" / "results.json"
    if summary_path.exists() and results_path.exists():
        summary, results = json.loads(summary_path.read_text()), json.loads(results_path.read_text())
        result.update(seconds=summary["seconds"], systems=system_rows(results), n_questions=results["n_questions"],
                      comparisons=[c for a, b in reported_pairs(results) if (c := comparison(results, a, b))],
                      warmup=summary.get("warmup"), curve=curve(output_dir / "train" / "metrics.jsonl"))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(render_markdown(result))
    return result["exit_code"]


if __name__ == "__main__":
    sys.exit(main())
