"""Benchmark: one GRPO step, phase by phase, on the default model.

1. Standalone: one rollout actor, sized as in the config, samples the first steps' prompts
   (after a warm-up call): the actors' own tokens/s.
2. In the loop: `creason train` for a few steps in a subprocess whose whole process tree's
   memory is sampled; per-phase times (generate, score, reference, train, sync) and the loop's
   generation tokens/s come from `metrics.jsonl` (the first step, which pays warm-ups, is left out).

    python ray_jobs/benchmarks/grpo_step.py --config quickstart --steps 4 --out docs/bench_grpo_step.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import gib_by_process, machine_line, run_monitored

PHASES = ("generate", "score", "reference", "train", "sync")


def standalone_tokens_per_s(cfg, questions_dir: str, steps: int) -> float:
    """The rollout actor alone on the prompts of steps 0..steps-1 (one warm-up call first)."""
    import ray

    from creason.rollout.actor import create_rollout_actors, generate_on_actors, wait_ready
    from creason.rollout.engine import ENGINE_DTYPES
    from creason.rollout.types import SamplingSpec
    from creason.train.data import PromptStream, load_questions
    from creason.train.run import resolve_model_path

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        r = cfg.rollout
        actors = create_rollout_actors(r.num_actors, resolve_model_path(cfg), backend=r.backend, num_cpus_per_actor=r.cpus_per_actor,
                                       num_threads=r.threads_per_actor,
                                       engine_kwargs={"dtype": ENGINE_DTYPES[cfg.model.precision], "max_model_len": r.max_model_len,
                                                      "kv_cache_memory_bytes": int(r.kv_cache_gib * 2**30), "seed": cfg.seed})
        wait_ready(actors)
        stream = PromptStream(load_questions(questions_dir, "train", cfg.train.question_kinds), cfg.train.prompts_per_step, cfg.seed)
        spec = SamplingSpec(n=r.group_size, temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens)
        generate_on_actors(actors, [q.messages for q in stream.batch(0)], spec, version=0)  # warm-up
        tokens, seconds = 0, 0.0
        for step in range(steps):
            start = time.perf_counter()
            _, stats = generate_on_actors(actors, [q.messages for q in stream.batch(step)], spec, version=0)
            seconds += time.perf_counter() - start
            tokens += stats["tokens"]
        return tokens / seconds
    finally:
        ray.shutdown()


def summarize(records: list[dict]) -> dict:
    steady = records[1:] or records
    phase = {p: statistics.mean(r.get(f"time_{p}_s", 0.0) for r in steady) for p in PHASES}
    step_s = sum(phase.values())
    sync_parts = {p: statistics.mean(r.get(f"time_sync_{p}_s", 0.0) for r in steady) for p in ("gather", "engine_load")}
    return {"phase_s": phase, "step_s": step_s, "sync_share": phase["sync"] / step_s, "sync_parts_s": sync_parts,
            "loop_generate_tokens_per_s": statistics.mean(r["generate_tokens_per_s"] for r in steady),
            "train_tokens_per_s": statistics.mean(r["tokens"] / max(r["time_train_s"], 1e-9) for r in steady),  # per worker (ranks averaged)
            "reward_mean": [r["reward_mean"] for r in records]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from creason.config import load_config
    from creason.data.pipeline import build_question_set

    with tempfile.TemporaryDirectory() as out:
        overrides = [f"output_dir={out}", f"data.num_patients={args.patients}", f"train.steps={args.steps}",
                     f"train.checkpoint_every={args.steps}", *args.overrides]
        cfg = load_config(args.config, overrides)
        import ray

        ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
        build_question_set(cfg)
        ray.shutdown()
        alone = standalone_tokens_per_s(cfg, str(Path(out) / "questions"), args.steps)
        cmd = [sys.executable, "-m", "creason.cli", "train", "--config", args.config, *sum((["--set", o] for o in overrides), [])]
        at_peak: dict[str, int] = {}
        rc, wall, peak = run_monitored(cmd, log_path=str(Path(out) / "train.log"), every_s=1.0, at_peak=at_peak)
        if rc != 0:
            print((Path(out) / "train.log").read_text()[-5000:])
            raise SystemExit(f"training failed ({rc})")
        records = [json.loads(x) for x in (Path(out) / "train" / "metrics.jsonl").read_text().splitlines()]
    s = summarize(records)
    result = {"machine": machine_line(), "config": args.config, "overrides": args.overrides, "steps": args.steps,
              "standalone_generate_tokens_per_s": alone, "loop_vs_standalone": s["loop_generate_tokens_per_s"] / alone,
              "peak_pss_gib": peak / 2**30, "wall_s": wall, **s,
              "peak_pss_gib_by_process": gib_by_process(at_peak)}
    p = s["phase_s"]
    print(f"\n{result['machine']}\n")
    print("| generate s | score s | reference s | train s | sync s | step s | sync share | loop gen tok/s | "
          "standalone gen tok/s | loop/standalone | train tok/s per worker | peak GiB |\n|" + "---|" * 12)
    print(f"| {p['generate']:.1f} | {p['score']:.2f} | {p['reference']:.1f} | {p['train']:.1f} | {p['sync']:.2f} | "
          f"{s['step_s']:.1f} | {s['sync_share']:.1%} | {s['loop_generate_tokens_per_s']:.0f} | {alone:.0f} | "
          f"{result['loop_vs_standalone']:.2f} | {s['train_tokens_per_s']:.0f} | {result['peak_pss_gib']:.2f} |")
    parts = s["sync_parts_s"]
    print(f"\nsync {p['sync']:.2f} s: gather {parts['gather']:.2f} s, slowest engine reload {parts['engine_load']:.2f} s, "
          f"transport {p['sync'] - parts['gather'] - parts['engine_load']:.2f} s")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
