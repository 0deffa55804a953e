"""The forced-answer step's pure parts: letter tokens of the real tokenizer, the step-2 input,
the reasoning budget, and the refusal of a letter the question does not have."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from creason.evaluate.protocol import (FORCE_SUFFIX, forced_prompt_ids, letter_of, letter_token_ids, reasoning_budget,
                                       strip_trailing_special)


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    return AutoTokenizer.from_pretrained(str(smollm2_dir))


def test_letters_are_single_space_prefixed_tokens(tokenizer):
    ids = letter_token_ids(tokenizer)
    assert list(ids) == list("ABCDE") and len(set(ids.values())) == 5
    for letter, token in ids.items():
        assert tokenizer.decode([token]) == " " + letter
    # "... the answer is" + " B" is exactly how the tokenizer writes the sentence with a letter
    suffix = tokenizer.encode(FORCE_SUFFIX, add_special_tokens=False)
    assert tokenizer.encode(FORCE_SUFFIX + " B", add_special_tokens=False) == suffix + [ids["B"]]
    assert tokenizer.decode(suffix[-1:]) == " is"  # no trailing space token


class _NoSpaceTokenizer:
    """A fake tokenizer where " X" takes two tokens but "X" one."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [0, ord(text[1])] if text.startswith(" ") else [ord(text)]


class _SharedTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [7]


def test_letter_tokens_fall_back_to_bare_letters_and_refuse_shared_tokens():
    assert letter_token_ids(_NoSpaceTokenizer(), "AB") == {"A": 65, "B": 66}
    with pytest.raises(ValueError, match="share tokens"):
        letter_token_ids(_SharedTokenizer(), "AB")


def test_forced_input_drops_the_end_of_turn_and_appends_the_suffix(tokenizer):
    special = set(tokenizer.all_special_ids)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    body = tokenizer.encode("Lactate is high. \\boxed{B}", add_special_tokens=False)
    suffix = tokenizer.encode(FORCE_SUFFIX, add_special_tokens=False)
    assert forced_prompt_ids([1, 2, 3], body + [end], suffix, special) == [1, 2, 3] + body + suffix
    assert forced_prompt_ids([1], body, suffix, special) == [1] + body + suffix  # truncated: nothing to drop
    assert strip_trailing_special([end, end], special) == []


def test_reasoning_budget_leaves_room_for_suffix_and_letter():
    assert reasoning_budget(500, 512, 1024, 5) == 512
    assert reasoning_budget(900, 512, 1024, 5) == 1024 - 900 - 5 - 1
    with pytest.raises(ValueError, match="max_model_len"):
        reasoning_budget(1020, 512, 1024, 5)


def test_a_letter_outside_the_question_is_refused():
    ids = {"A": 10, "B": 11, "C": 12}
    assert letter_of(11, ids, "AB") == "B"
    with pytest.raises(ValueError, match="none of the valid letters"):
        letter_of(12, ids, "AB")
