"""Group-relative advantages (GRPO and variants), pure torch.

Each prompt is sampled G times; a completion's advantage is its reward relative to the other
completions of the same prompt. Rewards come either grouped, shaped (num_prompts, G), or flat,
shaped (B,) with a group index (B,) that names each sample's prompt (groups may differ in size).

Estimators are registered by name in `ADVANTAGE_ESTIMATORS`; each takes flat rewards (B,), a dense
group index (B,) with values in [0, num_groups) and `eps`, and returns advantages (B,).

Standard deviations are *unbiased* (Bessel's correction, divide by n - 1), like `torch.std`, verl
and TRL's GRPOTrainer. A group of one sample has std 0 (and advantage 0), not NaN (verl gives such
a sample its raw reward: mean 0, std 1). `eps` (`algorithm.advantage_eps`) keeps a group whose
rewards are all equal at advantage 0: verl's GRPO uses 1e-6 (our default), TRL 1e-4.

Rewards must be finite: `finite_rewards` scores NaN and +-inf as 0 first (one bad reward would
otherwise make its whole group NaN).
"""

from __future__ import annotations

from collections import Counter
from typing import Callable, Hashable, Sequence

import torch
from torch import Tensor

AdvantageFn = Callable[[Tensor, Tensor, float], Tensor]

#: Advantage estimators by name: fn(rewards (B,), group_index (B,), eps) -> advantages (B,).
ADVANTAGE_ESTIMATORS: dict[str, AdvantageFn] = {}


def register_advantage(name: str) -> Callable[[AdvantageFn], AdvantageFn]:
    """Decorator adding an estimator to `ADVANTAGE_ESTIMATORS`; a duplicate name is an error."""

    def deco(fn: AdvantageFn) -> AdvantageFn:
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn

    return deco


def _flatten(rewards: Tensor, group_index: Tensor | None) -> tuple[Tensor, Tensor, int]:
    """Flat float rewards (B,), dense group ids (B,) in [0, num_groups), and num_groups.

    `rewards` is (num_prompts, G) with `group_index` None, or (B,) with `group_index` (B,) of any
    integer ids (they are renumbered 0.. in sorted order of the ids).
    """
    if group_index is None:
        if rewards.dim() != 2:
            raise ValueError(f"rewards without group_index must be (num_prompts, G), got {tuple(rewards.shape)}")
        n, g = rewards.shape
        index = torch.arange(n, device=rewards.device).repeat_interleave(g)
        return rewards.reshape(-1).float(), index, n
    if rewards.dim() != 1 or group_index.shape != rewards.shape:
        raise ValueError(
            f"flat rewards (B,) need group_index (B,), got {tuple(rewards.shape)} and {tuple(group_index.shape)}"
        )
    ids, index = torch.unique(group_index, return_inverse=True)
    return rewards.float(), index, ids.numel()


def group_mean_std(rewards: Tensor, group_index: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """Per-group mean and unbiased std, each (num_groups,); std of a one-sample group is 0.

    rewards: (B,) float; group_index: (B,) long in [0, num_groups).
    """
    count = torch.zeros(num_groups, device=rewards.device).index_add_(0, group_index, torch.ones_like(rewards))
    mean = torch.zeros(num_groups, device=rewards.device).index_add_(0, group_index, rewards) / count
    sq = (rewards - mean[group_index]) ** 2
    var = torch.zeros(num_groups, device=rewards.device).index_add_(0, group_index, sq) / (count - 1).clamp(min=1)
    return mean, var.sqrt()


@register_advantage("grpo")
def grpo_advantage(rewards: Tensor, group_index: Tensor, eps: float) -> Tensor:
    """(r - group mean) / (group std + eps), Shao et al. 2024 (DeepSeekMath). (B,) -> (B,).

    verl's `compute_grpo_outcome_advantage` with eps 1e-6 (groups of 2+ samples); TRL's
    `scale_rewards="group"` with eps 1e-4.
    """
    mean, std = group_mean_std(rewards, group_index, int(group_index.max()) + 1)
    return (rewards - mean[group_index]) / (std[group_index] + eps)


@register_advantage("dr_grpo")
def dr_grpo_advantage(rewards: Tensor, group_index: Tensor, eps: float) -> Tensor:
    """r - group mean, no std scaling (Liu et al. 2025, "Dr. GRPO"). (B,) -> (B,); eps unused."""
    mean, _ = group_mean_std(rewards, group_index, int(group_index.max()) + 1)
    return rewards - mean[group_index]


@register_advantage("grpo_batch_std")
def grpo_batch_std_advantage(rewards: Tensor, group_index: Tensor, eps: float) -> Tensor:
    """(r - group mean) / (unbiased std of all the batch's rewards + eps). (B,) -> (B,).

    TRL's `scale_rewards="batch"` (GRPOTrainer with `multi_objective_aggregation="sum_then_normalize"`)
    exactly when eps = 1e-4, TRL's fixed constant: its batch is every completion of the step gathered
    from all processes, as ours (rank 0 scores the whole step). With another eps the two differ by
    the eps only. A batch of one sample has std 0.
    """
    mean, _ = group_mean_std(rewards, group_index, int(group_index.max()) + 1)
    batch_std = rewards.std() if rewards.numel() > 1 else rewards.new_zeros(())
    return (rewards - mean[group_index]) / (batch_std + eps)


def balanced_answer_weights(labels: Sequence[tuple[Hashable, Hashable]]) -> dict[tuple[Hashable, Hashable], float]:
    """Weight of each (variable, answer) pair seen in `labels`: n_variable / (K * n_pair), K the answers seen
    for that variable (`algorithm.answer_balance`).

    Scaling a question's advantages by its answer's weight gives every answer of a variable the same total
    weight, so a policy that ignores the record earns as much preferring one answer (the usual "No") as
    another: a constant answer's weighted reward is n_variable / K whichever it is, and only reading the
    record raises it. The weights of a variable's questions average 1.

    >>> balanced_answer_weights([("shock", "No")] * 4 + [("shock", "Yes"), ("sex", "Male")])
    {('shock', 'No'): 0.625, ('shock', 'Yes'): 2.5, ('sex', 'Male'): 1.0}
    """
    pairs = Counter(labels)
    per_variable = Counter(v for v, _ in labels)
    answers = Counter(v for v, _ in pairs)
    return {(v, a): per_variable[v] / (answers[v] * n) for (v, a), n in pairs.items()}


def finite_rewards(rewards: Tensor) -> tuple[Tensor, Tensor]:
    """Rewards with NaN and +-inf scored 0 (float32, same shape), and the bool mask of those replaced.

    >>> finite_rewards(torch.tensor([1.0, float("nan"), -float("inf")]))
    (tensor([1., 0., 0.]), tensor([False,  True,  True]))
    """
    bad = ~torch.isfinite(rewards)
    return torch.where(bad, 0.0, rewards.float()), bad


def compute_advantages(
    rewards: Tensor, name: str = "grpo", group_index: Tensor | None = None, eps: float = 1e-6
) -> Tensor:
    """Advantages with the estimator `name`, shaped like `rewards` (float32).

    rewards: (num_prompts, G), or (B,) with group_index (B,); finite (see `finite_rewards`).
    eps: added to the std (`algorithm.advantage_eps`).

    >>> compute_advantages(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))  # std of [1, 0] is 0.7071
    tensor([[ 0.7071, -0.7071],
            [ 0.0000,  0.0000]])
    >>> compute_advantages(torch.tensor([1.0, 0.0, 0.0]), "dr_grpo", group_index=torch.tensor([7, 7, 3]))
    tensor([ 0.5000, -0.5000,  0.0000])
    """
    if name not in ADVANTAGE_ESTIMATORS:
        raise KeyError(f"unknown advantage estimator {name!r}; known: {sorted(ADVANTAGE_ESTIMATORS)}")
    flat, index, _ = _flatten(rewards, group_index)
    return ADVANTAGE_ESTIMATORS[name](flat, index, eps).reshape(rewards.shape)


def zero_variance_groups(rewards: Tensor, group_index: Tensor | None = None) -> Tensor:
    """Boolean mask (num_groups,): True where every reward of the group is equal.

    Such groups have zero advantage everywhere and give no learning signal. Groups are rows of a
    (num_prompts, G) input, or the distinct ids of `group_index` in sorted order.

    >>> zero_variance_groups(torch.tensor([[1.0, 1.0], [0.0, 1.0]]))
    tensor([ True, False])
    """
    flat, index, n = _flatten(rewards, group_index)
    hi = torch.full((n,), -torch.inf, device=flat.device).scatter_reduce(0, index, flat, "amax")
    lo = torch.full((n,), torch.inf, device=flat.device).scatter_reduce(0, index, flat, "amin")
    return hi == lo


def dynamic_sampling_mask(rewards: Tensor, group_index: Tensor | None = None) -> Tensor:
    """Keep-mask over the first dim of `rewards`: only groups whose rewards vary (DAPO, Yu et al. 2025).

    (num_prompts, G) -> (num_prompts,) per group; (B,) with group_index -> (B,) per sample.

    >>> dynamic_sampling_mask(torch.tensor([1.0, 1.0, 0.0, 1.0]), torch.tensor([0, 0, 1, 1]))
    tensor([False, False,  True,  True])
    """
    keep = ~zero_variance_groups(rewards, group_index)
    if group_index is None:
        return keep
    _, index = torch.unique(group_index, return_inverse=True)
    return keep[index]
