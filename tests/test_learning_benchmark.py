"""ray_jobs/benchmarks/learning.py reads the pipeline's results right: a - b with its sign and
interval whichever order the results hold the pair in, and the learning curve from metrics.jsonl."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "ray_jobs" / "benchmarks"


@pytest.fixture(scope="module")
def learning():
    sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import their `common` module as a sibling
    try:
        spec = importlib.util.spec_from_file_location("learning_benchmark", BENCHMARKS / "learning.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


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
