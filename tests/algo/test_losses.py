"""Clipped policy loss, aggregation, truncation and per-token log-probs, against hand-computed values."""

import doctest
import math

import pytest
import torch

from creason.algo import logprobs, losses
from creason.algo.logprobs import entropy_from_logits, token_logprobs
from creason.algo.losses import (
    AGGREGATIONS,
    LossUnits,
    aggregate,
    apply_truncation,
    clipped_policy_loss,
    truncated_is_weights,
)

EPS_LOW, EPS_HIGH = 0.2, 0.28


def one_token_batch(ratios, advantages):
    """(B, 1) logp / old_logp with the given ratios, advantages (B,), mask of ones."""
    logp = torch.log(torch.tensor(ratios)).unsqueeze(-1).requires_grad_()
    return logp, torch.zeros_like(logp), torch.tensor(advantages), torch.ones_like(logp)


def test_clipping_at_both_bounds():
    # token  ratio  A    ratio*A  clip(ratio, 0.8, 1.28)*A  -min(...)   regime
    #   0    1.5   +1     1.5        1.28                    -1.28      clipped high
    #   1    0.5   -1    -0.5       -0.8                      0.8       clipped low
    #   2    1.1   +2     2.2        2.2                     -2.2       inside the bounds
    #   3    0.5   +1     0.5        0.8                     -0.5       below, A > 0: not clipped
    #   4    1.5   -1    -1.5       -1.28                     1.5       above, A < 0: not clipped
    # token mean: (-1.28 + 0.8 - 2.2 - 0.5 + 1.5) / 5 = -1.68 / 5 = -0.336
    logp, old, adv, mask = one_token_batch([1.5, 0.5, 1.1, 0.5, 1.5], [1.0, -1.0, 2.0, 1.0, -1.0])
    loss, m = clipped_policy_loss(logp, old, adv, mask, EPS_LOW, EPS_HIGH)
    assert loss.item() == pytest.approx(-0.336, abs=1e-6)
    assert m["pg_loss"].item() == pytest.approx(-0.336, abs=1e-6)
    assert m["clip_frac_high"].item() == pytest.approx(0.2)  # token 0
    assert m["clip_frac_low"].item() == pytest.approx(0.2)  # token 1
    assert m["ratio_mean"].item() == pytest.approx((1.5 + 0.5 + 1.1 + 0.5 + 1.5) / 5, abs=1e-6)  # 1.02
    assert "kl" not in m
    # d loss / d logp = -A * ratio / 5 where unclipped, 0 where clipped:
    # [0, 0, -2 * 1.1 / 5, -1 * 0.5 / 5, 1 * 1.5 / 5] = [0, 0, -0.44, -0.1, 0.3]
    loss.backward()
    torch.testing.assert_close(logp.grad.squeeze(-1), torch.tensor([0.0, 0.0, -0.44, -0.1, 0.3]))


def test_symmetric_default_bounds_clip_high_at_1_2():
    # ratio 1.5, A = +1, eps 0.2 / 0.2: clipped to 1.2 -> loss -1.2
    logp, old, adv, mask = one_token_batch([1.5], [1.0])
    assert clipped_policy_loss(logp, old, adv, mask)[0].item() == pytest.approx(-1.2, abs=1e-6)


# Two sequences of different lengths, ratio 1 everywhere so the per-token loss is -A:
#   seq 0: 3 tokens, A = +1 -> per-token [-1, -1, -1]
#   seq 1: 1 token,  A = -2 -> per-token [ 2, pad, pad]
# token mean:    (-1 - 1 - 1 + 2) / 4 = -0.25
# sequence mean: (mean[-1, -1, -1] + mean[2]) / 2 = (-1 + 2) / 2 = 0.5
LOGP = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, 50.0, -50.0]])  # padded positions hold garbage
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])
ADV = torch.tensor([1.0, -2.0])


@pytest.mark.parametrize(("agg", "expected"), [("token-mean", -0.25), ("seq-mean-token-mean", 0.5)])
def test_token_vs_sequence_averaging(agg, expected):
    old = LOGP.clone()
    old[1, 1:] = 0.0  # padded ratios would be exp(+-20) after the clamp: the mask must hide them
    loss, _ = clipped_policy_loss(LOGP, old, ADV, MASK, agg=agg)
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_aggregations_directly():
    values = torch.tensor([[1.0, 2.0, 3.0], [10.0, 99.0, 99.0]])
    # token: (1 + 2 + 3 + 10) / 4 = 4; sequence: (2 + 10) / 2 = 6
    assert aggregate(values, MASK, "token-mean").item() == pytest.approx(4.0)
    assert aggregate(values, MASK, "seq-mean-token-mean").item() == pytest.approx(6.0)
    # A fully masked sequence leaves the sequence mean (not counted as 0) and nothing is NaN.
    empty = torch.tensor([[1, 1, 1], [0, 0, 0]])
    assert aggregate(values, empty, "seq-mean-token-mean").item() == pytest.approx(2.0)
    assert aggregate(values, torch.zeros_like(MASK), "token-mean").item() == 0.0
    with pytest.raises(KeyError, match="known"):
        aggregate(values, MASK, "sum")


# Three sequences: 3 tokens [1, 2, 3]; 1 token [10] then padding; an empty completion (no loss
# token). Masked positions hold garbage, inf and NaN included: the mask must keep them out.
# N = 4 tokens, S = 2 sequences with a token, token sums 6 and 10, token means 2 and 10.
AGG_VALUES = torch.tensor([[1.0, 2.0, 3.0], [10.0, math.inf, 99.0], [math.nan, 7.0, -math.inf]])
AGG_MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]])
AGG_EXPECTED = {
    "token-mean": (1 + 2 + 3 + 10) / 4,  # 4
    "seq-mean-token-mean": (2 + 10) / 2,  # 6
    "seq-mean-token-sum": (6 + 10) / 2,  # 8
    "seq-mean-token-sum-norm": (6 + 10) / (2 * 4),  # 2, with L = 4
}


@pytest.mark.parametrize("mode", sorted(AGG_EXPECTED))
def test_every_aggregation_mode_by_hand(mode):
    units = LossUnits(tokens=4, sequences=2, norm_tokens=4)
    assert aggregate(AGG_VALUES, AGG_MASK, mode, units).item() == pytest.approx(AGG_EXPECTED[mode])
    assert set(AGGREGATIONS) == set(AGG_EXPECTED)


def test_aggregation_units_default_to_the_batch_own_counts():
    assert LossUnits.of(AGG_MASK) == LossUnits(tokens=4, sequences=2, norm_tokens=3)  # L: the T of the mask
    assert LossUnits.of(AGG_MASK, 512) == LossUnits(tokens=4, sequences=2, norm_tokens=512)
    assert aggregate(AGG_VALUES, AGG_MASK, "token-mean").item() == pytest.approx(4.0)
    assert aggregate(AGG_VALUES, AGG_MASK, "seq-mean-token-sum-norm").item() == pytest.approx(16 / 6)  # 2.666667


# The same batch split in two parts (as over two ranks): rows {0} and {1, 2}, each divided by the
# global counts (N = 4, S = 2, L = 4); the parts add up to the whole batch's loss.
SPLIT_EXPECTED = {
    "token-mean": (6 / 4, 10 / 4),  # 1.5 + 2.5 = 4
    "seq-mean-token-mean": (2 / 2, 10 / 2),  # 1 + 5 = 6
    "seq-mean-token-sum": (6 / 2, 10 / 2),  # 3 + 5 = 8
    "seq-mean-token-sum-norm": (6 / 8, 10 / 8),  # 0.75 + 1.25 = 2
}


@pytest.mark.parametrize("mode", sorted(SPLIT_EXPECTED))
def test_parts_divided_by_global_units_add_up(mode):
    units = LossUnits(tokens=4, sequences=2, norm_tokens=4)
    first = aggregate(AGG_VALUES[:1], AGG_MASK[:1], mode, units).item()
    rest = aggregate(AGG_VALUES[1:], AGG_MASK[1:], mode, units).item()
    assert (first, rest) == pytest.approx(SPLIT_EXPECTED[mode])
    # with each part's own counts they would not: token-mean 2 and 10, not 1.5 and 2.5
    assert first + rest == pytest.approx(AGG_EXPECTED[mode])


@pytest.mark.parametrize("mode", sorted(AGG_EXPECTED))
def test_no_loss_token_gives_zero_not_nan(mode):
    values = torch.ones(2, 3, requires_grad=True)
    loss = aggregate(values, torch.zeros(2, 3), mode)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(values.grad, torch.zeros(2, 3))


def test_dual_clip_caps_negative_advantages():
    # eps 0.2 / 0.28, c = 3. Per token: max(-r A, -clip(r, 0.8, 1.28) A), then min(., -c A) where A < 0.
    # token  ratio  A    -rA    -clip*A   max     dual min(., 3|A|)   regime
    #   0    5     -1     5      1.28     5       3                   dual clip bites
    #   1    2     -1     2      1.28     2       2                   inside the dual bound
    #   2    5     +1    -5     -1.28    -1.28    (A > 0: untouched)  clipped high
    #   3    0.5   -1     0.5    0.8      0.8     0.8                 clipped low
    # token mean with dual clip: (3 + 2 - 1.28 + 0.8) / 4 = 1.13; without: (5 + 2 - 1.28 + 0.8) / 4 = 1.63
    logp, old, adv, mask = one_token_batch([5.0, 2.0, 5.0, 0.5], [-1.0, -1.0, 1.0, -1.0])
    loss, m = clipped_policy_loss(logp, old, adv, mask, EPS_LOW, EPS_HIGH, clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(1.13, abs=1e-6)
    assert m["clip_frac_dual"].item() == pytest.approx(0.25)
    assert m["clip_frac_low"].item() == pytest.approx(0.25) and m["clip_frac_high"].item() == pytest.approx(0.25)
    # d/dlogp = -A r / 4 where the loss is -r A, else 0: [0, 2 / 4, 0, 0]
    loss.backward()
    torch.testing.assert_close(logp.grad.squeeze(-1), torch.tensor([0.0, 0.5, 0.0, 0.0]))
    logp, old, adv, mask = one_token_batch([5.0, 2.0, 5.0, 0.5], [-1.0, -1.0, 1.0, -1.0])
    loss, m = clipped_policy_loss(logp, old, adv, mask, EPS_LOW, EPS_HIGH)
    assert loss.item() == pytest.approx(1.63, abs=1e-6) and "clip_frac_dual" not in m
    loss.backward()  # token 0 now: -A r / 4 = 5 / 4
    torch.testing.assert_close(logp.grad.squeeze(-1), torch.tensor([1.25, 0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="clip_ratio_c"):
        clipped_policy_loss(logp, old, adv, mask, clip_ratio_c=1.0)


def test_truncated_importance_weights_by_hand():
    # trainer logp 0 everywhere; sampler logp [0, -1, ln 2]: pi_trainer / pi_sampler = [1, e, 0.5],
    # cap 2 -> weights [1, 2, 0.5], the second truncated (1 of 3 tokens).
    logp = torch.zeros(1, 3, requires_grad=True)
    sampler = torch.tensor([[0.0, -1.0, math.log(2.0)]])
    w, cut = truncated_is_weights(logp, sampler, 2.0)
    torch.testing.assert_close(w, torch.tensor([[1.0, 2.0, 0.5]]))
    assert cut.tolist() == [[False, True, False]] and not w.requires_grad
    # ratio 1 (old = logp), A = 1: per-token loss -w = [-1, -2, -0.5], token mean -3.5 / 3 = -1.166667;
    # d/dlogp = -A r w / 3 = [-1/3, -2/3, -1/6] (the weight is a constant)
    loss, _ = clipped_policy_loss(logp, logp.detach(), torch.ones(1), torch.ones(1, 3), is_weights=w)
    assert loss.item() == pytest.approx(-3.5 / 3, abs=1e-6)
    loss.backward()
    torch.testing.assert_close(logp.grad, torch.tensor([[-1 / 3, -2 / 3, -1 / 6]]))
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(logp, sampler, 0.0)


def test_importance_weights_leave_the_kl_term_alone():
    # A = 0: the policy term is 0 whatever the weight; k3 of log-ratio ln 2 is 0.306853 (see below)
    w = torch.tensor([[0.25]])
    loss, m = clipped_policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1),
                                  ref_logp=torch.tensor([[math.log(2.0)]]), beta=1.0, is_weights=w)
    assert loss.item() == pytest.approx(0.306853, abs=1e-6)


def test_extreme_log_ratios_stay_finite():
    # logp - old = +-100 (clamped to +-20 before exp: ratio e^20 = 4.85e8 or e^-20 = 2.1e-9);
    # ref - logp = +-200 (k3 clamped to 10). eps 0.2 / 0.28, dual clip c = 3:
    #   token 0: r = e^20,  A = +1 -> -1.28 (clipped high)
    #   token 1: r = e^-20, A = +1 -> -2.1e-9
    #   token 2: r = e^20,  A = -1 -> max(4.85e8, 1.28) = 4.85e8 -> dual clip 3
    #   token 3: r = e^-20, A = -1 -> max(2.1e-9, 0.8) = 0.8
    # pg = (-1.28 - 2.1e-9 + 3 + 0.8) / 4 = 0.63; kl = 10; loss = 0.63 + 0.1 * 10 = 1.63
    logp = torch.zeros(4, 1, requires_grad=True)
    old = torch.tensor([[-100.0], [100.0], [-100.0], [100.0]])
    ref = torch.tensor([[200.0], [-200.0], [200.0], [-200.0]])
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    loss, m = clipped_policy_loss(logp, old, adv, torch.ones(4, 1), EPS_LOW, EPS_HIGH, ref_logp=ref, beta=0.1,
                                  clip_ratio_c=3.0)
    assert loss.item() == pytest.approx(1.63, abs=1e-6) and m["kl"].item() == pytest.approx(10.0)
    loss.backward()
    assert torch.isfinite(logp.grad).all()  # all 0: every clamp is active
    # without dual clip token 2 costs e^20 / 4 = 1.2e8: large, still finite
    loss, _ = clipped_policy_loss(logp, old, adv, torch.ones(4, 1), EPS_LOW, EPS_HIGH)
    assert loss.item() == pytest.approx((-1.28 + math.exp(20) + 0.8) / 4, rel=1e-5) and math.isfinite(loss.item())


def test_metrics_are_shares_of_global_token_means():
    # Two parts with global N = 4: part one 1 token at ratio 1, part two 3 tokens at ratio 1:
    # ratio_mean parts 1/4 and 3/4 (sum 1); loss parts -A * tokens / 4 with A = 1: -0.25 and -0.75
    units = LossUnits(tokens=4, sequences=2, norm_tokens=4)
    one, m1 = clipped_policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1, 1), units=units)
    three, m3 = clipped_policy_loss(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1), torch.ones(1, 3), units=units)
    assert (one.item(), three.item()) == pytest.approx((-0.25, -0.75))
    assert (m1["ratio_mean"].item(), m3["ratio_mean"].item()) == pytest.approx((0.25, 0.75))


# k3 per token with log_ratio = ref - logp:
#   logp 0, ref 0       -> log_ratio 0    -> 1 - 0 - 1              = 0
#   logp 0, ref ln 2    -> log_ratio ln 2 -> 2 - 0.693147 - 1       = 0.306853
#   logp -1, ref 0      -> log_ratio 1    -> 2.718282 - 1 - 1       = 0.718282
KL_LOGP = torch.tensor([[0.0, 0.0, -1.0]])
KL_REF = torch.tensor([[0.0, math.log(2.0), 0.0]])


def test_k3_kl_term_added_with_beta():
    # A = 0 and ratio 1 -> policy term 0; loss = 0.1 * (0 + 0.306853 + 0.718282) / 3 = 0.1 * 0.341712
    loss, m = clipped_policy_loss(KL_LOGP, KL_LOGP, torch.zeros(1), torch.ones(1, 3), ref_logp=KL_REF, beta=0.1)
    assert m["kl"].item() == pytest.approx(0.341712, abs=1e-6)
    assert loss.item() == pytest.approx(0.0341712, abs=1e-7)


def test_kl_aggregated_like_the_loss():
    # seq 0: tokens kl [0.306853, 0.718282]; seq 1: one token kl 0 (logp = ref = 0), then padding.
    # token mean 1.025135 / 3 = 0.341712; sequence mean (0.512568 + 0) / 2 = 0.256284
    logp = torch.tensor([[0.0, -1.0], [0.0, 7.0]])
    ref = torch.tensor([[math.log(2.0), 0.0], [0.0, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    for agg, expected in [("token-mean", 0.341712), ("seq-mean-token-mean", 0.256284)]:
        loss, m = clipped_policy_loss(logp, logp, torch.zeros(2), mask, ref_logp=ref, beta=1.0, agg=agg)
        assert m["kl"].item() == pytest.approx(expected, abs=1e-6)
        assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_beta_zero_needs_no_reference_and_beta_nonzero_does():
    logp, old, adv, mask = one_token_batch([1.0], [1.0])
    loss, m = clipped_policy_loss(logp, old, adv, mask, ref_logp=None, beta=0.0)
    assert loss.item() == pytest.approx(-1.0) and "kl" not in m
    with pytest.raises(ValueError, match="ref_logp"):
        clipped_policy_loss(logp, old, adv, mask, beta=0.04)


def test_reference_given_with_beta_zero_reports_kl_without_adding_it():
    loss, m = clipped_policy_loss(KL_LOGP, KL_LOGP, torch.zeros(1), torch.ones(1, 3), ref_logp=KL_REF, beta=0.0)
    assert loss.item() == 0.0 and m["kl"].item() == pytest.approx(0.341712, abs=1e-6)


# Truncation: sample 2 was cut at the length limit.
T_REWARDS = torch.tensor([1.0, 0.0, 1.0])
T_MASK = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 1, 1]])
TRUNCATED = torch.tensor([False, False, True])


def test_truncation_mask_mode():
    rewards, mask = apply_truncation(T_REWARDS, T_MASK, TRUNCATED, "mask")
    assert rewards.tolist() == [1.0, 0.0, 1.0]
    assert mask.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    assert T_MASK[2].tolist() == [1, 1, 1]  # input untouched


def test_truncation_penalty_mode():
    rewards, mask = apply_truncation(T_REWARDS, T_MASK, TRUNCATED, "penalty", penalty=-0.5)
    assert rewards.tolist() == [1.0, 0.0, -0.5]
    assert mask.tolist() == T_MASK.tolist()
    assert T_REWARDS.tolist() == [1.0, 0.0, 1.0]


def test_truncation_none_and_unknown():
    rewards, mask = apply_truncation(T_REWARDS, T_MASK, TRUNCATED, "none")
    assert rewards.tolist() == T_REWARDS.tolist() and mask.tolist() == T_MASK.tolist()
    with pytest.raises(KeyError, match="known"):
        apply_truncation(T_REWARDS, T_MASK, TRUNCATED, "drop")


def test_masked_truncated_sequence_leaves_the_loss():
    # Per-token loss with ratio 1 is -A: seq 0 -> -1 (3 tokens), seq 1 -> +1 (2 tokens), seq 2 masked.
    # token mean (-3 + 2) / 5 = -0.2; without masking seq 2 (A = +3): (-3 + 2 - 9) / 8 = -1.25
    _, mask = apply_truncation(T_REWARDS, T_MASK, TRUNCATED, "mask")
    adv = torch.tensor([1.0, -1.0, 3.0])
    logp = torch.zeros(3, 3)
    assert clipped_policy_loss(logp, logp, adv, mask)[0].item() == pytest.approx(-0.2)
    assert clipped_policy_loss(logp, logp, adv, T_MASK)[0].item() == pytest.approx(-1.25)


# Log-probs: logits [0, ln 3] -> probs [0.25, 0.75]; log p(token 1) = ln 0.75 = -0.287682
# entropy = 0.25 * ln 4 + 0.75 * ln(4/3) = 0.346574 + 0.215762 = 0.562335
def test_token_logprobs_and_entropy_hand_values():
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(-0.287682, abs=1e-6)
    assert entropy_from_logits(logits).item() == pytest.approx(0.562335, abs=1e-6)


def test_token_logprobs_match_log_softmax_gather_in_float32():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=gen) * 4
    tokens = torch.randint(0, 11, (3, 5), generator=gen)
    expected = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(token_logprobs(logits, tokens), expected)
    got_bf16 = token_logprobs(logits.bfloat16(), tokens)
    assert got_bf16.dtype == torch.float32
    exp_bf16 = torch.log_softmax(logits.bfloat16().float(), -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(got_bf16, exp_bf16)
    with pytest.raises(ValueError):
        token_logprobs(logits, tokens[:, :4])


def test_entropy_matches_categorical_and_handles_minus_inf():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 7, generator=gen)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    torch.testing.assert_close(entropy_from_logits(logits), expected)
    # Two of four tokens masked with -inf: entropy of a uniform over 2 = ln 2, gradients finite.
    masked = torch.tensor([[[0.0, 0.0, -torch.inf, -torch.inf]]], requires_grad=True)
    ent = entropy_from_logits(masked)
    assert ent.item() == pytest.approx(math.log(2.0))
    ent.sum().backward()
    assert torch.isfinite(masked.grad).all()


@pytest.mark.parametrize("module", [losses, logprobs])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0
