r"""The study's rewards: the letter in the first `\boxed{...}` against the ground truth.

Reward functions are plain callables `(completions, **kwargs) -> list[float]` as in TRL; dataset
columns arrive as keyword lists, one entry per completion: `ground_truth` (the right letter) and,
in the training loop, `options` (the option texts in the order that completion's prompt showed).
A completion is a string, or a conversation (list of {"role", "content"} messages) whose last
message is scored.
`score_completions` combines weighted rewards and survives a reward function that raises.
"""

from __future__ import annotations

import importlib
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from creason.contracts import LETTERS

logger = logging.getLogger(__name__)

RewardFn = Callable[..., list[float]]

#: At most this many characters of a completion (or an error message) reach the log.
MAX_LOGGED_CHARS = 200

_BOXED = re.compile(r"\\boxed\s*\{")
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+\*?|\\[,;:! ]")  # \text, \textbf, \mathrm, \, ...
_LEADING_LETTER = re.compile(r"\(?([A-E])(?!\w)")  # "C", "C. 7.2", "(C)"; not "Cardiac", "C2"
_BARE_LETTER = re.compile(r"\s*[A-E]\s*")


def _boxed_contents(text: str) -> list[str | None]:
    r"""Contents of every `\boxed{...}` in order, braces balanced; None for one never closed."""
    out: list[str | None] = []
    for match in _BOXED.finditer(text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        out.append(text[match.end() : i - 1] if depth == 0 else None)
    return out


def _leading_letter(content: str) -> str | None:
    """The answer letter A-E that starts a box's content once LaTeX commands and braces are gone."""
    plain = _LATEX_COMMAND.sub("", content)
    plain = plain.replace("{", "").replace("}", "").replace("$", "").strip()
    match = _LEADING_LETTER.match(plain)
    return match.group(1) if match else None


def extract_boxed_letter(text: str) -> str | None:
    r"""The answer letter (A-E) of the FIRST `\boxed{...}` in `text`, or None.

    The letter, upper case, must start the box (after LaTeX wrappers such as `\text{}`, spaces, an
    opening parenthesis) and not run into a word: "C", "C. 7.2", "(C)" count; "Cardiac", "c" do not.

    >>> extract_boxed_letter(r"so \boxed{ C } and later \boxed{A}")
    'C'
    >>> extract_boxed_letter(r"\boxed{\text{B}}"), extract_boxed_letter(r"\boxed{D. 7.2 mmol/L}")
    ('B', 'D')
    >>> extract_boxed_letter(r"\boxed{7.2}"), extract_boxed_letter(r"\boxed{Cardiac}"), extract_boxed_letter("C")
    (None, None, None)
    """
    contents = _boxed_contents(text)
    if not contents or contents[0] is None:
        return None
    return _leading_letter(contents[0])


def _completion_text(completion: Any) -> str:
    """A completion's text: the string itself, or the content of a conversation's last message."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    raise TypeError(f"a completion must be a string or a list of messages, got {type(completion).__name__}")


def boxed_letter_reward(completions: list[Any], ground_truth: list[str], **kwargs: Any) -> list[float]:
    r"""1.0 where the first boxed letter equals the ground-truth letter, else 0.0.

    >>> boxed_letter_reward([r"\boxed{B}", r"\boxed{A} \boxed{B}", "B"], ["B", "B", "B"])
    [1.0, 0.0, 0.0]
    """
    if len(completions) != len(ground_truth):
        raise ValueError(f"{len(completions)} completions but {len(ground_truth)} ground truths")
    return [
        float(extract_boxed_letter(_completion_text(c)) == str(g).strip().upper())
        for c, g in zip(completions, ground_truth)
    ]


def format_reward(completions: list[Any], bonus: float = 0.1, **kwargs: Any) -> list[float]:
    r"""`bonus` where the completion holds exactly one box and it is a bare letter `\boxed{X}`.

    >>> format_reward([r"\boxed{ B }", r"\boxed{B} \boxed{B}", r"\boxed{B. 7.2}", "B"])
    [0.1, 0.0, 0.0, 0.0]
    """
    scores = []
    for completion in completions:
        boxes = _boxed_contents(_completion_text(completion))
        ok = len(boxes) == 1 and boxes[0] is not None and _BARE_LETTER.fullmatch(boxes[0]) is not None
        scores.append(bonus if ok else 0.0)
    return scores


def stated_option(text: str) -> str | None:
    r"""What a completion states before its first `\boxed{`, stripped (the stated-answer format
    of `warmup.state_answer`: `Yes \boxed{B}`); None when it has no box.

    >>> stated_option(r" 70-79 \boxed{E} Therefore, the answer is E."), stated_option("Yes")
    ('70-79', None)
    """
    match = _BOXED.search(text)
    return text[: match.start()].strip() if match else None


def consistent_letter_reward(completions: list[Any], options: list[list[str]], **kwargs: Any) -> list[float]:
    r"""1.0 where the boxed letter names the option whose text the completion stated before the box,
    else 0.0; `options[i]` are completion i's options in the order its prompt showed them.

    No ground truth: a format reward for the stated-answer format. It keeps the box tied to the
    stated answer, which GRPO on `boxed_letter_reward` alone unties: the study's reward lands on the
    letter token, and after 20 steps on masked values the model boxed "A" whatever it had stated.
    Beside the study's reward it held the box (agreement 64% -> 83%) but the policy then stated the
    first option, whose letter is the easiest to name: no gain (docs/results.md).

    >>> opts = [["No", "Yes"], ["Yes", "No"], ["No", "Yes"], ["No", "Yes"]]
    >>> consistent_letter_reward([r"Yes \boxed{B}", r"Yes \boxed{A}.", r"Yes \boxed{A}", "Yes B"], opts)
    [1.0, 1.0, 0.0, 0.0]
    """
    if len(completions) != len(options):
        raise ValueError(f"{len(completions)} completions but {len(options)} option lists")
    scores = []
    for completion, shown in zip(completions, options):
        text = _completion_text(completion)
        letter = extract_boxed_letter(text)
        index = LETTERS.index(letter) if letter else len(shown)
        scores.append(float(index < len(shown) and stated_option(text) == shown[index].strip()))
    return scores


def stated_and_boxed_reward(completions: list[Any], ground_truth: list[str], options: list[list[str]],
                            **kwargs: Any) -> list[float]:
    r"""1.0 where the completion states the right option's text AND boxes its letter, else 0.0: the
    study's reward, paid only when the box follows what was said before it.

    Why: on the stated-answer warm-up the study's reward alone pays a box that leaves the stated
    text. In a group whose answer is the rare one the warm-up states the common answer, so the
    samples that are right are mostly those whose box drifted; GRPO then moved the box onto one
    letter (docs/results.md, runs 9 and "Where GRPO's points go"). Here only the stated answer can
    earn, and only with its own letter.

    >>> opts = [["No", "Yes"], ["No", "Yes"], ["No", "Yes"]]
    >>> stated_and_boxed_reward([r"Yes \boxed{B}", r"No \boxed{B}", r"Yes \boxed{A}"], ["B", "B", "B"], opts)
    [1.0, 0.0, 0.0]
    """
    boxed = boxed_letter_reward(completions, ground_truth)
    consistent = consistent_letter_reward(completions, options)
    return [b * c for b, c in zip(boxed, consistent)]


_ANSWER_IS = re.compile(r"answer is:?\s*\(?([A-E])(?![\w-])")
_LINE_LETTER = re.compile(r"(?m)^\s*\(?([A-E])(?:[.):]|\s*$)")  # a line that starts "B. ...", "(C)", or is "A"


def stated_letter(text: str) -> str | None:
    r"""The answer letter of a completion, read leniently: the first `\boxed{}` letter; else the
    letter after "answer is"; else the letter that starts the first line naming an option.

    >>> [stated_letter(t) for t in (r"\boxed{C}", "The answer is B.", "Thinking...\nD. 70-79", "Cardiac", "A-E")]
    ['C', 'B', 'D', None, None]
    """
    if (boxed := extract_boxed_letter(text)) is not None:
        return boxed
    match = _ANSWER_IS.search(text) or _LINE_LETTER.search(text)
    return match.group(1) if match else None


def stated_letter_reward(completions: list[Any], ground_truth: list[str], **kwargs: Any) -> list[float]:
    r"""1.0 where the `stated_letter` is the ground-truth letter, else 0.0.

    A shaping reward for small models, which name the option ("B. Sepsis") far more often than they
    box it (SmolLM2-135M: a box in 5 of 96 samples, 2026-12-02): it gives GRPO a signal on the answer
    from the first step, while `boxed_letter_reward` and `format_reward` pay for the study's format.

    >>> stated_letter_reward([r"so \boxed{B}", "B. Yes", "The answer is C"], ["B", "B", "B"])
    [1.0, 1.0, 0.0]
    """
    if len(completions) != len(ground_truth):
        raise ValueError(f"{len(completions)} completions but {len(ground_truth)} ground truths")
    return [float(stated_letter(_completion_text(c)) == str(g).strip().upper()) for c, g in zip(completions, ground_truth)]


def load_reward(dotted_path: str) -> RewardFn:
    """Import a reward callable from "package.module:function" or "package.module.function".

    >>> load_reward("creason.rewards:boxed_letter_reward").__name__
    'boxed_letter_reward'
    """
    if ":" in dotted_path:
        module_name, _, attr = dotted_path.partition(":")
    else:
        module_name, _, attr = dotted_path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(
            f"reward {dotted_path!r} must look like 'package.module:function' or 'package.module.function'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise ImportError(f"reward {dotted_path!r}: cannot import module {module_name!r}: {e}") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise AttributeError(f"reward {dotted_path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise TypeError(f"reward {dotted_path!r} is a {type(obj).__name__}, not a callable")
    return obj


@dataclass(frozen=True)
class RewardError:
    """A sample a reward function failed on (and that was scored 0 for it)."""

    reward: str  # the function's name
    index: int  # the sample's index in the batch
    error: str  # "ExceptionType: message", message truncated to MAX_LOGGED_CHARS


def _truncate(text: str) -> str:
    extra = len(text) - MAX_LOGGED_CHARS
    return text if extra <= 0 else f"{text[:MAX_LOGGED_CHARS]}... [{extra} more chars]"


def _call(fn: RewardFn, completions: list[Any], ground_truth: list[str], kwargs: dict) -> list[float]:
    """fn's rewards as floats, checked to be one per completion."""
    values = [float(v) for v in fn(completions, ground_truth=ground_truth, **kwargs)]
    if len(values) != len(completions):
        raise ValueError(f"returned {len(values)} rewards for {len(completions)} completions")
    return values


def _sample_kwargs(kwargs: dict, i: int, n: int) -> dict:
    """kwargs for sample i alone: per-sample lists (length n) are cut to [v[i]], others kept."""
    return {k: [v[i]] if isinstance(v, (list, tuple)) and len(v) == n else v for k, v in kwargs.items()}


def _score_one(fn: RewardFn, completions: list[Any], ground_truth: list[str], kwargs: dict):
    """(rewards, errors) of one function: the whole batch, or sample by sample if the batch fails."""
    name, n = getattr(fn, "__name__", repr(fn)), len(completions)
    if n > 1:
        try:
            return _call(fn, completions, ground_truth, kwargs), []
        except Exception as e:  # noqa: BLE001 - a reward bug must not stop the run
            logger.warning(
                "reward %s failed on a batch of %d (%s); retrying sample by sample", name, n, type(e).__name__
            )
    values, errors = [], []
    for i, completion in enumerate(completions):
        try:
            values += _call(fn, [completion], [ground_truth[i]], _sample_kwargs(kwargs, i, n))
        except Exception as e:  # noqa: BLE001
            errors.append(RewardError(name, i, _truncate(f"{type(e).__name__}: {e}")))
            text = completion if isinstance(completion, str) else repr(completion)
            logger.warning(
                "reward %s failed on sample %d (%s), scored 0; completion: %r",
                name, i, errors[-1].error, _truncate(text),
            )
            values.append(0.0)
    return values, errors


def score_completions(
    reward_fns_with_weights: Sequence[tuple[RewardFn, float]],
    completions: list[Any],
    ground_truth: list[str],
    **kwargs: Any,
) -> tuple[list[float], list[RewardError]]:
    """Sum of weight * reward per completion, and the failures (each scored 0 for its function).

    Each function is called as fn(completions, ground_truth=ground_truth, **kwargs).

    >>> def shaky(completions, **kwargs):
    ...     return [1.0 / len(c) for c in completions]
    >>> score_completions([(shaky, 2.0)], ["ab", ""], ["A", "B"])
    ([1.0, 0.0], [RewardError(reward='shaky', index=1, error='ZeroDivisionError: float division by zero')])
    """
    if len(completions) != len(ground_truth):
        raise ValueError(f"{len(completions)} completions but {len(ground_truth)} ground truths")
    totals = [0.0] * len(completions)
    all_errors: list[RewardError] = []
    for fn, weight in reward_fns_with_weights:
        values, errors = _score_one(fn, completions, ground_truth, kwargs)
        totals = [t + weight * v for t, v in zip(totals, values)]
        all_errors += errors
    return totals, all_errors
