"""Weight sync through Ray's object store: one `ray.put` of the weights as numpy arrays, and every
actor loads them from there (a node shares one copy, read in place; other nodes pull it once).
Works between any devices. Both ends are here: `ObjectStoreSync` (the trainer's rank 0) and
`ObjectStoreReceiver` (an actor's).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import RayActorError

from creason.rollout.sync.base import NamedTensors, PushLog, retry_while_restarting

SharedArrays = list[tuple[str, np.ndarray, str]]  # (name, array, torch dtype name)


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


class ObjectStoreReceiver:
    """An actor's end. The payload is the pushed arrays: Ray resolves the ObjectRef that the sender
    passes as an argument into views of the object store, so there is no copy on this side."""

    def receive(self, payload: SharedArrays) -> NamedTensors:
        return from_shared_arrays(payload)


class ObjectStoreSync:
    """The trainer's end (`WeightSync`). The pushes that rebuild the latest weights stay
    referenced (`PushLog`), so a restarted actor catches up without a new gather."""

    name = "object_store"
    receiver = ObjectStoreReceiver

    def __init__(self, actors: list[Any], max_attempts: int = 3) -> None:
        self.actors, self.max_attempts = actors, max_attempts
        self._pushes = PushLog()

    def push(self, named_tensors: NamedTensors, version: int, complete: bool = True) -> dict:
        start = time.perf_counter()
        arrays = to_shared_arrays(named_tensors)
        ref = ray.put(arrays)
        self._pushes.record((ref, version), complete)
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
        calls = {a.receive_weights.remote(self.name, ref, version): a for a in self.actors}
        seconds = []
        for call, actor in calls.items():
            try:
                seconds.append(ray.get(call))
            except RayActorError:
                seconds.append(self.catch_up(actor))
        return seconds

    def catch_up(self, actor: Any) -> float:
        def load(ref: Any, version: int) -> float:
            return retry_while_restarting(lambda: ray.get(actor.receive_weights.remote(self.name, ref, version)))

        return sum(load(ref, version) for ref, version in self._pushes.replay())
