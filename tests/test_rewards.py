"""Reward parsing, loading by dotted path, and scoring that survives a raising reward function."""

import doctest
import logging

import pytest

from creason import rewards
from creason.rewards import (
    MAX_LOGGED_CHARS,
    RewardError,
    boxed_letter_reward,
    extract_boxed_letter,
    format_reward,
    load_reward,
    score_completions,
)


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        (r"\boxed{C}", "C"),
        (r"\boxed{ C }", "C"),
        (r"\boxed{\text{C}}", "C"),
        (r"\boxed{\textbf{ E }}", "E"),
        (r"\boxed{\mathrm{A}}", "A"),
        (r"\boxed{C. 7.2}", "C"),
        (r"\boxed{C) 7.2 mmol/L}", "C"),
        (r"\boxed{(B)}", "B"),
        (r"\boxed{$D$}", "D"),
        (r"\boxed {B}", "B"),
        (r"Reasoning... so the answer is \boxed{B}. Not \boxed{A}.", "B"),  # the FIRST box counts
        (r"\boxed{\boxed{D}}", "D"),
        (r"\boxed{\,A}", "A"),
        (r"\boxed{7.2}", None),  # no letter at the start
        (r"\boxed{Cardiac arrest}", None),  # a word, not a letter
        (r"\boxed{C2}", None),
        (r"\boxed{F}", None),  # outside A-E
        (r"\boxed{c}", None),  # lower case is not an answer letter
        (r"\boxed{}", None),
        (r"\boxed{C", None),  # never closed
        (r"\boxed{The answer is C}", None),
        (r"\boxed{7.2} then \boxed{C}", None),  # first box has no letter: wrong, even if a later one does
        ("The answer is C", None),
        ("", None),
        (r"\boxedC", None),
    ],
)
def test_extract_boxed_letter(text, letter):
    assert extract_boxed_letter(text) == letter


def test_boxed_letter_reward():
    completions = [r"\boxed{B}", r"\boxed{ b }", r"\boxed{A} then \boxed{B}", "B", r"\boxed{\text{B}. 12}"]
    assert boxed_letter_reward(completions, ["B", "B", "B", "B", " b "]) == [1.0, 0.0, 0.0, 0.0, 1.0]


def test_boxed_letter_reward_conversational_and_length_check():
    conv = [[{"role": "assistant", "content": r"\boxed{E}"}]]
    assert boxed_letter_reward(conv, ["E"]) == [1.0]
    with pytest.raises(ValueError, match="ground truths"):
        boxed_letter_reward([r"\boxed{A}"], ["A", "B"])


def test_format_reward():
    completions = [r"\boxed{A}", r"\boxed{ A }", r"\boxed{A} \boxed{A}", r"\boxed{A. 3}", r"\boxed{\text{A}}", "A",
                   r"\boxed{A"]
    assert format_reward(completions) == [0.1, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert format_reward([r"\boxed{A}"], bonus=0.5, ground_truth=["B"]) == [0.5]  # extra columns ignored


@pytest.mark.parametrize("path", ["creason.rewards:boxed_letter_reward", "creason.rewards.boxed_letter_reward"])
def test_load_reward_both_forms(path):
    assert load_reward(path) is boxed_letter_reward


@pytest.mark.parametrize(
    ("path", "error", "match"),
    [
        ("boxed_letter_reward", ValueError, "must look like"),
        ("creason.rewards:", ValueError, "must look like"),
        ("creason.no_such_module:fn", ImportError, "cannot import module 'creason.no_such_module'"),
        ("creason.rewards:no_such_fn", AttributeError, "no attribute 'no_such_fn'"),
        ("creason.rewards.MAX_LOGGED_CHARS", TypeError, "not a callable"),
    ],
)
def test_load_reward_errors(path, error, match):
    with pytest.raises(error, match=match):
        load_reward(path)


def test_score_completions_weights_sum():
    # sample 0: correct and well formed -> 1.0 * 1 + 2.0 * 0.1 = 1.2; sample 1: wrong, well formed -> 0.2
    total, errors = score_completions(
        [(boxed_letter_reward, 1.0), (format_reward, 2.0)], [r"\boxed{A}", r"\boxed{B}"], ["A", "A"]
    )
    assert total == pytest.approx([1.2, 0.2]) and errors == []


def picky(completions, ground_truth, **kwargs):
    """Raises on any completion containing 'BOOM' (so the batch call fails too)."""
    if any("BOOM" in c for c in completions):
        raise RuntimeError("BOOM in " + " | ".join(completions))
    return [1.0] * len(completions)


def test_raising_reward_scores_sample_zero_logs_it_and_goes_on(caplog):
    long_bad = "BOOM" + "x" * 1000
    completions = [r"\boxed{A}", long_bad, r"\boxed{A}"]
    with caplog.at_level(logging.WARNING, logger="creason.rewards"):
        total, errors = score_completions([(picky, 1.0), (boxed_letter_reward, 1.0)], completions, ["A", "A", "A"])
    # picky: [1, 0 (raised), 1]; boxed_letter_reward: [1, 0, 1]
    assert total == [2.0, 0.0, 2.0]
    assert [(e.reward, e.index) for e in errors] == [("picky", 1)]
    assert errors[0].error.startswith("RuntimeError: BOOM in BOOMxxx")
    assert len(errors[0].error) <= MAX_LOGGED_CHARS + len("... [9999 more chars]")
    log = caplog.text
    assert "failed on sample 1" in log and "more chars" in log
    assert long_bad[: MAX_LOGGED_CHARS + 1] not in log  # the completion is truncated, never logged whole
    assert r"\boxed{A}" not in log  # the healthy samples are not logged


def test_batch_only_failure_is_retried_per_sample(caplog):
    def batch_allergic(completions, **kwargs):
        if len(completions) > 1:
            raise MemoryError("batch too big")
        return [0.5]

    with caplog.at_level(logging.WARNING, logger="creason.rewards"):
        total, errors = score_completions([(batch_allergic, 2.0)], ["a", "b", "c"], ["A", "B", "C"])
    assert total == [1.0, 1.0, 1.0] and errors == []
    assert "retrying sample by sample" in caplog.text


def test_wrong_output_length_and_non_numbers_are_failures():
    def too_short(completions, **kwargs):
        return [1.0] if len(completions) > 1 else ["nan?"]

    total, errors = score_completions([(too_short, 1.0)], ["a", "b"], ["A", "B"])
    assert total == [0.0, 0.0] and [e.index for e in errors] == [0, 1]


def test_per_sample_retry_slices_per_sample_kwargs():
    seen = []

    def uses_column(completions, ground_truth, difficulty, mode, **kwargs):
        if len(completions) > 1:
            raise RuntimeError("no batches")
        seen.append((ground_truth, difficulty, mode))
        return [float(difficulty[0])]

    total, _ = score_completions([(uses_column, 1.0)], ["a", "b"], ["A", "B"], difficulty=[3, 4], mode="x")
    assert total == [3.0, 4.0]
    assert seen == [(["A"], [3], "x"), (["B"], [4], "x")]


def test_reward_error_record_and_length_check():
    def always(completions, **kwargs):
        raise ValueError("nope")

    total, errors = score_completions([(always, 1.0)], ["a", "b"], ["A", "B"])
    assert total == [0.0, 0.0]
    assert errors == [RewardError("always", 0, "ValueError: nope"), RewardError("always", 1, "ValueError: nope")]
    with pytest.raises(ValueError, match="ground truths"):
        score_completions([(always, 1.0)], ["a"], [])


def test_doctests():
    result = doctest.testmod(rewards)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("text, letter", [
    (r"B. Third-generation cephalosporin", "B"),  # SmolLM2's usual answer: the option line
    ("C\n\nThe best answer is \"40-49\"", "C"),
    (r"Reasoning... so the answer is (E). Also \boxed{A}", "A"),  # the box wins
    ("Some text\n(D) 70-79", "D"),
    ("Blood culture was Positive", None),  # a word, not a letter
    ("answer is B-lactam", None),
    ("", None),
])
def test_stated_letter_reads_unboxed_answers(text, letter):
    assert rewards.stated_letter(text) == letter


def test_stated_letter_reward_scores_right_answers_only():
    assert rewards.stated_letter_reward(["A. 60-69", "E. 70-79", "no idea"], ["E", "E", "E"]) == [0.0, 1.0, 0.0]


def test_consistent_letter_reward_ties_the_box_to_the_stated_option():
    options = [["2", "8", "0", "4", "6"]] * 5 + [["No", "Yes"]]
    texts = [
        "0 \\boxed{C} Therefore, the answer is C.",  # "0" is C: consistent
        "0 \\boxed{A}",  # boxed "2"
        "10 \\boxed{C}",  # stated text is no option ("0" is not "10")
        "0",  # no box
        "Thinking. 0 \\boxed{C}",  # more than the option before the box
        "Yes \\boxed{E}",  # a letter past the question's options
    ]
    assert rewards.consistent_letter_reward(texts, options) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="2 completions but 1 option lists"):
        rewards.consistent_letter_reward(["a", "b"], [["x"]])


def test_stated_and_boxed_reward_pays_a_right_box_only_where_it_follows_the_stated_text():
    options = [["2", "8", "0", "4", "6"]] * 4 + [["Yes", "No"]]
    texts = [
        "0 \\boxed{C} Therefore, the answer is C.",  # right text, its letter: paid
        "2 \\boxed{C}",  # right box, but the stated text is "2" (A): the study's reward pays it, this does not
        "0 \\boxed{A}",  # right text, wrong box
        "8 \\boxed{B}",  # consistent, wrong answer
        "No \\boxed{B}",  # right on a rotated 2-option question
    ]
    truth = ["C", "C", "C", "C", "B"]
    assert rewards.boxed_letter_reward(texts, truth) == [1.0, 1.0, 0.0, 0.0, 1.0]
    assert rewards.stated_and_boxed_reward(texts, truth, options) == [1.0, 0.0, 0.0, 0.0, 1.0]
