"""How constant a system's answers are: does it answer from the record, or the same whatever the
record says? Pure: no Ray, no vLLM, no files.

Accuracy alone cannot tell. A model that answers "No" to every outcome question scores the share
of "No" among the right answers (68% in run 6, docs/results.md), and one that answers "E" to every
5-option question scores the share of questions whose right answer sits at E. Two numbers
show it, each next to the same number for the right answers themselves:

- `letter`: per number of options, the share of questions answered with the most common letter.
  Options are shuffled, so the right answers spread over the letters (~1/k each); a model that
  reads the options and the record spreads too.
- `text`: per question kind and variable, the share of questions answered with that variable's
  most common answer text (the option's words, whatever its letter). The right answers' own
  share is the most a prior-only model could reach while tracking the variable; near 100% is
  one answer for every record.
"""

from __future__ import annotations

from collections import Counter
from typing import Hashable, Iterable

from creason.contracts import Question


def group_counts(keys: Iterable[Hashable], groups: Iterable[Hashable]) -> dict[str, Counter]:
    """How often each key occurs within each group, the groups keyed by their text, sorted."""
    counts: dict[str, Counter] = {}
    for key, group in zip(keys, groups):
        counts.setdefault(str(group), Counter())[key] += 1
    return dict(sorted(counts.items()))


def top_share(counts: dict[str, Counter]) -> float:
    """The share of items whose key is the most common key of their group (NaN with no items).

    >>> top_share(group_counts("AAB" + "CD", [2, 2, 2, 5, 5]))  # 2 of 3, then 1 of 2
    0.6
    """
    total = sum(sum(c.values()) for c in counts.values())
    return sum(max(c.values()) for c in counts.values()) / total if total else float("nan")


def _options(q: Question) -> int:
    return len(q.options)


def _variable(q: Question) -> str:
    return f"{q.question_kind}/{q.variable}"


def answer_text(q: Question, letter: str | None) -> str | None:
    """The words of the option `letter` names (None: no answer, or not a letter of `q`)."""
    return q.option_text(letter) if letter is not None and len(letter) == 1 and letter in q.letters else None


def answer_concentration(questions: list[Question], letters: list[str | None]) -> dict:
    """{"letter": share overall, "letter_by_options": {k: share}, "text": share overall,
    "text_by_variable": {"kind/variable": share}} of one system's answers (`letters`, None where it
    gave none), with the questions in each group ("n_by_options", "n_by_variable")."""
    by_options = group_counts(letters, map(_options, questions))
    by_variable = group_counts((answer_text(q, x) for q, x in zip(questions, letters)), map(_variable, questions))
    return {
        "letter": top_share(by_options),
        "letter_by_options": {g: top_share({g: c}) for g, c in by_options.items()},
        "n_by_options": {g: sum(c.values()) for g, c in by_options.items()},
        "text": top_share(by_variable),
        "text_by_variable": {g: top_share({g: c}) for g, c in by_variable.items()},
        "n_by_variable": {g: sum(c.values()) for g, c in by_variable.items()},
    }


def constant_groups(system: dict, truth: dict, share: float = 0.9, min_questions: int = 20) -> list[str]:
    """Where `system` (an `answer_concentration`) gives one answer to at least `share` of a group of
    at least `min_questions` questions whose right answers are less constant than that: "k options"
    for one letter, "kind/variable" for one answer text."""
    def constant(values: str, counts: str, label: str) -> list[str]:
        return [label.format(g) for g, x in system[values].items()
                if system[counts][g] >= min_questions and x >= share and truth[values][g] < share]

    return (constant("letter_by_options", "n_by_options", "{} options")
            + constant("text_by_variable", "n_by_variable", "{}"))


def truth_concentration(questions: list[Question]) -> dict:
    """`answer_concentration` of the right answers: what a system that reads the record shows."""
    return answer_concentration(questions, [q.ground_truth for q in questions])
