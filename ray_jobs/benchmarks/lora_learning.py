"""Benchmark: GRPO with LoRA against full fine-tuning over the same steps, one after the other in
one run: the learning curve (reward per step, validation accuracy under the evaluation protocol
every `train.eval_every` steps), the time of each phase, the weight sync, and the peak memory of the
whole training run (PSS of the process tree, and by process at the peak).

Both variants start from the same model on the same questions with the same seed, so their first
batch is the same; only what trains differs. `--set` overrides apply to both, `--lora` to the LoRA
variant alone (its learning rate: LoRA's usual one is about 10x full fine-tuning's).

    python ray_jobs/benchmarks/lora_learning.py --model runs/learning/warmup/model \\
        --questions runs/learning/questions --steps 20 --out docs/benchmarks/lora_learning.json
    python ray_jobs/benchmarks/lora_learning.py --out docs/benchmarks/lora_learning.json --render

Targets (issue 17): peak memory lower with LoRA, learning curve no worse over the same steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from common import gib_by_process, machine_line, run_monitored, set_args, step_quarters

PHASES = ("time_generate_s", "time_train_s", "time_sync_s")
DEFAULT_LORA = ["model.lora.rank=16", "model.lora.alpha=32", "train.lr=1e-3"]


def run_variant(name: str, base: list[str], extra: list[str], out_dir: Path, config: str) -> dict:
    """`creason train` of one variant in a fresh process; its curve, phase times and memory."""
    overrides = [*base, *extra, f"output_dir={out_dir / name}"]
    cmd = [sys.executable, "-m", "creason.cli", "train", "--config", config, *set_args(overrides)]
    at_peak: dict[str, int] = {}
    rc, wall, peak = run_monitored(cmd, str(out_dir / f"{name}.log"), every_s=1.0, at_peak=at_peak)
    from creason.evaluate.outputs import read_metrics
    from creason.paths import train_metrics_path

    records = read_metrics(train_metrics_path(out_dir / name))
    return {"name": name, "overrides": overrides, "exit_code": rc, "wall_s": wall, "peak_pss_gib": peak / 2**30,
            "peak_pss_gib_by_process": gib_by_process(at_peak), **summarize(records)}


def summarize(records: list[dict]) -> dict:
    """Per step the reward and the entropy, the validation checks, and the median phase times."""
    steps = [r for r in records if "reward_mean" in r]
    checks = [{"step": r["step"], "val_accuracy": r["val_accuracy"]} for r in records if "val_accuracy" in r]
    medians = {k: statistics.median(r[k] for r in steps) for k in PHASES if steps and all(k in r for r in steps)}
    return {"steps": [{"step": r["step"], "reward_mean": r["reward_mean"], "entropy": r.get("entropy")} for r in steps],
            "validation": checks, "median_s": medians,
            "median_step_s": statistics.median(sum(r.get(k, 0.0) for k in PHASES) for r in steps) if steps else None}


def render_markdown(result: dict) -> str:
    """One row per variant: steps, reward by quarters, validation checks, phase medians, memory."""
    lines = [f"Machine and date: {result['machine']}.", "",
             "| variant | exit | wall | reward, steps by quarter | validation accuracy (step: forced letter) | "
             "generate / train / sync (median s) | peak memory |", "|---|---|---|---|---|---|---|"]
    for v in result["variants"]:
        steps = v["steps"]
        reward = " / ".join(f"{statistics.mean(r['reward_mean'] for r in part):.3f}" for part in step_quarters(steps))
        checks = ", ".join(f"{c['step']}: {100 * c['val_accuracy']:.1f}%" for c in v["validation"])
        phases = " / ".join(f"{v['median_s'].get(k, float('nan')):.2f}" for k in PHASES)
        lines.append(f"| {v['name']} | {v['exit_code']} | {v['wall_s'] / 60:.1f} min | {reward} | {checks} | "
                     f"{phases} | {v['peak_pss_gib']:.2f} GiB |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON results")
    parser.add_argument("--model", help="the model both variants start from (e.g. a warm-up's model folder)")
    parser.add_argument("--questions", help="question build both train on (its validation split is checked)")
    parser.add_argument("--config", default="learning")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", default="runs/lora_learning", help="folder of both variants' outputs and logs")
    parser.add_argument("--variants", nargs="+", default=["full", "lora"], choices=["full", "lora"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for both")
    parser.add_argument("--lora", action="append", default=None, help=f"LoRA variant overrides (default {DEFAULT_LORA})")
    parser.add_argument("--render", action="store_true", help="only print the Markdown table of an existing --out")
    args = parser.parse_args()
    if args.render:
        print(render_markdown(json.loads(Path(args.out).read_text())))
        return 0
    if not (args.model and args.questions):
        parser.error("--model and --questions are required to run")
    base = [f"model.path={Path(args.model).resolve()}", f"train.questions_dir={Path(args.questions).resolve()}",
            "warmup.enabled=false", f"train.steps={args.steps}", f"train.checkpoint_every={args.steps}", *args.overrides]
    extra = {"full": [], "lora": args.lora or DEFAULT_LORA}
    runs = Path(args.runs)
    runs.mkdir(parents=True, exist_ok=True)
    result = {"machine": machine_line(), "steps": args.steps,
              "variants": [run_variant(name, base, extra[name], runs, args.config) for name in args.variants]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(render_markdown(result))
    return max(v["exit_code"] for v in result["variants"])


if __name__ == "__main__":
    sys.exit(main())
