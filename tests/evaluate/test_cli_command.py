"""`creason evaluate`'s handler and `ray_jobs/evaluate.py`'s entry point, with the engine
replaced by the FAKE always-"A" model."""

from __future__ import annotations

import json

import creason.evaluate.run as run_module
from creason.cli import main
from tests.evaluate.planted import fake_always_a_generate, write_planted


def test_evaluate_command_prints_the_table_and_writes_results(tmp_path, monkeypatch, capsys):
    planted = write_planted(tmp_path / "questions")
    monkeypatch.setattr(run_module, "default_answerer", lambda cfg, log: fake_always_a_generate)
    code = main(["evaluate", "--set", f"output_dir={tmp_path}", "--set", f"evaluate.questions_dir={planted}",
                 "--model", "a=/fake/a", "--model", "b=/fake/b", "--set", "evaluate.bootstrap_samples=100"])
    assert code == 0
    out = capsys.readouterr().out
    assert "[1/2] a: /fake/a" in out and "a vs b: +0.0 points, McNemar p = 1" in out and "40.0%" in out
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [s["name"] for s in saved["systems"]][-2:] == ["a", "b"]
