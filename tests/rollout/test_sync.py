"""The weight-sync package without Ray: the registry of transports, the object store's two ends,
the broadcast's buckets (planned, and sent over a real gloo group of two inside this process), and
the rule that keeps imports from running in a loop (transports import only `base`)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

import pytest
import torch

import creason.rollout.sync as sync
from creason.rollout.sync import TRANSPORTS, make_receiver, make_weight_sync
from creason.rollout.sync import broadcast
from creason.rollout.sync.base import PushLog
from creason.rollout.sync.broadcast import BroadcastReceiver, plan_buckets
from creason.rollout.sync.object_store import ObjectStoreReceiver, from_shared_arrays, to_shared_arrays


def test_registry_names_both_ends():
    assert sorted(TRANSPORTS) == ["broadcast", "object_store"]
    assert all(cls.name == name and hasattr(cls, "receiver") for name, cls in TRANSPORTS.items())
    assert isinstance(make_receiver("object_store"), ObjectStoreReceiver)
    with pytest.raises(ValueError, match="broadcast.*object_store"):
        make_weight_sync("carrier-pigeon", [])
    with pytest.raises(ValueError, match="broadcast.*object_store"):
        make_receiver("carrier-pigeon")


def test_shared_arrays_round_trip_keeps_values_and_dtypes():
    """fp32 and bf16 (sent as int16 bits) come back equal, with their dtypes and shapes."""
    sent = [("a", torch.randn(3, 4)), ("b", torch.randn(5, dtype=torch.float64).to(torch.bfloat16)),
            ("c", torch.randn(4, 3).t())]  # not contiguous
    arrays = to_shared_arrays(sent)
    assert [dtype for _, _, dtype in arrays] == ["float32", "bfloat16", "float32"]
    back = ObjectStoreReceiver().receive(arrays)
    assert [n for n, _ in back] == ["a", "b", "c"]
    for (_, s), (_, b) in zip(sent, back):
        assert b.dtype == s.dtype and torch.equal(b, s)
    assert all(torch.equal(b, c) for (_, b), (_, c) in zip(back, from_shared_arrays(arrays)))


def test_push_log_keeps_what_rebuilds_the_latest_weights():
    """A restarted actor replays the last complete push, then the latest partial one on top."""
    log = PushLog()
    with pytest.raises(RuntimeError, match="before the first push"):
        log.replay()
    log.record("all v0", complete=True)
    assert log.replay() == ["all v0"]
    log.record("top v1", complete=False)
    log.record("top v2", complete=False)  # replaces v1: it holds every weight v1 changed, newer
    assert log.replay() == ["all v0", "top v2"]
    log.record("all v3", complete=True)
    assert log.replay() == ["all v3"]


def test_transports_import_only_base():
    """`base` imports no sibling, each transport imports only `base`: no import loop."""
    folder = Path(sync.__file__).parent
    for path in folder.glob("*.py"):
        if path.name == "__init__.py":
            continue
        imported = {node.module for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("creason.")}
        assert imported <= ({"creason.rollout.sync.base"} if path.name != "base.py" else set()), path.name


def test_doctests():
    import doctest

    from creason.rollout.sync import broadcast

    assert doctest.testmod(broadcast).failed == 0


def test_bucket_plan_keeps_order_and_budget():
    """A tensor joins the current bucket while it fits; one larger than the budget goes alone."""
    assert plan_buckets([10, 30, 5, 50], budget=40) == [[0, 1], [2], [3]]
    assert plan_buckets([40, 1, 39, 41, 0], budget=40) == [[0], [1, 2], [3], [4]]
    assert plan_buckets([5] * 4, budget=1000) == [[0, 1, 2, 3]]
    assert plan_buckets([], budget=40) == []
    with pytest.raises(ValueError, match="budget"):
        plan_buckets([1], budget=0)


def _weights() -> list[tuple[str, torch.Tensor]]:
    """Mixed dtypes and sizes: the largest (`big`, 256 bytes) exceeds the smaller budget below."""
    gen = torch.Generator().manual_seed(0)
    return [("a", torch.randn(3, 4, generator=gen)), ("b", torch.randn(5, generator=gen).to(torch.bfloat16)),
            ("c", torch.arange(3)), ("d", torch.randn(4, 3, generator=gen).t()),  # d: not contiguous
            ("e", torch.tensor(2.5)), ("big", torch.randn(64, generator=gen))]


def _broadcast_once(monkeypatch, named_tensors, budget, read=list):
    """One push over a gloo group of two in this process: rank 0 sends on a thread, the receiver
    (rank 1) here hands its iterator to `read`. Returns the buckets' layouts and what `read` returned."""
    monkeypatch.setattr(broadcast, "BROADCAST_TIMEOUT", broadcast.dt.timedelta(seconds=30))  # a bug fails fast
    port, errors = broadcast._free_port(), []
    layouts, buckets = broadcast.pack(named_tensors, budget)

    def send() -> None:
        try:
            broadcast.send_buckets(broadcast.process_group("127.0.0.1", port, 0, 2, "gloo"), buckets, "cpu")
        except Exception as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    got = read(BroadcastReceiver("127.0.0.1", port, 1, 2, "gloo").receive(layouts))
    sender.join(timeout=60)
    assert not sender.is_alive() and errors == []
    return layouts, got


@pytest.mark.parametrize("budget", [100, 1024])  # under the largest tensor; all in one bucket
def test_broadcast_buckets_deliver_what_the_object_store_does(monkeypatch, budget):
    """Same names, dtypes, shapes and values as the object store's path, whatever the budget; the
    receiver's buffers (the storages its tensors view) are one per bucket, none over the budget
    unless it holds a single larger tensor."""
    sent = _weights()
    layouts, received = _broadcast_once(monkeypatch, sent, budget)
    by_store = ObjectStoreReceiver().receive(to_shared_arrays(sent))
    assert [n for n, _ in received] == [n for n, _ in by_store] == [n for n, _ in sent]
    for (_, r), (_, s) in zip(received, by_store):
        assert r.dtype == s.dtype and r.shape == s.shape and torch.equal(r, s)

    largest = max(t.numel() * t.element_size() for _, t in sent)
    buffers = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for _, t in received}
    assert len(buffers) == len(layouts) and max(buffers.values()) <= max(budget, largest)
    assert [len(layout) for layout in layouts] == ([3, 2, 1] if budget == 100 else [6])
    assert all(broadcast.offsets(layout)[1] <= max(budget, largest) for layout in layouts)


def test_a_reader_that_stops_early_still_takes_every_bucket(monkeypatch):
    """An engine that fails mid-load closes the iterator: the rest is received, so the sender
    (which broadcasts every bucket) is not left waiting."""
    def first_then_close(tensors):
        first = next(tensors)
        tensors.close()
        return first

    layouts, (name, _) = _broadcast_once(monkeypatch, _weights(), budget=100, read=first_then_close)
    assert name == "a" and len(layouts) == 3
