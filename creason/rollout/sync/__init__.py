"""Moving trained weights into the rollout actors: one file per transport, each holding both
ends, and this registry of them by name (`rollout.weight_sync`).

    trainer rank 0                                  rollout actor (`RolloutWorker`)
    make_weight_sync(name, actors).push(w, v) ───►  receive_weights(name, payload, v)
                                                    -> make_receiver(name).receive(payload)
                                                    -> engine.load_weights, version = v

- `object_store` (`object_store.py`): one `ray.put` of numpy arrays; the payload is the arrays.
- `broadcast` (`broadcast.py`): a process group of rank 0 and the actors (NCCL on GPUs, gloo on
  CPUs), which each actor joins once (`connect_weight_sync`); the payload is the layout.

`base.py` holds what both share (`NamedTensors`, the `WeightSync` and `WeightReceiver`
interfaces, `retry_while_restarting`) and imports neither, so no import runs in a loop.
"""

from __future__ import annotations

from typing import Any

from creason.rollout.sync.base import NamedTensors, WeightReceiver, WeightSync, retry_while_restarting
from creason.rollout.sync.broadcast import BroadcastSync
from creason.rollout.sync.object_store import ObjectStoreSync

TRANSPORTS: dict[str, type] = {t.name: t for t in (ObjectStoreSync, BroadcastSync)}

__all__ = ["TRANSPORTS", "NamedTensors", "WeightReceiver", "WeightSync", "make_receiver", "make_weight_sync",
           "retry_while_restarting"]


def _transport(name: str) -> type:
    if name not in TRANSPORTS:
        raise ValueError(f"unknown weight sync {name!r}; choose one of {sorted(TRANSPORTS)}")
    return TRANSPORTS[name]


def make_weight_sync(name: str, actors: list[Any]) -> WeightSync:
    """The trainer's end of the transport `name`: "object_store", or "broadcast" (NCCL on GPUs,
    gloo on CPUs)."""
    return _transport(name)(actors)


def make_receiver(name: str, **options: Any) -> WeightReceiver:
    """An actor's end of the transport `name` (`options`: what its sender tells it to connect)."""
    return _transport(name).receiver(**options)
