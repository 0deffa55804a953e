"""Benchmark: where a rollout engine's weight reload goes (issue 15, item 3), in one process.

A sync hands the engine every weight; `VllmEngine.load_weights` reloads them in place through
vLLM's own path (`reload_weights`: each layer's new weights loaded, then processed into the
kernel's format). On CPUs that processing is the packing of every linear layer's weight for
oneDNN, and vLLM keeps only the packed copy (the plain weight is freed), so new weights cannot
simply be copied into the old tensors. Timed side by side, `--repeats` times each:
- the reload as a sync does it (`load_weights`, prefix-cache reset included);
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
    reload = timed(lambda: engine.load_weights(iter(weights.items())), args.repeats)
    pack = timed(lambda: pack_all(stand_ins), args.repeats)
    copy = timed(lambda: [copies[k].copy_(v) for k, v in weights.items()], args.repeats)
    engine.close()
    median = {name: statistics.median(s) for name, s in (("reload", reload), ("pack", pack), ("copy", copy))}
    result = {"machine": machine_line(), "model": str(model), "repeats": args.repeats, "threads": args.threads,
              "weights_mib": sum(v.numel() * v.element_size() for v in weights.values()) / 2**20,
              "linear_layers": len(shapes), "seconds": {"reload": reload, "pack": pack, "copy": copy},
              "median_s": median, "pack_share_of_reload": median["pack"] / median["reload"]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
