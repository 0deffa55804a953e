"""Moving trained weights into the rollout actors: one small strategy interface, one entry per
transport. On CPUs the Ray object store is the transport; GPU clusters will want a collective
(NCCL broadcast from the trainer's rank 0 to the engines), which is not written yet.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

import ray
from ray.exceptions import RayActorError
from torch import Tensor

NamedTensors = list[tuple[str, Tensor]]


class WeightSync(Protocol):
    def push(self, named_tensors: NamedTensors, version: int) -> dict:
        """Load `named_tensors` (Hugging Face names) into every actor and stamp them `version`;
        returns when all have loaded, with {"seconds", "bytes", ...}."""
        ...

    def catch_up(self, actor: Any) -> float:
        """Load the latest pushed weights into one actor that Ray restarted (it came back with the
        base weights); waits for it to be up. Returns seconds."""
        ...


class ObjectStoreSync:
    """One `ray.put` of the tensors, then every actor loads them from the object store (a node
    shares one copy; other nodes pull it once). Simple and transport-agnostic; costs a copy.
    The latest push stays referenced, so a restarted actor catches up without a new gather."""

    def __init__(self, actors: list[Any], max_attempts: int = 3) -> None:
        self.actors, self.max_attempts = actors, max_attempts
        self._latest: tuple[Any, int] | None = None

    def push(self, named_tensors: NamedTensors, version: int) -> dict:
        start = time.perf_counter()
        tensors = [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]
        ref = ray.put(tensors)
        self._latest = (ref, version)
        put_seconds = time.perf_counter() - start
        load_seconds = self._load_all(ref, version)
        return {
            "seconds": time.perf_counter() - start,
            "bytes": sum(t.numel() * t.element_size() for _, t in tensors),
            "put_seconds": put_seconds,
            "load_seconds_max": max(load_seconds, default=0.0),
            "version": version,
        }

    def _load_all(self, ref: Any, version: int) -> list[float]:
        """Every actor loads `ref`; one that dies meanwhile is caught up once Ray restarts it."""
        calls = {a.update_weights.remote(ref, version): a for a in self.actors}
        seconds = []
        for call, actor in calls.items():
            try:
                seconds.append(ray.get(call))
            except RayActorError:
                seconds.append(self.catch_up(actor))
        return seconds

    def catch_up(self, actor: Any) -> float:
        if self._latest is None:
            raise RuntimeError("catch_up before the first push: nothing to send")
        ref, version = self._latest
        for attempt in range(1, self.max_attempts + 1):
            try:  # a call to a restarting actor waits for it; one to a dead actor fails at once
                return ray.get(actor.update_weights.remote(ref, version))
            except RayActorError:
                if attempt == self.max_attempts:
                    raise
                time.sleep(1.0)


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
