"""Record -> prompt for registry prediction, without Ray or a model: the prompt must be the one
training built for the same patient, and records are checked as registry files are."""

from __future__ import annotations

import numpy as np
import pytest

from creason.config import QuestionsConfig
from creason.data.prepare import prepare_table
from creason.data.questions import LETTERS, MASKED, OUTCOME, build_questions
from creason.serve.registry_predict import (
    RecordError,
    RegistryContext,
    answer_letter,
    build_prediction_prompt,
    mixture_median,
    numeric_ladder,
    prediction_options,
    record_table,
    user_prompt,
)
from tests.helpers import column, plan_in_process, tiny_registry, user_prompts

FRACTIONS = (0.8, 0.1, 0.1)


@pytest.fixture
def built(tiny_dictionary):
    raw = tiny_registry(400)
    config = QuestionsConfig(outcome_targets=["death"], masked_per_patient=2)
    prepared = prepare_table(raw, tiny_dictionary, 0, FRACTIONS)
    plan = plan_in_process(prepared, tiny_dictionary, config)
    ctx = RegistryContext(plan=plan, dictionary=tiny_dictionary, seed=0, split_fractions=FRACTIONS)
    return raw, prepared, plan, ctx


def as_record(raw, i: int) -> dict:
    """Row i of a raw registry as a JSON client would send it (ISO dates, numbers, strings)."""
    row = raw.slice(i, 1).to_pylist()[0]
    return {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in row.items()}


def test_prompt_is_the_training_prompt_for_the_same_options(built):
    raw, prepared, plan, ctx = built
    questions = build_questions(prepared, plan)
    kinds, variables, options = column(questions, "question_kind"), column(questions, "variable"), column(questions, "options")
    patients = column(questions, "patient")
    keys = [f"{k:016x}" for k in prepared.column("_key").to_pylist()]
    prompts, checked = user_prompts(questions), set()
    for q in range(0, len(questions), 7):
        i = keys.index(patients[q])
        raw_row = record_table(as_record(raw, i), ctx.dictionary)  # the request path: record -> typed 1-row table
        one = prepare_table(raw_row, ctx.dictionary, ctx.seed, FRACTIONS)
        assert user_prompt(plan, one, 0, kinds[q], variables[q], options[q]) == prompts[q]
        checked.add((kinds[q], variables[q]))
    assert {k for k, _ in checked} == {MASKED, OUTCOME} and len(checked) >= 5


def test_identifiers_and_time_zero_never_reach_the_prompt(built):
    raw, _, _, ctx = built
    record = as_record(raw, 5)
    p = build_prediction_prompt(ctx, record, "gcs")
    text = " ".join(m["content"] for m in p.messages)
    assert record["pid"] not in text and "2021-" not in text
    assert "hours from time zero" in text  # admission time, relative to onset
    assert p.ignored_variables == ["onset", "pid"]
    with pytest.raises(RecordError) as e:
        build_prediction_prompt(ctx, record, "gcs", identifiers="reject")
    assert e.value.param == "record.pid"


def test_target_and_its_leaks_are_hidden(built):
    raw, _, plan, ctx = built
    record = as_record(raw, 7)
    user = build_prediction_prompt(ctx, record, "lactate").messages[1]["content"]
    record_part = user.split("Question:")[0]
    assert "Lactate (mmol/L)" not in record_part and "point of care" not in record_part  # MI removes the copy
    outcome = build_prediction_prompt(ctx, record, "death").messages[1]["content"]
    assert "Hospital mortality" not in outcome.split("Question:")[0] and "Did the patient die in hospital?" in outcome


@pytest.mark.parametrize(
    "record, param",
    [
        ({"lactate": 99.0}, "record.lactate"),  # above the dictionary's max
        ({"site": "Knee"}, "record.site"),  # not an allowed value
        ({"onset": "yesterday"}, "record.onset"),  # not ISO 8601
        ({"shoe_size": 44}, "record.shoe_size"),  # not in the dictionary
    ],
)
def test_bad_records_name_the_variable(built, record, param):
    *_, ctx = built
    with pytest.raises(RecordError) as e:
        build_prediction_prompt(ctx, record, "gcs")
    assert e.value.param == param


def test_bad_targets_and_kinds(built):
    *_, ctx = built
    with pytest.raises(RecordError, match="target"):
        build_prediction_prompt(ctx, {}, "pid")
    with pytest.raises(RecordError) as e:
        build_prediction_prompt(ctx, {}, "death", kind=MASKED)
    assert e.value.param == "kind"
    assert build_prediction_prompt(ctx, {}, "death").kind == OUTCOME
    assert build_prediction_prompt(ctx, {}, "gcs").kind == MASKED


def test_options_without_a_true_value(built):
    *_, plan, _ = built
    assert prediction_options(plan, "site") == ["Lung", "Urine", "Abdomen", "Skin", "Other"]  # CNS never observed
    gcs = [float(x) for x in prediction_options(plan, "gcs")]
    assert len(gcs) == 5 and gcs == sorted(gcs) and 3 <= gcs[0] and gcs[-1] <= 15
    assert len(set(np.diff(gcs))) == 1  # evenly spaced


def test_ladder_is_shifted_into_range_then_shrunk():
    assert numeric_ladder(14, 2, 5, 3, 15, 0) == [7, 9, 11, 13, 15]
    assert numeric_ladder(1, 2, 5, 0, 30, 1) == [0, 2, 4, 6, 8]
    assert numeric_ladder(5, 3, 5, 3, 7, 0) == [3, 4, 5, 6, 7]
    assert numeric_ladder(0.5, 1, 5, 0, 1, 0) == [0, 1]


def test_mixture_median():
    assert mixture_median([1.0], [3.0], [2.0]) == pytest.approx(3.0, abs=1e-6)
    assert mixture_median([0.5, 0.5], [-1.0, 1.0], [0.5, 0.5]) == pytest.approx(0.0, abs=1e-6)


def test_answer_letter_only_names_offered_options():
    assert answer_letter(r"so \boxed{B}", 2) == "B"
    assert answer_letter(r"so \boxed{C}", 2) is None
    assert answer_letter("B", 5) is None
    assert LETTERS[:3] == "ABC"


def test_context_loads_from_a_build_made_under_an_older_config(built, tmp_path):
    import json

    import yaml

    *_, plan, ctx = built
    (tmp_path / "dictionary.yaml").write_text(yaml.safe_dump(ctx.dictionary.model_dump(mode="json")))
    (tmp_path / "plan.json").write_text(plan.model_dump_json())
    old_config = {"data": {"dictionary": str(tmp_path / "dictionary.yaml"), "profile": "full"}, "train": {"retired_key": 1}}
    (tmp_path / "manifest.json").write_text(json.dumps({"seed": 0, "config": old_config}))
    loaded = RegistryContext.load(tmp_path)
    assert loaded.dictionary == ctx.dictionary and loaded.split_fractions == FRACTIONS and loaded.plan == plan


def test_options_without_a_true_value_use_the_answer_words(built):
    *_, plan, _ = built
    assert prediction_options(plan, "death") == ["No", "Yes"]
    death = plan.variable("death").model_copy(update={"answers": {"No": "Survived", "Yes": "Died"}})
    worded = plan.model_copy(update={"variables": [death if v.name == "death" else v for v in plan.variables],
                                     "config": plan.config.model_copy(update={"answer_words": True})})
    assert prediction_options(worded, "death") == ["Survived", "Died"]
    assert prediction_options(worded, "site") == prediction_options(plan, "site")
