"""Run a test body on N local gloo ranks: spawned processes, one thread each, a free local port.

Each rank leaves with `os._exit(0)` once every rank has finished its body. A normal interpreter
exit can abort the process (SIGABRT, "terminate called without an active exception") when gloo's
C++ threads still hold work at finalization, a known PyTorch hazard that failed CI once
(2026-12-05); the test's result was already in. A body that raises still fails the test: the
spawn wrapper records its traceback before the process exits.
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from creason.train.engine import free_port


def spawn_gloo_ranks(body: Callable, world: int, *args) -> None:
    """Run `body(rank, world, *args)` on `world` gloo ranks; raise if any rank fails."""
    mp.spawn(_gloo_rank, args=(body, world, free_port(), args), nprocs=world, join=True)


def _gloo_rank(rank: int, body: Callable, world: int, port: int, args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    body(rank, world, *args)
    dist.barrier()  # no rank leaves while another still needs the group
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
