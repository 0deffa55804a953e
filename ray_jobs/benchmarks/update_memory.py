"""Benchmark: where a training worker's memory goes, outside Ray and DeepSpeed. One process,
the default model in float32, torch AdamW, and the resident memory (RSS) at each stage: the
imports, the model loaded, after one GRPO update (gradients and AdamW state now allocated), and the
peak during the updates (the activations on top). Then the same with gradient checkpointing, and
with glibc told to give every freed block of 1 MiB or more back to the system
(`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`), to see what the allocator keeps.

    python ray_jobs/benchmarks/update_memory.py --out docs/benchmarks/update_memory.json

The batch is update_ab.py's (random token ids, advantages +-1): by default the quickstart's step,
4 groups of 4 completions of 192 tokens after a 450-token prompt, one group per micro-batch, with
the shared-prompt forward (without it under gradient checkpointing, as the loop does).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import machine_line
from update_ab import forwarded_arguments, parse_batch_arguments, synthetic_batch


def rss_gib() -> dict[str, float]:
    """This process's resident memory now and its peak so far (Linux /proc), GiB."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {k: int(fields[key].split()[0]) / 2**20 for k, key in (("rss", "VmRSS"), ("peak", "VmHWM"))}


def child(args: argparse.Namespace) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from creason.models.fetch import fetch_default_model
    from creason.train.engine import enable_gradient_checkpointing
    from creason.train.step import TorchEngine, grpo_update

    torch.set_num_threads(args.threads)
    stages = {"imports": rss_gib()}
    model = AutoModelForCausalLM.from_pretrained(str(fetch_default_model()), dtype=torch.float32)
    if args.checkpointing:
        enable_gradient_checkpointing(model)
    stages["model"] = rss_gib()
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-7))
    batch = synthetic_batch(args.groups, args.group, args.prompt_tokens, args.completion_tokens)
    for i in range(args.updates):
        grpo_update(engine, batch, mu=1, micro_batch_size=args.group, eps_low=0.2, eps_high=0.2,
                    share_prompts=not args.checkpointing)
        stages[f"after update {i + 1}"] = rss_gib()
    weights = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(json.dumps({"stages": stages, "weights_gib": weights}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parse_batch_arguments(parser, groups=4, completion_tokens=192)
    if args.child:
        child(args)
        return 0
    forwarded = forwarded_arguments(args, "updates")
    runs = {}
    small_mmap = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"}
    for label, extra, env in (("shared-prompt forward", [], {}), ("gradient checkpointing", ["--checkpointing"], {}),
                              ("shared-prompt forward, glibc mmap threshold 1 MiB", [], small_mmap)):
        out = subprocess.run([sys.executable, __file__, "--child", *forwarded, *extra], check=True,
                             capture_output=True, text=True, env={**os.environ, **env}).stdout
        runs[label] = json.loads(out.strip().splitlines()[-1])
    result = {"machine": machine_line(), "settings": vars(args), "runs": runs}
    print(f"{result['machine']}\n\n| stage | " + " | ".join(runs) + " |\n|---|" + "---|" * len(runs))
    for stage in next(iter(runs.values()))["stages"]:
        cells = [f"{r['stages'][stage]['rss']:.2f} (peak {r['stages'][stage]['peak']:.2f})" for r in runs.values()]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
