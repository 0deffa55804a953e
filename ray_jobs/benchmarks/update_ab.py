"""Benchmark: one GRPO update (`grpo_update`, the training phase of a step) of two checkouts of
creason, alternated round by round in fresh processes on the same batch, so both see the same
machine load. For a change to the loss code: is the update as fast as before?

    python ray_jobs/benchmarks/update_ab.py --checkout before=/tmp/old --checkout after=. \
        --out docs/benchmarks/update_ab.json

Each process imports creason from its checkout (PYTHONPATH), builds the same batch (the default
model, `--groups` groups of `--group` completions of `--completion-tokens` tokens after a
`--prompt-tokens`-token prompt, random token ids from a fixed seed, advantages +-1), takes one
untimed update, then `--repeats` timed ones (`TorchEngine`, torch AdamW, shared-prompt forward,
one group per micro-batch), and prints the seconds as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from common import machine_line


def synthetic_batch(groups: int, group: int, prompt_tokens: int, completion_tokens: int):
    """`groups` groups of `group` completions after a shared prompt: random token ids from a fixed
    seed, sampler log-probs -1, advantages alternating +-1."""
    import torch

    from creason.train.batch import collate

    g = torch.Generator().manual_seed(0)
    prompts, completions = [], []
    for _ in range(groups):
        prompt = torch.randint(100, 40000, (prompt_tokens,), generator=g).tolist()
        prompts += [prompt] * group
        completions += [torch.randint(100, 40000, (completion_tokens,), generator=g).tolist() for _ in range(group)]
    return collate(prompts, completions, [[-1.0] * completion_tokens] * len(prompts),
                   [(-1.0) ** i for i in range(len(prompts))], pad_id=0)


BATCH_ARGUMENTS = ("groups", "group", "prompt_tokens", "completion_tokens", "threads")


def parse_batch_arguments(parser: argparse.ArgumentParser, groups: int, completion_tokens: int) -> argparse.Namespace:
    """The batch's size (`synthetic_batch`), threads, `--out` and the hidden `--child`, then parse."""
    parser.add_argument("--groups", type=int, default=groups)
    parser.add_argument("--group", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=450)
    parser.add_argument("--completion-tokens", type=int, default=completion_tokens)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    return parser.parse_args()


def forwarded_arguments(args: argparse.Namespace, *extra: str) -> list[str]:
    """The parent's batch arguments (and `extra` ones) as a child's command line."""
    return [f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (*extra, *BATCH_ARGUMENTS)]


def child(args: argparse.Namespace) -> None:
    import time

    import torch
    from transformers import AutoModelForCausalLM

    from creason.models.fetch import fetch_default_model
    from creason.train.step import TorchEngine, grpo_update

    torch.set_num_threads(args.threads)
    batch = synthetic_batch(args.groups, args.group, args.prompt_tokens, args.completion_tokens)
    model = AutoModelForCausalLM.from_pretrained(str(fetch_default_model()), dtype=torch.float32)
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=1e-7))
    seconds = []
    for _ in range(args.repeats + 1):
        start = time.perf_counter()
        grpo_update(engine, batch, mu=1, micro_batch_size=args.group, eps_low=0.2, eps_high=0.2, share_prompts=True)
        seconds.append(time.perf_counter() - start)
    import creason

    print(json.dumps({"seconds": seconds[1:], "creason": creason.__file__}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", default=[], help="label=folder of a creason checkout (2 or more)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parse_batch_arguments(parser, groups=2, completion_tokens=64)
    if args.child:
        child(args)
        return 0
    checkouts = dict(item.split("=", 1) for item in args.checkout)
    forwarded = forwarded_arguments(args, "repeats")
    seconds: dict[str, list[float]] = {label: [] for label in checkouts}
    for _ in range(args.rounds):
        for label, folder in checkouts.items():
            env = {**os.environ, "PYTHONPATH": str(Path(folder).resolve())}
            out = subprocess.run([sys.executable, __file__, "--child", *forwarded], env=env, check=True,
                                 capture_output=True, text=True).stdout
            ran = json.loads(out.strip().splitlines()[-1])
            if not Path(ran["creason"]).resolve().is_relative_to(Path(folder).resolve()):
                raise RuntimeError(f"{label}: imported creason from {ran['creason']}, not from {folder}")
            seconds[label] += ran["seconds"]
    best = {label: min(s) for label, s in seconds.items()}
    first = next(iter(best))
    result = {"machine": machine_line(), "settings": vars(args), "seconds": seconds, "best_s": best,
              "ratio_to_first": {label: s / best[first] for label, s in best.items()}}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
