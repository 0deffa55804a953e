"""The study's evaluation protocol: greedy reasoning, then the answer forced to one valid letter.

Step 1 (reasoning): greedy decoding (temperature 0) of the chat prompt, at most `max_new_tokens`
(0: no reasoning, the answer is forced right after the prompt).
Step 2 (forced answer): the token ids `prompt + reasoning + " Therefore, the answer is"` (the
reasoning's trailing end-of-turn token removed, so the sentence continues the assistant's turn)
are decoded for exactly one more token, greedily, with vLLM's `allowed_token_ids` restricted to
the letter tokens of the question's options: " A", " B" for a two-option question. The letter
is therefore always a valid option; it is the option letter the model finds most likely.

How letters tokenize: byte-level BPE tokenizers (SmolLM2, Llama, Qwen, GPT-2) fold the space
before a word into the word's token: "the answer is A" is [... " is", " A"]. The suffix therefore
ends at "is" (no trailing space) and each letter is scored as its space-prefixed token " A",
which is one token in those vocabularies (SmolLM2: " A"=330, " B"=389). Ending the suffix with a
space would put a lone " " token before a bare "A", a sequence such tokenizers never produce.
`letter_token_ids` checks this for the tokenizer at hand and falls back to the bare letter when
" X" is not a single token; two letters sharing a token is an error.

The plain `\\boxed{}` letter of the reasoning (the training reward's parse) is recorded beside it.
Only `answer_questions` touches vLLM; everything else here is pure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from creason.contracts import LETTERS, Question
from creason.rewards import extract_boxed_letter

FORCE_SUFFIX = " Therefore, the answer is"
#: Raw log-probs returned at the forced step (vLLM's default cap): letters outside them are None.
FORCED_TOP_LOGPROBS = 20


@dataclass
class ModelAnswer:
    """One model's answer to one question."""

    question_id: str
    reasoning: str  # step 1's text (special tokens removed)
    reasoning_tokens: int
    finish_reason: str  # "stop" (ended its turn) or "length" (cut at max_new_tokens)
    boxed: str | None  # letter of the first \boxed{} in the reasoning, None if none parses
    forced: str  # step 2's letter, always one of the question's letters
    letter_logprobs: dict[str, float | None] = field(default_factory=dict)  # raw log p(" X"), None: not in top 20
    top_token: str = ""  # the raw most likely next token at step 2, any token of the vocabulary
    reasoning_token_ids: list[int] = field(default_factory=list, repr=False)  # step 1's tokens, as generated


def letter_token_ids(tokenizer: Any, letters: str = LETTERS) -> dict[str, int]:
    """The token each answer letter is scored as: " X" if it is one token, else "X"."""
    ids = {}
    for letter in letters:
        for text in (" " + letter, letter):
            encoded = tokenizer.encode(text, add_special_tokens=False)
            if len(encoded) == 1:
                ids[letter] = encoded[0]
                break
        else:
            raise ValueError(f"the tokenizer splits answer letter {letter!r} into several tokens")
    if len(set(ids.values())) != len(ids):
        raise ValueError(f"answer letters share tokens: {ids}")
    return ids


def strip_trailing_special(token_ids: list[int], special_ids: set[int]) -> list[int]:
    """`token_ids` without the end-of-turn / end-of-text tokens it ends with.

    >>> strip_trailing_special([5, 6, 2], {0, 1, 2})
    [5, 6]
    """
    end = len(token_ids)
    while end and token_ids[end - 1] in special_ids:
        end -= 1
    return list(token_ids[:end])


def forced_prompt_ids(prompt_ids: list[int], reasoning_ids: list[int], suffix_ids: list[int],
                      special_ids: set[int]) -> list[int]:
    """Step 2's input: prompt, reasoning without its closing special tokens, then the suffix.

    >>> forced_prompt_ids([1, 9], [7, 8, 2], [30, 31], {1, 2})
    [1, 9, 7, 8, 30, 31]
    """
    return list(prompt_ids) + strip_trailing_special(reasoning_ids, special_ids) + list(suffix_ids)


@dataclass(frozen=True)
class _NoReasoning:
    """Step 1's output when the reasoning budget is 0 (fields of a vLLM `CompletionOutput`)."""

    text: str = ""
    token_ids: tuple = ()
    finish_reason: str = "stop"


NO_REASONING = _NoReasoning()


def reasoning_budget(prompt_len: int, max_new_tokens: int, max_model_len: int, suffix_len: int) -> int:
    """Reasoning tokens that still leave room for the suffix and the letter within max_model_len.

    >>> reasoning_budget(600, 512, 1024, 5), reasoning_budget(500, 256, 1024, 5)
    (418, 256)
    """
    budget = min(max_new_tokens, max_model_len - prompt_len - suffix_len - 1)
    if budget < 1:
        raise ValueError(f"a prompt of {prompt_len} tokens leaves no room to reason within max_model_len="
                         f"{max_model_len}: raise evaluate.max_model_len")
    return budget


def letter_of(token_id: int, letter_ids: dict[str, int], valid: str) -> str:
    """The letter a forced token stands for; an error if it is not one of `valid`."""
    for letter in valid:
        if letter_ids[letter] == token_id:
            return letter
    raise ValueError(f"forced token {token_id} is none of the valid letters {valid!r}")


def answer_questions(llm: Any, tokenizer: Any, questions: list[Question], max_new_tokens: int,
                     max_model_len: int, timings: dict | None = None, lora_request: Any = None) -> list[ModelAnswer]:
    """Both steps of the protocol for `questions` on a `vllm.LLM` (two batched generate calls).
    `timings`, when given, receives the seconds of each step ("reasoning_s", "forced_s");
    `lora_request`: the LoRA adapter both steps run with (a rollout engine's, `model.lora`)."""
    import time

    from vllm import SamplingParams

    from creason.rollout.engine import encode_chat

    letter_ids = letter_token_ids(tokenizer)
    suffix = tokenizer.encode(FORCE_SUFFIX, add_special_tokens=False)
    special = set(tokenizer.all_special_ids)
    prompts = [encode_chat(tokenizer, q.prompt) for q in questions]
    reason_params = [SamplingParams(temperature=0.0, max_tokens=reasoning_budget(len(p), max_new_tokens, max_model_len,
                                                                                  len(suffix)))
                     for p in prompts] if max_new_tokens else []
    start = time.perf_counter()
    if max_new_tokens == 0:
        reasoned = [NO_REASONING] * len(prompts)
    else:
        reasoned = [o.outputs[0] for o in llm.generate([{"prompt_token_ids": p} for p in prompts], reason_params,
                                                        use_tqdm=False, lora_request=lora_request)]
    middle = time.perf_counter()
    forced_inputs = [forced_prompt_ids(p, list(r.token_ids), suffix, special) for p, r in zip(prompts, reasoned)]
    force_params = [SamplingParams(temperature=0.0, max_tokens=1, logprobs=FORCED_TOP_LOGPROBS,
                                   allowed_token_ids=[letter_ids[x] for x in q.letters]) for q in questions]
    forced = [o.outputs[0] for o in llm.generate([{"prompt_token_ids": f} for f in forced_inputs], force_params,
                                                  use_tqdm=False, lora_request=lora_request)]
    if timings is not None:
        timings.update(reasoning_s=middle - start, forced_s=time.perf_counter() - middle)
    return [_answer(q, r, f, letter_ids, tokenizer) for q, r, f in zip(questions, reasoned, forced)]


def _answer(q: Question, reasoned: Any, forced: Any, letter_ids: dict[str, int], tokenizer: Any) -> ModelAnswer:
    """A `ModelAnswer` from the two vLLM `CompletionOutput`s of one question."""
    step = forced.logprobs[0]  # token id -> Logprob: the raw top 20, plus the chosen token
    top_id = min(step, key=lambda t: step[t].rank)
    logprobs = {x: (step[letter_ids[x]].logprob if letter_ids[x] in step else None) for x in q.letters}
    return ModelAnswer(
        question_id=q.question_id, reasoning=reasoned.text, reasoning_tokens=len(reasoned.token_ids),
        finish_reason=reasoned.finish_reason, boxed=extract_boxed_letter(reasoned.text),
        forced=letter_of(forced.token_ids[0], letter_ids, q.letters),
        letter_logprobs={k: (v if v is None or math.isfinite(v) else None) for k, v in logprobs.items()},
        top_token=tokenizer.decode([top_id]), reasoning_token_ids=list(reasoned.token_ids),
    )
