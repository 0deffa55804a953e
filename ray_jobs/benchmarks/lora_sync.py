"""Benchmark: LoRA's weight sync, side by side in one process on the default model.

For the same PEFT policy (adapters on every attention and MLP projection, B drawn at random so
that the merge does work):
- trainer side: the seconds to take what a sync sends, `adapter_weights` (the adapters alone,
  `model.lora.sync: adapter`) against `merged_weights` (`sync: merged`), and their bytes;
- engine side: a vLLM engine started with LoRA loads the adapters (`load_weights` of adapter
  tensors) against an engine without LoRA reloading the merged weights in place, each `--repeats`
  times; then both sample the same registry prompts with the same seed, which prices vLLM's LoRA
  kernels in generation;
- the optimizer state a training step leaves (AdamW moments), adapters against every weight.

    python ray_jobs/benchmarks/lora_sync.py --out docs/benchmarks/lora_sync.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import machine_line, timed


def optimizer_state_bytes(model) -> int:
    """Bytes of AdamW state after one step on a short sequence."""
    import torch

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    ids = torch.randint(100, 40000, (1, 64), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return sum(t.numel() * t.element_size() for state in optimizer.state.values() for t in state.values()
               if isinstance(t, torch.Tensor))


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from creason.config import LoraSettings, load_config
    from creason.data.schema import load_questions
    from creason.models.fetch import fetch_default_model
    from creason.models.lora import adapter_weights, add_lora, merged_weights
    from creason.paths import questions_dir
    from creason.rollout.engine import VllmEngine
    from creason.rollout.types import SamplingSpec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--questions", default=None, help="question folder (default: the learning config's)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = str(fetch_default_model())
    settings = LoraSettings(rank=args.rank, alpha=2 * args.rank)
    policy = add_lora(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), settings)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 1e-3)
    adapter, merged = adapter_weights(policy), merged_weights(policy)
    trainer = {"adapter_s": timed(lambda: adapter_weights(policy), args.repeats),
               "merged_s": timed(lambda: merged_weights(policy), args.repeats),
               "adapter_bytes": sum(t.numel() * t.element_size() for t in adapter.values()),
               "merged_bytes": sum(t.numel() * t.element_size() for t in {id(t): t for t in merged.values()}.values())}
    questions = load_questions(args.questions or questions_dir(load_config("learning")), "train", ["masked_value"],
                               args.prompts, 0)
    prompts, spec = [q.messages for q in questions], SamplingSpec(n=10, temperature=1.0, max_tokens=12, seed=0)
    engines = {}
    for kind in ("adapter", "merged"):
        engine = VllmEngine(path, max_model_len=1024, kv_cache_memory_bytes=2**29, num_threads=args.threads,
                            lora=settings.model_dump() if kind == "adapter" else None)
        tensors = list((adapter if kind == "adapter" else merged).items())
        load = timed(lambda: engine.load_weights(tensors), args.repeats)
        torch.manual_seed(0)
        engine.llm.reset_prefix_cache()
        start = time.perf_counter()
        out = engine.generate(prompts, spec)
        engines[kind] = {"load_s": load, "generate_s": time.perf_counter() - start,
                         "generate_tokens": sum(len(c.token_ids) for group in out for c in group)}
        engine.close()
    full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    memory = {"adapter_optimizer_bytes": optimizer_state_bytes(policy), "full_optimizer_bytes": optimizer_state_bytes(full)}
    med = statistics.median
    sync = {kind: med(trainer[f"{kind}_s"]) + med(engines[kind]["load_s"]) for kind in ("adapter", "merged")}
    result = {"machine": machine_line(), "rank": args.rank, "threads": args.threads, "trainer": trainer,
              "engines": engines, "memory": memory, "sync_s": sync, "sync_speedup": sync["merged"] / sync["adapter"],
              "generate_ratio_adapter_vs_merged": engines["adapter"]["generate_s"] / engines["merged"]["generate_s"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"{result['machine']}\nsync (trainer take + engine load, medians): adapter {sync['adapter']:.3f} s, merged "
          f"{sync['merged']:.3f} s: {result['sync_speedup']:.1f}x; bytes {trainer['adapter_bytes'] / 2**20:.1f} MiB vs "
          f"{trainer['merged_bytes'] / 2**20:.1f} MiB; generation with LoRA kernels {result['generate_ratio_adapter_vs_merged']:.2f}x "
          f"the time without; AdamW state {memory['adapter_optimizer_bytes'] / 2**20:.1f} MiB vs "
          f"{memory['full_optimizer_bytes'] / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
