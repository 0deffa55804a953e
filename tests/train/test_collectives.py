"""Collectives on the device their process group needs, checked through a recording stand-in."""

import pytest
import torch
import torch.distributed as dist

from creason.train.collectives import collective_device, mean_across_ranks


class Recorded(Exception):
    pass


def fake_group(monkeypatch, backend: str, world: int, on_all_reduce):
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: world)
    monkeypatch.setattr(dist, "get_backend", lambda *a, **k: backend)
    monkeypatch.setattr(dist, "all_reduce", on_all_reduce)


def test_nccl_all_reduce_gets_the_engine_device(monkeypatch):
    """NCCL fails on CPU tensors; the metrics tensor must be on the engine's device. This machine has
    no CUDA, so the meta device stands for it and the recorder stops the call once it has looked."""
    seen = []

    def record(tensor, *args, **kwargs):
        seen.append(tensor.device)
        raise Recorded

    fake_group(monkeypatch, "nccl", 2, record)
    with pytest.raises(Recorded):
        mean_across_ranks({"loss": 1.0, "kl": 0.5}, torch.device("meta"))
    assert seen == [torch.device("meta")]


@pytest.mark.parametrize("backend", ["gloo", "cpu:gloo,cuda:nccl"])
def test_cpu_backends_reduce_on_cpu_and_average(monkeypatch, backend):
    seen = []

    def two_equal_ranks(tensor, *args, **kwargs):  # the sum over two ranks holding the same values
        seen.append(tensor.device)
        tensor.mul_(2)

    fake_group(monkeypatch, backend, 2, two_equal_ranks)
    out = mean_across_ranks({"loss": 1.5, "steps": 3, "note": "kept"}, "cuda:0")
    assert seen == [torch.device("cpu")]
    assert out == {"loss": 1.5, "steps": 3.0, "note": "kept"}


def test_collective_device_by_backend(monkeypatch):
    for backend, want in (("nccl", "cuda:3"), ("gloo", "cpu"), ("mpi", "cpu"), ("cpu:gloo,cuda:nccl", "cpu")):
        monkeypatch.setattr(dist, "get_backend", lambda *a, b=backend, **k: b)
        assert collective_device("cuda:3") == torch.device(want), backend


def test_without_a_process_group_nothing_is_reduced(monkeypatch):
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    metrics = {"loss": 2.0}
    assert mean_across_ranks(metrics, "cpu") is metrics
