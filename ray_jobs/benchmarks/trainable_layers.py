"""Benchmark: one GRPO group's training pass (shared-prompt forward + backward) with every block
trained against only the top k blocks (`train.trainable_layers`), alternated in one process on the
same group, so that both see the same machine load.

    python ray_jobs/benchmarks/trainable_layers.py --layers 8 4 --repeats 3 --out docs/benchmarks/trainable_layers.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import machine_line


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from creason.models.fetch import fetch_default_model
    from creason.train.batch import collate
    from creason.train.freeze import train_top_blocks
    from creason.train.policy import sequence_logprobs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[8, 4], help="values of trainable_layers to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=470, help="a registry prompt's length")
    parser.add_argument("--group", type=int, default=16, help="completions per prompt")
    parser.add_argument("--completion-tokens", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = fetch_default_model()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(100, 40000, (args.prompt_tokens,), generator=g).tolist()
    completions = [torch.randint(100, 40000, (args.completion_tokens,), generator=g).tolist() for _ in range(args.group)]
    batch = collate([prompt] * args.group, completions, [[0.0] * args.completion_tokens] * args.group,
                    [1.0] * args.group, pad_id=0)
    models = {"all": AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)}
    for k in args.layers:
        models[f"top {k}"] = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        train_top_blocks(models[f"top {k}"], k)
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, model in models.items():
            model.zero_grad(set_to_none=True)
            start = time.perf_counter()
            logp, _ = sequence_logprobs(model, batch, share_prompts=True)
            (-(logp * batch.response_mask).sum()).backward()
            seconds[name].append(time.perf_counter() - start)
    best = {name: min(s[1:]) for name, s in seconds.items()}
    result = {"machine": machine_line(), "prompt_tokens": args.prompt_tokens, "group": args.group,
              "completion_tokens": args.completion_tokens, "threads": args.threads, "seconds": seconds,
              "best_s": best, "speedup_vs_all": {name: best["all"] / s for name, s in best.items()}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(result["machine"])
    for name, s in best.items():
        print(f"  {name:<8} {s:5.2f} s per group pass ({result['speedup_vs_all'][name]:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
