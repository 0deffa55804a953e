"""Collectives of the training loop, issued on the device the process group moves. No Ray.

NCCL moves only CUDA tensors: a CPU tensor handed to its `all_reduce` fails ("No backend type
associated with device type cpu"). Gloo moves CPU tensors. Mixed backends such as
"cpu:gloo,cuda:nccl" take both; CPU is used there (nothing to copy).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

CPU_BACKENDS = ("gloo", "mpi")


def collective_device(device: torch.device | str) -> torch.device:
    """Where a collective's tensors must live: CPU for a CPU backend, else `device` (the
    engine's accelerator, e.g. `cuda:3` for NCCL)."""
    backend = str(dist.get_backend())
    if backend in CPU_BACKENDS or "cpu:" in backend:
        return torch.device("cpu")
    return torch.device(device)


def mean_across_ranks(metrics: dict, device: torch.device | str) -> dict:
    """Numeric metrics averaged over the ranks of the process group (one all-reduce on
    `collective_device(device)`); other values kept. Without a process group: `metrics`."""
    if not dist.is_initialized():
        return metrics
    keys = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
    values = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=collective_device(device))
    dist.all_reduce(values)
    means = (values / dist.get_world_size()).cpu().tolist()
    return {**metrics, **dict(zip(keys, means))}
