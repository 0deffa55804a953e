"""Moving trained weights into the rollout actors: one small strategy interface, one entry per
transport. On CPUs the Ray object store is the transport; GPU clusters will want a collective
(NCCL broadcast from the trainer's rank 0 to the engines), which is not written yet.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import ray
from torch import Tensor

NamedTensors = list[tuple[str, Tensor]]


class WeightSync(Protocol):
    def push(self, named_tensors: NamedTensors, version: int) -> dict:
        """Load `named_tensors` (Hugging Face names) into every actor and stamp them `version`;
        returns when all have loaded, with {"seconds", "bytes", ...}."""
        ...


class ObjectStoreSync:
    """One `ray.put` of the tensors, then every actor loads them from the object store (a node
    shares one copy; other nodes pull it once). Simple and transport-agnostic; costs a copy."""

    def __init__(self, actors: list[Any]) -> None:
        self.actors = actors

    def push(self, named_tensors: NamedTensors, version: int) -> dict:
        start = time.perf_counter()
        tensors = [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]
        ref = ray.put(tensors)
        put_seconds = time.perf_counter() - start
        load_seconds = ray.get([a.update_weights.remote(ref, version) for a in self.actors])
        return {
            "seconds": time.perf_counter() - start,
            "bytes": sum(t.numel() * t.element_size() for _, t in tensors),
            "put_seconds": put_seconds,
            "load_seconds_max": max(load_seconds, default=0.0),
            "version": version,
        }


def _nccl(actors: list[Any]) -> WeightSync:
    raise NotImplementedError(
        "weight_sync 'nccl' needs GPUs and is planned (a broadcast from the trainer's rank 0 into the "
        "vLLM engines, e.g. with vLLM's weight-transfer API); use 'object_store' on CPUs"
    )


WEIGHT_SYNCS: dict[str, Callable[[list[Any]], WeightSync]] = {"object_store": ObjectStoreSync, "nccl": _nccl}


def make_weight_sync(kind: str, actors: list[Any]) -> WeightSync:
    """The transport named `kind` ("object_store"; "nccl" is reserved for GPU clusters)."""
    if kind not in WEIGHT_SYNCS:
        raise ValueError(f"unknown weight sync {kind!r}; choose one of {sorted(WEIGHT_SYNCS)}")
    return WEIGHT_SYNCS[kind](actors)
