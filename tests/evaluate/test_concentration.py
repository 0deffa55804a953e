"""How constant answers are (`creason.evaluate.concentration`), on hand-built questions."""

from __future__ import annotations

import doctest
import math

import creason.evaluate.concentration as concentration
from creason.evaluate.concentration import answer_concentration, constant_groups, truth_concentration
from creason.evaluate.report import concentration_section
from tests.evaluate.planted import planted_question

FIVE = ["1", "2", "3", "4", "5"]


def questions():
    """Two variables: `shock` (2 options, in both orders; truth Yes, Yes, No, Yes) and `gcs`
    (5 options, the right answer at a different letter each time)."""
    shock = [planted_question(i, "shock", opts, ans, {}) for i, (opts, ans) in
             enumerate([(["Yes", "No"], "Yes"), (["No", "Yes"], "Yes"), (["Yes", "No"], "No"), (["No", "Yes"], "Yes")])]
    gcs = [planted_question(10 + i, "gcs", FIVE[i:] + FIVE[:i], ans, {}) for i, ans in enumerate(["3", "3", "1", "5"])]
    return shock + gcs


def test_a_reader_spreads_as_the_truth_does():
    qs = questions()
    truth = truth_concentration(qs)
    # the right letters: shock A B B B (3 of 4 at B), gcs C B D B (2 of 4 at B)
    assert [q.ground_truth for q in qs] == ["A", "B", "B", "B", "C", "B", "D", "B"]
    assert truth["letter_by_options"] == {"2": 0.75, "5": 0.5}
    assert truth["letter"] == (3 + 2) / 8
    assert truth["text_by_variable"] == {"masked_value/gcs": 0.5, "masked_value/shock": 0.75}
    assert truth["text"] == (3 + 2) / 8


def test_one_letter_for_everything_shows_as_constant():
    qs = questions()
    always_b = answer_concentration(qs, ["B"] * 8)
    assert always_b["letter"] == 1.0
    # "B" names Yes, Yes, No... by order; on gcs it names 2, 3, 4, 5: a different text each time
    assert always_b["text_by_variable"] == {"masked_value/gcs": 0.25, "masked_value/shock": 0.5}
    always_no = answer_concentration(qs, ["B", "A", "B", "A", None, None, None, None])
    assert always_no["text_by_variable"]["masked_value/shock"] == 1.0
    assert always_no["text_by_variable"]["masked_value/gcs"] == 1.0  # no answer four times is one "answer"
    assert always_no["letter_by_options"]["2"] == 0.5


def test_empty_and_doctests():
    assert math.isnan(answer_concentration([], [])["letter"])
    assert doctest.testmod(concentration).failed == 0


def test_constant_groups_name_where_one_answer_covers_what_varies():
    qs = questions() * 5  # 20 questions of each number of options, 20 of each variable
    truth = truth_concentration(qs)
    always_b = answer_concentration(qs, ["B"] * 40)
    assert constant_groups(always_b, truth) == ["2 options", "5 options"]
    assert constant_groups(always_b, truth, min_questions=21) == []
    assert constant_groups(truth, truth) == []
    results = {"truth_concentration": truth, "systems": [
        {"name": "always B", "kind": "model", "concentration": always_b},
        {"name": "reader", "kind": "model", "concentration": truth}]}
    text = concentration_section(results)
    assert "| always B | 100.0% | 100.0% |" in text and "| Right answers | 75.0% | 50.0% |" in text
    assert "**always B answers the same whatever the record says** (2 options, 5 options" in text
    assert "**reader" not in text
