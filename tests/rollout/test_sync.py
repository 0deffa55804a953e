"""The weight-sync package without Ray: the registry of transports, the object store's two ends,
and the rule that keeps imports from running in a loop (transports import only `base`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import creason.rollout.sync as sync
from creason.rollout.sync import TRANSPORTS, make_receiver, make_weight_sync
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
