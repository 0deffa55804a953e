"""The data dictionary: what each registry column means, and how it may be used.

The same YAML format describes the synthetic sepsis registry and a user's own registry.
A dictionary is validated when loaded; errors name the variable and the field.
"""

from __future__ import annotations

import re
from enum import Enum
from importlib import resources
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_SECTION = re.compile(r"^[^/\[\]]+/[^/\[\]]+$")


class VariableKind(str, Enum):
    categorical = "categorical"
    ordinal = "ordinal"
    numeric = "numeric"
    datetime = "datetime"
    free_text = "free_text"
    identifier = "identifier"


#: Kinds whose column holds strings drawn from `values`.
CODED_KINDS = (VariableKind.categorical, VariableKind.ordinal)


class Variable(BaseModel):
    """One registry column."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Column name in the registry table (snake_case).")
    display_name: str = Field(description="Human-readable name used in prompts.")
    section: str = Field(description="`Domain/Section` as in the eCRF; rendered as `[Domain/Section]`.")
    kind: VariableKind
    unit: str | None = Field(None, description="Unit shown in prompts, e.g. `mmol/L`.")
    values: list[str] | None = Field(
        None, description="Allowed values of a categorical or ordinal variable (in order for ordinal)."
    )
    min: float | None = Field(None, description="Smallest allowed value of a numeric variable.")
    max: float | None = Field(None, description="Largest allowed value of a numeric variable.")
    decimals: int | None = Field(
        None, ge=0, le=6, description="Decimals a numeric value is recorded with; inferred from data when absent."
    )
    answers: dict[str, str] | None = Field(
        None, description="How values of a categorical or ordinal variable read as answer options when it is asked "
        "about and `questions.answer_words` is on, e.g. `{No: Survived to discharge, Yes: Died in hospital}`; a value "
        "left out reads as itself. The record still shows the values."
    )
    outcome: bool = Field(False, description="True for outcomes (hidden in outcome questions).")
    question: str | None = Field(
        None, description="How to ask for this variable in an outcome question, e.g. `Did the patient die in hospital?`"
    )
    description: str = ""

    @field_validator("name")
    @classmethod
    def _snake_case(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"variable name {v!r} must be snake_case (letters, digits, underscores)")
        return v

    @field_validator("section")
    @classmethod
    def _domain_section(cls, v: str) -> str:
        if not _SECTION.match(v):
            raise ValueError(f"section {v!r} must look like 'Domain/Section'")
        return v

    @model_validator(mode="after")
    def _kind_fields(self) -> "Variable":
        if self.kind in CODED_KINDS:
            if not self.values or len(self.values) < 2:
                raise ValueError(f"{self.kind.value} variable needs at least 2 allowed `values`")
            if len(set(self.values)) != len(self.values):
                raise ValueError("`values` must be unique")
            self._check_answers()
        elif self.values is not None or self.answers is not None:
            raise ValueError(f"`values` and `answers` only apply to categorical or ordinal variables, not {self.kind.value}")
        if self.kind != VariableKind.numeric and (self.min is not None or self.max is not None):
            raise ValueError("`min`/`max` only apply to numeric variables")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"`min` ({self.min}) is greater than `max` ({self.max})")
        return self

    def _check_answers(self) -> None:
        unknown = sorted(set(self.answers or {}) - set(self.values))
        if unknown:
            raise ValueError(f"`answers` names {unknown}, which are not among `values` {self.values}")
        texts = self.answer_texts(self.values)
        if len(set(texts)) != len(texts):
            raise ValueError(f"`answers` must read differently for every value, got {texts}")

    def answer_texts(self, values: list[str]) -> list[str]:
        """`values` as this variable's answer options read them (its `answers` words, else the value)."""
        return [(self.answers or {}).get(x, x) for x in values]

    @property
    def label(self) -> str:
        """`Display name (unit)` as it appears in a prompt."""
        return f"{self.display_name} ({self.unit})" if self.unit else self.display_name


class DataDictionary(BaseModel):
    """All variables of a registry, in prompt order."""

    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    patient_id: str = Field(description="Identifier column that names a patient (used for splitting, never shown).")
    time_zero: str | None = Field(
        None, description="Datetime column that is time zero; other datetimes are shown as hours relative to it."
    )
    variables: list[Variable]
    profiles: dict[str, list[str]] = Field(
        default_factory=dict, description="Named subsets of variables, e.g. a compact profile for fast runs."
    )

    @model_validator(mode="after")
    def _consistent(self) -> "DataDictionary":
        names = [v.name for v in self.variables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate variable names: {dupes}")
        by_name = {v.name: v for v in self.variables}
        pid = by_name.get(self.patient_id)
        if pid is None or pid.kind != VariableKind.identifier:
            raise ValueError(f"patient_id {self.patient_id!r} must name an identifier variable")
        if self.time_zero is not None:
            tz = by_name.get(self.time_zero)
            if tz is None or tz.kind != VariableKind.datetime:
                raise ValueError(f"time_zero {self.time_zero!r} must name a datetime variable")
        for profile, members in self.profiles.items():
            unknown = [m for m in members if m not in by_name]
            if unknown:
                raise ValueError(f"profile {profile!r} names unknown variables: {unknown}")
        return self

    def __getitem__(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(f"no variable {name!r} in dictionary {self.name!r}")

    @property
    def names(self) -> list[str]:
        return [v.name for v in self.variables]

    def of_kind(self, *kinds: VariableKind) -> list[Variable]:
        return [v for v in self.variables if v.kind in kinds]

    def select(self, profile: str | None) -> "DataDictionary":
        """The dictionary restricted to a profile (identifiers and time zero always kept)."""
        if profile is None or profile == "full":
            return self
        if profile not in self.profiles:
            raise KeyError(f"unknown profile {profile!r}; dictionary {self.name!r} has {sorted(self.profiles)}")
        keep = set(self.profiles[profile]) | {self.patient_id}
        if self.time_zero:
            keep.add(self.time_zero)
        variables = [v for v in self.variables if v.name in keep or v.kind == VariableKind.identifier]
        return self.model_copy(update={"variables": variables, "profiles": {}})


class DictionaryError(ValueError):
    """A data dictionary file that cannot be used; the message names the file and the field."""


def load_dictionary(path: str | Path) -> DataDictionary:
    """Load and validate a dictionary YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DictionaryError(f"{path}: data dictionary file not found") from None
    except yaml.YAMLError as e:
        raise DictionaryError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise DictionaryError(f"{path}: expected a mapping with `name` and `variables`")
    try:
        return DataDictionary.model_validate(raw)
    except ValidationError as e:
        raise DictionaryError(f"{path}: {_describe(e, raw)}") from None


def _describe(err: ValidationError, raw: dict) -> str:
    """Turn pydantic locations like ('variables', 3, 'kind') into `variables[3] (lactate).kind`."""
    lines = []
    for e in err.errors():
        loc = list(e["loc"])
        where = []
        for i, part in enumerate(loc):
            if isinstance(part, int) and i > 0 and loc[i - 1] == "variables":
                where.append(f"[{part}] ({_variable_name(raw, part)})")
            else:
                where.append(("." if where else "") + str(part))
        lines.append(f"{''.join(where) or 'dictionary'}: {e['msg']}")
    return "; ".join(lines)


def _variable_name(raw: dict, index: int) -> str:
    variables = raw.get("variables")
    if isinstance(variables, list) and index < len(variables) and isinstance(variables[index], dict):
        return str(variables[index].get("name", "?"))
    return "?"


def builtin_dictionary_path(name: str = "sepsis") -> Path:
    """Path of a dictionary shipped with the package."""
    return Path(str(resources.files("creason.data") / "dictionaries" / f"{name}.yaml"))


def sepsis_dictionary(profile: str | None = None) -> DataDictionary:
    """The synthetic sepsis registry's dictionary, optionally restricted to a profile."""
    return load_dictionary(builtin_dictionary_path("sepsis")).select(profile)
