"""The whole pipeline as a user submits it: a real two-node Ray cluster of `ray start` processes on
this machine (the head advertises `creason_rollout`, the worker node `creason_train`), the
`ray job submit` command-line tool with Ray 2.60's token auth, `ray_jobs/pipeline.py` with a tiny
model. Rollout actors and training workers must land on different nodes; the endpoint the job
deploys must outlive the job."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.raystart import free_port, ray_cluster

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]


def _pipeline_args(out: Path, model: Path, port: int) -> list[str]:
    settings = [
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
    return ["python", "ray_jobs/pipeline.py", "--config", "quickstart", *[a for s in settings for a in ("--set", s)]]


@pytest.fixture(scope="module")
def submitted(tiny_model_dir, tmp_path_factory):
    """(completed `ray job submit`, output folder, Serve port): the job ran against a live cluster,
    whose endpoint is queried while the cluster is still up."""
    tmp = tmp_path_factory.mktemp("cluster")
    out, port = tmp / "run", free_port()
    with ray_cluster(tmp, head_cpus=2, head_resources={"creason_rollout": 1},
                     workers=[(1, {"creason_train": 2})]) as cluster:
        done = cluster.job_submit(ROOT, _pipeline_args(out, tiny_model_dir, port), timeout=1500)
        answer = None
        if done.returncode == 0:
            answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=30)
        yield done, out, answer


def test_job_succeeds_and_writes_every_stage(submitted):
    done, out, _ = submitted
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "succeeded" in (done.stdout + done.stderr).lower()
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["seconds"]) == ["questions", "evaluate_base", "train", "evaluate_trained", "serve"]
    results = json.loads((out / "eval" / "results.json").read_text())
    models = [s["name"] for s in results["systems"] if s["kind"] == "model"]
    assert models == ["base model", "trained (step 2)"]
    assert any(c["a"] == "base model" and c["b"] == "trained (step 2)" for c in results["comparisons"])
    assert (out / "eval" / "report.md").stat().st_size > 0 and (out / "eval_base" / "results.json").is_file()
    assert (Path(summary["checkpoint"]) / "config.json").is_file()  # the trained policy, a HF folder


def test_endpoint_answered_and_outlives_the_job(submitted):
    done, out, ready = submitted
    assert done.returncode == 0
    endpoint = json.loads((out / "summary.json").read_text())["endpoint"]
    assert endpoint["state"] == "serving" and endpoint["answer"] in endpoint["options"]
    assert ready is not None and ready.status_code == 200 and ready.json()["status"] == "ready"


def test_rollout_actors_and_training_workers_on_their_own_nodes(submitted):
    done, out, _ = submitted
    assert done.returncode == 0
    placement = json.loads((out / "train" / "placement.json").read_text())
    rollout, train = set(placement["rollout_actors"]), set(placement["train_workers"])
    assert len(placement["train_workers"]) == 2 and len(train) == 1 and len(rollout) == 1
    assert rollout.isdisjoint(train)
    records = [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and records[1]["weight_version"] == 1
    assert records[1]["mismatch"] < 1e-2  # the actor on the other node sampled with the synced weights


def test_each_progress_line_shows_once(submitted):
    """Training's progress lines reach the job's output, once each (Ray Train's patched `print`
    would show them twice)."""
    done, _, _ = submitted
    assert done.returncode == 0
    lines = re.findall(r"step (\d+)/2 \| reward", done.stdout + done.stderr)
    assert lines == ["1", "2"], lines
