"""`train.worker_env` reaches the Ray Train workers' processes (their `worker_runtime_env`)."""

import json
import os
from pathlib import Path

import pytest

from creason.config import TrainConfig
from creason.train.run import worker_run_config, worker_scaling

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _write_environment(config: dict) -> None:
    """The worker's loop: its values of `names`, as JSON (the test runs on one machine)."""
    Path(config["out"]).write_text(json.dumps({name: os.environ.get(name, "unset") for name in config["names"]}))


def test_the_workers_run_with_train_worker_env(ray_local, tmp_path):
    from ray.train.torch import TorchTrainer

    allocator = {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"}
    t = TrainConfig(num_workers=1, cpus_per_worker=0.5, worker_env={**allocator, "CREASON_PROBE": "7"})
    names = [*allocator, "CREASON_PROBE", "PYTHONPATH"]
    out = tmp_path / "environment.json"
    TorchTrainer(_write_environment, train_loop_config={"names": names, "out": str(out)}, **worker_scaling(t),
                 run_config=worker_run_config(t, name="env", storage_path=str(tmp_path / "runs"))).fit()
    seen = json.loads(out.read_text())
    assert {k: seen[k] for k in allocator} == allocator
    assert seen["CREASON_PROBE"] == "7"
    assert seen["PYTHONPATH"] != "unset"  # merged with the job's environment, not in place of it
