"""Benchmark: creason's GRPO step against TRL's `GRPOTrainer` on the same work, side by side in one
run (issue 15's baseline). Needs the `bench` extra (`pip install -e '.[bench]'`: TRL and datasets).

Both take the configuration's training questions (one question build, the same seed), its group
size, prompts per step, completion budget, temperature, learning rate, KL weight and rewards, in
float32 on this machine's cores (both in bf16 mixed precision with `--set train.mixed_precision=bf16`:
creason's training under DeepSpeed's `torch_autocast`, TRL's `bf16=True`, accelerate's autocast):
- creason: `grpo_step.measure_loop` (vLLM rollout actor, Ray Train + DeepSpeed worker, weight sync);
- TRL: `GRPOTrainer` in one process (Hugging Face `generate`), micro-batches of
  `train.micro_batch_size` completions accumulated to one optimizer step per generation, as
  creason's one pass a group.
Each runs as a subprocess whose whole process tree's memory is sampled. A step's seconds are the
wall time between two optimizer steps; the first step (warm-ups) is left out of both.

    python ray_jobs/benchmarks/trl_grpo.py --steps 4 --set algorithm.filter_zero_variance=false \\
        --out docs/benchmarks/trl_grpo.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import gib_by_process, machine_line, run_or_exit, set_args
from grpo_step import build_questions, measure_loop


def trl_arguments(cfg, out_dir: str, steps: int, reward_weights: list[float]) -> dict:
    """`GRPOConfig`'s arguments for the work of one creason step per optimizer step: the step's
    completions generated at once (`generation_batch_size` = micro-batch x accumulation), then
    trained in micro-batches of `train.micro_batch_size` accumulated to one update."""
    completions = cfg.train.prompts_per_step * cfg.rollout.group_size
    micro = cfg.train.micro_batch_size
    if completions % micro:
        raise SystemExit(f"{completions} completions a step do not make micro-batches of {micro}")
    return dict(
        output_dir=out_dir, max_steps=steps, seed=cfg.seed, use_cpu=True, bf16=cfg.train.mixed_precision == "bf16",
        report_to="none", save_strategy="no", logging_steps=1, dataloader_num_workers=0,
        per_device_train_batch_size=micro, gradient_accumulation_steps=completions // micro,
        num_generations=cfg.rollout.group_size, max_completion_length=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature, learning_rate=cfg.train.lr, warmup_steps=int(cfg.train.warmup_ratio * steps),
        beta=cfg.algorithm.beta, reward_weights=reward_weights, max_grad_norm=cfg.train.grad_clip,
    )


def run_trl(config: str, overrides: list[str], questions_dir: str, steps: int, out_json: str) -> None:
    """The child process: TRL's trainer for `steps` steps; each step's end time and mean
    completion length into `out_json`."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from creason.config import load_config
    from creason.data.schema import load_questions
    from creason.paths import resolve_model_path
    from creason.train.rollouts import load_rewards

    cfg = load_config(config, overrides)
    torch.set_num_threads(cfg.train.threads_per_worker)
    questions = load_questions(questions_dir, "train", cfg.train.question_kinds)
    data = Dataset.from_list([{"prompt": q.messages, "ground_truth": q.ground_truth} for q in questions])
    rewards = load_rewards(cfg.algorithm)
    path = resolve_model_path(cfg)
    ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as out:
        trainer = GRPOTrainer(
            model=AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
            processing_class=AutoTokenizer.from_pretrained(path), reward_funcs=[fn for fn, _ in rewards],
            args=GRPOConfig(**trl_arguments(cfg, out, steps, [w for _, w in rewards])), train_dataset=data, callbacks=[StepClock()])
        trainer.train()
    logs = [r for r in trainer.state.log_history if "completions/mean_length" in r]
    Path(out_json).write_text(json.dumps({
        "step_s": [b - a for a, b in zip(ends, ends[1:])],
        "completion_length": [r["completions/mean_length"] for r in logs],
        "reward_mean": [r.get("reward") for r in logs]}))


def measure_trl(config: str, overrides: list[str], steps: int, patients: int) -> dict:
    """A question build as `measure_loop`'s (same patients and seed: the same questions), then
    `run_trl` in a monitored subprocess."""
    with tempfile.TemporaryDirectory() as out:
        run = [f"output_dir={out}", f"data.num_patients={patients}", *overrides]
        cfg = build_questions(config, run)
        result_path = str(Path(out) / "trl.json")
        cmd = [sys.executable, __file__, "--child", str(Path(out) / "questions"), result_path,
               "--config", config, "--steps", str(steps), *set_args(run)]
        wall, peak, at_peak = run_or_exit(cmd, Path(out) / "trl.log", "TRL")
        child = json.loads(Path(result_path).read_text())
    completions = cfg.train.prompts_per_step * cfg.rollout.group_size
    steady = child["step_s"][1:] or child["step_s"]
    return {"step_s": statistics.mean(steady), "completions_per_s": completions / statistics.mean(steady),
            "completion_length": child["completion_length"], "reward_mean": child["reward_mean"],
            "steps_s": child["step_s"], "peak_pss_gib": peak / 2**30, "wall_s": wall,
            "peak_pss_gib_by_process": gib_by_process(at_peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("QUESTIONS_DIR", "OUT_JSON"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_trl(args.config, args.overrides, args.child[0], args.steps, args.child[1])
        return
    creason = measure_loop(args.config, args.steps, args.patients, args.overrides)
    trl = measure_trl(args.config, args.overrides, args.steps, args.patients)
    result = {"machine": machine_line(), "config": args.config, "overrides": args.overrides, "steps": args.steps,
              "creason": creason, "trl": trl, "speedup": creason["completions_per_s"] / trl["completions_per_s"],
              "memory_ratio": creason["peak_pss_gib"] / trl["peak_pss_gib"]}
    print(f"\n{result['machine']}\n")
    print("| | step s | completions/s | mean completion tokens | peak GiB (whole run) |\n|---|---|---|---|---|")
    print(f"| TRL GRPOTrainer | {trl['step_s']:.1f} | {trl['completions_per_s']:.3f} | "
          f"{statistics.mean(trl['completion_length'][1:] or trl['completion_length']):.0f} | {trl['peak_pss_gib']:.2f} |")
    print(f"| creason | {creason['step_s']:.1f} | {creason['completions_per_s']:.3f} | "
          f"{statistics.mean(creason['completion_length']):.0f} | {creason['peak_pss_gib']:.2f} |")
    print(f"\ncreason / TRL: {result['speedup']:.2f}x the completions/s, {result['memory_ratio']:.2f} of the peak memory")
    print("creason peak by process (GiB):", creason["peak_pss_gib_by_process"])
    print("TRL peak by process (GiB):", trl["peak_pss_gib_by_process"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
