"""Scoring a step's rollouts: non-finite rewards are scored 0 and counted, never a NaN advantage."""

import math

import pytest

from creason.config import AlgorithmConfig
from creason.contracts import Question
from creason.rollout.types import Completion
from creason.train.rollouts import score_rollouts


def shaky_reward(completions, **kwargs):
    """1 for "good", NaN for "nan", inf for "inf", else 0."""
    return [{"good": 1.0, "nan": math.nan, "inf": math.inf}.get(c, 0.0) for c in completions]


def question(question_id: str) -> Question:
    return Question(question_id=question_id, patient="0" * 16, split="train", question_kind="outcome", variable="death",
                    display_name="Death", section="Outcomes", variable_kind="categorical", options=["W", "X", "Y", "Z"],
                    answer_text="W", answer_value=None, messages=[], ground_truth="A", data_source="test")


def completion(i: int, text: str) -> Completion:
    return Completion(prompt_index=i, token_ids=[7, 8], prompt_token_ids=[1, 2], text=text, logprobs=[-0.5, -0.5],
                      finish_reason="stop")


def test_non_finite_rewards_scored_zero_and_counted():
    questions = [question(f"q{i}") for i in range(2)]
    # group 0: [1, NaN -> 0, 0, 1]: mean 0.5, unbiased std 0.577350 -> +-0.866025 (eps 1e-6: 0.866024)
    # group 1: [inf -> 0, 0, 0, 0]: all equal -> 0
    texts = [["good", "nan", "bad", "good"], ["inf", "bad", "bad", "bad"]]
    completions = [[completion(i, t) for t in group] for i, group in enumerate(texts)]
    scored = score_rollouts([[q] * 4 for q in questions], completions, [(shaky_reward, 1.0)], AlgorithmConfig())
    assert scored.metrics["nonfinite_rewards"] == 2
    assert scored.metrics["reward_mean"] == pytest.approx(2 / 8)
    assert scored.advantages == pytest.approx([0.866024, -0.866024, -0.866024, 0.866024, 0, 0, 0, 0], abs=1e-6)


def test_advantage_eps_is_read_from_the_config():
    questions = [question("q")]
    completions = [[completion(0, t) for t in ["good", "bad", "bad", "good"]]]
    # 0.5 / (0.577350 + 0.0001) = 0.865875
    scored = score_rollouts([[q] * 4 for q in questions], completions, [(shaky_reward, 1.0)], AlgorithmConfig(advantage_eps=1e-4))
    assert scored.advantages[0] == pytest.approx(0.865875, abs=1e-6)


def rotatable(question_id: str, options: list[str], truth: str) -> Question:
    lines = "\n".join(f"{letter}. {o}" for letter, o in zip("ABCDE", options))
    return question(question_id).model_copy(update={
        "options": options, "ground_truth": truth, "answer_text": options["ABCDE".index(truth)],
        "messages": [{"role": "user", "content": f"Record.\n\nOptions:\n{lines}\n\nAnswer in \\boxed{{}}."}]})


def test_rotated_groups_make_every_letter_right_equally_often():
    from creason.train.rollouts import group_prompts, regroup

    questions = [rotatable("q5", ["1", "2", "3", "4", "5"], "D"), rotatable("q2", ["No", "Yes"], "A")]
    prompts, n = group_prompts(questions, 10, rotate=True)
    assert n == 1 and len(prompts) == 20
    assert [q.answer_text for q in prompts] == ["4"] * 10 + ["No"] * 10  # the same answer, shown at other letters
    assert [q.ground_truth for q in prompts[:10]] == list("DDCCBBAAEE")
    sampled = [[completion(i, f"{q.ground_truth}{i}")] for i, q in enumerate(prompts)]
    groups, shown = regroup(prompts, sampled, 10)
    assert [len(g) for g in groups] == [10, 10]
    truths = [[q.ground_truth for q in group] for group in shown]
    assert sorted(truths[0]) == sorted("ABCDE" * 2) and sorted(truths[1]) == sorted("AB" * 5)
    assert [c.text for c in groups[1][:2]] == ["A10", "A11"]
    assert group_prompts(questions, 10, rotate=False) == (questions, 10)
    with pytest.raises(ValueError, match="do not make groups of 10"):
        regroup(prompts[:19], sampled[:19], 10)


def test_scored_rollouts_keep_each_completion_s_group():
    questions = [question(f"q{i}") for i in range(3)]
    texts = [["good", "bad"], ["bad", "bad"], ["bad", "good"]]  # the middle group has no signal and is dropped
    completions = [[completion(i, t) for t in group] for i, group in enumerate(texts)]
    scored = score_rollouts([[q] * 2 for q in questions], completions, [(shaky_reward, 1.0)],
                            AlgorithmConfig(filter_zero_variance=True))
    assert scored.group_ids == [0, 0, 2, 2]


def rotated_yes_no_group() -> tuple[list[list[Question]], list[list[Completion]]]:
    """One group of 4 of a yes/no question ("Yes" is B), its options rotated (No/Yes twice, then
    Yes/No twice), answered "Yes" boxed B, "Yes" A, "Yes" A, "No" A: (shown, completions)."""
    from creason.train.rollouts import group_prompts, regroup

    prompts, _ = group_prompts([rotatable("q2", ["No", "Yes"], "B")], 4, rotate=True)
    texts = ["Yes \\boxed{B}", "Yes \\boxed{A}", "Yes \\boxed{A}", "No \\boxed{A}"]
    completions, shown = regroup(prompts, [[completion(i, t)] for i, t in enumerate(texts)], 4)
    return shown, completions


def test_rewards_read_each_completion_s_options_as_its_prompt_showed_them():
    """A rotated group: "Yes" boxed at the letter its own prompt showed it under is consistent,
    the same letter under the other order is not; the study's reward follows each prompt's truth."""
    from creason.rewards import boxed_letter_reward, consistent_letter_reward

    shown, groups = rotated_yes_no_group()
    assert [q.options for q in shown[0]] == [["No", "Yes"]] * 2 + [["Yes", "No"]] * 2
    rewards = [(consistent_letter_reward, 1.0), (boxed_letter_reward, 1.0)]
    scored = score_rollouts(shown, groups, rewards, AlgorithmConfig(filter_zero_variance=False))
    # consistent: 1, 0, 1, 0; right ("Yes" is B, then A): 1, 0, 1, 1 (a lucky letter) -> 2, 0, 2, 1
    # mean 1.25, unbiased std sqrt(2.75 / 3) = 0.957427
    assert scored.metrics["reward_mean"] == pytest.approx(1.25)
    assert scored.metrics["stated_box_agreement"] == 0.5
    assert scored.advantages == pytest.approx([0.783349, -1.305582, 0.783349, -0.261116], abs=1e-5)


def test_stated_and_boxed_reward_reads_each_rotated_prompt_s_options():
    """The same rotated group: the lucky letter ("No" boxed at A, where A is "Yes") that the study's
    reward pays earns nothing here; "Yes" boxed at its own prompt's letter earns 1."""
    from creason.rewards import stated_and_boxed_reward

    shown, groups = rotated_yes_no_group()
    scored = score_rollouts(shown, groups, [(stated_and_boxed_reward, 1.0)], AlgorithmConfig(filter_zero_variance=False))
    assert scored.metrics["reward_mean"] == 0.5  # 1, 0, 1, 0
    assert scored.advantages[0] > 0 > scored.advantages[3]


def test_answer_weights_scale_each_group_s_advantages_by_its_answer():
    common = question("common")  # variable "death", answer "W"
    rare = common.model_copy(update={"question_id": "rare", "answer_text": "X", "ground_truth": "B"})
    texts = ["good", "bad", "bad", "good"]
    completions = [[completion(i, t) for t in texts] for i in range(2)]
    shown = [[common] * 4, [rare] * 4]
    weights = {("death", "W"): 0.625, ("death", "X"): 2.5}
    plain = score_rollouts(shown, completions, [(shaky_reward, 1.0)], AlgorithmConfig())
    balanced = score_rollouts(shown, completions, [(shaky_reward, 1.0)], AlgorithmConfig(), weights)
    assert balanced.advantages == pytest.approx([a * 0.625 for a in plain.advantages[:4]]
                                                + [a * 2.5 for a in plain.advantages[4:]])
    assert balanced.metrics["answer_weight_mean"] == pytest.approx((0.625 + 2.5) / 2)
    assert "answer_weight_mean" not in plain.metrics
