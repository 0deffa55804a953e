"""Collating rollouts into padded tensors, sharding across ranks, micro-batching: by hand."""

import pytest
import torch

from creason.train.batch import collate, micro_batches, pad_rows, shard
from tests.train import random_batch

PAD = 0


def test_collate_hand_example():
    # row 0: prompt [5, 6], response [7, 8]       -> 5 6 7 8 .   (T = 5)
    # row 1: prompt [9],    response [10, 11, 12] -> 9 10 11 12 .
    # row 2: prompt [3, 4, 5], response [1, 2]    -> 3 4 5 1 2
    batch = collate(
        [[5, 6], [9], [3, 4, 5]],
        [[7, 8], [10, 11, 12], [1, 2]],
        [[-0.1, -0.2], [-0.3, -0.4, -0.5], [-0.6, -0.7]],
        [1.0, -1.0, 0.5],
        pad_id=PAD,
    )
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, PAD], [9, 10, 11, 12, PAD], [3, 4, 5, 1, 2]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]
    assert batch.response_mask.tolist() == [[0, 0, 1, 1, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]]
    # old_logp[i, t] is the log-prob of input_ids[i, t]: aligned with the response tokens
    expected = torch.tensor([[0, 0, -0.1, -0.2, 0], [0, -0.3, -0.4, -0.5, 0], [0, 0, 0, -0.6, -0.7]])
    torch.testing.assert_close(batch.old_logp, expected)
    assert batch.advantages.tolist() == [1.0, -1.0, 0.5]
    assert batch.ref_logp is None and len(batch) == 3 and batch.num_tokens == 7


def test_collate_masks_truncated_rows_out_of_the_loss():
    batch = collate([[5], [6]], [[7, 8], [9]], [[-0.1, -0.2], [-0.3]], [1.0, -1.0], PAD,
                    truncated_mask_out=[True, False])
    assert batch.input_ids.tolist() == [[5, 7, 8], [6, 9, PAD]]  # tokens kept
    assert batch.response_mask.tolist() == [[0, 0, 0], [0, 1, 0]]
    assert batch.old_logp[0].tolist() == [0.0, 0.0, 0.0]  # zero wherever response_mask is 0


@pytest.mark.parametrize("prompts,responses,logps", [
    ([[5]], [[7, 8]], [[-0.1]]),  # one log-prob for two tokens
    ([[]], [[7]], [[-0.1]]),  # empty prompt: nothing predicts the first token
])
def test_collate_rejects_inconsistent_rows(prompts, responses, logps):
    with pytest.raises(ValueError):
        collate(prompts, responses, logps, [0.0], PAD)


@pytest.mark.parametrize("world_size", [1, 2, 3, 4, 7])
def test_shard_covers_all_rows_with_equal_sizes(world_size):
    batch = random_batch(prompt_lens=(3, 5, 4, 6, 2), response_lens=(4, 2, 5, 3, 1))  # B = 5
    shards = [shard(batch, r, world_size) for r in range(world_size)]
    sizes = {len(s) for s in shards}
    assert sizes == {-(-5 // world_size)}  # every rank gets ceil(B / W) >= 1 rows
    joined = torch.cat([s.input_ids for s in shards])
    assert torch.equal(joined[:5], batch.input_ids)  # rank order = row order
    pad = torch.cat([s.response_mask for s in shards])[5:]
    assert pad.sum() == 0 and torch.cat([s.advantages for s in shards])[5:].abs().sum() == 0
    assert sum(s.num_tokens for s in shards) == batch.num_tokens


def test_pad_rows_is_inert_and_keeps_ref_logp():
    batch = random_batch()
    batch.ref_logp = batch.old_logp * 2
    padded = pad_rows(batch, 3)  # 4 -> 6 rows
    assert len(padded) == 6 and padded.num_tokens == batch.num_tokens
    assert padded.ref_logp[4:].abs().sum() == 0 and torch.equal(padded.ref_logp[:4], batch.ref_logp)


def test_shard_rejects_bad_rank():
    with pytest.raises(ValueError):
        shard(random_batch(), 2, 2)


def test_micro_batches_split_rows_and_trim_padding():
    batch = random_batch(prompt_lens=(1, 1, 5), response_lens=(1, 2, 5))  # lengths 2, 3, 10
    chunks = micro_batches(batch, 2)
    assert [len(c) for c in chunks] == [2, 1]
    assert [c.input_ids.shape[1] for c in chunks] == [3, 10]  # first chunk cut to its longest row
    assert torch.equal(chunks[0].input_ids, batch.input_ids[:2, :3])
    assert torch.equal(chunks[0].old_logp, batch.old_logp[:2, :3])
    assert sum(c.num_tokens for c in chunks) == batch.num_tokens
    with pytest.raises(ValueError):
        micro_batches(batch, 0)


@pytest.mark.parametrize("world_size,expected_groups,rows", [(1, [[0, 1, 2]], 8), (2, [[0, 1], [2]], 6),
                                                             (4, [[0], [1], [2], []], 3)])
def test_shard_keeps_groups_whole(world_size, expected_groups, rows):
    prompts = [[5, 6]] * 3 + [[7]] * 3 + [[8, 9, 1]] * 2  # groups of 3, 3 and 2 rows
    responses = [[10 + i] for i in range(8)]
    batch = collate(prompts, responses, [[-0.5]] * 8, [1.0] * 8, PAD, group_ids=[0, 0, 0, 1, 1, 1, 2, 2])
    shards = [shard(batch, r, world_size) for r in range(world_size)]
    assert {len(s) for s in shards} == {rows}  # the fullest rank's rows, everywhere
    for s, groups in zip(shards, expected_groups):
        real = s.response_mask.sum(-1) > 0
        assert sorted(set(s.group_ids[real].tolist())) == groups
        assert int(real.sum()) == sum(3 if g < 2 else 2 for g in groups)  # every row of each of its groups
    assert sum(s.num_tokens for s in shards) == batch.num_tokens
