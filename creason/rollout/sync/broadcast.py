"""Weight sync by broadcast: the trainer's rank 0 and the rollout actors form a process group of
their own (NCCL on GPUs; gloo, the CPU stand-in, elsewhere), and each push is one broadcast per
dtype of all weights packed into one flat buffer: no object-store copy, and on GPUs the actors
receive straight into device memory. The group is not the training group (`torch.distributed`'s default one):
it is built from a `TCPStore` directly, so the trainers' own collectives are untouched.

    trainer rank 0 (rank 0 of the group)          actor i (rank i + 1)
    flat = cat(weights of a dtype)                 receive(layout): empty flat buffers
    broadcast(flat, root=0)  ───────────────────►  broadcast(flat, root=0)
                                                   views by name -> engine.load_weights

A restarted actor has left the group (its process is new): `catch_up` rebuilds the group with
every actor and broadcasts the latest weights again, from a host copy kept for that. Both ends
are here: `BroadcastSync` (the trainer's rank 0) and `BroadcastReceiver` (an actor's).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from typing import Any

import ray
import torch
from torch import Tensor

from creason.rollout.sync.base import NamedTensors, retry_while_restarting

Layout = list[tuple[str, list[int], str]]  # (name, shape, dtype name) in packing order
JOIN_TIMEOUT = dt.timedelta(minutes=2)  # every member must reach the store by then
BROADCAST_TIMEOUT = dt.timedelta(minutes=10)  # a 14B model's broadcast must not time out


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def process_group(host: str, port: int, rank: int, world: int, backend: str):
    """A process group of `world` members outside `torch.distributed`'s default group; rank 0
    hosts its store."""
    store = torch.distributed.TCPStore(host, port, world, rank == 0, timeout=JOIN_TIMEOUT)
    if backend == "nccl":
        return torch.distributed.ProcessGroupNCCL(store, rank, world)
    if backend == "gloo":
        return torch.distributed.ProcessGroupGloo(store, rank, world, BROADCAST_TIMEOUT)
    raise ValueError(f"unknown broadcast backend {backend!r}; choose nccl or gloo")


def pack(named_tensors: NamedTensors) -> tuple[Layout, dict[str, Tensor]]:
    """The layout and one flat CPU buffer per dtype (tensors in layout order).

    >>> layout, flat = pack([("a", torch.ones(2, 2)), ("b", torch.zeros(3, dtype=torch.int64)), ("c", torch.ones(1))])
    >>> layout, {k: v.shape for k, v in flat.items()}
    ([('a', [2, 2], 'float32'), ('b', [3], 'int64'), ('c', [1], 'float32')], {'float32': torch.Size([5]), 'int64': torch.Size([3])})
    """
    layout = [(name, list(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named_tensors]
    by_dtype: dict[str, list[Tensor]] = {}
    for (_, _, dtype), (_, t) in zip(layout, named_tensors):
        by_dtype.setdefault(dtype, []).append(t.detach().reshape(-1).cpu())
    return layout, {dtype: torch.cat(parts) for dtype, parts in by_dtype.items()}


def unpack(layout: Layout, flat: dict[str, Tensor]) -> NamedTensors:
    """Views of the flat buffers, by name, in layout order (the inverse of `pack`).

    >>> layout, flat = pack([("a", torch.arange(4.0).view(2, 2)), ("b", torch.ones(1))])
    >>> [(n, t.tolist()) for n, t in unpack(layout, flat)]
    [('a', [[0.0, 1.0], [2.0, 3.0]]), ('b', [1.0])]
    """
    offsets = {dtype: 0 for dtype in flat}
    out = []
    for name, shape, dtype in layout:
        n = int(torch.Size(shape).numel())
        out.append((name, flat[dtype][offsets[dtype] : offsets[dtype] + n].view(shape)))
        offsets[dtype] += n
    return out


def flat_sizes(layout: Layout) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for _, shape, dtype in layout:
        sizes[dtype] = sizes.get(dtype, 0) + int(torch.Size(shape).numel())
    return sizes


class BroadcastReceiver:
    """An actor's end: joins the group as rank `rank` when made (`RolloutWorker.connect_weight_sync`),
    then receives each push, whose payload is its layout, into fresh buffers on its device."""

    def __init__(self, host: str, port: int, rank: int, world: int, backend: str):
        self.group = process_group(host, port, rank, world, backend)
        self.device = "cuda" if backend == "nccl" else "cpu"

    def receive(self, layout: Layout) -> NamedTensors:
        flat = {}
        for dtype, n in flat_sizes(layout).items():  # same order as the sender's
            buffer = torch.empty(n, dtype=getattr(torch, dtype), device=self.device)
            self.group.broadcast(buffer, 0).wait()
            flat[dtype] = buffer
        return unpack(layout, flat)


class BroadcastSync:
    """The trainer's end (`WeightSync`) of a broadcast group of its rank 0 and the actors."""

    name = "broadcast"
    receiver = BroadcastReceiver

    def __init__(self, actors: list[Any], backend: str | None = None):
        self.actors, self.backend = actors, backend or default_backend()
        self.device = "cuda" if self.backend == "nccl" else "cpu"
        self._latest: tuple[Layout, dict[str, Tensor], int] | None = None
        self._join()

    def _join(self) -> None:
        """(Re)build the group: every actor joins as rank i + 1, this process as rank 0. Every actor
        must be up first: a join lost to a restart would leave this process waiting for it."""
        retry_while_restarting(lambda: ray.get([a.weight_version.remote() for a in self.actors]))
        host, port, world = ray.util.get_node_ip_address(), _free_port(), len(self.actors) + 1
        joined = [a.connect_weight_sync.remote(self.name, host=host, port=port, rank=i + 1, world=world, backend=self.backend)
                  for i, a in enumerate(self.actors)]
        self.group = process_group(host, port, 0, world, self.backend)
        ray.get(joined)

    def push(self, named_tensors: NamedTensors, version: int) -> dict:
        start = time.perf_counter()
        layout, flat = pack(named_tensors)
        self._latest = (layout, flat, version)
        load_seconds = self._broadcast(layout, flat, version)
        return {"seconds": time.perf_counter() - start, "bytes": sum(t.numel() * t.element_size() for t in flat.values()),
                "load_seconds_max": max(load_seconds, default=0.0), "version": version}

    def _broadcast(self, layout: Layout, flat: dict[str, Tensor], version: int) -> list[float]:
        loads = [a.receive_weights.remote(self.name, layout, version) for a in self.actors]
        for dtype in flat_sizes(layout):
            self.group.broadcast(flat[dtype].to(self.device), 0).wait()
        return ray.get(loads)

    def catch_up(self, actor: Any) -> float:
        """A restarted actor is not in the group: rebuild it and send the latest weights to all."""
        if self._latest is None:
            raise RuntimeError("catch_up before the first push: nothing to send")
        layout, flat, version = self._latest

        def rejoin_and_send() -> float:
            self._join()
            return max(self._broadcast(layout, flat, version))

        return retry_while_restarting(rejoin_and_send)
