"""The record-regression baseline: features, the softmax fit (one step by hand), and a planted
registry where the record decides the answer, so the regression must beat the majority answer."""

from __future__ import annotations

import numpy as np
import pytest

from creason.data.questions import RECORD_HEADER
from creason.evaluate.baselines import majority_letters, majority_texts
from creason.evaluate.questions import answer_counts, answered_records
from creason.evaluate.record_regression import OneHot, RecordRegression, fit_softmax
from creason.evaluate.scoring import RECORD, baseline_systems
from tests.evaluate.planted import planted_question, planted_shock, write_split


def test_numbers_are_binned_by_training_quantiles_and_categories_one_hot():
    records = [{"Lactate (mmol/L)": str(x), "Sex": s} for x, s in zip(range(1, 11), "MF" * 5)]
    features = OneHot.fit(records, bins=2)
    np.testing.assert_allclose(features.edges["Lactate (mmol/L)"], [5.5])
    assert "Sex" not in features.edges  # two values: a category
    assert set(features.columns) == {"Lactate (mmol/L)#0", "Lactate (mmol/L)#1", "Sex=M", "Sex=F"}
    x = features.matrix([{"Lactate (mmol/L)": "9", "Sex": "F"}, {"Sex": "unknown"}])
    c = features.columns
    assert x[0, c["Lactate (mmol/L)#1"]] == 1 and x[0, c["Sex=F"]] == 1 and x[0].sum() == 3  # + bias
    assert x[1].tolist() == [0, 0, 0, 0, 1]  # an unseen value and a missing line: the bias alone


def test_one_softmax_step_from_zero_matches_the_hand_computed_gradient():
    x = np.array([[1, 0, 1], [0, 1, 1]], dtype=np.float32)
    y = np.array([0, 1])
    # at W = 0 every class has p = 1/2: grad = X^T (P - Y) / 2 = [[-1/4, 1/4], [1/4, -1/4], [0, 0]]
    w = fit_softmax(x, y, 2, steps=1, lr=1.0, l2=0.0)
    np.testing.assert_allclose(w, [[0.25, -0.25], [-0.25, 0.25], [0.0, 0.0]], atol=1e-7)
    many = fit_softmax(x, y, 2, steps=200, lr=1.0, l2=0.0)
    assert (x @ many).argmax(axis=1).tolist() == [0, 1]


def test_the_regression_reads_the_record_where_the_majority_answer_cannot():
    rng = np.random.default_rng(0)
    train, test = planted_shock(300, rng, 0), planted_shock(100, rng, 1000)
    from creason.data.questions import record_values

    regression = RecordRegression([(q.variable, q.answer_text, record_values(q.user_text)) for q in train])
    letters, known = regression.letters(test, [record_values(q.user_text) for q in test], seed=0)
    right = np.mean([a == q.ground_truth for a, q in zip(letters, test)])
    majority, _ = majority_letters(test, {"shock": "No"}, seed=0)
    prior = np.mean([a == q.ground_truth for a, q in zip(majority, test)])
    assert known.all() and right >= 0.9 and prior <= 0.75  # quintile bins: only the bin holding 4.0 mixes
    unseen = planted_question(5000, "gcs", ["15", "3"], "3", {"Sex": "M"})
    letters, known = regression.letters([unseen], [{"Sex": "M"}], seed=0)
    assert known.tolist() == [False] and letters[0] in "AB"


def test_baselines_include_the_regression_fit_on_the_train_split(tmp_path):
    rng = np.random.default_rng(1)
    train, test = planted_shock(200, rng, 0), planted_shock(60, rng, 1000)
    write_split(tmp_path, "train", train)
    records = answered_records(tmp_path, limit=150, seed=0)
    assert len(records) == 150 and all(set(r) == {"Lactate (mmol/L)", "Sex"} for _, _, r in records)
    systems = baseline_systems(test, answer_counts(tmp_path), 0, RecordRegression(records))
    by_name = {s.name: s for s in systems}
    assert majority_texts(answer_counts(tmp_path)) == {"shock": "No"}
    assert by_name[RECORD].correct.mean() > by_name["Majority answer (train)"].correct.mean() + 0.15
    assert "fit on the training split" in by_name[RECORD].note


@pytest.mark.parametrize("text", ["no record at all", f"{RECORD_HEADER}X: 1"])
def test_a_message_without_a_whole_record_reads_as_empty(text):
    from creason.data.questions import record_values

    assert record_values(text) == {}
