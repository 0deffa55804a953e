"""Benchmark: one GRPO step, phase by phase, on the default model.

1. Standalone: the rollout actors, sized as in the config, sample what the loop's measured steps
   sample (the same prompts, the same per-step seeds; after a warm-up call on step 0's): the
   actors' own tokens/s.
2. In the loop: `creason train` for a few steps in a subprocess whose whole process tree's
   memory is sampled; per-phase times (generate, score, reference, train, sync) and the loop's
   generation tokens/s come from `metrics.jsonl` (the first step, which pays warm-ups, is left out).

The loop's weights move and the standalone actors' do not, so their completions (and lengths)
part after step 1. `--frozen-weights` runs the loop with a learning rate too small to change a
float32 weight (every phase still runs, the sync included): both then sample the same tokens, and
loop/standalone measures only what the loop costs generation.

    python ray_jobs/benchmarks/grpo_step.py --config quickstart --steps 5 --out docs/benchmarks/grpo_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from common import gib_by_process, machine_line, run_or_exit, set_args

PHASES = ("generate", "score", "reference", "train", "sync")


def standalone_generation(cfg, questions_dir: str, steps: int) -> dict:
    """The rollout actors alone on the prompts and seeds of steps 1..steps-1 (a warm-up call on
    step 0's first): tokens/s, and tokens and seconds per step."""
    import ray

    from creason.rollout.actor import generate_on_actors, wait_ready
    from creason.rollout.types import step_sampling
    from creason.data.schema import load_questions
    from creason.train.data import PromptStream
    from creason.train.loop import rollout_sampling
    from creason.train.run import resolve_model_path, start_rollout_actors

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        actors = start_rollout_actors(cfg, resolve_model_path(cfg))
        wait_ready(actors)
        stream = PromptStream(load_questions(questions_dir, "train", cfg.train.question_kinds), cfg.train.prompts_per_step, cfg.seed)
        spec = rollout_sampling(cfg)
        generate_on_actors(actors, [q.messages for q in stream.batch(0)], step_sampling(spec, cfg.seed, 0), version=0)  # warm-up
        per_step = []
        for step in range(1, steps):
            _, stats = generate_on_actors(actors, [q.messages for q in stream.batch(step)], step_sampling(spec, cfg.seed, step), version=0)
            per_step.append({"tokens": stats["tokens"], "seconds": stats["seconds"]})
        tokens, seconds = sum(x["tokens"] for x in per_step), sum(x["seconds"] for x in per_step)
        return {"tokens_per_s": tokens / seconds, "steps": per_step}
    finally:
        ray.shutdown()


def summarize(records: list[dict]) -> dict:
    """Means over the steps after the first. A step whose groups all had one reward trains nothing
    (`algorithm.filter_zero_variance`): its train time counts as 0, and it has no train tokens/s.
    With `train.async_rollouts` the generate phase is the wait for the next step's rollouts after the
    update (what training did not hide); the last step samples nothing ahead and is left out."""
    steady = [r for r in records[1:] if "time_generate_s" in r] or records
    trained = [r for r in steady if "tokens" in r]  # per worker (ranks averaged)
    phase = {p: statistics.mean(r.get(f"time_{p}_s", 0.0) for r in steady) for p in PHASES}
    step_s = sum(phase.values())
    sync_parts = {p: statistics.mean(r.get(f"time_sync_{p}_s", 0.0) for r in steady) for p in ("gather", "engine_load")}
    return {"phase_s": phase, "step_s": step_s, "sync_share": phase["sync"] / step_s, "sync_parts_s": sync_parts,
            "completions_per_s": statistics.mean(r["completions"] for r in steady) / step_s,  # issue 15's measure
            "loop_generate_tokens_per_s": sum(r["generate_tokens"] for r in steady)
            / sum(r["generate_seconds"] for r in steady),  # all tokens / all seconds of the calls, as the standalone's
            "policy_lag": max(r.get("policy_lag", 0) for r in steady),
            "loop_steps": [{"tokens": r["generate_tokens"], "seconds": r["generate_seconds"]} for r in steady],
            "completion_length": [r["completion_length"] for r in steady],
            "train_tokens_per_s": statistics.mean([r["tokens"] / max(r["time_train_s"], 1e-9) for r in trained] or [0.0]),
            "steps_without_update": len(steady) - len(trained),
            "mismatch": statistics.mean([r["mismatch"] for r in trained] or [0.0]),  # sampler vs trainer log-probs
            "reward_mean": [r["reward_mean"] for r in records]}


def build_questions(config: str, overrides: list[str]):
    """The config with `overrides`, its questions built into `<output_dir>/questions` on a
    short-lived local Ray cluster; returns the config."""
    import ray

    from creason.config import load_config
    from creason.data.pipeline import build_question_set

    cfg = load_config(config, overrides)
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    build_question_set(cfg)
    ray.shutdown()
    return cfg


def measure_loop(config: str, steps: int, patients: int, overrides: list[str], frozen_weights: bool = False) -> dict:
    """The standalone actors, then `creason train` for `steps` steps in a monitored subprocess, on
    a fresh question build of `patients` patients: the results file's fields."""
    with tempfile.TemporaryDirectory() as out:
        run = [f"output_dir={out}", f"data.num_patients={patients}", f"train.steps={steps}",
               f"train.checkpoint_every={steps}", *(["train.lr=1e-30"] if frozen_weights else []), *overrides]
        cfg = build_questions(config, run)
        standalone = standalone_generation(cfg, str(Path(out) / "questions"), steps)
        alone = standalone["tokens_per_s"]
        cmd = [sys.executable, "-m", "creason.cli", "train", "--config", config, *set_args(run)]
        wall, peak, at_peak = run_or_exit(cmd, Path(out) / "train.log", "training")
        records = [json.loads(x) for x in (Path(out) / "train" / "metrics.jsonl").read_text().splitlines()]
    s = summarize(records)
    return {"machine": machine_line(), "config": config, "overrides": overrides, "steps": steps,
            "frozen_weights": frozen_weights, "standalone_generate_tokens_per_s": alone,
            "standalone_steps": standalone["steps"], "loop_vs_standalone": s["loop_generate_tokens_per_s"] / alone,
            "peak_pss_gib": peak / 2**30, "wall_s": wall, **s, "peak_pss_gib_by_process": gib_by_process(at_peak)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--frozen-weights", action="store_true",
                        help="train with lr 1e-30 (no float32 weight moves), so the loop samples what the standalone actors do")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = measure_loop(args.config, args.steps, args.patients, args.overrides, args.frozen_weights)
    s, p, alone = result, result["phase_s"], result["standalone_generate_tokens_per_s"]
    print(f"\n{result['machine']}\n")
    print("| generate s | score s | reference s | train s | sync s | step s | sync share | loop gen tok/s | "
          "standalone gen tok/s | loop/standalone | train tok/s per worker | completions/s | peak GiB |\n|" + "---|" * 13)
    print(f"| {p['generate']:.1f} | {p['score']:.2f} | {p['reference']:.1f} | {p['train']:.1f} | {p['sync']:.2f} | "
          f"{s['step_s']:.1f} | {s['sync_share']:.1%} | {s['loop_generate_tokens_per_s']:.0f} | {alone:.0f} | "
          f"{result['loop_vs_standalone']:.2f} | {s['train_tokens_per_s']:.0f} | {s['completions_per_s']:.3f} | "
          f"{result['peak_pss_gib']:.2f} |")
    for i, (loop, solo) in enumerate(zip(s["loop_steps"], result["standalone_steps"]), start=1):
        print(f"step {i}: loop {loop['tokens']} tokens in {loop['seconds']:.1f} s, standalone {solo['tokens']} tokens in {solo['seconds']:.1f} s")
    parts = s["sync_parts_s"]
    print(f"\nsync {p['sync']:.2f} s: gather {parts['gather']:.2f} s, slowest engine reload {parts['engine_load']:.2f} s, "
          f"transport {p['sync'] - parts['gather'] - parts['engine_load']:.2f} s")
    print("peak by process (GiB):", result["peak_pss_gib_by_process"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
