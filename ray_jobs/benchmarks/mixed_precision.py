"""Benchmark: the GRPO step in float32 against bf16 mixed precision (`train.mixed_precision`), side by side.

Each round runs `grpo_step.measure_loop` twice on the same question build (the same patients and
seed: the same prompts and sampling seeds), once with `train.mixed_precision=no` and once with
`bf16`; the rollout engines are float32 in both. Reported per setting: the phases of a step, the
training tokens/s, completions/s, the sampler-vs-trainer `mismatch`, and the run's peak memory; and
bf16/fp32 ratios of the training phase and of the step.

`--stage warmup` times the supervised warm-up instead (`creason warmup` on `--warmup-questions`
training questions, each setting on the same questions, set as `warmup.mixed_precision`): seconds a
warm-up step and the run's peak.

    python ray_jobs/benchmarks/mixed_precision.py --config quickstart --steps 5 \\
        --set algorithm.filter_zero_variance=false --out docs/benchmarks/mixed_precision_quickstart.json
    python ray_jobs/benchmarks/mixed_precision.py --stage warmup --config learning --warmup-questions 160 \\
        --out docs/benchmarks/mixed_precision_warmup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import gib_by_process, machine_line, run_or_exit, set_args
from grpo_step import build_questions, measure_loop

SETTINGS = ("no", "bf16")


def ratios(runs: dict[str, list[dict]]) -> dict[str, float]:
    """bf16 / fp32 of the mean training phase and step, over the rounds.

    >>> ratios({"no": [{"phase_s": {"train": 20.0}, "step_s": 40.0}], "bf16": [{"phase_s": {"train": 12.0}, "step_s": 32.0}]})
    {'train': 0.6, 'step': 0.8}
    """
    def mean(setting: str, get) -> float:
        return statistics.mean(get(r) for r in runs[setting])

    return {"train": mean("bf16", lambda r: r["phase_s"]["train"]) / mean("no", lambda r: r["phase_s"]["train"]),
            "step": mean("bf16", lambda r: r["step_s"]) / mean("no", lambda r: r["step_s"])}


def measure_warmup(config: str, patients: int, questions: int, overrides: list[str]) -> dict:
    """`creason warmup` on `questions` training questions of a fresh question build, in a monitored
    subprocess: its steps, seconds a step (the whole training loop over its steps), losses and peak."""
    with tempfile.TemporaryDirectory() as out:
        run = [f"output_dir={out}", f"data.num_patients={patients}", f"warmup.questions={questions}", *overrides]
        build_questions(config, run)
        cmd = [sys.executable, "-m", "creason.cli", "warmup", "--config", config, *set_args(run)]
        wall, peak, at_peak = run_or_exit(cmd, Path(out) / "warmup.log", "warm-up")
        summary = json.loads((Path(out) / "warmup" / "summary.json").read_text())
    return {"steps": summary["steps"], "train_s": summary["train_seconds"],
            "step_s": summary["train_seconds"] / summary["steps"], "loss_first": summary["loss_first"],
            "loss_last": summary["loss_last"], "peak_pss_gib": peak / 2**30, "wall_s": wall,
            "peak_pss_gib_by_process": gib_by_process(at_peak)}


def warmup_main(args) -> None:
    runs = {s: [measure_warmup(args.config, args.patients, args.warmup_questions,
                               [*args.overrides, f"warmup.mixed_precision={s}"]) for _ in range(args.rounds)]
            for s in SETTINGS}
    ratio = statistics.mean(r["step_s"] for r in runs["bf16"]) / statistics.mean(r["step_s"] for r in runs["no"])
    result = {"machine": machine_line(), "stage": "warmup", "config": args.config, "overrides": args.overrides,
              "questions": args.warmup_questions, "runs": runs, "bf16_over_fp32": {"warmup_step": ratio}}
    print(f"\n{result['machine']}\n")
    print("| mixed_precision | steps | s a step | loss first -> last | peak GiB |\n|---|---|---|---|---|")
    for setting, rounds in runs.items():
        for r in rounds:
            print(f"| {setting} | {r['steps']} | {r['step_s']:.1f} | {r['loss_first']:.3f} -> {r['loss_last']:.3f} | "
                  f"{r['peak_pss_gib']:.2f} |")
    print(f"\nbf16 / fp32: a warm-up step {ratio:.2f}x the time")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=1, help="fp32 then bf16, this many times")
    parser.add_argument("--stage", choices=("grpo", "warmup"), default="grpo")
    parser.add_argument("--warmup-questions", type=int, default=160, help="--stage warmup: training questions")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.stage == "warmup":
        warmup_main(args)
        return
    runs: dict[str, list[dict]] = {s: [] for s in SETTINGS}
    for _ in range(args.rounds):
        for setting in SETTINGS:
            overrides = [*args.overrides, f"train.mixed_precision={setting}"]
            runs[setting].append(measure_loop(args.config, args.steps, args.patients, overrides))
    result = {"machine": machine_line(), "config": args.config, "overrides": args.overrides, "steps": args.steps,
              "runs": runs, "bf16_over_fp32": ratios(runs)}
    print(f"\n{result['machine']}\n")
    print("| mixed_precision | generate s | train s | sync s | step s | train tok/s | completions/s | mismatch | peak GiB |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for setting, rounds in runs.items():
        for r in rounds:
            p = r["phase_s"]
            print(f"| {setting} | {p['generate']:.1f} | {p['train']:.1f} | {p['sync']:.2f} | {r['step_s']:.1f} | "
                  f"{r['train_tokens_per_s']:.0f} | {r['completions_per_s']:.3f} | {r['mismatch']:.4f} | {r['peak_pss_gib']:.2f} |")
    q = result["bf16_over_fp32"]
    print(f"\nbf16 / fp32: training phase {q['train']:.2f}x the time, step {q['step']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
