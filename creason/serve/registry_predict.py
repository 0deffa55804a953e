"""One patient record -> the prompt a trained model saw in training, and its answer -> an option.

The record goes through the same functions as a registry file in question building: each value is
checked and typed by the dictionary (`creason.data.registry`), identifiers and absolute dates are
removed by `prepare_table`, and the record is rendered by `RecordRenderer` without the target and
its leaking variables (`QuestionPlan.excluded`). Only the options differ from training, because a
prediction has no true value to place among them:

- categorical / ordinal target: every value observed in training, the most frequent
  `max_options` if there are more, in dictionary order (in the dictionary's `answers` words under
  `questions.answer_words`, as training showed them);
- numeric target: a ladder centred on the median of the training mixture: `max_options` values
  `distractor_spacing_sd` SDs of the median's mixture component apart (the spacing of training's
  distractors), shifted into the variable's range, at its recording resolution, ascending.

No Ray, no vLLM here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from creason.data.dictionary import CODED_KINDS, DataDictionary, VariableKind, load_dictionary, sepsis_dictionary
from creason.data.pipeline import PLAN_FILE
from creason.data.prepare import prepare_table
from creason.data.mixture import component_std
from creason.data.questions import LETTERS, MASKED, OUTCOME, QuestionPlan, user_messages
from creason.data.registry import parse_column
from creason.data.render import RecordRenderer, format_numbers
from creason.rewards import extract_boxed_letter

MANIFEST_FILE = "manifest.json"
PLACEHOLDER_PATIENT = "serve-request"  # the patient id of a request's 1-row table (never shown)


class RecordError(ValueError):
    """A record or target that cannot be used; `param` names the field (`record.lactate`, `target`)."""

    def __init__(self, param: str, message: str):
        super().__init__(f"{param}: {message}")
        self.param, self.message = param, message


class RegistryContext(BaseModel):
    """What registry prediction needs from a question build: its plan and its data dictionary."""

    model_config = ConfigDict(frozen=True)

    plan: QuestionPlan
    dictionary: DataDictionary
    seed: int
    split_fractions: tuple[float, float, float]

    @classmethod
    def load(cls, questions_dir: str | Path) -> "RegistryContext":
        """From a build's `plan.json` and `manifest.json`. Only the manifest's dictionary, profile
        and seed are read (as `load_registry_dictionary` reads them), so a build made under an
        older config schema still loads."""
        folder = Path(questions_dir)
        plan = QuestionPlan.model_validate_json((folder / PLAN_FILE).read_text())
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        data = manifest["config"]["data"]
        dictionary = (load_dictionary(data["dictionary"]).select(data["profile"]) if data.get("dictionary")
                      else sepsis_dictionary(data["profile"]))
        s = plan.config.split
        return cls(plan=plan, dictionary=dictionary, seed=manifest["seed"], split_fractions=(s.train, s.validation, s.test))


class PredictionPrompt(BaseModel):
    """A record turned into a question, ready for the chat template."""

    kind: str
    target: str
    messages: list[dict[str, str]]  # [system, user], as in the question Parquet
    options: list[str]
    ignored_variables: list[str]


# ---- record -> prepared 1-row table --------------------------------------------------------------


def record_table(record: dict[str, Any], dictionary: DataDictionary, identifiers: str = "drop") -> pa.Table:
    """A raw 1-row registry table from `record`, typed as `read_registry_file` types a file.

    Unknown names are rejected (as unknown columns of a file are); values are checked against
    the dictionary (allowed values, numeric range, ISO 8601 dates). Identifiers are rejected with
    `identifiers="reject"`; otherwise they never enter the table: the patient id is a placeholder
    and other identifier columns are null (`prepare_table` drops them all in any case).
    """
    by_name = {v.name: v for v in dictionary.variables}
    unknown = sorted(set(record) - set(by_name))
    if unknown:
        raise RecordError(f"record.{unknown[0]}", f"unknown variable: not in the data dictionary this model was trained with "
                                                  f"({dictionary.name!r}; {len(unknown)} unknown: {unknown[:10]})")
    given_ids = sorted(n for n in record if by_name[n].kind == VariableKind.identifier and record[n] is not None)
    if given_ids and identifiers == "reject":
        raise RecordError(f"record.{given_ids[0]}", "identifiers are not accepted by this endpoint; leave them out")
    columns = {}
    for v in dictionary.variables:
        value = PLACEHOLDER_PATIENT if v.name == dictionary.patient_id else None if v.kind == VariableKind.identifier else record.get(v.name)
        text = None if value is None else str(value)
        typed, bad, expected = parse_column(pa.chunked_array([pa.array([text], pa.string())]), v)
        if bad[0]:
            shown = "" if v.kind in (VariableKind.datetime, VariableKind.free_text) else f" {value!r}"
            raise RecordError(f"record.{v.name}", f"value{shown}: expected {expected}")
        columns[v.name] = typed
    return pa.table(columns)


def ignored_variables(record: dict[str, Any], dictionary: DataDictionary, plan: QuestionPlan) -> list[str]:
    """Variables of the record that no prompt shows (identifiers, free text when not shown, time zero)."""
    shown = {v.name for v in plan.variables}
    return sorted(n for n, value in record.items() if value is not None and n not in shown)


# ---- options without a true value -------------------------------------------------------------


def mixture_median(weights: list[float], means: list[float], stds: list[float]) -> float:
    """Median of a 1-D Gaussian mixture, by bisection on its CDF."""
    w, m, s = (np.asarray(a, dtype=np.float64) for a in (weights, means, stds))
    w = w / w.sum()

    def cdf(x: float) -> float:
        return float(sum(wi * 0.5 * (1 + math.erf((x - mi) / (si * math.sqrt(2)))) for wi, mi, si in zip(w, m, s)))

    lo, hi = float(np.min(m - 8 * s)), float(np.max(m + 8 * s))
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


def numeric_ladder(centre: float, step: float, k: int, lo: float, hi: float, decimals: int) -> list[float]:
    """k values `step` apart around `centre`, shifted (not shrunk) into [lo, hi]; shrunk only when
    the range is narrower than the ladder, never below the resolution 10^-decimals (fewer values then)."""
    res = 10.0**-decimals
    if np.isfinite(hi - lo):
        k = int(min(k, np.floor((hi - lo) / res + 1e-9) + 1))
        step = min(step, np.floor((hi - lo) / max(k - 1, 1) / res + 1e-9) * res)
    ladder = float(centre) + (np.arange(k) - (k - 1) // 2) * float(step)
    ladder += max(0.0, lo - ladder[0]) - max(0.0, ladder[-1] - hi)
    return np.round(ladder, decimals).tolist()


def prediction_options(plan: QuestionPlan, target: str) -> list[str]:
    """The options offered for `target` when its true value is unknown (see the module docstring)."""
    v, k = plan.variable(target), plan.config.max_options
    if v.kind in CODED_KINDS:
        st = plan.stats.coded[target]
        observed = [i for i, c in enumerate(st.counts) if c > 0]
        top = sorted(observed, key=lambda i: -st.counts[i])[:k]  # stable: ties keep dictionary order
        texts = plan.option_texts(target)
        return [texts[i] for i in sorted(top)]
    st = plan.stats.numeric[target]
    res = 10.0**-st.decimals
    lo = v.min if v.min is not None else (0.0 if st.nonnegative else -np.inf)
    hi = v.max if v.max is not None else np.inf
    centre = float(np.clip(np.round(mixture_median(st.weights, st.means, st.stds), st.decimals), lo, hi))
    sd = component_std(np.array([centre]), np.asarray(st.weights), np.asarray(st.means), np.asarray(st.stds))[0]
    step = max(res, round(plan.config.distractor_spacing_sd * sd / res) * res)  # as `numeric_options` spaces them
    return format_numbers(np.array(numeric_ladder(centre, step, k, lo, hi, st.decimals)), st.decimals).to_pylist()


# ---- the prompt ----------------------------------------------------------------------------------


def question_kind(plan: QuestionPlan, target: str, kind: str | None) -> str:
    """The kind of question asked about `target` (`outcome` first where both are possible)."""
    allowed = ([OUTCOME] if target in plan.outcome_targets else []) + ([MASKED] if target in plan.masked_targets else [])
    if not allowed:
        raise RecordError("target", f"{target!r} cannot be predicted by this model; choose one of "
                                    f"{sorted(set(plan.outcome_targets) | set(plan.masked_targets))}")
    if kind is None:
        return allowed[0]
    if kind not in allowed:
        raise RecordError("kind", f"{target!r} is asked about as {allowed}, not {kind!r}")
    return kind


def user_prompt(plan: QuestionPlan, prepared: pa.Table, row: int, kind: str, target: str, options: list[str]) -> str:
    """The user message of a question about `target` for row `row` of a prepared table, with
    the given options (training's `user_messages`, options chosen by the caller)."""
    renderer = RecordRenderer(prepared, plan.variables, plan.decimals())
    listed = pa.ListArray.from_arrays(pa.array([0, len(options)], pa.int32()), pa.array(options, pa.string()))
    return user_messages(plan, renderer, np.array([row]), kind, target, listed)[0].as_py()


def build_prediction_prompt(ctx: RegistryContext, record: dict[str, Any], target: str, kind: str | None = None,
                            identifiers: str = "drop") -> PredictionPrompt:
    """Record and target -> the [system, user] messages of the question, and its options."""
    if target not in {v.name for v in ctx.plan.variables}:
        raise RecordError("target", f"{target!r} is not a variable shown to this model")
    kind = question_kind(ctx.plan, target, kind)
    raw = record_table(record, ctx.dictionary, identifiers)
    prepared = prepare_table(raw, ctx.dictionary, ctx.seed, ctx.split_fractions, ctx.plan.config.include_free_text)
    options = prediction_options(ctx.plan, target)
    user = user_prompt(ctx.plan, prepared, 0, kind, target, options)
    return PredictionPrompt(
        kind=kind, target=target, options=options,
        messages=[{"role": "system", "content": ctx.plan.config.system_prompt}, {"role": "user", "content": user}],
        ignored_variables=ignored_variables(record, ctx.dictionary, ctx.plan),
    )


def answer_letter(text: str, n_options: int) -> str | None:
    """The letter of the first `\\boxed{X}` in `text` if it names one of the options, else None."""
    letter = extract_boxed_letter(text)
    return letter if letter is not None and letter in LETTERS[:n_options] else None
