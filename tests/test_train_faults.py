"""Training survives killed processes, with nothing lost: a Ray Train worker, a rollout actor and
the driver are each SIGKILLed at a real moment of a 4-step GRPO run (tiny model, 1 vLLM actor,
2 DeepSpeed workers), and the run must end as an uninterrupted run with the same seed does:
the same steps once each, the same batches and data position, and the same final weights
(rollouts are seeded per step, so a redone step samples what the lost attempt sampled).
A checkpoint write cut short is in tests/train/test_checkpoint.py."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
import ray
from safetensors.torch import load_file

from creason import faults
from creason.config import load_config
from creason.train.checkpoint import checkpoint_step, latest_checkpoint
from creason.train.run import train
from tests.raystart import another_cluster_with_a_dashboard

pytestmark = [pytest.mark.ray, pytest.mark.slow]

STEPS, PROMPTS, GROUP = 4, 2, 3


def _settings(out: Path, model: Path, questions: Path) -> list[str]:
    return [
        f"output_dir={out}", f"model.path={model}", f"train.questions_dir={questions}",
        "rollout.num_actors=1", "rollout.cpus_per_actor=1", "train.cpus_per_worker=0.5", "train.threads_per_worker=1",
        "train.zero_stage=2",
        f"rollout.group_size={GROUP}", "rollout.max_new_tokens=160", "rollout.max_model_len=1536",
        "rollout.kv_cache_gib=0.125", "rollout.max_restarts=2",
        f"train.prompts_per_step={PROMPTS}", f"train.steps={STEPS}", "train.checkpoint_every=2", "train.num_workers=2",
        "train.micro_batch_size=3", "train.lr=1e-3", "train.warmup_ratio=0", "train.max_failures=2",
        "algorithm.truncation=none", "algorithm.filter_zero_variance=false",
        "algorithm.rewards=[{path: 'tests.helpers:even_length_reward'}]",
    ]


def _config(out: Path, model: Path, questions: Path):
    return load_config("quickstart", _settings(out, model, questions))


def records(out: Path) -> list[dict]:
    path = out / "train" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def weights_digest(out: Path) -> str:
    """SHA-256 over the final policy's tensors (names and bytes)."""
    tensors = load_file(str(latest_checkpoint(out / "ray_train") / "policy" / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode() + tensors[name].numpy().tobytes())
    return digest.hexdigest()


def record_recovery(scenario: str, killed: str, kill_time: float, out: Path, uninterrupted) -> None:
    """With $CREASON_FAULT_REPORT set (ray_jobs/benchmarks/train_faults.py sets it), append what the
    fault cost to that JSONL file: steps recorded before the kill, the step resumed from, the time
    from the kill to the next new step and to the end of the run."""
    path = os.environ.get("CREASON_FAULT_REPORT")
    if not path:
        return
    got = records(out)
    before = [r for r in got if r["time"] < kill_time]
    done_before = max((r["step"] for r in before), default=0)
    after = [r for r in got if r["time"] >= kill_time and r["step"] > done_before]
    row = {"scenario": scenario, "killed": killed, "steps_recorded_before_kill": done_before,
           "resumed_from": next((r["resumed_from"] for r in got if "resumed_from" in r), None),
           "actor_restarts": sum(r.get("actor_restarts", 0) for r in got),
           "seconds_to_next_step": after[0]["time"] - kill_time if after else None,
           "seconds_to_end": got[-1]["time"] - kill_time,
           "same_batches": [r["batch"] for r in got] == [r["batch"] for r in uninterrupted[0]],
           "same_final_weights": weights_digest(out) == uninterrupted[1]}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def registered_step(out: Path) -> int | None:
    """The step of the latest checkpoint Ray Train has registered (what a restart resumes from):
    its controller records it in `checkpoint_manager_snapshot.json` once it has collected the report."""
    try:
        snapshot = json.loads((out / "ray_train" / "grpo" / "checkpoint_manager_snapshot.json").read_text())
        return snapshot["latest_checkpoint_result"]["metrics"]["step"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def wait_for(condition, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := condition()):
            return value
        time.sleep(every)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


class TrainingThread(threading.Thread):
    """`train(cfg)` in the background, so the test can kill things while it runs."""

    def __init__(self, cfg, resume: bool = False):
        super().__init__(daemon=True)
        self.cfg, self.resume, self.error = cfg, resume, None

    def run(self) -> None:
        try:
            train(self.cfg, resume=self.resume)
        except BaseException as e:  # noqa: BLE001 - reported by finish()
            self.error = e

    def finish(self, timeout: float = 900) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"training still running after {timeout:.0f} s"
        assert self.error is None, f"training failed: {self.error!r}"


def busy(pid: int, window: float = 0.2, share: float = 0.5) -> bool:
    """Whether a process used at least `share` of a core over the next `window` seconds."""
    proc = psutil.Process(pid)
    before = sum(proc.cpu_times()[:2])
    time.sleep(window)
    return sum(proc.cpu_times()[:2]) - before >= share * window


@pytest.fixture(scope="module")
def uninterrupted(ray_local, tiny_model_dir, small_question_set, tmp_path_factory):
    """The run every faulty run must end like: (metrics records, final weights digest). After step
    1, another Ray cluster with a dashboard starts beside it (the session's has none):
    Ray Train once asked that dashboard whether this run's controller lived, heard "no such actor",
    and killed the training workers (`creason.raycluster.local_cluster_options`). Here the same 2
    workers must live through the run."""
    out = tmp_path_factory.mktemp("faults-baseline")
    run = TrainingThread(_config(out, tiny_model_dir, small_question_set))
    run.start()
    wait_for(lambda: len(records(out)) >= 1, 600, "step 1")  # the workers' placement group is registered
    workers = {p.pid for p in faults.find_processes("train_worker")}
    with another_cluster_with_a_dashboard() as dashboard_up:
        while run.is_alive():
            workers |= {p.pid for p in faults.find_processes("train_worker")}
            run.join(0.5)
    run.finish()
    got = records(out)
    assert got[-1]["time"] > dashboard_up + 5  # the other dashboard answered during the run
    assert len(workers) == 2, workers  # never restarted
    return got, weights_digest(out)


def assert_same_run(out: Path, uninterrupted) -> list[dict]:
    """The faulty run's records against the uninterrupted run's: each step once, in order, on the
    same batch and data position, every completion of every prompt scored; the same weights."""
    expected, digest = uninterrupted
    got = records(out)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert [r["batch"] for r in got] == [r["batch"] for r in expected]
    assert [r["data_position"] for r in got] == [r["data_position"] for r in expected] == [PROMPTS * s for s in range(1, STEPS + 1)]
    assert all(r["completions"] == PROMPTS * GROUP for r in got)
    assert checkpoint_step(latest_checkpoint(out / "ray_train")) == STEPS
    assert weights_digest(out) == digest
    return got


def test_training_worker_killed_mid_step(tiny_model_dir, small_question_set, uninterrupted, tmp_path):
    """Ray Train restarts the worker group from the step-2 checkpoint; step 3 is redone once."""
    cfg = _config(tmp_path, tiny_model_dir, small_question_set)
    run = TrainingThread(cfg)
    run.start()
    wait_for(lambda: registered_step(tmp_path) == 2, 600, "Ray Train to register the step-2 checkpoint")
    victim, killed_at = faults.kill("train_worker", index=1), time.time()
    run.finish()
    got = assert_same_run(tmp_path, uninterrupted)
    assert [r.get("resumed_from") for r in got] == [None, None, 2, None]  # step 3 redone from the step-2 checkpoint
    assert victim.pid not in {p.pid for p in faults.find_processes("train_worker")}
    record_recovery("training worker killed during step 3", "Ray Train worker (rank 1 of 2), SIGKILL", killed_at, tmp_path, uninterrupted)


def kill_the_actor_while_it_samples_after_step_1(cfg, out: Path) -> float:
    """Run `cfg`; once step 1 is recorded, SIGKILL the rollout actor while it samples (step 2, or
    the look-ahead of step 3 under `train.async_rollouts`); wait for the run to end. Returns the
    kill's time."""
    run = TrainingThread(cfg)
    run.start()
    wait_for(lambda: len(records(out)) >= 1, 600, "step 1")
    actor = wait_for(lambda: faults.find_processes("rollout_actor"), 60, "the rollout actor")[0]
    wait_for(lambda: busy(actor.pid), 120, "the actor to sample", every=0)
    faults.kill_process(actor)
    killed_at = time.time()
    run.finish()
    return killed_at


def test_rollout_actor_killed_mid_generation(tiny_model_dir, small_question_set, uninterrupted, tmp_path):
    """Ray restarts the actor; it gets the current weights before it samples again, and the prompts
    it held are sampled again: none lost, none scored twice."""
    killed_at = kill_the_actor_while_it_samples_after_step_1(_config(tmp_path, tiny_model_dir, small_question_set), tmp_path)
    got = assert_same_run(tmp_path, uninterrupted)
    assert sum(r["actor_restarts"] for r in got) == 1  # the kill hit a generation, which was redone
    assert got[1]["actor_restarts"] == 1 and got[1]["mismatch"] < 1e-2  # the restarted actor sampled with the step's weights
    record_recovery("rollout actor killed while generating step 2", "vLLM rollout actor, SIGKILL", killed_at, tmp_path, uninterrupted)


def test_rollout_actor_killed_during_an_asynchronous_look_ahead(tiny_model_dir, small_question_set, tmp_path):
    """`train.async_rollouts`: the actor dies while it samples the next step's groups beside the
    update. The look-ahead thread recovers it with the weights that sampling expects (one step
    behind), samples its prompts again, and the run ends with every step, one step off policy."""
    kill_the_actor_while_it_samples_after_step_1(load_config("quickstart", [
        *_settings(tmp_path, tiny_model_dir, small_question_set), "train.async_rollouts=true", "algorithm.tis_cap=2"]), tmp_path)
    got = records(tmp_path)
    assert [(r["step"], r["policy_lag"]) for r in got] == [(s, int(s > 1)) for s in range(1, STEPS + 1)]
    assert [r["weight_version"] for r in got] == [0, 0, 1, 2]
    assert sum(r["actor_restarts"] for r in got) == 1  # the kill hit a look-ahead, which was redone


def test_driver_killed_then_resumed(ray_local, tiny_model_dir, small_question_set, uninterrupted, tmp_path):
    """`creason train` is SIGKILLed after its step-2 checkpoint; `--resume` finishes the run exactly."""
    gcs = ray.get_runtime_context().gcs_address
    args = [a for s in [*_settings(tmp_path, tiny_model_dir, small_question_set), f"ray.address={gcs}"] for a in ("--set", s)]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    driver = subprocess.Popen([sys.executable, "-m", "creason.cli", "train", "--config", "quickstart", *args], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: registered_step(tmp_path) == 2, 600, "Ray Train to register the step-2 checkpoint")
        driver.kill()
        killed_at = time.time()
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    wait_for(lambda: not faults.find_processes("train_worker") and not faults.find_processes("rollout_actor"), 120,
             "Ray to clean up the dead driver's workers and actors", every=1)
    train(_config(tmp_path, tiny_model_dir, small_question_set), resume=True)
    got = assert_same_run(tmp_path, uninterrupted)
    assert got[2].get("resumed_from") == 2
    record_recovery("driver killed after the step-2 checkpoint, then --resume", "`creason train` process, SIGKILL",
                    killed_at, tmp_path, uninterrupted)
