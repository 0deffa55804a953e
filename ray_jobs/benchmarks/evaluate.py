"""Evaluation throughput: questions/s of the study's protocol (greedy reasoning + forced letter)
with 1 and 2 vLLM actors on the same test questions, warm-up excluded; extrapolated to 1,000.

    python ray_jobs/benchmarks/evaluate.py --out runs/bench/evaluate.json
    ray job submit --working-dir . -- python ray_jobs/benchmarks/evaluate.py --out evaluate.json

Variants are `actors:cpus` (actors, Ray CPUs and torch threads each); one variant's actors exist
at a time. Questions come from `--questions` or are built once into `--work-dir`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

import ray

from creason.config import RayConfig, load_config
from creason.data.schema import load_questions
from creason.evaluate.actor import answer_on_actors, create_eval_actors
from creason.models.fetch import default_model_path
from creason.raycluster import connect


def questions_dir(args: argparse.Namespace) -> Path:
    """`--questions`, or a small synthetic build in `--work-dir` (made once)."""
    if args.questions:
        return Path(args.questions)
    out = Path(args.work_dir)
    if not (out / "questions" / "test").is_dir():
        from creason.data.pipeline import build_question_set

        build_question_set(load_config("quickstart", [f"output_dir={out}", "data.num_patients=2000",
                                                      "data.block_size=2000"]))
    return out / "questions"


def measure(actors_n: int, cpus: float, dtype: str, questions: list, args: argparse.Namespace) -> dict:
    """Start the actors, warm each up on 2 questions, time one pass over `questions`, stop them."""
    engine_kwargs = {"max_model_len": args.max_model_len, "kv_cache_memory_bytes": int(args.kv_cache_gib * 2**30),
                     "dtype": dtype}
    start = time.perf_counter()
    actors = create_eval_actors(actors_n, args.model, engine_kwargs, num_cpus=cpus)
    ray.get([a.ready.remote() for a in actors])
    start_s = time.perf_counter() - start
    ray.get([a.answer.remote(questions[:2], 8) for a in actors])
    answers, stats = answer_on_actors(actors, questions, args.max_new_tokens, args.batch_size,
                                      lambda d, t, s: print(f"  {actors_n}x{cpus:g}: {d}/{t} ({d / s:.2f} q/s)", flush=True))
    for a in actors:
        ray.kill(a)
    truncated = sum(a.finish_reason == "length" for a in answers) / len(answers)
    return {"actors": actors_n, "cpus_per_actor": cpus, "dtype": dtype, "start_seconds": start_s, **stats,
            "tokens_per_s": stats["tokens"] / stats["seconds"], "truncated_rate": truncated,
            "seconds_per_1000": 1000 / stats["questions_per_s"]}


def parse_variant(text: str) -> tuple[int, float, str]:
    """"2:1" -> (2 actors, 1 CPU each, float32); "2:1:bfloat16" -> the same in bfloat16."""
    actors, cpus, *dtype = text.split(":")
    return int(actors), float(cpus), dtype[0] if dtype else "float32"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="minutes")}


def table(result: dict) -> str:
    m, w = result["machine"], result["workload"]
    lines = [f"{m['date']} · {m['cpu']} ({m['cores']} cores) · load average before/after "
             f"{result['load_average_before_after'][0][0]:.1f}/{result['load_average_before_after'][1][0]:.1f}",
             f"{w['questions']} test questions, greedy reasoning <= {w['max_new_tokens']} tokens + forced letter, "
             f"{Path(result['model']).name}", "",
             "| actors x CPUs | start s | answer s | questions/s | reasoning tok/s | cut at limit | 1,000 questions |",
             "|---|---|---|---|---|---|---|"]
    for r in result["variants"]:
        lines.append(f"| {r['actors']} x {r['cpus_per_actor']:g} {r['dtype']} | {r['start_seconds']:.0f} | {r['seconds']:.1f} | "
                     f"{r['questions_per_s']:.2f} | {r['tokens_per_s']:.0f} | {r['truncated_rate']:.0%} | "
                     f"{r['seconds_per_1000'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--out", required=True, help="JSON file for the results.")
    parser.add_argument("--questions", default=None, help="question folder (default: build one in --work-dir)")
    parser.add_argument("--work-dir", default="runs/bench/evaluate")
    parser.add_argument("--num-questions", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--kv-cache-gib", type=float, default=0.25, help="KV cache per engine (it bounds the sequences in flight)")
    parser.add_argument("--max-model-len", type=int, default=1024)
    parser.add_argument("--variants", default="1:1,2:1",
                        help="actors:cpus[:dtype], comma-separated; dtype float32 (default) or bfloat16")
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local cluster).")
    args = parser.parse_args()

    connect(RayConfig(address=args.address))
    questions = load_questions(questions_dir(args), "test", max_questions=args.num_questions, seed=0)
    load_before = os.getloadavg()
    variants = [parse_variant(v) for v in args.variants.split(",")]
    result = {"machine": machine(), "model": args.model, "load_average_before_after": [load_before, load_before],
              "workload": {"questions": len(questions), "max_new_tokens": args.max_new_tokens,
                           "batch_size": args.batch_size, "kv_cache_gib": args.kv_cache_gib},
              "variants": []}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    for a, c, dtype in variants:  # the file is rewritten after each variant: a cut-off run keeps what it measured
        result["variants"].append(measure(a, c, dtype, questions, args))
        result["load_average_before_after"][1] = os.getloadavg()
        Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(result))


if __name__ == "__main__":
    main()
