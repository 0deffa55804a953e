"""The benchmarks' pure parts: learning.py reads a - b with its sign and interval whichever order
the results hold the pair in, and the learning curve from metrics.jsonl; lora_learning.py reads
each variant's training metrics; trl_grpo.py gives TRL the same work a creason step does;
concentration.py re-scores an evaluation's answers; reading_curve.py fits the record regression on
growing training sets; letter_probe.py reads what a model believes right after the box opens;
stated_answers.py splits a stated answer's loss between its text, its box and the forced letter;
train_startup.py times a run's start-up apart from its first step."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "ray_jobs" / "benchmarks"


def load_benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import their `common` module as a sibling
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_benchmark", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def learning():
    return load_benchmark("learning")


RESULTS = {"comparisons": [
    {"a": "base model", "b": "trained", "difference": -0.10, "difference_ci_low": -0.16, "difference_ci_high": -0.04,
     "p_value": 0.003},
    {"a": "trained", "b": "majority answer", "difference": 0.02, "difference_ci_low": -0.03, "difference_ci_high": 0.07,
     "p_value": 0.4},
]}


def test_a_comparison_is_turned_to_the_order_asked(learning):
    c = learning.comparison(RESULTS, "trained", "base model")
    assert c["difference"] == pytest.approx(0.10) and c["ci"] == pytest.approx([0.04, 0.16]) and c["p_value"] == 0.003
    same = learning.comparison(RESULTS, "trained", "majority answer")
    assert same["difference"] == pytest.approx(0.02) and same["ci"] == pytest.approx([-0.03, 0.07])
    assert learning.comparison(RESULTS, "trained", "warm-up") is None


def test_curve_splits_validation_checks_from_steps(learning, tmp_path):
    records = [{"step": 0, "val_accuracy": 0.4, "val_questions": 10, "time": 1},
               {"step": 1, "reward_mean": 0.2, "accuracy": 0.2, "letter_A": 0.5, "loss": 0.1, "time": 2},
               {"step": 2, "reward_mean": 0.3, "accuracy": 0.3, "letter_A": 0.4, "val_accuracy": 0.5, "time": 3}]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    curve = learning.curve(path)
    assert curve["validation"] == [{"step": 0, "val_accuracy": 0.4, "val_questions": 10},
                                   {"step": 2, "val_accuracy": 0.5}]
    assert curve["steps"] == [{"step": 1, "reward_mean": 0.2, "accuracy": 0.2, "letter_A": 0.5},
                              {"step": 2, "reward_mean": 0.3, "accuracy": 0.3, "letter_A": 0.4}]


def test_system_rows_keep_a_models_boxed_letter(learning):
    results = {"systems": [
        {"name": "trained", "kind": "model", "overall": {"accuracy": 0.43, "ci_low": 0.39, "ci_high": 0.48},
         "boxed": {"accuracy": 0.52}, "boxed_forced_agreement": 0.74},
        {"name": "Majority answer", "kind": "baseline", "overall": {"accuracy": 0.61, "ci_low": 0.57, "ci_high": 0.65}}]}
    model, baseline = learning.system_rows(results)
    assert (model["boxed"], model["boxed_forced_agreement"]) == (0.52, 0.74) and "boxed" not in baseline


def test_trained_is_compared_with_base_baselines_and_warmup(learning):
    names = [("base model", "model"), ("Random guess (one draw)", "baseline"), ("Majority answer (train)", "baseline"),
             ("Record regression (train)", "baseline"), ("warm-up", "model"), ("trained", "model")]
    pairs = learning.reported_pairs({"systems": [{"name": n, "kind": k} for n, k in names]})
    assert pairs == [("trained", "base model"), ("trained", "Majority answer (train)"),
                     ("trained", "Record regression (train)"), ("trained", "warm-up")]


def test_markdown_shows_every_system_comparison_and_check(learning):
    result = {"machine": "m", "exit_code": 0, "wall_s": 600, "peak_pss_gib": 9.5, "seconds": {"train": 100.4},
              "systems": [{"system": "base model", "kind": "model", "accuracy": 0.41, "ci": [0.37, 0.45],
                           "by_kind": {"masked_value": 0.3, "outcome": 0.5}, "boxed": 0.52, "boxed_forced_agreement": 0.6},
                          {"system": "untrained", "kind": "model", "accuracy": 0.4, "ci": [0.36, 0.44], "by_kind": {},
                           "boxed": 0.0, "boxed_forced_agreement": None},  # it never boxed a letter
                          {"system": "Majority answer", "kind": "baseline", "accuracy": 0.61, "ci": [0.57, 0.65],
                           "by_kind": {"masked_value": 0.44, "outcome": 0.78}}],
              "comparisons": [{"a": "trained", "b": "base model", "difference": 0.05, "ci": [0.01, 0.09], "p_value": 0.01}],
              "curve": {"validation": [{"step": 0, "val_accuracy": 0.3}], "steps": [{"step": 1, "reward_mean": 0.25}]}}
    text = learning.render_markdown(result)
    assert "| base model | **41.0%** | 37.0% to 45.0% | 30.0% | 50.0% | 52.0% | 60.0% |" in text
    assert "| untrained | **40.0%** | 36.0% to 44.0% |  |  | 0.0% | n/a |" in text
    assert "| Majority answer | **61.0%** | 57.0% to 65.0% | 44.0% | 78.0% |  |  |" in text  # no box of its own
    assert "| trained - base model | +5.0 points | +1.0 to +9.0 | 0.01 |" in text
    assert "| train | 100 |" in text and "| validation accuracy (forced letter) | 30.0% |" in text
    assert "| 1-1 | 0.250 |" in text
    assert "did not finish" in learning.render_markdown({"machine": "m", "exit_code": 1, "wall_s": 6, "peak_pss_gib": 1})


def test_lora_learning_summarizes_each_variants_curve_and_phases():
    lora = load_benchmark("lora_learning")
    records = [{"step": 0, "val_accuracy": 0.45, "time": 1}]
    records += [{"step": s, "reward_mean": 0.1 * s, "entropy": 0.2, "time_generate_s": 10.0 + s, "time_train_s": 20.0,
                 "time_sync_s": 0.5} for s in (1, 2, 3, 4)]
    records += [{"step": 4, "val_accuracy": 0.5, "time": 9}]
    summary = lora.summarize(records)
    assert [c["step"] for c in summary["validation"]] == [0, 4] and len(summary["steps"]) == 4
    assert summary["median_s"] == {"time_generate_s": 12.5, "time_train_s": 20.0, "time_sync_s": 0.5}
    assert summary["median_step_s"] == pytest.approx(33.0)
    result = {"machine": "m", "variants": [{"name": "lora", "exit_code": 0, "wall_s": 120, "peak_pss_gib": 5.5, **summary}]}
    assert ("| lora | 0 | 2.0 min | 0.100 / 0.200 / 0.300 / 0.400 | 0: 45.0%, 4: 50.0% | 12.50 / 20.00 / 0.50 | 5.50 GiB |"
            in lora.render_markdown(result))


def test_step_quarters_keep_every_step():
    common = load_benchmark("common")
    parts = common.step_quarters([{"step": s} for s in range(1, 16)])
    assert [len(p) for p in parts] == [4, 4, 4, 3] and [r["step"] for p in parts for r in p] == list(range(1, 16))
    assert common.step_quarters([{"step": 1}]) == [[{"step": 1}]] and common.step_quarters([]) == []


def test_trl_baseline_does_one_creason_step_of_work_per_optimizer_step():
    """trl_grpo.py's TRL side: the step's prompts x group size completions generated in groups of
    the group size, trained in creason's micro-batches and accumulated to one update."""
    from creason.config import load_config

    trl = load_benchmark("trl_grpo")
    cfg = load_config("quickstart", ["train.prompts_per_step=3", "rollout.group_size=4", "train.micro_batch_size=6"])
    args = trl.trl_arguments(cfg, "out", steps=20, reward_weights=[1.0, 0.5])
    assert args["per_device_train_batch_size"] * args["gradient_accumulation_steps"] == 12
    assert (args["per_device_train_batch_size"], args["num_generations"]) == (6, 4)
    assert (args["max_completion_length"], args["learning_rate"], args["warmup_steps"]) == (192, 2e-5, 2)
    assert args["use_cpu"] and not args["bf16"] and args["reward_weights"] == [1.0, 0.5]
    assert trl.trl_arguments(load_config("quickstart", ["train.mixed_precision=bf16"]), "out", 1, [1.0])["bf16"]
    with pytest.raises(SystemExit, match="12 completions a step do not make micro-batches of 5"):
        trl.trl_arguments(load_config("quickstart", ["train.prompts_per_step=3", "train.micro_batch_size=5"]), "out", 1, [1.0])


def test_concentration_rescores_an_evaluation_from_its_answers(tmp_path, monkeypatch, capsys):
    """concentration.py reads answers.jsonl back: the fake that always says "A" gives one letter to
    every question, and is named under the table."""
    from creason.config import load_config
    from creason.evaluate.run import evaluate
    from tests.evaluate.planted import fake_always_a_generate, write_planted

    questions = write_planted(tmp_path / "questions")
    cfg = load_config(None, [f"output_dir={tmp_path / 'run'}", f"evaluate.questions_dir={questions}",
                             "evaluate.bootstrap_samples=100", "evaluate.models=[always-a=/fake/a]"])
    evaluate(cfg, answerer=fake_always_a_generate, log=lambda m: None)
    out = tmp_path / "concentration.json"
    monkeypatch.setattr(sys, "argv", ["concentration.py", "--questions", str(questions),
                                      str(tmp_path / "run" / "eval" / "answers.jsonl"), "--out", str(out)])
    assert load_benchmark("concentration").main() == 0
    saved = json.loads(out.read_text())
    always_a = next(s for s in saved["systems"] if s["name"] == "always-a")
    assert always_a["kind"] == "model" and always_a["concentration"]["letter"] == 1.0
    assert saved["truth_concentration"]["letter"] < 1.0 and saved["questions"] == 10
    assert "| always-a | 100.0% |" in capsys.readouterr().out


def test_grpo_step_summary_takes_a_step_without_an_update():
    """A step whose groups all had one reward trains nothing: no `tokens`, no train time."""
    grpo_step = load_benchmark("grpo_step")
    step = {"completions": 80, "generate_tokens": 560, "completion_length": 7.0, "reward_mean": 0.5,
            "time_generate_s": 10.0, "generate_seconds": 10.0, "time_score_s": 0.0, "time_sync_s": 0.5}
    records = [{**step, "step": 1, "tokens": 400, "time_train_s": 20.0, "mismatch": 0.5}, {**step, "step": 2},
               {**step, "step": 3, "tokens": 300, "time_train_s": 10.0, "mismatch": 0.03}]
    s = grpo_step.summarize(records)
    assert s["steps_without_update"] == 1 and s["train_tokens_per_s"] == 30.0
    assert s["phase_s"]["train"] == 5.0 and s["step_s"] == 15.5
    assert s["mismatch"] == 0.03  # of the steps that trained, the first left out


def test_grpo_step_summary_of_async_rollouts_counts_the_wait_not_the_overlapped_generation():
    """`train.async_rollouts`: the generate phase is the wait after the update; tokens/s comes from
    the calls' own seconds; the last step, which samples nothing ahead, is left out."""
    grpo_step = load_benchmark("grpo_step")
    step = {"completions": 16, "generate_tokens": 800, "generate_seconds": 16.0, "completion_length": 50.0,
            "reward_mean": 0.5, "tokens": 400, "time_train_s": 20.0, "time_score_s": 0.0, "time_sync_s": 0.5,
            "mismatch": 0.1, "policy_lag": 1}
    records = [{**step, "step": 1, "policy_lag": 0, "time_generate_s": 18.0}, {**step, "step": 2, "time_generate_s": 1.0},
               {**step, "step": 3, "time_generate_s": 3.0}, {**step, "step": 4}]
    s = grpo_step.summarize(records)
    assert s["phase_s"]["generate"] == 2.0 and s["step_s"] == 22.5
    assert s["loop_generate_tokens_per_s"] == 50.0 and s["policy_lag"] == 1
    assert s["completions_per_s"] == 16 / 22.5


def test_train_startup_leaves_the_step_out_and_takes_medians_per_checkout():
    """train_startup.py: start-up is the time to the first record less the step's phases (sync's
    parts counted once, inside sync); each checkout's runs summarized apart."""
    import doctest

    startup = load_benchmark("train_startup")
    assert doctest.testmod(startup).failed == 0
    rows = [{"checkout": c, "startup_s": s, "first_step_at_s": s + 10, "wall_s": s + 20, "peak_gib": 1.0}
            for c, s in [("old", 50.0), ("new", 30.0), ("old", 54.0), ("new", 34.0), ("new", 90.0)]]
    summary = startup.summarize(rows)
    assert summary["old"]["startup_s"] == 52.0 and summary["old"]["runs"] == 2
    assert summary["new"]["startup_s"] == 34.0 and summary["new"]["wall_s"] == 54.0 and summary["new"]["runs"] == 3


def test_mixed_precision_benchmark_ratios():
    import doctest

    result = doctest.testmod(load_benchmark("mixed_precision"))
    assert result.attempted == 1 and result.failed == 0


def test_reading_curve_fits_the_regression_on_growing_training_sets(tmp_path, monkeypatch):
    """reading_curve.py: where lactate decides shock, 150 training answers let the regression beat
    the majority answer, while 6 cannot tell it much."""
    import numpy as np

    from tests.evaluate.planted import planted_shock, write_split

    rng = np.random.default_rng(2)
    write_split(tmp_path, "train", planted_shock(150, rng, 0))
    write_split(tmp_path, "test", planted_shock(60, rng, 1000))
    out = tmp_path / "curve.json"
    monkeypatch.setattr(sys, "argv", ["reading_curve.py", "--questions", str(tmp_path), "--sizes", "6", "150",
                                      "--draws", "2", "--out", str(out)])
    assert load_benchmark("reading_curve").main() == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["train_answers"], r["draw"]) for r in rows] == [(6, 0), (6, 1), (150, 0), (150, 1)]
    for r in rows[2:]:
        assert r["regression"] > r["majority"] + 0.15 and r["p_value"] < 0.01
        assert r["by_kind"]["masked_value"]["regression"] == r["regression"]


def test_letter_probe_tells_a_model_that_reads_from_one_that_knows_the_prior():
    """Hand-made log-probs on two shock questions whose right answers differ: the reader puts 0.9 on
    each right answer, the prior-only model 0.75 on "No" (the training majority) both times."""
    import math
    from collections import Counter

    probe = load_benchmark("letter_probe")
    counts = {"shock": Counter({"No": 2, "Yes": 0})}  # add-one: No 3/4, Yes 1/4
    questions = [(["Yes", "No"], "No", "B"), (["No", "Yes"], "Yes", "B")]

    def rows(p_right: list[float]) -> list[dict]:
        return [{"question_id": str(i), "variable": "shock", "options": o, "answer": a, "truth": t,
                 "logprobs": {x: math.log(p if x == t else 1 - p) for x in "AB"}}
                for i, ((o, a, t), p) in enumerate(zip(questions, p_right))]

    reader = probe.summarize(rows([0.9, 0.9]), counts)
    prior_only = probe.summarize(rows([0.75, 0.25]), counts)
    expected_prior_loss = -(math.log(0.75) + math.log(0.25)) / 2
    for s in (reader, prior_only):
        assert s["overall"]["prior_loss"] == pytest.approx(expected_prior_loss) and s["overall"]["prior_accuracy"] == 0.5
    assert reader["overall"]["loss"] == pytest.approx(-math.log(0.9)) and reader["overall"]["accuracy"] == 1.0
    assert prior_only["overall"]["loss"] == pytest.approx(expected_prior_loss)
    shock_reader, shock_prior = reader["by_variable"]["shock"], prior_only["by_variable"]["shock"]
    assert shock_reader["top_answer"] == "No" and shock_reader["p_top_sd"] == pytest.approx(0.4)  # 0.9 and 0.1
    assert shock_prior["p_top_mean"] == pytest.approx(0.75) and shock_prior["p_top_sd"] == pytest.approx(0.0)
    assert "| shock | 2 |" in probe.table(reader)


def test_letter_probe_reads_a_models_belief_after_the_box(tiny_model_dir, tmp_path, monkeypatch):
    """The script end to end on a tiny model: one row per question, the letters' probabilities sum to 1."""
    import math

    import numpy as np

    from tests.evaluate.planted import planted_shock, write_split

    rng = np.random.default_rng(3)
    write_split(tmp_path, "train", planted_shock(20, rng, 0))
    write_split(tmp_path, "test", planted_shock(4, rng, 1000))
    out = tmp_path / "probe.json"
    monkeypatch.setattr(sys, "argv", ["letter_probe.py", "--model", str(tiny_model_dir), "--questions", str(tmp_path),
                                      "--threads", "1", "--out", str(out)])
    assert load_benchmark("letter_probe").main() == 0
    saved = json.loads(out.read_text())
    assert len(saved["rows"]) == 4 and saved["overall"]["questions"] == 4
    for row in saved["rows"]:
        assert sum(math.exp(v) for v in row["logprobs"].values()) == pytest.approx(1.0)
        assert set(row["logprobs"]) == {"A", "B"}


def test_stated_answers_splits_the_loss_between_text_box_and_forced_letter(tmp_path, monkeypatch):
    """Three questions: the text and box right but the forced letter wrong; the right text boxed at
    the wrong letter; a wrong text, its own letter boxed."""
    from creason.evaluate.scoring import MAJORITY

    def row(qid, kind, options, truth, reasoning, boxed, forced, majority_right):
        text = options["AB".index(truth)]
        return {"question_id": qid, "question_kind": kind, "options": options, "ground_truth": truth, "answer_text": text,
                "answers": {MAJORITY: {"letter": truth if majority_right else "A", "correct": majority_right},
                            "m": {"letter": forced, "correct": forced == truth, "boxed": boxed, "reasoning": reasoning}}}

    rows = [row("1-o0", "outcome", ["Yes", "No"], "B", "No \\boxed{B}", "B", "A", True),
            row("2-m0", "masked_value", ["4", "2"], "A", "4 \\boxed{B}", "B", "B", False),
            row("3-m0", "masked_value", ["4", "2"], "A", "2 \\boxed{B}", "B", "B", True)]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "stated.json"
    monkeypatch.setattr(sys, "argv", ["stated_answers.py", str(answers), "--out", str(out)])
    assert load_benchmark("stated_answers").main() == 0
    m = json.loads(out.read_text())["models"]["m"]
    assert set(m) == {"all", "masked_value", "outcome"}
    assert m["all"]["stated_right"] == pytest.approx(2 / 3) and m["all"]["box_is_stated"] == pytest.approx(2 / 3)
    assert m["all"]["boxed_right"] == pytest.approx(1 / 3) and m["all"]["forced_right"] == 0.0
    assert m["masked_value"]["stated_right"] == 0.5 and m["masked_value"]["box_is_stated"] == 0.5
    assert m["all"]["stated_vs_majority"]["a_only"] == 1 and m["all"]["stated_vs_majority"]["b_only"] == 1


def test_a_failed_benchmark_step_prints_its_log_and_exits_naming_it(tmp_path, capsys):
    common = load_benchmark("common")
    wall, peak, at_peak = common.run_or_exit([sys.executable, "-c", "print('fine')"], tmp_path / "ok.log", "ok")
    assert wall > 0 and peak > 0 and at_peak and (tmp_path / "ok.log").read_text() == "fine\n"
    with pytest.raises(SystemExit, match=r"^training failed \(3\)$"):
        common.run_or_exit([sys.executable, "-c", "print('the cause'); raise SystemExit(3)"], tmp_path / "bad.log", "training")
    assert "the cause" in capsys.readouterr().out
