"""The Parquet schema of question rows (`creason.contracts.Question` in verl's layout; checked
against it by tests/test_contracts.py), its assembly from column arrays (the data stage), and the
one loader that every other stage reads questions with."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from creason.contracts import ABILITY, Question
from creason.data.render import concat

if TYPE_CHECKING:
    from creason.data.dictionary import Variable
    from creason.data.questions import QuestionPlan

QUESTION_KINDS = ("masked_value", "outcome")
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])


def arrow_type(annotation) -> pa.DataType:
    """The Arrow type of a `Question` field: str and Literal[str, ...] -> string, float | None ->
    float64, list[str] -> list<string>."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is str or origin is typing.Literal:
        return pa.string()
    if origin in (typing.Union, types.UnionType) and set(args) == {float, type(None)}:
        return pa.float64()
    if origin is list and args == (str,):
        return pa.list_(pa.string())
    raise TypeError(f"no Arrow type for {annotation!r}: extend arrow_type")


# derived from the record: a field added to `Question` is a column here (and `assemble_questions` must fill it)
EXTRA_INFO = pa.struct([(name, arrow_type(Question.model_fields[name].annotation)) for name in Question.info_fields()])
QUESTION_SCHEMA = pa.schema(
    [
        ("data_source", pa.string()),
        ("prompt", pa.list_(MESSAGE)),
        ("ability", pa.string()),
        ("reward_model", pa.struct([("style", pa.string()), ("ground_truth", pa.string())])),
        ("extra_info", EXTRA_INFO),
    ]
)
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")


def hex64(keys: np.ndarray) -> np.ndarray:
    """uint64 -> 16-character lowercase hex strings, vectorised."""
    as_bytes = keys.astype(">u8").view(np.uint8).reshape(-1, 8)
    return _HEX[as_bytes].view("S16").ravel().astype(str)


def chat_prompts(system: str, user: pa.Array) -> pa.ListArray:
    """[{system}, {user}] per row."""
    n = len(user)
    contents = pa.concat_arrays([pa.array([system]), user]).take(pa.array(np.stack([np.zeros(n, np.int64), np.arange(1, n + 1)], 1).ravel()))
    roles = pa.array(np.tile(np.array(["system", "user"], dtype=object), n), type=pa.string())
    messages = pa.StructArray.from_arrays([roles, contents], fields=list(MESSAGE))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)), messages)


def assemble_questions(*, plan: "QuestionPlan", kind: str, variable: "Variable", keys: np.ndarray, ks: np.ndarray, split, user, options, letters, answer_text, answer_value) -> pa.Table:
    """One table of questions in `QUESTION_SCHEMA` from per-row columns."""
    n = len(keys)
    patient = pa.array(hex64(keys))
    qid = concat(patient, f"-{kind[0]}", pa.array(ks.astype(str)))

    def const(value: str) -> pa.Array:
        return pa.array(np.full(n, value, dtype=object), type=pa.string())

    extra = pa.StructArray.from_arrays(
        [qid, patient, split, const(kind), const(variable.name),
         const(variable.display_name), const(variable.section), const(variable.kind.value), options,
         answer_text, answer_value],
        fields=list(EXTRA_INFO),
    )
    reward = pa.StructArray.from_arrays([const("rule"), pa.array(letters, type=pa.string())], names=["style", "ground_truth"])
    return pa.Table.from_arrays(
        [const(plan.config.data_source), chat_prompts(plan.config.system_prompt, user), const(ABILITY), reward, extra],
        schema=QUESTION_SCHEMA,
    )


def split_dir(questions_dir: str | Path, split: str) -> str | Path:
    """`questions_dir/split` (a folder, or a URI: `creason.storage`), which must hold question shards."""
    from creason import storage

    folder = storage.join(questions_dir, split)
    found = (any(name.endswith(".parquet") for name in storage.listing(folder)) if storage.is_remote(folder)
             else folder.is_dir() and any(folder.glob("*.parquet")))
    if not found:
        raise FileNotFoundError(f"no question shards in {folder}: run `creason build-questions` first")
    return folder


def load_questions(questions_dir: str | Path, split: str = "test", kinds: Iterable[str] = QUESTION_KINDS,
                   max_questions: int | None = None, seed: int = 0) -> list[Question]:
    """Questions of `split` of the given kinds, ordered by question_id (shard order does not
    matter); with `max_questions`, a seeded random subset of that size, kept in that order."""
    table = pq.read_table(split_dir(questions_dir, split))
    info = table.column("extra_info").combine_chunks()
    table = table.filter(pc.is_in(info.field("question_kind"), value_set=pa.array(list(kinds), type=pa.string())))
    rows = sorted(table.to_pylist(), key=lambda r: r["extra_info"]["question_id"])
    if max_questions is not None and max_questions < len(rows):
        keep = np.sort(np.random.default_rng(seed).choice(len(rows), max_questions, replace=False))
        rows = [rows[i] for i in keep]
    return [Question.from_row(r) for r in rows]
