"""The whole pipeline as a user submits it: a real two-node Ray cluster of `ray start` processes on
this machine (the head advertises `creason_rollout`, the worker node `creason_train`), the
`ray job submit` command-line tool with Ray 2.60's token auth, `ray_jobs/pipeline.py` with a tiny
model, and `output_dir` on object storage (a local S3-compatible server), as nodes without a shared
file system would need. Rollout actors and training workers must land on different nodes; the
endpoint the job deploys must outlive the job. Then, on a machine that has never seen the run (the
working copy deleted, the cluster gone), `creason train --resume` continues from the checkpoint
read back from the bucket."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from creason import storage
from creason.train.checkpoint import latest_checkpoint_at
from tests.conftest import create_bucket
from tests.raystart import free_port, ray_cluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _settings(out: str, model: Path, port: int) -> list[str]:
    return [
        f"output_dir={out}", f"model.path={model}", "data.num_patients=400", "data.block_size=200",
        "rollout.num_actors=1", "rollout.cpus_per_actor=1", "train.num_workers=2", "train.cpus_per_worker=0.5",
        "train.threads_per_worker=1", "train.zero_stage=2", "rollout.group_size=3", "rollout.max_new_tokens=16", "rollout.max_model_len=1536", "rollout.kv_cache_gib=0.125",
        "rollout.custom_resources.creason_rollout=1", "train.custom_resources.creason_train=1",
        "train.steps=2", "train.prompts_per_step=2", "train.checkpoint_every=2", "train.micro_batch_size=3",
        "train.lr=1e-3", "train.warmup_ratio=0", "algorithm.filter_zero_variance=false",
        "algorithm.rewards=[{path: 'tests.helpers:even_length_reward'}]",
        "evaluate.max_questions=6", "evaluate.max_new_tokens=8", "evaluate.max_model_len=1536", "evaluate.kv_cache_gib=0.0625",
        f"serve.port={port}", "serve.kv_cache_gib=0.0625", "serve.max_model_len=1536", "serve.max_replicas=1",
        "serve.limits.registry_max_tokens=16",
    ]


def _set(settings: list[str]) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


def _metrics(uri: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_text(f"{uri}/train/metrics.jsonl").splitlines()]


@pytest.fixture(scope="module")
def submitted(tiny_model_dir, s3_server, tmp_path_factory):
    """(completed `ray job submit`, the run's URI, the endpoint's /readyz answer, settings, working
    copies): the job ran against a live cluster, whose endpoint is queried while it is still up.
    Every node, and this process, point at the S3 server."""
    tmp = tmp_path_factory.mktemp("cluster")
    port, work = free_port(), tmp / "working-copies"
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**s3_server, storage.WORKDIR_ENV: str(work)}.items():
            mp.setenv(key, value)  # before `ray start`: the nodes, and so the job, inherit them
        uri = f"{create_bucket('creason-cluster')}/runs/pipeline"
        settings = _settings(uri, tiny_model_dir, port)
        with ray_cluster(tmp, head_cpus=2, head_resources={"creason_rollout": 1},
                         workers=[(1, {"creason_train": 2})]) as cluster:
            pipeline = ["python", "ray_jobs/pipeline.py", "--config", "quickstart", *_set(settings)]
            done = cluster.job_submit(ROOT, pipeline, timeout=1500)
            answer = None
            if done.returncode == 0:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        yield done, uri, answer, settings, work


@pytest.fixture(scope="module")
def resumed(submitted):
    """(metrics before, the resumed `creason train` process): the cluster gone and the working copy
    deleted, a third step from the checkpoint in the bucket, on a local cluster of its own."""
    done, uri, _, settings, work = submitted
    assert done.returncode == 0
    before = _metrics(uri)
    shutil.rmtree(work)  # another machine: nothing local but the model
    on_one_node = [s for s in settings if ".custom_resources." not in s]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)  # the test reward, in the workers too
    args = [sys.executable, "-m", "creason.cli", "train", "--config", "quickstart", "--resume",
            *_set([*on_one_node, "train.steps=3"])]
    return before, subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)


def _json(uri: str, name: str) -> dict:
    return json.loads(storage.read_text(f"{uri}/{name}"))


def test_job_succeeds_and_writes_every_stage_to_the_bucket(submitted):
    done, uri, *_ = submitted
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    summary = _json(uri, "summary.json")
    assert list(summary["seconds"]) == ["questions", "evaluate_base", "train", "evaluate_trained", "serve"]
    results = _json(uri, "eval/results.json")
    models = [s["name"] for s in results["systems"] if s["kind"] == "model"]
    assert models == ["base model", "trained (step 2)"]
    assert any(c["a"] == "base model" and c["b"] == "trained (step 2)" for c in results["comparisons"])
    files = storage.listing(uri)
    assert files["eval/report.md"] > 0 and "eval_base/results.json" in files and "questions/manifest.json" in files
    step, checkpoint = latest_checkpoint_at(f"{uri}/ray_train")
    assert step == 2 and storage.exists(f"{checkpoint}/policy/config.json")  # the trained policy, a HF folder


def test_endpoint_answered_and_outlives_the_job(submitted):
    done, uri, ready, *_ = submitted
    assert done.returncode == 0
    endpoint = _json(uri, "summary.json")["endpoint"]
    assert endpoint["state"] == "serving" and endpoint["answer"] in endpoint["options"]
    assert ready is not None and ready.status_code == 200 and ready.json()["status"] == "ready"


def test_rollout_actors_and_training_workers_on_their_own_nodes(submitted):
    done, uri, *_ = submitted
    assert done.returncode == 0
    placement = _json(uri, "train/placement.json")
    rollout, train = set(placement["rollout_actors"]), set(placement["train_workers"])
    assert len(placement["train_workers"]) == 2 and len(train) == 1 and len(rollout) == 1
    assert rollout.isdisjoint(train)
    records = _metrics(uri)
    assert [r["step"] for r in records] == [1, 2] and records[1]["weight_version"] == 1
    assert records[1]["mismatch"] < 1e-2  # the actor on the other node sampled with the synced weights


def test_each_progress_line_shows_once(submitted):
    """Training's progress lines reach the job's output, once each (Ray Train's patched `print`
    would show them twice)."""
    done, *_ = submitted
    assert done.returncode == 0
    lines = re.findall(r"step (\d+)/2 \| reward", done.stdout + done.stderr)
    assert lines == ["1", "2"], lines


def test_resume_on_another_machine_reads_the_checkpoint_back_from_the_bucket(submitted, resumed):
    uri = submitted[1]
    before, done = resumed
    assert done.returncode == 0, f"creason train --resume failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    records = _metrics(uri)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[:2] == before  # the resumed run fetched them, and appended
    assert records[2]["resumed_from"] == 2 and records[2]["data_position"] == 6
    assert latest_checkpoint_at(f"{uri}/ray_train")[0] == 3
