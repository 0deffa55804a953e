"""Where a run's folders are (`creason.paths`): one fallback for the questions, one checkpoint root."""

from __future__ import annotations

from pathlib import Path

from creason.config import load_config
from creason.paths import checkpoint_root, latest_policy, question_build_dir, questions_dir, resolve_model_path


def test_questions_dir_falls_back_stage_then_train_then_the_build(tmp_path):
    cfg = load_config("quickstart", [f"output_dir={tmp_path}"])
    assert questions_dir(cfg) == question_build_dir(tmp_path) == tmp_path / "questions"
    assert questions_dir(cfg, "/data/eval-questions") == Path("/data/eval-questions")
    cfg = load_config("quickstart", [f"output_dir={tmp_path}", "train.questions_dir=/data/q"])
    assert questions_dir(cfg) == questions_dir(cfg, None) == Path("/data/q")
    assert questions_dir(cfg, "/data/s") == Path("/data/s")


def test_checkpoints_and_model(tmp_path):
    assert checkpoint_root(tmp_path) == tmp_path / "ray_train"
    assert latest_policy(tmp_path) is None
    cfg = load_config("quickstart", ["model.path=/models/mine"])
    assert resolve_model_path(cfg) == "/models/mine"
