"""Run outputs on object storage (`creason.storage`), against a local S3-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from creason import storage
from creason.paths import checkpoint_root, latest_policy
from creason.train.checkpoint import latest_checkpoint_at, mark_complete


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_local_folders_and_uris_are_told_apart(tmp_path, monkeypatch):
    monkeypatch.setenv(storage.WORKDIR_ENV, str(tmp_path))
    assert not storage.is_remote("runs/a") and not storage.is_remote("file:///tmp/a")
    assert storage.is_remote("s3://b/runs/a") and storage.is_remote("gs://b/a")
    assert storage.local_dir("runs/a") == Path("runs/a")
    assert storage.local_dir("s3://b/runs/a").parent == tmp_path
    assert storage.local_dir("s3://b/runs/a") == storage.local_dir("s3://b/runs/a/") != storage.local_dir("s3://b/runs/c")
    assert checkpoint_root("s3://b/run") == "s3://b/run/ray_train"
    assert checkpoint_root(tmp_path) == tmp_path / "ray_train"


def test_push_then_pull_on_another_machine_round_trips_all_but_checkpoints(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/runs/one"
    local = storage.local_dir(uri)
    _write(local / "questions" / "manifest.json", '{"n": 3}')
    _write(local / "train" / "metrics.jsonl", '{"step": 1}\n')
    _write(local / "ray_train" / "grpo" / "big.bin", "Ray Train moves these itself")
    assert storage.push(local, uri) == ["questions/manifest.json", "train/metrics.jsonl"]
    assert storage.push(local, uri) == []  # nothing written since
    _write(local / "train" / "metrics.jsonl", '{"step": 1}\n{"step": 2}\n')
    assert storage.push(local, uri) == ["train/metrics.jsonl"]
    assert set(storage.listing(uri)) == {"questions/manifest.json", "train/metrics.jsonl"}

    elsewhere = tmp_path / "another-machine"
    assert sorted(storage.pull(uri, elsewhere)) == ["questions/manifest.json", "train/metrics.jsonl"]
    assert (elsewhere / "train" / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    assert storage.pull(uri, elsewhere) == []  # already there
    assert storage.push(elsewhere, uri) == []  # pulled files are not sent back
    assert storage.pull(uri, tmp_path / "third", under="train") == ["train/metrics.jsonl"]


def test_synced_output_pushes_what_a_failing_command_wrote(s3_bucket):
    uri = f"{s3_bucket}/runs/failing"
    with pytest.raises(RuntimeError):
        with storage.synced_output(uri) as local:
            _write(local / "eval" / "results.json", "{}")
            raise RuntimeError("the stage failed")
    assert storage.listing(uri) == {"eval/results.json": 2}
    storage.remove(uri)
    assert not storage.exists(uri) and not storage.local_dir(uri).exists()


def _checkpoint(root: Path, step: int, complete: bool = True) -> Path:
    folder = root / "grpo" / f"checkpoint_{step}" / f"step_{step:08d}"
    _write(folder / "policy" / "config.json", json.dumps({"step": step}))
    _write(folder / "engine" / "state" / "optim.pt", "x" * 100)
    mark_complete(folder)
    if not complete:  # an upload cut short: a listed file is missing
        (folder / "engine" / "state" / "optim.pt").unlink()
    return folder


def test_latest_complete_checkpoint_on_object_storage_and_its_policy_fetched(s3_bucket, tmp_path):
    uri = f"{s3_bucket}/runs/ckpt"
    staged = tmp_path / "staged"
    _checkpoint(staged, 2)
    _checkpoint(staged, 3, complete=False)
    storage.push(staged, str(checkpoint_root(uri)), skip=())
    assert latest_checkpoint_at(str(checkpoint_root(uri))) == (2, f"{uri}/ray_train/grpo/checkpoint_2/step_00000002")
    step, policy = latest_policy(uri)
    assert step == 2 and json.loads((policy / "config.json").read_text()) == {"step": 2}
    assert policy.is_relative_to(storage.local_dir(uri)) and not (policy.parent / "engine").exists()
    assert latest_checkpoint_at(f"{s3_bucket}/runs/none") is None and latest_policy(f"{s3_bucket}/runs/none") is None
