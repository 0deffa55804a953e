"""Experiment trackers through the libraries themselves: W&B in offline mode, and MLflow against a
real tracking server started on localhost (full MLflow pins pyarrow<26, so the server runs from
its own environment: `make test` builds it in .venv-mlflow; CREASON_MLFLOW names another one)."""

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from creason.config import TrainConfig
from creason.train.metrics import MetricsLog
from creason.train.trackers import MlflowTracker, WandbTracker, make_trackers

STEPS = [{"reward_mean": 0.25, "val_accuracy": 0.5, "batch": "c4d3"}, {"reward_mean": 0.75, "letter_A": 0.1}]
CONFIG = {"output_dir": "/runs/trial", "train": {"lr": 3e-05}, "seed": 0}


def log_steps(log: MetricsLog, steps: list[dict], first: int = 1) -> None:
    for i, metrics in enumerate(steps, first):
        log.write(i, metrics)


def test_only_the_chosen_trackers_are_made(tmp_path):
    assert [type(t).__name__ for t in make_trackers(tmp_path, TrainConfig(), CONFIG)] == ["TensorBoardTracker"]
    assert make_trackers(tmp_path, TrainConfig(loggers=["jsonl"]), CONFIG) == []


def wandb_history(run_file: Path) -> list[dict]:
    """The history records of a W&B offline run file (`run-<id>.wandb`): a LevelDB-style log (a
    7-byte file header, then 32 KiB blocks of records, each a 7-byte header of checksum, length and
    type, 1 = whole, 2/3/4 = first/middle/last piece) of `Record` protobufs."""
    import struct

    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pieces, history = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the zero padding at a block's end
            pos += left
            continue
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            pieces = b""
            if record.WhichOneof("record_type") == "history":
                history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                                for item in record.history.item})
    return history


def wandb_history_when_written(run_file: Path, records: int, timeout_s: float = 30.0) -> list[dict]:
    """The run file's history once it holds `records` records, or as it is after `timeout_s`: W&B's
    service process may still be writing the file when `finish()` returns (seen once in CI, on a
    loaded 2-core machine: an empty history; the same test passed at once when run again)."""
    deadline = time.monotonic() + timeout_s
    while len(history := wandb_history(run_file)) < records and time.monotonic() < deadline:
        time.sleep(0.5)
    return history


def test_wandb_offline_run_holds_the_metrics_and_resumes_the_same_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    t = TrainConfig(loggers=["jsonl", "wandb"], wandb_mode="offline", experiment="creason-test")
    log = MetricsLog(tmp_path, 3, make_trackers(tmp_path, t, CONFIG))
    first_id = log.trackers[0].run.id
    log_steps(log, STEPS)
    log.close()
    runs = sorted((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].name.endswith(first_id)
    history = [{k: v for k, v in h.items() if not k.startswith("_") or k == "_step"}
               for h in wandb_history_when_written(runs[0] / f"run-{first_id}.wandb", len(STEPS))]
    assert history == [{"reward_mean": 0.25, "val_accuracy": 0.5, "_step": 1},  # "batch" is not a number
                       {"reward_mean": 0.75, "letter_A": 0.1, "_step": 2}]
    resumed = WandbTracker(tmp_path, t, "trial", {})
    assert resumed.run.id == first_id  # the id kept in trackers.json
    resumed.close()


def mlflow_executable() -> str | None:
    given = os.environ.get("CREASON_MLFLOW")
    if given:
        return given
    built = Path(__file__).resolve().parents[2] / ".venv-mlflow" / "bin" / "mlflow"
    return str(built) if built.exists() else shutil.which("mlflow")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    exe = mlflow_executable()
    if exe is None:
        pytest.skip("no MLflow server: `make test` builds .venv-mlflow, or set CREASON_MLFLOW to an `mlflow` executable")
    folder = tmp_path_factory.mktemp("mlflow")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([exe, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                               "--backend-store-uri", f"sqlite:///{folder}/mlflow.db",
                               "--default-artifact-root", str(folder / "artifacts")],
                              stdout=subprocess.DEVNULL, stderr=open(folder / "server.log", "w"))
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"the MLflow server did not start: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    yield uri
    server.terminate()
    server.wait(timeout=30)


def test_mlflow_server_holds_metrics_params_and_a_resumed_run(tmp_path, mlflow_server):
    from mlflow import MlflowClient

    t = TrainConfig(loggers=["jsonl", "mlflow"], mlflow_tracking_uri=mlflow_server, experiment="creason-test")
    log = MetricsLog(tmp_path, 3, make_trackers(tmp_path, t, CONFIG))
    run_id = log.trackers[0].run_id
    log_steps(log, STEPS)
    log.close()
    resumed = MlflowTracker(tmp_path, t, "trial", {})  # a restarted process: the same run goes on
    assert resumed.run_id == run_id
    resumed.log(3, {"reward_mean": 1.0})
    resumed.close()
    client = MlflowClient(tracking_uri=mlflow_server)
    history = client.get_metric_history(run_id, "reward_mean")
    assert [(m.step, m.value) for m in history] == [(1, 0.25), (2, 0.75), (3, 1.0)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "letter_A")] == [(2, 0.1)]
    run = client.get_run(run_id)
    assert run.data.params["train.lr"] == "3e-05" and run.info.run_name == "trial"
    assert client.get_experiment(run.info.experiment_id).name == "creason-test"
    assert "batch" not in run.data.metrics
