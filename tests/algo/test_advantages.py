"""Group-relative advantages against hand-computed values and a slow reference loop."""

import doctest
import math
import statistics

import pytest
import torch

from creason.algo import advantages
from creason.algo.advantages import (
    ADVANTAGE_ESTIMATORS,
    balanced_answer_weights,
    compute_advantages,
    dynamic_sampling_mask,
    finite_rewards,
    register_advantage,
    zero_variance_groups,
)

# Two prompts, G = 4.
# Row 0: [1, 0, 0, 1]  mean 0.5, deviations +-0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.577350
#        grpo: +-0.5 / 0.577350 = +-0.866025
# Row 1: [3, 1, 2, 2]  mean 2, deviations [1, -1, 0, 0], unbiased var = 2/3, std = 0.816497
#        grpo: [1.224745, -1.224745, 0, 0]
REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [3.0, 1.0, 2.0, 2.0]])


def close(actual, expected, tol=1e-5):
    torch.testing.assert_close(actual, torch.tensor(expected), atol=tol, rtol=0)


def test_grpo_group_std():
    close(compute_advantages(REWARDS, "grpo", eps=0.0),
          [[0.866025, -0.866025, -0.866025, 0.866025], [1.224745, -1.224745, 0.0, 0.0]])


def test_grpo_eps_only_shrinks_slightly():
    # 0.5 / (0.577350 + 1e-6) = 0.866024
    close(compute_advantages(REWARDS, "grpo")[0, 0], 0.866024, tol=2e-6)


def test_dr_grpo_no_std_scaling():
    close(compute_advantages(REWARDS, "dr_grpo"), [[0.5, -0.5, -0.5, 0.5], [1.0, -1.0, 0.0, 0.0]])


def test_grpo_batch_std():
    # All 8 rewards: mean 1.25; squared deviations 0.0625, 1.5625, 1.5625, 0.0625, 3.0625, 0.0625,
    # 0.5625, 0.5625 -> sum 7.5; unbiased var 7.5 / 7 = 1.071429; std 1.035098.
    # 0.5 / 1.035098 = 0.483046; 1 / 1.035098 = 0.966092.
    close(compute_advantages(REWARDS, "grpo_batch_std", eps=0.0),
          [[0.483046, -0.483046, -0.483046, 0.483046], [0.966092, -0.966092, 0.0, 0.0]])


def test_eps_is_a_parameter():
    # TRL's 1e-4: 0.5 / (0.577350 + 0.0001) = 0.865875; batch std 0.5 / (1.035098 + 0.0001) = 0.482999
    close(compute_advantages(REWARDS, "grpo", eps=1e-4)[0, 0], 0.865875, tol=1e-6)
    close(compute_advantages(REWARDS, "grpo_batch_std", eps=1e-4)[0, 0], 0.482999, tol=1e-6)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "grpo_batch_std"])
def test_all_equal_rewards_and_one_sample_groups_give_zero(name):
    # Group 0: [0.1, 0.1, 0.1] (all equal: the float mean may differ from 0.1 by rounding, eps keeps
    # the result ~0, never NaN); group 1: one sample [5.0] (std 0, advantage 0).
    rewards = torch.tensor([0.1, 0.1, 0.1, 5.0])
    adv = compute_advantages(rewards, name, group_index=torch.tensor([0, 0, 0, 1]))
    close(adv, [0.0, 0.0, 0.0, 0.0], tol=1e-6)


def test_non_finite_rewards_scored_zero():
    # [nan, 1, inf, 1] -> [0, 1, 0, 1]: mean 0.5, unbiased std 0.577350 -> grpo +-0.866025
    rewards, bad = finite_rewards(torch.tensor([math.nan, 1.0, math.inf, 1.0]))
    assert rewards.tolist() == [0.0, 1.0, 0.0, 1.0] and bad.tolist() == [True, False, True, False]
    close(compute_advantages(rewards.view(1, 4), "grpo", eps=0.0), [[-0.866025, 0.866025, -0.866025, 0.866025]])
    # without it one NaN makes the whole group NaN
    assert compute_advantages(torch.tensor([[math.nan, 1.0, 0.0, 1.0]])).isnan().all()


def test_flat_with_uneven_groups_and_arbitrary_ids():
    # Group id 10: rewards [1, 0, 1] at positions 0, 1, 3: mean 2/3, deviations [1/3, -2/3, 1/3],
    #   unbiased var (1/9 + 4/9 + 1/9) / 2 = 1/3, std 0.577350 -> [0.577350, -1.154701, 0.577350]
    # Group id 3: rewards [5, 1] at positions 2, 4: mean 3, deviations [2, -2], var 8, std 2.828427
    #   -> [0.707107, -0.707107]
    rewards = torch.tensor([1.0, 0.0, 5.0, 1.0, 1.0])
    index = torch.tensor([10, 10, 3, 10, 3])
    close(compute_advantages(rewards, "grpo", group_index=index, eps=0.0),
          [0.577350, -1.154701, 0.707107, 0.577350, -0.707107])


def test_singleton_group_gets_zero_not_nan():
    adv = compute_advantages(torch.tensor([1.0, 2.0, 0.0]), group_index=torch.tensor([0, 0, 1]))
    assert adv[2] == 0.0 and not adv.isnan().any()


def test_integer_rewards_give_float_advantages():
    adv = compute_advantages(torch.tensor([[1, 0]]), "dr_grpo")
    assert adv.dtype == torch.float32
    close(adv, [[0.5, -0.5]])


def test_zero_variance_groups_grouped():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert zero_variance_groups(rewards).tolist() == [True, False, True]
    adv = compute_advantages(rewards)
    assert (adv[0] == 0).all() and (adv[2] == 0).all()


def test_zero_variance_groups_flat_sorted_by_id():
    # ids sorted: 2 -> [0, 1] varies; 5 -> [1, 1] constant; 9 -> [2] single sample, constant.
    rewards = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0])
    index = torch.tensor([5, 5, 2, 2, 9])
    assert zero_variance_groups(rewards, index).tolist() == [False, True, True]


def test_dynamic_sampling_mask():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    assert dynamic_sampling_mask(rewards).tolist() == [False, True]
    flat = torch.tensor([1.0, 1.0, 0.0, 1.0, 2.0])
    assert dynamic_sampling_mask(flat, torch.tensor([5, 5, 2, 2, 9])).tolist() == [False, False, True, True, False]


def _slow_reference(rewards, index, name, eps):
    """Obvious per-sample loop with the statistics module (unbiased stdev)."""
    values, ids = rewards.tolist(), index.tolist()
    batch_std = statistics.stdev(values)
    out = []
    for r, g in zip(values, ids):
        group = [v for v, h in zip(values, ids) if h == g]
        mean = statistics.fmean(group)
        std = statistics.stdev(group) if len(group) > 1 else 0.0
        scale = {"grpo": std + eps, "dr_grpo": 1.0, "grpo_batch_std": batch_std + eps}[name]
        out.append((r - mean) / scale)
    return torch.tensor(out)


@pytest.mark.parametrize("name", sorted(ADVANTAGE_ESTIMATORS))
@pytest.mark.parametrize("seed", range(5))
def test_vectorised_matches_slow_loop(name, seed):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randint(0, 3, (40,), generator=gen).float() + torch.rand(40, generator=gen).round()
    index = torch.randint(0, 9, (40,), generator=gen) * 7  # uneven sizes, sparse ids
    expected = _slow_reference(rewards, index, name, eps=1e-6)
    torch.testing.assert_close(compute_advantages(rewards, name, index), expected, atol=1e-5, rtol=1e-5)


def test_grouped_equals_flat():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.rand(6, 8, generator=gen)
    flat_index = torch.arange(6).repeat_interleave(8)
    for name in ADVANTAGE_ESTIMATORS:
        grouped = compute_advantages(rewards, name)
        flat = compute_advantages(rewards.reshape(-1), name, flat_index)
        torch.testing.assert_close(grouped.reshape(-1), flat)


def test_errors():
    with pytest.raises(KeyError, match="known"):
        compute_advantages(REWARDS, "nope")
    with pytest.raises(ValueError):
        compute_advantages(torch.ones(4))  # flat without index
    with pytest.raises(ValueError):
        compute_advantages(torch.ones(4), group_index=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda r, i, e: r)


def test_doctests():
    result = doctest.testmod(advantages)
    assert result.attempted > 0 and result.failed == 0


def test_balanced_answer_weights_pay_every_constant_answer_the_same():
    labels = [("shock", "No")] * 7 + [("shock", "Yes")] * 3 + [("sofa", s) for s in "aaaaaabbbc"]
    weights = balanced_answer_weights(labels)
    assert weights[("shock", "No")] == pytest.approx(10 / (2 * 7))
    for variable, answers in {"shock": ["No", "Yes"], "sofa": list("abc")}.items():
        mine = [weights[(v, a)] for v, a in labels if v == variable]
        assert sum(mine) / len(mine) == pytest.approx(1.0)  # the variable's questions average 1
        # a policy answering `a` whatever the record: its weighted reward is the same for every `a`
        paid = [sum(weights[(v, x)] for v, x in labels if v == variable and x == a) for a in answers]
        assert paid == pytest.approx([paid[0]] * len(answers))
