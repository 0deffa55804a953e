"""The GRPO loss over any number of ranks: the same batch on 1, 2 and 3 CPU ranks (gloo, spawned
processes) gives the same gradients, for every aggregation mode, with dual-clip, truncated
importance sampling and the k3 KL on. Ranks hold different numbers of tokens and sequences, and
padding rows: without the global units, token-mean on 2 ranks would weigh a token of the shorter
shard more.

`TorchEngine.step` averages the gradients over the ranks, as DeepSpeed does; the gradients are
read by an optimizer pre-step hook, so they are the ones the optimizer would apply.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.distributed as dist

from creason.train.batch import RolloutBatch, collate, shard
from creason.train.policy import sequence_logprobs
from creason.train.step import TorchEngine, grpo_update
from tests.ranks import spawn_gloo_ranks

COMMON = dict(micro_batch_size=2, eps_low=0.2, eps_high=0.28, kl_estimator="k3", temperature=1.0)
ALL_ON = dict(mu=2, beta=0.05, clip_ratio_c=3.0, tis_cap=1.5, loss_norm_tokens=8)
CASES = {
    "token-mean": dict(agg="token-mean", **ALL_ON),
    "seq-mean-token-mean": dict(agg="seq-mean-token-mean", **ALL_ON),
    "seq-mean-token-sum": dict(agg="seq-mean-token-sum", **ALL_ON),
    "seq-mean-token-sum-norm": dict(agg="seq-mean-token-sum-norm", **ALL_ON),
    "token-mean-plain": dict(agg="token-mean", mu=1, beta=0.0),
}
LR = 0.05


def tiny_model() -> torch.nn.Module:
    """A randomly initialised 2-layer Llama (vocab 64), float32, built here: no files, no hub."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).float().eval()


def make_batch(model) -> RolloutBatch:
    """7 rollouts: lengths 1..6, an empty completion (row 3), a truncated one masked out of the loss
    (row 5), a group of all-equal rewards (advantages 0, rows 0-1) and a one-sample group (row 6,
    advantage 0). Sampler log-probs = the model's + noise (so importance weights bite), the
    reference's likewise. 7 rows: 2 ranks get 4 + 3 rows + 1 padding, 3 ranks 3 + 3 + 1 + 2 padding."""
    g = torch.Generator().manual_seed(1)
    prompt_lens, response_lens = (3, 2, 4, 2, 5, 3, 2), (5, 1, 6, 0, 3, 4, 2)
    prompts = [torch.randint(1, 64, (n,), generator=g).tolist() for n in prompt_lens]
    responses = [torch.randint(1, 64, (n,), generator=g).tolist() for n in response_lens]
    advantages = [0.0, 0.0, 1.3, -0.7, -1.1, 0.9, 0.0]
    truncated = [False, False, False, False, False, True, False]
    batch = collate(prompts, responses, [[0.0] * n for n in response_lens], advantages, pad_id=0,
                    truncated_mask_out=truncated)
    batch.advantages[:2] = torch.tensor([0.8, -0.4])  # rows 0-1 carry a signal after all: more to compare
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, batch)
    mask = batch.response_mask
    noise = torch.randn(logp.shape, generator=g)
    return dataclasses.replace(batch, old_logp=(logp + 0.4 * noise) * mask,
                               ref_logp=(logp + 0.3 * torch.randn(logp.shape, generator=g)) * mask)


def gradients(rank: int, world: int, batch: RolloutBatch, state: dict) -> dict[str, list[dict[str, torch.Tensor]]]:
    """Per case, the gradients of each pass (after the engine's averaging) on this rank."""
    out = {}
    for name, case in CASES.items():
        model = tiny_model()
        model.load_state_dict(state)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR)
        seen: list[dict[str, torch.Tensor]] = []
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: seen.append({n: p.grad.clone() for n, p in model.named_parameters()}))
        engine = TorchEngine(model, optimizer, grad_clip=0.0)
        metrics = grpo_update(engine, shard(batch, rank, world), **COMMON, **case)
        assert all(math.isfinite(v) for v in metrics.values()), (name, metrics)
        out[name] = seen
    return out


def _save_gradients(rank: int, world: int, batch: RolloutBatch, state: dict, results: str) -> None:
    torch.save(gradients(rank, world, batch, state), f"{results}.rank{rank}")


def run_ranks(world: int, batch: RolloutBatch, state: dict, tmp_path) -> list[dict]:
    results = str(tmp_path / f"grads_w{world}")
    spawn_gloo_ranks(_save_gradients, world, batch, state, results)
    return [torch.load(f"{results}.rank{r}") for r in range(world)]


@pytest.fixture(scope="module")
def setup():
    model = tiny_model()
    return make_batch(model), {k: v.clone() for k, v in model.state_dict().items()}


def test_batch_splits_unevenly(setup):
    batch, _ = setup
    tokens = [shard(batch, r, 2).num_tokens for r in range(2)]
    assert tokens == [12, 5] and len(shard(batch, 0, 3)) == 3  # rows 0-3: 5+1+6+0; rows 4-6: 3+0 (masked)+2


@pytest.mark.slow  # ~35 s of CPU: 5 spawned processes import torch and transformers
def test_same_gradients_on_1_2_and_3_ranks(setup, tmp_path):
    batch, state = setup
    assert not dist.is_initialized() or dist.get_world_size() == 1
    one = gradients(0, 1, batch, state)
    for world in (2, 3):
        per_rank = run_ranks(world, batch, state, tmp_path)
        for name in CASES:
            for p, reference in enumerate(one[name]):  # each pass
                for rank, grads in enumerate(per_rank):
                    for key, g in grads[name][p].items():
                        assert torch.isfinite(g).all(), (name, key)
                        diff = (g - reference[key]).abs().max().item()
                        assert diff < 1e-6, f"{name} pass {p} rank {rank}/{world} {key}: max |diff| {diff:.2e}"
        assert all(len(per_rank[0][name]) == CASES[name]["mu"] for name in CASES)
    assert max(g.abs().max().item() for g in one["token-mean"][0].values()) > 1e-3  # a real gradient
