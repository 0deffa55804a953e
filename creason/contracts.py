"""Records that cross process and file boundaries, as pydantic models: the question, and the chat
message it holds. A question's Parquet row follows the schema that verl and other RL trainers read
(`data_source`, `prompt`, `ability`, `reward_model`, `extra_info`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


LETTERS = "ABCDE"  # option i of a question has letter LETTERS[i]
ABILITY = "clinical_reasoning"  # verl's `ability` column: one value for every question


class Question(BaseModel):
    """One multiple-choice question, the record every stage holds: the data stage writes it (as
    Parquet rows, `creason.data.schema`), training, evaluation and the warm-up read it back with
    `creason.data.schema.load_questions`.

    A Parquet row has verl's layout (`data_source`, `prompt`, `ability`, `reward_model`,
    `extra_info`): `to_row` / `from_row` map between the two, and tests/test_contracts.py checks
    `QUESTION_SCHEMA` against this record, so a change to the format starts here.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    # the fields that have columns of their own in a row; all others are `extra_info`'s, in order
    ROW_FIELDS: ClassVar[tuple[str, ...]] = ("messages", "ground_truth", "data_source", "ability")

    question_id: str = Field(description="`<patient pseudonym>-<m|o><k>`: stable across rebuilds with the same seed.")
    patient: str = Field(description="Keyed 64-bit pseudonym of the patient (hex), never the registry identifier.")
    split: Literal["train", "validation", "test"]
    question_kind: Literal["masked_value", "outcome"]
    variable: str
    display_name: str
    section: str
    variable_kind: Literal["categorical", "ordinal", "numeric"]
    options: list[str] = Field(min_length=2, max_length=5)
    answer_text: str
    answer_value: float | None = Field(description="Numeric value of the answer (numeric variables only).")
    messages: list[dict[str, str]] = Field(description="The chat prompt: a system and a user message.")
    ground_truth: str = Field(description="The correct option letter, A-E.", pattern="^[A-E]$")
    data_source: str
    ability: str = ABILITY

    @field_validator("messages")
    @classmethod
    def _chat(cls, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        for m in messages:
            ChatMessage.model_validate(m)
        return messages

    @classmethod
    def info_fields(cls) -> list[str]:
        """The fields stored in a row's `extra_info` struct, in its order."""
        return [name for name in cls.model_fields if name not in cls.ROW_FIELDS]

    @property
    def letters(self) -> str:
        """The valid letters of this question: "AB" for two options."""
        return LETTERS[: len(self.options)]

    def option_text(self, letter: str) -> str:
        """The words of the option at `letter`; ValueError for a letter this question does not have."""
        if len(letter) != 1 or letter not in self.letters:
            raise ValueError(f"{letter!r} is not a letter of question {self.question_id} (letters {self.letters})")
        return self.options[self.letters.index(letter)]

    @property
    def num_options(self) -> int:
        return len(self.options)

    @property
    def user_text(self) -> str:
        """The user message: the patient's record and the question with its options."""
        return next((m["content"] for m in self.messages if m["role"] == "user"), "")

    @property
    def prompt(self) -> list[dict[str, str]]:
        """`messages` under the Parquet column's name (verl's `prompt`), for callers not yet moved."""
        return self.messages

    @classmethod
    def from_row(cls, row: dict) -> "Question":
        """The record of one Parquet row (`QUESTION_SCHEMA`, as `pyarrow` `to_pylist` gives it)."""
        extra = set(row) - {"data_source", "prompt", "ability", "reward_model", "extra_info"}
        if extra or row["reward_model"].get("style") != "rule" or set(row["reward_model"]) != {"style", "ground_truth"}:
            raise ValueError(f"not a question row: columns {sorted(row)}, reward_model {row['reward_model']}")
        return cls(**row["extra_info"], messages=[dict(m) for m in row["prompt"]],
                   ground_truth=row["reward_model"]["ground_truth"], data_source=row["data_source"], ability=row["ability"])

    def to_row(self) -> dict:
        """The Parquet row of this record (the inverse of `from_row`)."""
        info = self.model_dump(include=set(self.info_fields()))
        return {"data_source": self.data_source, "prompt": [dict(m) for m in self.messages], "ability": self.ability,
                "reward_model": {"style": "rule", "ground_truth": self.ground_truth}, "extra_info": info}
