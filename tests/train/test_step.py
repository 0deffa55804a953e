"""One GRPO update through `TorchEngine` on the tiny model."""

import dataclasses
import math

import pytest
import torch

from creason.train.policy import sequence_logprobs
from creason.algo import AGGREGATIONS, LossUnits
from creason.train.step import TorchEngine, compute_ref_logprobs, global_loss_units, grpo_update
from tests.train import load_tiny, random_batch, weights

KW = dict(eps_low=0.2, eps_high=0.28, beta=0.0, agg="token-mean", kl_estimator="k3", temperature=1.0)


def torch_engine(model_dir, lr=1e-3, sgd=False):
    model = load_tiny(model_dir)
    opt = torch.optim.SGD(model.parameters(), lr=lr) if sgd else torch.optim.AdamW(model.parameters(), lr=lr)
    return TorchEngine(model, opt, grad_clip=1.0)


def on_policy(model, batch):
    """The batch with old_logp from `model` itself, as a perfectly synced sampler would report."""
    with torch.no_grad():
        logp, _ = sequence_logprobs(model, batch)
    return dataclasses.replace(batch, old_logp=logp)


def test_global_loss_units_without_a_process_group_are_the_batch_own():
    batch = random_batch(prompt_lens=(2, 2, 2), response_lens=(1, 3, 4))
    mask = batch.response_mask.clone()
    mask[0] = 0  # a row with no loss token (an empty or masked-out completion)
    # tokens 3 + 4 = 7; sequences with a token: 2
    assert global_loss_units(mask, 16) == LossUnits(tokens=7, sequences=2, norm_tokens=16)


def test_update_changes_weights_and_reports_no_mismatch_on_policy(tiny_model_dir):
    engine = torch_engine(tiny_model_dir)
    batch = on_policy(engine.module, random_batch())
    before = weights(engine.module)
    m = grpo_update(engine, batch, mu=1, micro_batch_size=2, **KW)
    after = weights(engine.module)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0
    assert m["mismatch"] < 1e-5 and m["mismatch_max"] < 1e-4  # same weights, same numbers
    assert m["ratio_mean"] == pytest.approx(1.0) and m["clip_frac_low"] == m["clip_frac_high"] == 0.0
    assert m["tokens"] == batch.num_tokens and m["entropy"] > 0 and m["lr"] == 1e-3


def test_mismatch_reports_a_stale_sampler(tiny_model_dir):
    engine = torch_engine(tiny_model_dir)
    m = grpo_update(engine, random_batch(), mu=1, micro_batch_size=4, **KW)  # fake sampler logp = -1
    assert m["mismatch"] > 1.0


@pytest.mark.parametrize("agg", sorted(AGGREGATIONS))
def test_gradient_does_not_depend_on_micro_batch_size(tiny_model_dir, agg):
    """Global units: one step with micro-batches of 1 equals one with the whole batch (SGD)."""
    results = []
    for size in (1, 4):
        engine = torch_engine(tiny_model_dir, lr=0.1, sgd=True)
        grpo_update(engine, random_batch(), mu=1, micro_batch_size=size, **{**KW, "agg": agg}, loss_norm_tokens=8)
        results.append(weights(engine.module))
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], atol=1e-6, rtol=1e-5)


def test_several_passes_clip(tiny_model_dir):
    engine = torch_engine(tiny_model_dir, lr=1e-2)
    batch = random_batch()
    m = grpo_update(engine, batch, mu=3, micro_batch_size=2, **KW)
    assert math.isfinite(m["loss"])
    assert m["clip_frac_low"] + m["clip_frac_high"] > 0  # the ratio moved off 1 after the first step


def test_reference_logprobs_and_kl(tiny_model_dir):
    engine = torch_engine(tiny_model_dir)
    ref = load_tiny(tiny_model_dir)
    batch = random_batch()
    ref_logp = compute_ref_logprobs(ref, batch, micro_batch_size=3)
    with torch.no_grad():
        expected, _ = sequence_logprobs(ref, batch)
    torch.testing.assert_close(ref_logp, expected, atol=1e-5, rtol=1e-5)
    batch = dataclasses.replace(batch, ref_logp=ref_logp)
    m = grpo_update(engine, batch, mu=1, micro_batch_size=4, **{**KW, "beta": 0.1})
    assert 0.0 <= m["kl"] < 1e-6  # the policy is the reference before its first step
    m = grpo_update(engine, batch, mu=1, micro_batch_size=4, **{**KW, "beta": 0.1})
    assert m["kl"] > 1e-4 and m["loss"] == pytest.approx(m["pg_loss"] + 0.1 * m["kl"])


def test_shared_prompt_update_equals_the_plain_one(tiny_model_dir):
    """GRPO groups share their prompt: running it once per micro-batch changes nothing but the time
    (SGD, so the weights show the gradient directly; micro-batches cut through a group too)."""
    from tests.train.test_policy import grouped_batch

    after = []
    for share in (False, True):
        engine = torch_engine(tiny_model_dir, lr=0.5, sgd=True)
        batch = on_policy(engine.module, grouped_batch())
        m = grpo_update(engine, batch, mu=2, micro_batch_size=2, share_prompts=share, **KW)
        after.append((weights(engine.module), m))
    (plain, m_plain), (shared, m_shared) = after
    for k in plain:
        torch.testing.assert_close(shared[k], plain[k], atol=1e-5, rtol=1e-4, msg=k)
    assert m_shared["loss"] == pytest.approx(m_plain["loss"], abs=1e-5)
    assert m_shared["mismatch"] < 1e-5


def test_options_need_what_they_use(tiny_model_dir):
    with pytest.raises(ValueError, match="loss_norm_tokens"):
        grpo_update(None, random_batch(), micro_batch_size=1, agg="seq-mean-token-sum-norm")
    bad = random_batch()
    bad.advantages[1] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        grpo_update(None, bad, micro_batch_size=1)


def test_truncated_importance_sampling_and_dual_clip(tiny_model_dir):
    """The sampler's log-probs are the trainer's + [0, -1, +1, ...]: weights e^0 = 1, e^1 = 2.7 (cut
    to the cap 2), e^-1 = 0.37: a third of the tokens truncated, up to the row ends."""
    engine = torch_engine(tiny_model_dir)
    batch = on_policy(engine.module, random_batch())
    mask = batch.response_mask.bool()
    shift = torch.tensor([0.0, -1.0, 1.0]).repeat(batch.input_ids.numel() // 3 + 1)[: batch.input_ids.numel()]
    sampler = (batch.old_logp + shift.view_as(batch.old_logp)) * mask
    cut = int(((shift.view_as(mask) == -1.0) & mask).sum())  # tokens whose weight was cut
    m = grpo_update(engine, dataclasses.replace(batch, old_logp=sampler), mu=2, micro_batch_size=3,
                    **{**KW, "agg": "seq-mean-token-mean"}, tis_cap=2.0, clip_ratio_c=3.0)
    assert m["tis_truncated_frac"] == pytest.approx(cut / batch.num_tokens, abs=1e-6)
    assert 0.0 <= m["clip_frac_dual"] <= 1.0 and math.isfinite(m["loss"]) and math.isfinite(m["grad_norm"])


@pytest.mark.parametrize("agg", sorted(AGGREGATIONS))
def test_a_batch_without_loss_tokens_moves_nothing(tiny_model_dir, agg):
    """Every completion empty or masked out: loss 0 and a zero gradient, not NaN (SGD: weights kept)."""
    engine = torch_engine(tiny_model_dir, lr=0.1, sgd=True)
    batch = random_batch()
    batch = dataclasses.replace(batch, response_mask=torch.zeros_like(batch.response_mask),
                                old_logp=torch.zeros_like(batch.old_logp))
    before = weights(engine.module)
    m = grpo_update(engine, batch, mu=1, micro_batch_size=2, **{**KW, "agg": agg}, loss_norm_tokens=8)
    assert m["loss"] == 0.0 and m["grad_norm"] == 0.0
    after = weights(engine.module)
    assert all(torch.equal(before[k], after[k]) for k in before)
