"""Weight sync by broadcast: the trainer's rank 0 and the rollout actors form a process group of
their own (NCCL on GPUs; gloo, the CPU stand-in, elsewhere), and each push streams the weights in
buckets: consecutive tensors packed into one flat byte buffer of at most `BUCKET_BYTES`, one
broadcast per bucket. No object-store copy; on GPUs the actors receive straight into device
memory, one bucket at a time, as the engine reads them, so a receiver's buffer is one bucket, not
the whole model. The group is not the training group (`torch.distributed`'s default one): it is
built from a `TCPStore` directly, so the trainers' own collectives are untouched.

    trainer rank 0 (rank 0 of the group)          actor i (rank i + 1)
    plan buckets, send their layouts  ──────────►  receive(layouts): for each bucket,
    for each bucket:                                  empty bucket-sized buffer
      broadcast(bucket, root=0)  ───────────────►     broadcast(buffer, root=0)
                                                      views by name -> engine.load_weights

A restarted actor has left the group (its process is new): `catch_up` rebuilds the group with
every actor and broadcasts the latest weights again, from a host copy kept for that. Both ends
are here: `BroadcastSync` (the trainer's rank 0) and `BroadcastReceiver` (an actor's).
"""

from __future__ import annotations

import datetime as dt
import socket
import time
from typing import Any, Iterator

import ray
import torch
from torch import Tensor

from creason.rollout.sync.base import NamedTensors, PushLog, retry_while_restarting

Layout = list[tuple[str, list[int], str]]  # one bucket's (name, shape, dtype name), in packing order
BUCKET_BYTES = 256 * 2**20  # a bucket's most bytes: a receiver's largest buffer, unless one tensor is larger
ALIGN = 16  # bytes: each tensor starts at a multiple of it, so a bucket's bytes view as any dtype
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


def plan_buckets(sizes: list[int], budget: int) -> list[list[int]]:
    """Indices of `sizes` (bytes), in order, cut into buckets of at most `budget` bytes: a tensor
    joins the current bucket while the bucket stays within `budget`, else it opens the next one;
    a tensor larger than `budget` has a bucket of its own.

    >>> plan_buckets([10, 30, 5, 50, 20, 20], budget=40)
    [[0, 1], [2], [3], [4, 5]]
    """
    if budget <= 0:
        raise ValueError(f"a bucket's budget must be positive bytes, not {budget}")
    buckets: list[list[int]] = []
    used = 0
    for i, size in enumerate(sizes):
        if buckets and used + size <= budget:
            buckets[-1].append(i)
            used += size
        else:
            buckets.append([i])
            used = size
    return buckets


def _nbytes(shape: list[int], dtype: str) -> int:
    return int(torch.Size(shape).numel()) * getattr(torch, dtype).itemsize


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def offsets(layout: Layout) -> tuple[list[int], int]:
    """Each tensor's byte offset in the bucket of `layout`, and the bucket's bytes (no padding
    after the last tensor: a bucket of one tensor is that tensor's size)."""
    starts, end = [], 0
    for _, shape, dtype in layout:
        starts.append(_aligned(end))
        end = starts[-1] + _nbytes(shape, dtype)
    return starts, end


def pack(named_tensors: NamedTensors, budget: int = BUCKET_BYTES) -> tuple[list[Layout], list[Tensor]]:
    """The buckets' layouts (`plan_buckets` over the tensors' aligned sizes, so none exceeds
    `budget` unless it holds one larger tensor) and each bucket as one flat uint8 CPU buffer.

    >>> layouts, flat = pack([("a", torch.ones(2, 2)), ("b", torch.arange(3)), ("c", torch.ones(1))], budget=48)
    >>> layouts, [f.numel() for f in flat]
    ([[('a', [2, 2], 'float32'), ('b', [3], 'int64')], [('c', [1], 'float32')]], [40, 4])
    """
    layout = [(name, list(t.shape), str(t.dtype).removeprefix("torch.")) for name, t in named_tensors]
    plan = plan_buckets([_aligned(_nbytes(shape, dtype)) for _, shape, dtype in layout], budget)
    layouts = [[layout[i] for i in bucket] for bucket in plan]
    flats = []
    for bucket, bucket_layout in zip(plan, layouts):
        starts, size = offsets(bucket_layout)
        flat = torch.zeros(size, dtype=torch.uint8)
        for i, start in zip(bucket, starts):
            raw = named_tensors[i][1].detach().cpu().contiguous().reshape(-1).view(torch.uint8)
            flat[start : start + raw.numel()] = raw
        flats.append(flat)
    return layouts, flats


def unpack(layout: Layout, flat: Tensor) -> NamedTensors:
    """Views of one bucket's buffer, by name, in layout order (the inverse of `pack`).

    >>> layouts, flat = pack([("a", torch.arange(4.0).view(2, 2)), ("b", torch.ones(1, dtype=torch.bfloat16))])
    >>> [(n, t.tolist()) for n, t in unpack(layouts[0], flat[0])]
    [('a', [[0.0, 1.0], [2.0, 3.0]]), ('b', [1.0])]
    """
    starts, _ = offsets(layout)
    return [(name, flat[start : start + _nbytes(shape, dtype)].view(getattr(torch, dtype)).view(shape))
            for (name, shape, dtype), start in zip(layout, starts)]


def send_buckets(group: Any, buckets: list[Tensor], device: str) -> None:
    """Broadcast each bucket from rank 0 in turn, one on `device` at a time."""
    for flat in buckets:
        group.broadcast(flat.to(device), 0).wait()


class BroadcastReceiver:
    """An actor's end: joins the group as rank `rank` when made (`RolloutWorker.connect_weight_sync`),
    then receives each push, whose payload is its buckets' layouts."""

    def __init__(self, host: str, port: int, rank: int, world: int, backend: str):
        self.group = process_group(host, port, rank, world, backend)
        self.device = "cuda" if backend == "nccl" else "cpu"

    def receive(self, layouts: list[Layout]) -> Iterator[tuple[str, Tensor]]:
        """The pushed tensors, received a bucket at a time as the engine reads them: each bucket
        into a fresh buffer of its own size, so a reader that copies each tensor and lets go of it
        holds one bucket at a time. A reader that stops early (an error) still receives the rest
        once it closes or drops the iterator: the sender broadcasts every bucket."""
        received = 0
        try:
            for layout in layouts:
                flat = self._receive_bucket(layout)
                received += 1
                yield from unpack(layout, flat)
        except GeneratorExit:  # closed early: take the buckets still coming, or the sender waits for us
            for layout in layouts[received:]:
                self._receive_bucket(layout)
            raise

    def _receive_bucket(self, layout: Layout) -> Tensor:
        flat = torch.empty(offsets(layout)[1], dtype=torch.uint8, device=self.device)
        self.group.broadcast(flat, 0).wait()
        return flat


class BroadcastSync:
    """The trainer's end (`WeightSync`) of a broadcast group of its rank 0 and the actors;
    `bucket_bytes`: a bucket's most bytes (a tensor larger than that is sent alone)."""

    name = "broadcast"
    receiver = BroadcastReceiver

    def __init__(self, actors: list[Any], backend: str | None = None, bucket_bytes: int = BUCKET_BYTES):
        self.actors, self.backend, self.bucket_bytes = actors, backend or default_backend(), bucket_bytes
        self.device = "cuda" if self.backend == "nccl" else "cpu"
        self._pushes = PushLog()  # of (layouts, buckets, version)
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

    def push(self, named_tensors: NamedTensors, version: int, complete: bool = True) -> dict:
        start = time.perf_counter()
        layouts, buckets = pack(named_tensors, self.bucket_bytes)
        self._pushes.record((layouts, buckets, version), complete)
        load_seconds = self._broadcast(layouts, buckets, version)
        return {"seconds": time.perf_counter() - start, "bytes": sum(t.numel() * t.element_size() for _, t in named_tensors),
                "load_seconds_max": max(load_seconds, default=0.0), "version": version}

    def _broadcast(self, layouts: list[Layout], buckets: list[Tensor], version: int) -> list[float]:
        loads = [a.receive_weights.remote(self.name, layouts, version) for a in self.actors]
        send_buckets(self.group, buckets, self.device)
        return ray.get(loads)

    def catch_up(self, actor: Any) -> float:
        """A restarted actor is not in the group: rebuild it and send the latest weights to all
        (the pushes that rebuild them: `PushLog`)."""
        pushes = self._pushes.replay()

        def rejoin_and_send() -> float:
            self._join()
            return sum(max(self._broadcast(*push)) for push in pushes)

        return retry_while_restarting(rejoin_and_send)

