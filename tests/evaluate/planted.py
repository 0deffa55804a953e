"""Planted question sets with known answers, as `Question`s and as Parquet shards in the
pipeline's schema (a fixed set, and records where lactate decides septic shock), and a fake
model that always answers "A"."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from creason.contracts import LETTERS, Question
from creason.data.questions import QUESTION_HEADER, RECORD_HEADER
from creason.data.schema import QUESTION_SCHEMA
from creason.evaluate.protocol import ModelAnswer

SYSTEM = "You are a clinician."
# (kind, variable, section, variable_kind, options, ground truth letter)
TEST_ROWS = [
    ("masked_value", "shock", "Severity/Shock", "categorical", ["Yes", "No"], "A"),
    ("masked_value", "shock", "Severity/Shock", "categorical", ["Yes", "No"], "B"),
    ("masked_value", "lactate", "Labs/First", "numeric", ["1.1", "2.5", "4.0", "6.2", "9.9"], "A"),
    ("masked_value", "lactate", "Labs/First", "numeric", ["1.1", "2.5", "4.0", "6.2", "9.9"], "C"),
    ("masked_value", "gcs", "Vitals/First", "ordinal", ["15", "12", "9"], "A"),
    ("masked_value", "gcs", "Vitals/First", "ordinal", ["15", "12", "9"], "B"),
    ("outcome", "death", "Outcomes/Mortality", "categorical", ["No", "Yes"], "A"),
    ("outcome", "death", "Outcomes/Mortality", "categorical", ["No", "Yes"], "B"),
    ("outcome", "death", "Outcomes/Mortality", "categorical", ["No", "Yes"], "B"),
    ("outcome", "death", "Outcomes/Mortality", "categorical", ["No", "Yes"], "B"),
]
# Always "A" is right on 4 of 10: 3 of 6 masked-value questions, 1 of 4 outcome questions.
TRAIN_ANSWERS = {"shock": ["No", "No", "No", "Yes"], "lactate": ["2.0", "2.0", "3.1"], "gcs": ["15", "15", "12"],
                 "death": ["No", "No", "Yes"]}


def _row(i: int, split: str, kind: str, variable: str, section: str, vkind: str, options: list[str], letter: str) -> dict:
    qid = f"{i:016x}-{kind[0]}0"
    user = f"Patient {i}. What was {variable}?\n" + "\n".join(f"{LETTERS[k]}. {o}" for k, o in enumerate(options))
    return {
        "data_source": "planted", "ability": "clinical_reasoning",
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        "reward_model": {"style": "rule", "ground_truth": letter},
        "extra_info": {"question_id": qid, "patient": f"{i:016x}", "split": split, "question_kind": kind,
                       "variable": variable, "display_name": variable.title(), "section": section,
                       "variable_kind": vkind, "options": options, "answer_text": options[LETTERS.index(letter)],
                       "answer_value": None},
    }


def held_out_rows() -> list[dict]:
    return [_row(i, "test", *r) for i, r in enumerate(TEST_ROWS)]


def train_rows() -> list[dict]:
    rows, i = [], 100
    for variable, texts in TRAIN_ANSWERS.items():
        kind = "outcome" if variable == "death" else "masked_value"
        for text in texts:
            rows.append(_row(i, "train", kind, variable, "S", "categorical", [text, "other"], "A"))
            i += 1
    return rows


def write_planted(root: Path) -> Path:
    """`root/{train,test}/part-0.parquet` in the question schema; returns root."""
    for split, rows in (("test", held_out_rows()), ("train", train_rows())):
        (root / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA), root / split / "part-0.parquet")
    return root


def fake_always_a_generate(model_path: str, questions: list[Question]) -> tuple[list[ModelAnswer], dict]:
    """A FAKE model (no engine): reasons one line, boxes "A" on every third question (0, 3, 6, ...), and its
    forced answer is always "A"."""
    answers = [
        ModelAnswer(question_id=q.question_id, reasoning="The record suggests the first option." +
                    (r" \boxed{A}" if i % 3 == 0 else ""), reasoning_tokens=8, finish_reason="stop",
                    boxed="A" if i % 3 == 0 else None, forced="A", letter_logprobs={x: -1.0 for x in q.letters},
                    top_token=" A")
        for i, q in enumerate(questions)
    ]
    return answers, {"questions": len(answers), "seconds": 0.01, "questions_per_s": len(answers) / 0.01}


def planted_question(i: int, variable: str, options: list[str], answer: str, record: dict[str, str]) -> Question:
    """A masked-value question whose user message shows `record` as the pipeline renders it."""
    lines = "\n".join(f"{k}: {v}" for k, v in record.items())
    user = f"{RECORD_HEADER}[S]\n{lines}{QUESTION_HEADER}What was {variable}?\n\nOptions:\n" + "\n".join(
        f"{LETTERS[j]}. {o}" for j, o in enumerate(options))
    return Question(question_id=f"{i:016x}-m0", patient=f"{i:016x}", split="test", question_kind="masked_value",
                    variable=variable, display_name=variable, section="S", variable_kind="categorical",
                    options=options, answer_text=answer, answer_value=None,
                    messages=[{"role": "system", "content": "s"}, {"role": "user", "content": user}],
                    ground_truth=LETTERS[options.index(answer)], data_source="planted")


def planted_shock(n: int, rng: np.random.Generator, start: int) -> list[Question]:
    """Shock is "Yes" exactly when lactate > 4 (a third of patients): the prior says "No"."""
    out = []
    for i in range(n):
        lactate = float(np.round(rng.uniform(0, 6), 1))
        answer = "Yes" if lactate > 4 else "No"
        options = ["Yes", "No"] if rng.random() < 0.5 else ["No", "Yes"]
        out.append(planted_question(start + i, "shock", options, answer, {"Lactate (mmol/L)": str(lactate), "Sex": "M"}))
    return out


def write_split(root: Path, split: str, questions: list[Question]) -> Path:
    """`questions` as `root/<split>/part-0.parquet` in the question schema; returns root."""
    (root / split).mkdir(parents=True, exist_ok=True)
    rows = [q.model_copy(update={"split": split}).to_row() for q in questions]
    pq.write_table(pa.Table.from_pylist(rows, schema=QUESTION_SCHEMA), root / split / "part-0.parquet")
    return root
