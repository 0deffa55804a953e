"""Per-token log-probs of the tiny model against a slow loop, one prefix at a time."""

import dataclasses

import pytest
import torch

from creason.train.batch import collate
from creason.train.batch import group_bounds
from creason.train.policy import sequence_logprobs, shared_prefix_len
from tests.train import load_tiny, random_batch


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return load_tiny(tiny_model_dir)


@torch.no_grad()
def slow_logprobs(model, batch, temperature):
    """For each response token t of each row: forward the unpadded prefix input_ids[:t] alone."""
    logp = torch.zeros(batch.input_ids.shape)
    entropy = torch.zeros(batch.input_ids.shape)
    for i in range(len(batch)):
        for t in batch.response_mask[i].nonzero().flatten().tolist():
            logits = model(input_ids=batch.input_ids[i : i + 1, :t]).logits[0, -1] / temperature  # (V,)
            dist = torch.log_softmax(logits.float(), -1)
            logp[i, t] = dist[batch.input_ids[i, t]]
            entropy[i, t] = -(dist.exp() * dist).sum()
    return logp, entropy


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sequence_logprobs_match_a_slow_loop(model, temperature):
    batch = random_batch(prompt_lens=(3, 6, 2), response_lens=(4, 2, 5))  # padding in rows 0 and 1
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, batch, temperature, with_entropy=True)
    slow_logp, slow_entropy = slow_logprobs(model, batch, temperature)
    assert logp.shape == batch.input_ids.shape and logp.dtype == torch.float32
    torch.testing.assert_close(logp, slow_logp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(entropy, slow_entropy, atol=1e-4, rtol=1e-4)
    assert logp[batch.response_mask == 0].abs().sum() == 0  # zero off the response


def test_masked_rows_are_zero_and_gradients_flow(model):
    batch = random_batch(prompt_lens=(3, 4), response_lens=(2, 3))
    batch = dataclasses.replace(batch, response_mask=batch.response_mask * torch.tensor([[1], [0]]))
    logp, entropy = sequence_logprobs(model, batch)
    assert entropy is None and logp[1].abs().sum() == 0 and logp[0].abs().sum() > 0
    logp.sum().backward()
    assert model.model.embed_tokens.weight.grad is not None
    model.zero_grad(set_to_none=True)


def grouped_batch(seed: int = 1):
    """Two groups sharing a prompt each (3 and 2 rows), then a lone row; responses of uneven length."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (7, 4, 5)]
    rows = [prompts[0]] * 3 + [prompts[1]] * 2 + [prompts[2]]
    responses = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (4, 2, 5, 3, 1, 6)]
    return collate(rows, responses, [[-1.0] * len(r) for r in responses], [1.0, -1.0, 0.5, -0.5, 1.0, 0.0], pad_id=0)


def rotated_batch(seed: int = 2):
    """Group 0 (4 rows): one record prefix of 6 tokens, then prompt tails that differ in tokens and
    length (as rotated options do); group 1 (2 rows): prompts that differ from the first token."""
    g = torch.Generator().manual_seed(seed)
    prefix = torch.randint(5, 1000, (6,), generator=g).tolist()
    tails = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (3, 3, 2, 4)]
    prompts = [prefix + t for t in tails] + [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (5, 3)]
    responses = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (2, 4, 1, 3, 2, 5)]
    return collate(prompts, responses, [[-1.0] * len(r) for r in responses], [1.0, -1.0, 0.5, -0.5, 1.0, -1.0],
                   pad_id=0, group_ids=[0, 0, 0, 0, 1, 1])


def test_groups_follow_shared_prompts_or_the_given_ids():
    assert group_bounds(grouped_batch()) == [(0, 3), (3, 5), (5, 6)]
    batch = rotated_batch()
    assert group_bounds(batch) == [(0, 4), (4, 6)]
    assert shared_prefix_len(batch.rows(slice(0, 4))) == 6
    assert shared_prefix_len(batch.rows(slice(4, 6))) == 0


BATCHES = {"shared prompts": grouped_batch, "rotated options": rotated_batch}


@pytest.mark.parametrize("make_batch", BATCHES.values(), ids=BATCHES.keys())
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_shared_prompts_match_a_slow_loop(model, temperature, make_batch):
    batch = make_batch()
    with torch.no_grad():
        logp, entropy = sequence_logprobs(model, batch, temperature, with_entropy=True, share_prompts=True)
    slow_logp, slow_entropy = slow_logprobs(model, batch, temperature)
    torch.testing.assert_close(logp, slow_logp, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(entropy, slow_entropy, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("make_batch", BATCHES.values(), ids=BATCHES.keys())
def test_shared_prompts_give_the_same_gradients(model, make_batch):
    batch = make_batch()
    grads = []
    for share in (False, True):
        logp, _ = sequence_logprobs(model, batch, share_prompts=share)
        (logp * batch.advantages[:, None]).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        model.zero_grad(set_to_none=True)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)
    assert any(g.abs().sum() > 0 for g in grads[1].values())
