"""Moving trained weights into the rollout actors: one small strategy interface, one entry per
transport. `object_store` (here): one `ray.put`, every actor reloads from the object store.
`broadcast` (`broadcast_sync.py`): a process group of the trainer's rank 0 and the actors, NCCL
on GPUs, gloo on CPUs.
"""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Protocol

import numpy as np
import ray
import torch
from ray.exceptions import ActorUnavailableError, RayActorError
from torch import Tensor

NamedTensors = list[tuple[str, Tensor]]
SharedArrays = list[tuple[str, np.ndarray, str]]


class WeightSync(Protocol):
    def push(self, named_tensors: NamedTensors, version: int) -> dict:
        """Load `named_tensors` (Hugging Face names) into every actor and stamp them `version`;
        returns when all have loaded, with {"seconds", "bytes", ...}."""
        ...

    def catch_up(self, actor: Any) -> float:
        """Load the latest pushed weights into one actor that Ray restarted (it came back with the
        base weights); waits for it to be up. Returns seconds."""
        ...


def to_shared_arrays(named_tensors: NamedTensors) -> SharedArrays:
    """`(name, array, dtype)` per tensor. Ray's object store hands numpy arrays to readers on the
    same node without a copy, where a pickled torch tensor is copied on put and again on get (for
    the 540 MB of SmolLM2 in fp32 that was ~1.7 s of a 2.4 s sync). bfloat16, which numpy lacks,
    travels as its int16 bits."""
    arrays = []
    for name, t in named_tensors:
        t = t.detach().to("cpu").contiguous()
        bits = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        arrays.append((name, bits.numpy(), str(t.dtype).removeprefix("torch.")))
    return arrays


def from_shared_arrays(arrays: SharedArrays) -> NamedTensors:
    """Tensors that are read-only views of the object store's memory (the engine copies them into
    its own weights and lets go of them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = [(name, torch.from_numpy(a), dtype) for name, a, dtype in arrays]
    return [(name, t.view(torch.bfloat16) if dtype == "bfloat16" else t) for name, t, dtype in tensors]


class ObjectStoreSync:
    """One `ray.put` of the weights as numpy arrays, then every actor loads them from the object
    store (a node shares one copy, read in place; other nodes pull it once). Transport-agnostic.
    The latest push stays referenced, so a restarted actor catches up without a new gather."""

    def __init__(self, actors: list[Any], max_attempts: int = 3) -> None:
        self.actors, self.max_attempts = actors, max_attempts
        self._latest: tuple[Any, int] | None = None

    def push(self, named_tensors: NamedTensors, version: int) -> dict:
        start = time.perf_counter()
        arrays = to_shared_arrays(named_tensors)
        ref = ray.put(arrays)
        self._latest = (ref, version)
        put_seconds = time.perf_counter() - start
        load_seconds = self._load_all(ref, version)
        return {
            "seconds": time.perf_counter() - start,
            "bytes": sum(a.nbytes for _, a, _ in arrays),
            "put_seconds": put_seconds,
            "load_seconds_max": max(load_seconds, default=0.0),
            "version": version,
        }

    def _load_all(self, ref: Any, version: int) -> list[float]:
        """Every actor loads `ref`; one that dies meanwhile is caught up once Ray restarts it."""
        calls = {a.load_shared_weights.remote(ref, version): a for a in self.actors}
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
        return retry_while_restarting(lambda: ray.get(actor.load_shared_weights.remote(ref, version)))


def retry_while_restarting(call: Callable[[], Any], died_attempts: int = 3, timeout_s: float = 600.0) -> Any:
    """`call()`, again while an actor it calls is restarting. Ray says "temporarily unavailable"
    (`ActorUnavailableError`) while it restarts one, for as long as its start takes (a vLLM engine:
    tens of seconds): retried until `timeout_s`. `ActorDiedError` also comes once for a call caught
    by the death itself, and always once restarts are exhausted: retried `died_attempts` times."""
    deadline, died = time.monotonic() + timeout_s, 0
    while True:
        try:
            return call()
        except ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
        except RayActorError:
            died += 1
            if died >= died_attempts:
                raise
        time.sleep(1.0)


def _broadcast(actors: list[Any]) -> WeightSync:
    from creason.rollout.broadcast_sync import BroadcastSync

    return BroadcastSync(actors)


WEIGHT_SYNCS: dict[str, Callable[[list[Any]], WeightSync]] = {"object_store": ObjectStoreSync, "broadcast": _broadcast}


def make_weight_sync(kind: str, actors: list[Any]) -> WeightSync:
    """The transport named `kind`: "object_store", or "broadcast" (NCCL on GPUs, gloo on CPUs)."""
    if kind not in WEIGHT_SYNCS:
        raise ValueError(f"unknown weight sync {kind!r}; choose one of {sorted(WEIGHT_SYNCS)}")
    return WEIGHT_SYNCS[kind](actors)
