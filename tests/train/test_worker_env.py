"""`train.worker_env` reaches the Ray Train workers' processes (their `worker_runtime_env`)."""

import os

import pytest

from creason.config import RETURN_FREED_MEMORY, TrainConfig
from creason.train.run import worker_run_config, worker_scaling

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _report_environment(config: dict) -> None:
    import ray.train

    ray.train.report({name: os.environ.get(name, "unset") for name in config["names"]})


def test_the_workers_run_with_train_worker_env(ray_local, tmp_path):
    from ray.train.torch import TorchTrainer

    t = TrainConfig(num_workers=1, cpus_per_worker=0.5, worker_env={**RETURN_FREED_MEMORY, "CREASON_PROBE": "7"})
    names = [*RETURN_FREED_MEMORY, "CREASON_PROBE", "PYTHONPATH"]
    result = TorchTrainer(_report_environment, train_loop_config={"names": names}, **worker_scaling(t),
                          run_config=worker_run_config(t, name="env", storage_path=str(tmp_path))).fit()
    assert {k: result.metrics[k] for k in RETURN_FREED_MEMORY} == RETURN_FREED_MEMORY
    assert result.metrics["CREASON_PROBE"] == "7"
    assert result.metrics["PYTHONPATH"] != "unset"  # merged with the job's environment, not in place of it

