"""The scoring path without any engine: a FAKE model that always answers "A" on a planted set,
the baselines, and the whole `evaluate` run (files, report, plots) with that fake."""

from __future__ import annotations

import json

import pytest

from creason.config import load_config
from creason.data.schema import load_questions
from creason.evaluate.baselines import chance_levels, majority_letters, majority_texts, random_letters
from creason.evaluate.questions import answer_counts
from creason.evaluate.run import evaluate, latest_policy, resolve_models
from creason.train.checkpoint import mark_complete
from creason.evaluate.scoring import baseline_systems, model_system, score_systems
from tests.evaluate.planted import TEST_ROWS, fake_always_a_generate, write_planted


@pytest.fixture
def planted(tmp_path):
    return write_planted(tmp_path / "questions")


def system_named(results: dict, name: str) -> dict:
    return next(s for s in results["systems"] if s["name"] == name)


def test_questions_load_in_id_order_with_kinds_and_subset(planted):
    questions = load_questions(planted, "test")
    assert [q.question_id for q in questions] == sorted(q.question_id for q in questions)
    assert len(questions) == 10 and questions[0].letters == "AB" and questions[2].letters == "ABCDE"
    assert len(load_questions(planted, "test", kinds=["outcome"])) == 4
    subset = load_questions(planted, "test", max_questions=5, seed=1)
    assert len(subset) == 5 and subset == load_questions(planted, "test", max_questions=5, seed=1)
    with pytest.raises(FileNotFoundError, match="build-questions"):
        load_questions(planted, "validation")


def test_always_a_scores_the_planted_accuracy(planted):
    questions = load_questions(planted, "test")
    answers, run = fake_always_a_generate("fake", questions)
    system = model_system("always A", "fake", questions, answers, run)
    results = score_systems(questions, [system], n_samples=500, seed=0)
    s = results["systems"][0]
    # Ground truth is "A" on 4 of 10 questions: 3 of 6 masked-value ones, 1 of 4 outcome ones.
    assert s["overall"]["accuracy"] == pytest.approx(0.4) and s["overall"]["correct"] == 4
    kinds = s["breakdowns"]["question_kind"]
    assert kinds["masked_value"]["accuracy"] == pytest.approx(0.5) and kinds["outcome"]["accuracy"] == pytest.approx(0.25)
    # 2 options: 6 questions, A right on 2 (shock #0, death #6); 3 options: 1 of 2; 5 options: 1 of 2
    options = s["breakdowns"]["num_options"]
    assert {k: v["accuracy"] for k, v in options.items()} == pytest.approx({"2": 2 / 6, "3": 0.5, "5": 0.5})
    assert s["breakdowns"]["section"]["Outcomes/Mortality"]["accuracy"] == pytest.approx(0.25)
    assert s["overall"]["ci_low"] <= 0.4 <= s["overall"]["ci_high"]
    # Boxed on questions 0, 3, 6, 9 (truths A, C, A, B): 2 right of 10, box missing on 6.
    assert s["boxed"]["accuracy"] == pytest.approx(0.2) and s["box_missing_rate"] == pytest.approx(0.6)
    assert s["boxed_forced_agreement"] == 1.0 and s["letter_top_rate"] == 1.0


def test_answers_out_of_order_are_refused(planted):
    questions = load_questions(planted, "test")
    answers, _ = fake_always_a_generate("fake", questions)
    with pytest.raises(ValueError, match="question order"):
        model_system("x", "fake", questions, answers[::-1])


def test_random_baseline_expected_and_drawn(planted):
    questions = load_questions(planted, "test")
    # options: 2, 2, 5, 5, 3, 3, 2, 2, 2, 2 -> mean of 1/k = (6 / 2 + 2 / 5 + 2 / 3) / 10
    assert chance_levels(questions).mean() == pytest.approx((3 + 0.4 + 2 / 3) / 10)
    draw = random_letters(questions, seed=4)
    assert draw == random_letters(questions, seed=4)
    assert all(x in q.letters for x, q in zip(draw, questions))


def test_majority_baseline_from_train(planted):
    questions = load_questions(planted, "test")
    majority = majority_texts(answer_counts(planted, "train"))
    assert majority == {"shock": "No", "lactate": "2.0", "gcs": "15", "death": "No"}
    letters, hit = majority_letters(questions, majority, seed=0)
    # shock "No" is B; lactate "2.0" is no option (random); gcs "15" is A; death "No" is A
    assert [letters[i] for i in (0, 1, 4, 5, 6, 7, 8, 9)] == ["B", "B", "A", "A", "A", "A", "A", "A"]
    assert hit.tolist() == [True, True, False, False, True, True, True, True, True, True]
    assert all(letters[i] in "ABCDE" for i in (2, 3))


def test_baselines_and_comparisons(planted):
    questions = load_questions(planted, "test")
    systems = baseline_systems(questions, answer_counts(planted, "train"), seed=0)
    answers, _ = fake_always_a_generate("fake", questions)
    systems.append(model_system("always A", "fake", questions, answers))
    results = score_systems(questions, systems, n_samples=500)
    expected = system_named(results, "Random guess (expected)")["overall"]
    assert expected["accuracy"] == pytest.approx(chance_levels(questions).mean())
    majority = system_named(results, "Majority answer (train)")
    assert 0.3 <= majority["overall"]["accuracy"] <= 0.5  # 3 sure + 0-2 of the random lactate ones
    pairs = [(c["a"], c["b"]) for c in results["comparisons"]]
    assert pairs == [("always A", "Random guess (one draw)"), ("always A", "Majority answer (train)")]
    c = results["comparisons"][1]
    assert c["a_only"] + c["b_only"] == c["n"] and 0 <= c["p_value"] <= 1
    assert c["difference_ci_low"] <= c["difference"] <= c["difference_ci_high"]


def test_evaluate_with_the_fake_writes_report_plots_and_results(planted, tmp_path):
    out = tmp_path / "run"
    (out / "train").mkdir(parents=True)
    (out / "train" / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "reward_mean": 0.1 * s, "accuracy": 0.1 * s, "kl": 0.01 * s}) + "\n" for s in range(1, 6)))
    cfg = load_config(None, [f"output_dir={out}", f"evaluate.questions_dir={planted}", "evaluate.bootstrap_samples=200",
                             "evaluate.models=[always-a=/fake/a, /fake/run/step_00000007/policy]"])
    logs = []
    evaluate(cfg, answerer=fake_always_a_generate, log=logs.append)
    folder = out / "eval"
    for name in ("results.json", "report.md", "answers.jsonl", "accuracy_overall.png", "accuracy_by_section.png",
                 "training_curve.png"):
        assert (folder / name).stat().st_size > 0, name
    for name in ("accuracy_overall.png", "accuracy_by_section.png", "training_curve.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((folder / "results.json").read_text())
    assert [s["name"] for s in saved["systems"]][-2:] == ["always-a", "step_00000007"]
    assert saved["systems"][-1]["overall"]["accuracy"] == pytest.approx(0.4)
    assert saved["comparisons"][0]["a"] == "always-a" and saved["comparisons"][0]["p_value"] == 1.0
    assert saved["systems"][-1]["concentration"]["letter"] == 1.0  # always "A"
    assert saved["truth_concentration"]["letter"] < 1.0
    report = (folder / "report.md").read_text()
    for text in ("## Overall accuracy", "95% interval", "McNemar", "By record section", "![accuracy by section]",
                 "## Does it read the record?", "| always-a | 100.0% |",
                 "![training curve]", "## Example questions", "Correct answer"):
        assert text in report, text
    records = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert len(records) == len(TEST_ROWS) and records[0]["answers"]["always-a"]["letter"] == "A"
    assert any("evaluating 2 model(s) on 10 test questions" in m for m in logs)


def test_resolve_models_defaults_to_base_and_latest_checkpoint(tmp_path):
    for step in (3, 12):
        policy = tmp_path / "ray_train" / "grpo" / f"checkpoint_{step}" / f"step_{step:08d}" / "policy"
        policy.mkdir(parents=True)
        (policy / "config.json").write_text("{}")
        mark_complete(policy.parent)
    (tmp_path / "ray_train" / "grpo" / "checkpoint_99" / "step_00000099" / "policy").mkdir(parents=True)  # incomplete
    assert latest_policy(tmp_path)[0] == 12
    cfg = load_config(None, [f"output_dir={tmp_path}", "model.path=/models/base"])
    assert resolve_models(cfg) == [("base model", "/models/base"),
                                   ("trained (step 12)", str(latest_policy(tmp_path)[1]))]
    cfg = load_config(None, ["evaluate.models=[/m/a, /n/a, b=/m/b]"])
    assert resolve_models(cfg) == [("a", "/m/a"), ("a (2)", "/n/a"), ("b", "/m/b")]
