"""Experiment trackers a run's per-step metrics also go to (`train.loggers`), through the libraries
themselves: TensorBoard (tensorboardX), MLflow (`MlflowClient`), Weights & Biases (`wandb`).

Each tracker takes the numeric metrics of a step (`log`) and is closed at the end (`close`).
MLflow and W&B runs outlive the process: their ids are kept in `<folder>/trackers.json`, so a run
resumed from a checkpoint (another process, after a failure) logs to the same tracked run; W&B
ignores steps at or below the last one it holds, so steps redone after a restart keep their first
record there (metrics.jsonl keeps the redone one).

Only metric names and values and the run's configuration leave the process: no prompt, completion
or patient field is ever logged.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from creason.atomic import write_text_atomic
from creason.config import TrainConfig


class Tracker(Protocol):
    def log(self, step: int, metrics: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def numeric(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are finite numbers (not booleans, strings or NaN), as floats.

    >>> numeric({"loss": 0.5, "batch": "c4d3", "done": True, "nan": float("nan"), "step": 3})
    {'loss': 0.5, 'step': 3.0}
    """
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A nested configuration as dotted keys and string values (MLflow params, W&B config).

    >>> flat_params({"train": {"lr": 1e-05, "loggers": ["jsonl"]}, "seed": 0})
    {'train.lr': '1e-05', 'train.loggers': "['jsonl']", 'seed': '0'}
    """
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat_params(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


class TrackerIds:
    """The MLflow / W&B run ids of this output folder (`trackers.json`), written atomically."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / "trackers.json"

    def get(self, name: str) -> str | None:
        return json.loads(self.path.read_text()).get(name) if self.path.exists() else None

    def put(self, name: str, run_id: str) -> None:
        ids = json.loads(self.path.read_text()) if self.path.exists() else {}
        write_text_atomic(self.path, json.dumps({**ids, name: run_id}, indent=2))


class TensorBoardTracker:
    def __init__(self, folder: Path):
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(str(Path(folder) / "tensorboard"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class MlflowTracker:
    """One MLflow run in experiment `train.experiment` on `train.mlflow_tracking_uri`."""

    def __init__(self, folder: Path, t: TrainConfig, run_name: str, params: dict[str, str]):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=t.mlflow_tracking_uri)
        ids = TrackerIds(folder)
        self.run_id = ids.get("mlflow")
        if self.run_id is None:
            experiment = self.client.get_experiment_by_name(t.experiment)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(t.experiment)
            self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
            self._log_params(params)
            ids.put("mlflow", self.run_id)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log(self, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in metrics.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """One W&B run in project `train.experiment`, its files under `<folder>/wandb`."""

    def __init__(self, folder: Path, t: TrainConfig, run_name: str, params: dict[str, str]):
        import wandb

        ids = TrackerIds(folder)
        run_id = ids.get("wandb") or uuid.uuid4().hex[:8]
        ids.put("wandb", run_id)
        self.run = wandb.init(project=t.experiment, entity=t.wandb_entity, name=run_name, id=run_id, resume="allow",
                              dir=str(folder), mode=t.wandb_mode, config=params)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


def make_trackers(folder: Path, t: TrainConfig, config: dict) -> list[Tracker]:
    """The trackers of `train.loggers` besides `jsonl` (which `MetricsLog` writes itself).
    `config` is the run's whole configuration, logged as the run's parameters."""
    run_name = t.run_name or Path(config.get("output_dir", "creason")).name
    params = flat_params(config)
    makers = {"tensorboard": lambda: TensorBoardTracker(folder),
              "mlflow": lambda: MlflowTracker(folder, t, run_name, params),
              "wandb": lambda: WandbTracker(folder, t, run_name, params)}
    return [makers[name]() for name in t.loggers if name != "jsonl"]
