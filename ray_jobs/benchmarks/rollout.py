"""Rollout throughput: one vLLM rollout actor against Hugging Face `generate` in one Ray actor with
the same CPUs, on the same prompts, in one run (warm-up excluded).

    python ray_jobs/benchmarks/rollout.py --out runs/bench/rollout.json
    ray job submit --working-dir . -- python ray_jobs/benchmarks/rollout.py --out rollout.json

Each variant is `backend:threads` (torch threads of the actor; every actor reserves --num-cpus).
One actor exists at a time; rounds alternate the variants (fresh actor, warm-up call excluded, one
timed call) so that load from other processes falls on all of them. Tokens are completion tokens
up to and including EOS; tok/s is total tokens over total timed seconds. The JSON is rewritten after
every run and records the 1-minute load average around each one.
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

from creason.config import DEFAULT_SYSTEM_PROMPT, RayConfig
from creason.models.fetch import default_model_path
from creason.raycluster import connect
from creason.rollout.actor import create_rollout_actors, wait_ready
from creason.rollout.types import SamplingSpec

FINDINGS = [
    ("lactate 4.5 mmol/L, MAP 58 mmHg after 30 mL/kg fluids", "Septic shock?", ["Yes", "No"]),
    ("temperature 38.9 C, heart rate 124, WBC 17", "Most likely infection site?", ["Lung", "Urine", "Abdomen", "Skin"]),
    ("GCS 11, creatinine 2.4 mg/dL, platelets 88", "SOFA renal score?", ["0", "1", "2", "3"]),
    ("blood cultures positive for E. coli, on ceftriaxone", "Antibiotic appropriate?", ["Yes", "No"]),
]
AGES = [34, 58, 71, 86]


def question_prompts() -> list[list[dict]]:
    """16 chat prompts shaped like the training questions (4 findings x 4 ages)."""
    prompts = []
    for age in AGES:
        for findings, question, options in FINDINGS:
            lettered = "\n".join(f"{chr(65 + i)}) {o}" for i, o in enumerate(options))
            user = f"Patient, {age} years old: {findings}.\n\n{question}\n{lettered}"
            prompts.append([{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": user}])
    return prompts


def run_once(backend: str, threads: int, args: argparse.Namespace, prompts: list, spec: SamplingSpec) -> dict:
    """Start one actor, warm it up (excluded), time one generate call, stop it."""
    engine_kwargs = {"max_model_len": 1024, "kv_cache_memory_bytes": 256 * 1024**2}
    start = time.perf_counter()
    (actor,) = create_rollout_actors(1, args.model, backend, engine_kwargs, args.num_cpus, num_threads=threads)
    wait_ready([actor])
    start_seconds = time.perf_counter() - start
    ray.get(actor.generate.remote(prompts, spec.model_copy(update={"n": 1, "max_tokens": 16}), 0))
    load = os.getloadavg()[0]
    _, stats = ray.get(actor.generate.remote(prompts, spec, 0))
    ray.kill(actor)
    return {**stats, "start_seconds": start_seconds, "load_average_1min": [load, os.getloadavg()[0]]}


def summarise(backend: str, threads: int, runs: list[dict]) -> dict:
    tokens, seconds = sum(r["tokens"] for r in runs), sum(r["seconds"] for r in runs)
    best = max(r["tokens_per_s"] for r in runs)
    return {"backend": backend, "threads": threads, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds, "best_tokens_per_s": best, "runs": runs}


def collect(args: argparse.Namespace, variants: list, runs: dict, num_prompts: int) -> dict:
    return {
        "machine": machine(), "num_cpus": args.num_cpus, "model": args.model,
        "workload": {"prompts": num_prompts, "n": args.n, "max_tokens": args.max_tokens,
                     "temperature": args.temperature, "rounds": args.repeats},
        "compare": [next(f"{b}:{t}" for b, t in variants if b == kind) for kind in ("vllm", "hf")],
        "variants": [summarise(b, t, r) for (b, t), r in runs.items() if r],
    }


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "date": dt.date.today().isoformat()}


def table(result: dict) -> str:
    """The comparison as a Markdown header and row."""
    by = {f"{r['backend']}:{r['threads']}": r for r in result["variants"]}
    vllm, hf = by[result["compare"][0]], by[result["compare"][1]]
    m, w = result["machine"], result["workload"]
    head = "| date | machine | workload | vLLM tok/s | HF tok/s | vLLM / HF |\n|---|---|---|---|---|---|"
    work = f"{w['prompts']} prompts x n={w['n']}, {w['max_tokens']} max tokens, T={w['temperature']}"
    machine_text = f"{m['cpu']} ({m['cores']} cores, {result['num_cpus']} Ray CPUs/actor)"
    row = (f"| {m['date']} | {machine_text} | {work} | {vllm['tokens_per_s']:.0f} ({vllm['threads']} threads) "
           f"| {hf['tokens_per_s']:.0f} ({hf['threads']} threads) | {vllm['tokens_per_s'] / hf['tokens_per_s']:.2f}x |")
    return f"{head}\n{row}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--out", required=True, help="JSON file for the results.")
    parser.add_argument("--num-cpus", type=float, default=2, help="Ray CPUs reserved by each actor.")
    parser.add_argument("--variants", default="vllm:2,hf:2", help="backend:threads, in order; the first "
                        "vllm and hf ones are compared in the table.")
    parser.add_argument("--repeats", type=int, default=2, help="Rounds; each times one generate call per variant.")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.9)
    parser.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a local cluster).")
    args = parser.parse_args()

    connect(RayConfig(address=args.address))
    prompts = question_prompts()
    spec = SamplingSpec(n=args.n, temperature=args.temperature, max_tokens=args.max_tokens)
    variants = [(b, int(t)) for b, t in (v.split(":") for v in args.variants.split(","))]
    runs: dict[tuple[str, int], list[dict]] = {v: [] for v in variants}
    for _ in range(args.repeats):  # rounds interleave the variants, so load changes hit them alike
        for backend, threads in variants:
            runs[(backend, threads)].append(run_once(backend, threads, args, prompts, spec))
            result = collect(args, variants, runs, len(prompts))
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(result, indent=2))  # after every run: a timeout keeps them
    results = result["variants"]
    for r in results:
        print(f"{r['backend']:>4} {r['threads']} threads: {r['tokens']} tokens in {r['seconds']:.1f} s = "
              f"{r['tokens_per_s']:.1f} tok/s (best run {r['best_tokens_per_s']:.1f})")
    print(table(result))


if __name__ == "__main__":
    main()
