"""Question building, in-process (the pure path every Ray worker runs)."""

import re
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from scipy.stats import chisquare

from creason.config import QuestionsConfig
from creason.contracts import Question
from creason.data.dictionary import sepsis_dictionary
from creason.data.mixture import fit_gmm_1d
from creason.data.mutual_info import joint_counts, normalized_mi
from creason.data.questions import LETTERS, build_questions
from creason.data.synthetic import generate_block
from tests.helpers import column, plan_in_process, questions_in_process, tiny_registry, user_prompts

CONFIG = QuestionsConfig(outcome_targets=["death", "shock"])


@pytest.fixture(scope="module")
def tiny_questions(request):
    from creason.data.dictionary import DataDictionary
    from tests.conftest import TINY_VARIABLES

    dictionary = DataDictionary.model_validate(dict(name="tiny", patient_id="pid", time_zero="onset", variables=TINY_VARIABLES))
    return questions_in_process(tiny_registry(6000), dictionary, CONFIG)


def test_rows_follow_the_contract(tiny_questions):
    for row in tiny_questions.slice(0, 300).to_pylist():
        Question.from_row(row)


def test_correct_letter_points_at_the_answer_and_options_are_unique(tiny_questions):
    for row in tiny_questions.to_pylist():
        info = row["extra_info"]
        options = info["options"]
        assert len(set(options)) == len(options)
        assert options[LETTERS.index(row["reward_model"]["ground_truth"])] == info["answer_text"]
        prompt = row["prompt"][1]["content"]
        for letter, option in zip(LETTERS, options):
            assert f"\n{letter}. {option}" in prompt


def test_numeric_options_stay_in_range_and_on_the_data_grid(tiny_questions):
    gcs = tiny_questions.filter(pc.equal(tiny_questions.column("extra_info").combine_chunks().field("variable"), "gcs"))
    values = np.array([float(o) for opts in column(gcs, "options") for o in opts])
    assert len(values) > 0 and values.min() >= 3 and values.max() <= 15
    assert np.all(values == np.round(values))


def test_answer_letter_is_uniform_for_each_number_of_options(tiny_questions):
    letters = column(tiny_questions, "ground_truth")
    sizes = [len(o) for o in column(tiny_questions, "options")]
    for k in sorted(set(sizes)):
        counts = Counter(letter for letter, size in zip(letters, sizes) if size == k)
        observed = [counts.get(LETTERS[j], 0) for j in range(k)]
        assert sum(observed) > 200
        assert chisquare(observed).pvalue > 0.001, (k, observed)


def test_leakage_filter_hides_the_duplicate_of_the_target(tiny_questions):
    variables = column(tiny_questions, "variable")
    prompts = user_prompts(tiny_questions)
    about_lactate = [p for p, v in zip(prompts, variables) if v == "lactate"]
    about_gcs = [p for p, v in zip(prompts, variables) if v == "gcs"]
    assert about_lactate and about_gcs
    assert not any("Lactate (point of care)" in p.split("Question:")[0] for p in about_lactate)
    assert sum("Lactate (point of care)" in p for p in about_gcs) > 0.8 * len(about_gcs)


def test_outcome_questions_hide_the_outcome_section(tiny_questions):
    kinds = column(tiny_questions, "question_kind")
    prompts = user_prompts(tiny_questions)
    outcome_prompts = [p for p, k in zip(prompts, kinds) if k == "outcome"]
    assert outcome_prompts
    assert not any("[Outcomes/Mortality]" in p for p in outcome_prompts)
    assert any("Did the patient die in hospital?" in p for p in outcome_prompts)
    masked = [p for p, k in zip(prompts, kinds) if k == "masked_value"]
    assert any("[Outcomes/Mortality]" in p for p in masked)


def test_masked_target_line_is_removed(tiny_questions):
    for row in tiny_questions.slice(0, 500).to_pylist():
        info = row["extra_info"]
        record = row["prompt"][1]["content"].split("Question:")[0]
        assert f"\n{info['display_name']}" not in record


def test_same_seed_same_questions_regardless_of_blocks(tiny_dictionary):
    raw = tiny_registry(3000)
    whole = questions_in_process(raw, tiny_dictionary, CONFIG)
    again = questions_in_process(raw, tiny_dictionary, CONFIG)
    assert whole.equals(again)
    from creason.data.prepare import prepare_table

    prepared = prepare_table(raw, tiny_dictionary, 0, (0.8, 0.1, 0.1))
    plan = plan_in_process(prepared, tiny_dictionary, CONFIG)
    halves = pa.concat_tables([build_questions(prepared.slice(0, 1234), plan), build_questions(prepared.slice(1234), plan)])
    key = lambda t: sorted(zip(column(t, "question_id"), user_prompts(t), column(t, "ground_truth")))  # noqa: E731
    assert key(halves) == key(build_questions(prepared, plan))


def test_another_seed_gives_other_questions(tiny_dictionary):
    raw = tiny_registry(1000)
    a = questions_in_process(raw, tiny_dictionary, CONFIG, seed=0)
    b = questions_in_process(raw, tiny_dictionary, CONFIG, seed=1)
    assert column(a, "question_id") != column(b, "question_id")


def test_split_is_per_patient(tiny_dictionary):
    questions = questions_in_process(tiny_registry(4000), tiny_dictionary, CONFIG)
    split_of: dict[str, set] = {}
    for patient, split in zip(column(questions, "patient"), column(questions, "split")):
        split_of.setdefault(patient, set()).add(split)
    assert all(len(s) == 1 for s in split_of.values())
    shares = Counter(next(iter(s)) for s in split_of.values())
    assert abs(shares["train"] / len(split_of) - 0.8) < 0.03


def test_no_identifier_or_absolute_date_reaches_a_prompt():
    dictionary = sepsis_dictionary()
    raw = generate_block(dictionary, 2000, seed=3, block_index=0, first_patient_number=0)
    canary_ids = pa.array([f"CANARY-PID-{i:05d}" for i in range(len(raw))])
    raw = raw.set_column(raw.schema.get_field_index("patient_id"), "patient_id", canary_ids)
    raw = raw.set_column(raw.schema.get_field_index("hospital_code"), "hospital_code", pa.array(["CANARYHOSP"] * len(raw)))
    shift = np.timedelta64(68 * 365, "D")  # 2019-2024 -> 2087-2092: years that appear nowhere else
    for v in dictionary.of_kind(dictionary["admission_datetime"].kind):
        col = raw.column(v.name).to_numpy(zero_copy_only=False).astype("datetime64[s]") + shift
        raw = raw.set_column(raw.schema.get_field_index(v.name), v.name, pa.array(col, type=pa.timestamp("s")))
    questions = questions_in_process(raw, dictionary, QuestionsConfig())
    prompts = "\n".join(user_prompts(questions))
    everything = prompts + "\n".join(map(str, questions.column("extra_info").to_pylist()))
    assert "CANARY" not in everything
    assert not re.search(r"20(8[7-9]|9[0-3])", prompts)  # no shifted year at all in a prompt
    assert not re.search(r"20(8[7-9]|9[0-3])-\d\d", everything)  # no shifted date anywhere
    assert "hours from time zero" in prompts


def test_normalized_mi_matches_hand_computation():
    # Joint table [[40, 10], [10, 40]]: p = .4, .1, .1, .4; marginals .5.
    # I = 2(.4 ln 1.6) + 2(.1 ln .4) = 0.376005 - 0.183258 = 0.192745; H = ln 2 = 0.693147.
    a = np.array([0] * 40 + [0] * 10 + [1] * 10 + [1] * 40)
    b = np.array([0] * 40 + [1] * 10 + [0] * 10 + [1] * 40)
    cards = np.array([2, 2])
    nmi = normalized_mi(joint_counts(np.stack([a, b], 1), cards), cards)
    assert nmi[0, 1] == pytest.approx(0.192745 / 0.693147, abs=1e-5)
    assert nmi[0, 0] == pytest.approx(1.0)


def test_mixture_recovers_two_separated_components():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(1.0, 0.3, 3000), rng.normal(6.0, 1.0, 1000)])
    weights, means, stds = fit_gmm_1d(x, k=2)
    assert means == pytest.approx([1.0, 6.0], abs=0.1)
    assert stds == pytest.approx([0.3, 1.0], abs=0.1)
    assert weights == pytest.approx([0.75, 0.25], abs=0.02)


def test_rotated_options_keep_the_record_and_point_at_the_same_answer(tiny_questions):
    from creason.data.questions import option_lines, rotate_options

    for row in tiny_questions.slice(0, 200).to_pylist():
        q = Question.from_row(row)
        assert option_lines(q.options) in q.user_text  # the block the rotation rewrites is the one built
        for shift in range(q.num_options):
            r = rotate_options(q, shift)
            assert r.options[LETTERS.index(r.ground_truth)] == q.answer_text
            assert r.options == q.options[shift:] + q.options[:shift]
            before, after = q.user_text.split(option_lines(q.options))
            assert r.user_text == before + option_lines(r.options) + after
        # over all rotations, the right answer sits at every letter exactly once
        assert sorted(rotate_options(q, s).ground_truth for s in range(q.num_options)) == list(q.letters)


def test_rotating_a_question_whose_options_block_is_not_found_is_an_error(tiny_questions):
    from creason.data.questions import rotate_options

    q = Question.from_row(tiny_questions.slice(0, 1).to_pylist()[0])
    edited = q.model_copy(update={"messages": [{**m, "content": m["content"].replace("A. ", "A) ")} for m in q.messages]})
    with pytest.raises(ValueError, match=f"question {q.question_id}: its options block is not found"):
        rotate_options(edited, 1)


def test_record_values_read_back_each_line_of_the_rendered_record(tiny_questions):
    from creason.data.questions import record_values
    from creason.data.render import parse_record

    assert parse_record("[Labs/First]\nLactate (mmol/L): 4.5\nNote: a: b\n\n[Severity]\nShock: No") == {
        "Lactate (mmol/L)": "4.5", "Note": "a: b", "Shock": "No"}
    for row in tiny_questions.slice(0, 300).to_pylist():
        user = row["prompt"][1]["content"]
        record = user.split("\n\nQuestion:")[0].removeprefix("Patient record:\n\n")
        lines = [line for line in record.splitlines() if line and not line.startswith("[")]
        values = record_values(user)
        assert len(values) == len(lines) > 0
        assert [f"{k}: {v}" for k, v in values.items()] == lines


def test_answer_words_change_the_options_and_nothing_else(tiny_dictionary):
    """`questions.answer_words`: a coded target's options (and answer_text) read as the dictionary's
    `answers` words; the record, the right letter and every other question stay the same."""
    words = {"No": "Survived", "Yes": "Died"}
    dictionary = tiny_dictionary.model_copy(update={"variables": [
        v.model_copy(update={"answers": words}) if v.name == "death" else v for v in tiny_dictionary.variables]})
    raw = tiny_registry(1500)
    plain = questions_in_process(raw, dictionary, CONFIG)
    worded = questions_in_process(raw, dictionary, CONFIG.model_copy(update={"answer_words": True}))
    assert column(plain, "question_id") == column(worded, "question_id")
    assert column(plain, "ground_truth") == column(worded, "ground_truth")
    changed = 0
    for variable, a_opts, b_opts, a_text, b_text, a_user, b_user in zip(
            column(plain, "variable"), column(plain, "options"), column(worded, "options"), column(plain, "answer_text"),
            column(worded, "answer_text"), user_prompts(plain), user_prompts(worded)):
        if variable != "death":
            assert (a_opts, a_text, a_user) == (b_opts, b_text, b_user)
            continue
        changed += 1
        assert b_opts == [words[o] for o in a_opts] and b_text == words[a_text]
        assert b_user.split("Options:")[0] == a_user.split("Options:")[0]  # the record and question unchanged
        assert "\nA. " + b_opts[0] in b_user
    assert changed > 100
