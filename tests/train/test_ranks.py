"""The gloo-rank helper itself: its quick exit must not hide a failing rank."""

import pytest
import torch
import torch.distributed as dist
from torch.multiprocessing import ProcessRaisedException

from tests.ranks import spawn_gloo_ranks


def _sum_ranks_then_fail_on(rank: int, world: int, failing_rank: int) -> None:
    total = torch.tensor([float(rank)])
    dist.all_reduce(total)
    assert total.item() == sum(range(world))
    if rank == failing_rank:
        raise RuntimeError(f"rank {rank} fails on purpose")


def test_a_rank_that_raises_fails_the_spawn():
    with pytest.raises(ProcessRaisedException, match="rank 1 fails on purpose"):
        spawn_gloo_ranks(_sum_ranks_then_fail_on, 2, 1)


def test_ranks_that_finish_pass():
    spawn_gloo_ranks(_sum_ranks_then_fail_on, 2, -1)
