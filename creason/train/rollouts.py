"""One step's rollouts: prompts -> completions -> rewards -> advantages (on the trainer's rank 0).

No Ray here: the `generate` callable hides where completions come from (vLLM actors in the
loop, anything in tests).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from creason.algo import (
    apply_truncation,
    compute_advantages,
    dynamic_sampling_mask,
    finite_rewards,
    zero_variance_groups,
)
from creason.config import AlgorithmConfig
from creason.data.questions import LETTERS, rotate_options
from creason.rewards import (
    boxed_letter_reward,
    consistent_letter_reward,
    extract_boxed_letter,
    load_reward,
    score_completions,
)
from creason.rollout.types import Completion
from creason.contracts import Question


@dataclass
class ScoredRollouts:
    """Flat lists over kept completions (prompt-major), ready to collate into a training batch."""

    prompt_token_ids: list[list[int]]
    response_token_ids: list[list[int]]
    sampling_logprobs: list[list[float]]
    advantages: list[float]
    loss_mask_off: list[bool]  # completions left out of the loss (truncated, with truncation=mask)
    group_ids: list[int] = field(default_factory=list)  # the group (question of the step) of each completion
    metrics: dict = field(default_factory=dict)


def rotation_counts(num_options: int, group_size: int) -> list[int]:
    """Samples of each rotation (shift 0, 1, ...) when a group of `group_size` is spread as evenly
    as possible over the cyclic rotations of `num_options` options.

    >>> rotation_counts(5, 16), rotation_counts(2, 16), rotation_counts(5, 3)
    ([4, 3, 3, 3, 3], [8, 8], [1, 1, 1])
    """
    parts = min(num_options, group_size)
    return [group_size // parts + (r < group_size % parts) for r in range(parts)]


def group_prompts(questions: list[Question], group_size: int, rotate: bool) -> tuple[list[Question], int]:
    """The prompts a step samples, in group order, as shown, and the samples of each.

    Without `rotate`: each question once, with its G samples. With it (`rollout.rotate_options`):
    each question's G samples spread over the rotations of its options (`rotation_counts`), one
    sample per prompt, a rotation's prompt repeated as many times as it has samples (vLLM's prefix
    cache computes the shared record once; measured 1.3x the time of G samples of one prompt,
    where one call with the largest count for every rotation took 1.9x). Every letter is then
    right for as many samples of the group as any other, so a preference for a letter earns no
    advantage and the group's only signal is which option the policy picks.
    """
    if not rotate:
        return list(questions), group_size
    return [rotate_options(q, shift) for q in questions
            for shift, n in enumerate(rotation_counts(q.num_options, group_size)) for _ in range(n)], 1


def regroup(prompts: list[Question], sampled: list[list[Completion]], group_size: int
            ) -> tuple[list[list[Completion]], list[list[Question]]]:
    """The completions of `prompts` (`group_prompts`, in order) as groups of `group_size`, with the
    question each completion answered, as shown (its options' order, its right letter)."""
    flat = [(c, q) for q, completions in zip(prompts, sampled, strict=True) for c in completions]
    if len(flat) % group_size:
        raise ValueError(f"{len(flat)} completions do not make groups of {group_size}")
    cut = range(0, len(flat), group_size)
    return [[c for c, _ in flat[i:i + group_size]] for i in cut], [[q for _, q in flat[i:i + group_size]] for i in cut]


def load_rewards(cfg: AlgorithmConfig) -> list[tuple[Callable, float]]:
    return [(load_reward(term.path), term.weight) for term in cfg.rewards]


def letter_shares(texts: list[str]) -> dict[str, float]:
    """Share of completions whose first `\\boxed{}` holds each letter (`letter_A` ...) or none
    (`letter_none`): where the policy's answers go, step by step.

    >>> letter_shares(["\\\\boxed{A}", "\\\\boxed{A}", "B", "\\\\boxed{C}"])
    {'letter_A': 0.5, 'letter_B': 0.0, 'letter_C': 0.25, 'letter_D': 0.0, 'letter_E': 0.0, 'letter_none': 0.25}
    """
    found = [extract_boxed_letter(t) for t in texts]
    return {f"letter_{x or 'none'}": sum(f == x for f in found) / len(found) for x in [*LETTERS, None]}


def score_rollouts(
    shown: list[list[Question]],
    completions: list[list[Completion]],
    rewards: list[tuple[Callable, float]],
    cfg: AlgorithmConfig,
    answer_weights: dict[tuple[str, str], float] | None = None,
) -> ScoredRollouts:
    """Rewards, truncation handling, group-relative advantages and zero-variance filtering of the
    groups `completions`; `shown[i][j]` is the question completion j of group i answered, as shown.
    Reward functions get its right letter (`ground_truth`) and its options in that order (`options`).
    `answer_weights` (`balanced_answer_weights` by (variable, answer text)) scale each group's advantages."""
    start = time.perf_counter()
    group = len(completions[0])
    flat = [c for per_prompt in completions for c in per_prompt]
    questions = [q for per_prompt in shown for q in per_prompt]
    truth = [q.ground_truth for q in questions]
    texts, options = [c.text for c in flat], [q.options for q in questions]
    scores, errors = score_completions(rewards, texts, truth, options=options)
    scores, nonfinite = finite_rewards(torch.tensor(scores, dtype=torch.float32))  # NaN/inf scored 0
    truncated = torch.tensor([c.finish_reason == "length" for c in flat])
    r, keep_mask = apply_truncation(scores, torch.ones(len(flat), 1), truncated,
                                    cfg.truncation, cfg.truncation_penalty)  # (B,), (B, 1): one mask per completion
    r = r.view(len(completions), group)
    advantages = compute_advantages(r, cfg.advantage, eps=cfg.advantage_eps)  # (P, G)
    if answer_weights is not None:
        weights = torch.tensor([answer_weights[(g[0].variable, g[0].answer_text)] for g in shown])  # (P,)
        advantages = advantages * weights[:, None]
    zero_var = zero_variance_groups(r)
    keep_groups = dynamic_sampling_mask(r) if cfg.filter_zero_variance else torch.ones(len(completions), dtype=torch.bool)
    kept = [i for i in range(len(flat)) if keep_groups[i // group]]
    correct = torch.tensor(boxed_letter_reward(texts, truth))  # the study's accuracy, whatever the rewards
    lengths = torch.tensor([len(c.token_ids) for c in flat], dtype=torch.float32)
    metrics = {
        "reward_mean": r.mean().item(),
        "reward_std": r.std().item() if r.numel() > 1 else 0.0,
        "accuracy": correct.mean().item(),
        "zero_variance_fraction": zero_var.float().mean().item(),
        "truncated_fraction": truncated.float().mean().item(),
        "completion_length": lengths.mean().item(),
        "reward_errors": len(errors),
        "nonfinite_rewards": int(nonfinite.sum()),
        **letter_shares(texts),
        "stated_box_agreement": sum(consistent_letter_reward(texts, options)) / len(flat),
        "score_seconds": time.perf_counter() - start,
    }
    if answer_weights is not None:
        metrics["answer_weight_mean"] = weights.mean().item()
    return ScoredRollouts(
        prompt_token_ids=[flat[i].prompt_token_ids for i in kept],
        response_token_ids=[flat[i].token_ids for i in kept],
        sampling_logprobs=[flat[i].logprobs for i in kept],
        advantages=[advantages.view(-1)[i].item() for i in kept],
        loss_mask_off=[bool(keep_mask.view(-1)[i] == 0) for i in kept],
        group_ids=[i // group for i in kept],
        metrics=metrics,
    )
