"""Benchmark: where a rollout engine's weight reload goes (issue 15, item 3), in one process.

A sync hands the engine every weight; `VllmEngine.load_weights` reloads them in place through
vLLM's own path (`reload_weights`: each layer's new weights loaded, then processed into the
kernel's format). On CPUs that processing is the packing of every linear layer's weight for
oneDNN, and vLLM keeps only the packed copy (the plain weight is freed), so new weights cannot
simply be copied into the old tensors. Timed side by side, `--repeats` times each:
- the reload as a sync does it (`load_weights`, prefix-cache reset included), of every weight (the
  first sync, or `rollout.sync_frozen_weights`) and of the trainable ones alone (the top
  `--trainable-layers` blocks and the final norm: every later sync by default);
- the packing alone: a oneDNN matmul handle created for a random weight of each linear layer's
  shape (`create_onednn_mm`, what vLLM's CPU dispatch calls);
- a plain copy of every weight into tensors of the same shapes (the floor of any in-place update).

    python ray_jobs/benchmarks/engine_reload.py --out docs/benchmarks/engine_reload.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import machine_line, timed


def linear_shapes(model) -> list[tuple[int, int]]:
    """(out, in) of every linear layer of a loaded vLLM model that runs through `cpu_linear`."""
    return [(m.output_size_per_partition, m.input_size_per_partition) for m in model.modules()
            if hasattr(m, "cpu_linear") and hasattr(m, "output_size_per_partition")]


def trainable_weights(weights: dict, layers: int) -> dict:
    """What a sync after the first sends with `train.trainable_layers` = `layers`: the top blocks'
    weights and the final norm (the tied embedding stays frozen)."""
    blocks = 1 + max(int(name.split(".")[2]) for name in weights if name.startswith("model.layers."))
    top = tuple(f"model.layers.{i}." for i in range(blocks - layers, blocks))
    return {k: v for k, v in weights.items() if k.startswith(top) or k == "model.norm.weight"}


def pack_all(weights: list) -> None:
    """A oneDNN handle for each weight, as vLLM's CPU dispatch makes them."""
    from vllm import _custom_ops as ops

    for w in weights:
        ops.create_onednn_mm(w.t(), 32)


def main() -> int:
    import torch
    from safetensors.torch import load_file

    from creason.models.fetch import fetch_default_model
    from creason.rollout.engine import VllmEngine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--trainable-layers", type=int, default=8, help="as train.trainable_layers (learning.yaml: 8)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    model = Path(args.model or fetch_default_model())
    weights = {}
    for f in sorted(model.glob("*.safetensors")):
        weights.update({k: v.float() for k, v in load_file(f).items()})  # as the trainer sends them
    engine = VllmEngine(str(model), dtype="float32", max_model_len=1024, kv_cache_memory_bytes=256 * 2**20,
                        num_threads=args.threads)
    shapes = engine.llm.apply_model(linear_shapes)[0]
    copies = {k: torch.empty_like(v) for k, v in weights.items()}
    stand_ins = [torch.randn(n, k) for n, k in shapes]  # made once: only the packing is timed
    trainable = trainable_weights(weights, args.trainable_layers)
    seconds = {}
    for _ in range(args.repeats):  # interleaved, so the machine's noise falls on every method alike
        for name, run in (("reload", lambda: engine.load_weights(iter(weights.items()))),
                          ("reload_trainable", lambda: engine.load_weights(iter(trainable.items()))),
                          ("pack", lambda: pack_all(stand_ins)),
                          ("copy", lambda: [copies[k].copy_(v) for k, v in weights.items()])):
            seconds.setdefault(name, []).extend(timed(run, 1))
    engine.close()
    median = {name: statistics.median(s) for name, s in seconds.items()}
    mib = {name: sum(v.numel() * v.element_size() for v in w.values()) / 2**20
           for name, w in (("all", weights), ("trainable", trainable))}
    result = {"machine": machine_line(), "model": str(model), "repeats": args.repeats, "threads": args.threads,
              "trainable_layers": args.trainable_layers, "weights_mib": mib["all"], "trainable_mib": mib["trainable"],
              "linear_layers": len(shapes), "seconds": seconds, "median_s": median,
              "pack_share_of_reload": median["pack"] / median["reload"],
              "trainable_reload_share": median["reload_trainable"] / median["reload"]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
