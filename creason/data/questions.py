"""Records -> multiple-choice questions (the C-Reason method), column-wise and pure.

Two kinds of question per patient:
- masked value: hide one present variable, drop every variable whose normalised mutual
  information with it exceeds the cutoff (so the answer does not leak), ask for the value;
- outcome: drop the outcome section (and the target's high-MI variables), ask for an outcome.

Every random choice comes from `rand.uniform` keyed by the patient, so a question depends on
(seed, patient, statistics) only, never on block boundaries or worker count.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from creason.config import QuestionsConfig
from creason.contracts import LETTERS, Question
from creason.data.dictionary import CODED_KINDS, Variable, VariableKind
from creason.data.mixture import component_std
from creason.data.prepare import KEY, SPLIT
from creason.data.rand import splitmix64, uniform
from creason.data.render import RecordRenderer, concat, format_numbers, line_label, parse_record
from creason.data.schema import QUESTION_SCHEMA, assemble_questions
from creason.data.stats import RegistryStats

MASKED, OUTCOME = "masked_value", "outcome"
_TARGET_STREAM = {MASKED: 100, OUTCOME: 200}
_OPTION_STREAM = {MASKED: 1_000, OUTCOME: 2_000}
RECORD_HEADER, QUESTION_HEADER = "Patient record:\n\n", "\n\nQuestion: "  # around the record in a user message


class QuestionPlan(BaseModel):
    """Everything a worker needs to turn a block of prepared rows into questions."""

    variables: list[Variable]
    stats: RegistryStats
    removed: dict[str, list[str]]  # target -> variables dropped for leaking it (MI above cutoff)
    masked_targets: list[str]
    outcome_targets: list[str]
    outcome_variables: list[str]
    config: QuestionsConfig
    seed: int

    def variable(self, name: str) -> Variable:
        return next(v for v in self.variables if v.name == name)

    def option_texts(self, target: str) -> list[str]:
        """The options a coded target's values show (in `stats.coded[target].values` order):
        the dictionary's `answers` words under `questions.answer_words`, else the values."""
        values = self.stats.coded[target].values
        return self.variable(target).answer_texts(values) if self.config.answer_words else list(values)

    def decimals(self) -> dict[str, int]:
        return {name: s.decimals for name, s in self.stats.numeric.items()}

    def excluded(self, kind: str, target: str) -> set[str]:
        hidden = {target, *self.removed.get(target, [])}
        return hidden | set(self.outcome_variables) if kind == OUTCOME else hidden


def can_ask(v: Variable, stats: RegistryStats) -> bool:
    """A target needs statistics: two observed categories, or a fitted numeric distribution."""
    if v.kind in CODED_KINDS:
        return v.name in stats.coded and sum(c > 0 for c in stats.coded[v.name].counts) >= 2
    return v.kind == VariableKind.numeric and v.name in stats.numeric


def make_plan(variables: list[Variable], stats: RegistryStats, nmi: np.ndarray, mi_names: list[str], config: QuestionsConfig, seed: int) -> QuestionPlan:
    """Choose targets and the leakage filter from statistics and the MI matrix."""
    index = {n: i for i, n in enumerate(mi_names)}
    removed = {
        t: [mi_names[j] for j in np.flatnonzero(nmi[index[t]] > config.mi_cutoff) if mi_names[j] != t]
        for t in mi_names
    }
    askable = [v for v in variables if can_ask(v, stats)]
    by_name = {v.name for v in askable}
    unknown = [t for t in config.outcome_targets if t not in {v.name for v in variables}]
    if unknown:
        raise ValueError(f"questions.outcome_targets: {unknown} are not variables shown in prompts")
    return QuestionPlan(
        variables=variables,
        stats=stats,
        removed=removed,
        masked_targets=[v.name for v in askable if not v.outcome],
        outcome_targets=[t for t in config.outcome_targets if t in by_name],
        outcome_variables=[v.name for v in variables if v.outcome],
        config=config,
        seed=seed,
    )


def pick_targets(table: pa.Table, keys: np.ndarray, targets: list[str], per_patient: int, stream: int):
    """Up to `per_patient` distinct present targets per row, uniformly: (rows, target index, k)."""
    if not targets or per_patient == 0:
        return (np.empty(0, np.int64),) * 3
    present = np.stack([table.column(t).is_valid().to_numpy(zero_copy_only=False) for t in targets], axis=1)
    scores = np.where(present, uniform(keys, stream, len(targets)), -1.0)  # (n, T)
    order = np.argsort(-scores, axis=1)[:, :per_patient]  # (n, k)
    chosen = np.take_along_axis(scores, order, axis=1) >= 0
    rows, ks = np.nonzero(chosen)
    return rows, order[rows, ks], ks


def coded_options(values: list[str], texts: list[str], counts: list[int], truth: pa.Array, u: np.ndarray,
                  max_options: int):
    """Options (n, K) as strings and the correct column per row.

    Distractors are other observed values drawn by frequency (Gumbel top-k); `u` (n, C + K)
    holds the row's uniforms: C for the draw, K for the shuffle. `texts[i]` is the words the
    option of `values[i]` shows (`QuestionPlan.option_texts`).
    """
    counts_arr = np.asarray(counts, dtype=np.float64)
    k = min(max_options, int((counts_arr > 0).sum()))
    true_code = pc.index_in(truth, value_set=pa.array(values)).to_numpy(zero_copy_only=False).astype(np.int64)
    n, c = len(true_code), len(values)
    with np.errstate(divide="ignore"):
        scores = np.log(counts_arr)[None, :] - np.log(-np.log(u[:, :c]))
    scores[np.arange(n), true_code] = -np.inf
    distractors = np.argsort(-scores, axis=1)[:, : k - 1]
    codes = np.concatenate([true_code[:, None], distractors], axis=1)  # (n, K), truth first
    return _shuffle(pa.array(texts).take(pa.array(codes.ravel())), codes.shape, u[:, c : c + k])


def numeric_options(x: np.ndarray, v: Variable, s, spacing_sd: float, u: np.ndarray, max_options: int):
    """Evenly spaced options around the truth, spacing `spacing_sd` SDs of its mixture component.

    The truth's place in the ladder is uniform among the places that keep every option in the
    allowed range with the widest spacing; near a bound the spacing shrinks, never below the
    recording resolution.
    """
    res = 10.0 ** -s.decimals
    lo = v.min if v.min is not None else (0.0 if s.nonnegative else -np.inf)
    hi = v.max if v.max is not None else np.inf
    k = int(min(max_options, np.floor((hi - lo) / res + 1e-9) + 1)) if np.isfinite(hi - lo) else max_options
    sd = component_std(x, np.asarray(s.weights), np.asarray(s.means), np.asarray(s.stds))
    step = np.maximum(res, np.round(spacing_sd * sd / res) * res)  # (n,)
    places = np.arange(k)[None, :]  # truth's index in the ladder
    with np.errstate(divide="ignore", invalid="ignore"):
        room_below = np.where(places > 0, (x[:, None] - lo) / places, np.inf)
        room_above = np.where(places < k - 1, (hi - x[:, None]) / (k - 1 - places), np.inf)
    fit = np.floor(np.minimum(step[:, None], np.minimum(room_below, room_above)) / res + 1e-9) * res  # (n, k)
    feasible = (fit >= res - 1e-12) & (fit >= fit.max(axis=1, keepdims=True) - res / 2)  # widest ladders only
    choice = np.minimum((u[:, 0] * feasible.sum(axis=1)).astype(np.int64), feasible.sum(axis=1) - 1)
    place = np.argmax(np.cumsum(feasible, axis=1) > choice[:, None], axis=1)  # choice-th feasible place
    spacing = fit[np.arange(len(x)), place]
    ladder = x[:, None] + (np.arange(k)[None, :] - place[:, None]) * spacing[:, None]  # (n, K)
    ladder = np.round(ladder, s.decimals)
    order = np.argsort(np.abs(np.arange(k)[None, :] - place[:, None]), axis=1, kind="stable")
    truth_first = np.take_along_axis(ladder, order, axis=1)  # column 0 is the truth
    return _shuffle(format_numbers(truth_first.ravel(), s.decimals), truth_first.shape, u[:, 1 : 1 + k])


def _shuffle(flat_options: pa.Array, shape: tuple[int, int], u: np.ndarray):
    """Shuffle each row's options (truth in column 0); returns (options list array, correct index)."""
    n, k = shape
    perm = np.argsort(u[:, :k], axis=1)  # display position j shows option perm[j]
    flat_index = (np.arange(n)[:, None] * k + perm).ravel()
    shuffled = flat_options.take(pa.array(flat_index))
    options = pa.ListArray.from_arrays(pa.array(np.arange(0, n * k + 1, k, dtype=np.int32)), shuffled)
    return options, np.argmax(perm == 0, axis=1)


def question_text(kind: str, v: Variable) -> str:
    if kind == OUTCOME:
        return v.question or f'What was the patient\'s "{line_label(v)}"?'
    return f'The value of "{line_label(v)}" has been removed from this record. What was it?'


def option_lines(options: list[str]) -> str:
    """One question's options block as its user message shows it (`options_text` for one row).

    >>> option_lines(["No", "Yes"])
    'A. No\\nB. Yes'
    """
    return "\n".join(f"{LETTERS[j]}. {text}" for j, text in enumerate(options))


def rotate_options(q: Question, shift: int) -> Question:
    """`q` with its options moved `shift` places up the letters (option j shows at letter
    j - shift, cyclically): the same record, question and option texts, another right letter.
    Training groups spread over the rotations so that no letter is right more often than another
    (`rollout.rotate_options`).
    """
    k = q.num_options
    shift %= k
    if shift == 0:
        return q
    old, options = option_lines(q.options), q.options[shift:] + q.options[:shift]
    if q.user_text.count(old) != 1:
        raise ValueError(f"question {q.question_id}: its options block is not found once in its user message, "
                         "so its options cannot be rotated")
    new = option_lines(options)
    messages = [{**m, "content": m["content"].replace(old, new)} if m["role"] == "user" else m for m in q.messages]
    truth = LETTERS[(LETTERS.index(q.ground_truth) - shift) % k]
    return q.model_copy(update={"options": options, "messages": messages, "ground_truth": truth})


def options_text(options: pa.ListArray, k: int) -> pa.Array:
    """`A. value` lines for lists of exactly k options (`option_lines` of each row)."""
    flat = options.flatten()
    cols = [concat(f"{LETTERS[j]}. ", flat.take(pa.array(np.arange(j, len(flat), k))), "\n" if j < k - 1 else "") for j in range(k)]
    return concat(*cols)


def user_messages(plan: QuestionPlan, renderer: RecordRenderer, rows: np.ndarray, kind: str, target: str, options: pa.ListArray) -> pa.Array:
    """The user message per row: the record without the target and its leaking variables, the
    question, the options (lists of equal length) and the answer instruction. Training questions
    and registry predictions at the endpoint both come from here, so the model sees one format."""
    k = len(options[0]) if len(options) else 0
    record = renderer.render(rows, plan.excluded(kind, target))
    return concat(RECORD_HEADER, record, f"{QUESTION_HEADER}{question_text(kind, plan.variable(target))}\n\nOptions:\n",
                  options_text(options, k), "\n\nThink step by step, then give the letter of your answer in \\boxed{}.")


def questions_for_target(plan: QuestionPlan, renderer: RecordRenderer, table: pa.Table, keys: np.ndarray, kind: str, target: str, rows: np.ndarray, ks: np.ndarray) -> pa.Table:
    """Questions of one kind about one target variable for the given rows."""
    v = plan.variable(target)
    take = pa.array(rows, type=pa.int64())
    truth = table.column(target).take(take).combine_chunks()
    draws = (len(v.values) if v.kind in CODED_KINDS else 1) + plan.config.max_options
    u = uniform(splitmix64(keys[rows] + ks.astype(np.uint64)), _OPTION_STREAM[kind], draws)  # (n, draws)
    if v.kind in CODED_KINDS:
        st, texts = plan.stats.coded[target], plan.option_texts(target)
        options, correct = coded_options(st.values, texts, st.counts, truth, u, plan.config.max_options)
        answer_text = pa.array(texts).take(pc.index_in(truth, value_set=pa.array(st.values)))
        answer_value = pa.nulls(len(rows), pa.float64())
    else:
        st = plan.stats.numeric[target]
        x = truth.to_numpy(zero_copy_only=False).astype(np.float64)
        options, correct = numeric_options(x, v, st, plan.config.distractor_spacing_sd, u, plan.config.max_options)
        answer_text, answer_value = format_numbers(x, st.decimals), pa.array(x)
    user = user_messages(plan, renderer, rows, kind, target, options)
    return assemble_questions(
        plan=plan, kind=kind, variable=v, keys=keys[rows], ks=ks, split=table.column(SPLIT).take(take).combine_chunks(), user=user,
        options=options, letters=np.asarray(list(LETTERS))[correct], answer_text=answer_text, answer_value=answer_value,
    )


def build_questions(table: pa.Table, plan: QuestionPlan) -> pa.Table:
    """All questions for a block of prepared rows, in the output schema."""
    keys = table.column(KEY).to_numpy(zero_copy_only=False).astype(np.uint64)
    renderer = RecordRenderer(table, plan.variables, plan.decimals())
    parts = []
    for kind, targets, per_patient in (
        (MASKED, plan.masked_targets, plan.config.masked_per_patient),
        (OUTCOME, plan.outcome_targets, plan.config.outcome_per_patient),
    ):
        rows, target_index, ks = pick_targets(table, keys, targets, per_patient, _TARGET_STREAM[kind])
        for t in np.unique(target_index):
            sel = target_index == t
            parts.append(questions_for_target(plan, renderer, table, keys, kind, targets[t], rows[sel], ks[sel]))
    return pa.concat_tables(parts) if parts else QUESTION_SCHEMA.empty_table()


def record_values(user_text: str) -> dict[str, str]:
    """The record a question's user message shows, as {line label: value text} (`user_messages`'s
    layout read back); {} when the message has no record."""
    start, end = user_text.find(RECORD_HEADER), user_text.find(QUESTION_HEADER)
    if start < 0 or end < start:
        return {}
    return parse_record(user_text[start + len(RECORD_HEADER):end])
