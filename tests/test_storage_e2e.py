"""End to end with `output_dir` on object storage: questions, 2 GRPO steps, then a resume on a
machine that has never seen the run (its working copy deleted) from the checkpoint read back
from the bucket, then an evaluation of that checkpoint. Each command is the `creason` CLI in its
own process, against a local S3-compatible server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from creason import storage
from creason.train.checkpoint import latest_checkpoint_at
from tests.conftest import create_bucket
from tests.test_train_e2e import _overrides

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def _creason(command: str, overrides: list[str], *extra: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # each command starts its own cluster
    env["PYTHONPATH"] = str(ROOT)  # the test reward, in the workers too
    args = [sys.executable, "-m", "creason.cli", command, "--config", "quickstart", *extra]
    for o in overrides:
        args += ["--set", o]
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"creason {command} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


def _metrics(uri: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(f"{uri}/train/metrics.jsonl").splitlines()]


@pytest.fixture(scope="module")
def run_on_s3(s3_server, tiny_model_dir, tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        work = tmp_path_factory.mktemp("working-copies")
        for key, value in {**s3_server, storage.WORKDIR_ENV: str(work)}.items():
            mp.setenv(key, value)
        uri = f"{create_bucket('creason-e2e')}/runs/grpo"
        overrides = [*_overrides(uri, tiny_model_dir, 2), "evaluate.max_questions=6", "evaluate.num_actors=1",
                     "train.num_workers=1", "algorithm.beta=0"]  # ranks and the reference are tests/test_train_e2e.py's
        _creason("build-questions", overrides)
        _creason("train", overrides)
        after_two = _metrics(uri)
        shutil.rmtree(work)  # another machine: nothing local but the model
        _creason("train", [*overrides, "train.steps=3"], "--resume")
        _creason("evaluate", [*overrides, "train.steps=3"])
        yield uri, after_two


def test_questions_and_metrics_reach_the_bucket(run_on_s3):
    uri, after_two = run_on_s3
    files = storage.listing(uri)
    assert "questions/manifest.json" in files and any(f.startswith("questions/train/") for f in files)
    assert [r["step"] for r in after_two] == [0, 1, 2]


def test_resume_reads_the_checkpoint_back_from_the_bucket(run_on_s3):
    uri, after_two = run_on_s3
    records = _metrics(uri)
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert records[:3] == after_two  # the resumed run fetched them, and appended
    assert records[3]["resumed_from"] == 2 and records[3]["data_position"] == 6
    assert latest_checkpoint_at(f"{uri}/ray_train")[0] == 3


def test_evaluation_of_the_checkpoint_is_written_to_the_bucket(run_on_s3):
    uri, _ = run_on_s3
    results = json.loads(storage.read_text(f"{uri}/eval/results.json"))
    assert "trained (step 3)" in [s["name"] for s in results["systems"]]
    assert results["n_questions"] == 6
