"""The one question record (`creason.contracts.Question`) and its Parquet layout: the schema the data
stage writes is derived from the record, unchanged from verl's columns, and a row goes both ways."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pydantic import ValidationError

from creason.contracts import Question
from creason.data.schema import EXTRA_INFO, QUESTION_SCHEMA, load_questions
from tests.evaluate.planted import held_out_rows, write_planted

# the format as files already written hold it: a change here is a change of the format
EXPECTED_INFO = [("question_id", pa.string()), ("patient", pa.string()), ("split", pa.string()),
                 ("question_kind", pa.string()), ("variable", pa.string()), ("display_name", pa.string()),
                 ("section", pa.string()), ("variable_kind", pa.string()), ("options", pa.list_(pa.string())),
                 ("answer_text", pa.string()), ("answer_value", pa.float64())]


def test_schema_is_derived_from_the_record_and_keeps_the_format():
    assert [(f.name, f.type) for f in EXTRA_INFO] == EXPECTED_INFO
    assert QUESTION_SCHEMA.names == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    assert Question.info_fields() == [name for name, _ in EXPECTED_INFO]


def test_a_row_goes_both_ways():
    row = held_out_rows()[2]
    q = Question.from_row(row)
    assert q.to_row() == row
    assert pa.Table.from_pylist([q.to_row()], schema=QUESTION_SCHEMA).to_pylist() == [row]
    assert (q.letters, q.num_options, q.ground_truth) == ("ABCDE", 5, "A")
    assert q.user_text.startswith("Patient 2.") and q.prompt == q.messages == row["prompt"]
    assert (q.option_text("A"), q.option_text("C"), q.option_text("E")) == ("1.1", "4.0", "9.9")
    for wrong in ("F", "AB", ""):
        with pytest.raises(ValueError, match="is not a letter of question"):
            q.option_text(wrong)


def test_rows_that_break_the_contract_are_refused():
    row = held_out_rows()[0]
    with pytest.raises(ValidationError):
        Question.from_row({**row, "extra_info": {**row["extra_info"], "surprise": 1}})
    with pytest.raises(ValidationError):
        Question.from_row({**row, "reward_model": {"style": "rule", "ground_truth": "F"}})
    with pytest.raises(ValidationError):
        Question.from_row({**row, "prompt": [{"role": "doctor", "content": "hi"}]})
    with pytest.raises(ValueError, match="not a question row"):
        Question.from_row({**row, "reward_model": {"style": "model", "ground_truth": "A"}})


def test_one_loader(tmp_path):
    root = write_planted(tmp_path)
    questions = load_questions(root, "test")
    assert [q.question_id for q in questions] == sorted(r["extra_info"]["question_id"] for r in held_out_rows())
    assert all(isinstance(q, Question) for q in questions)
    assert {q.question_kind for q in load_questions(root, "test", ["outcome"])} == {"outcome"}
    train = load_questions(root, "train", ["masked_value", "outcome"])
    assert len(train) == 13 and all(q.split == "train" for q in train)
