"""`enforce_eager`: a config knob of rollout, evaluation and serving engines; None means on for CPUs
(start-up in seconds) and off on GPUs (CUDA graphs)."""

from contextlib import contextmanager

import pytest
import torch

from creason.config import load_config
from creason.rollout import engine as rollout_engine
from creason.rollout.engine import resolve_enforce_eager


@pytest.mark.parametrize("cuda, want", [(False, True), (True, False)])
def test_none_follows_the_hardware(monkeypatch, cuda, want):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_enforce_eager(None) is want
    assert resolve_enforce_eager(True) is True and resolve_enforce_eager(False) is False  # explicit wins


def test_config_knobs_default_to_auto_and_override():
    cfg = load_config("paper")
    assert (cfg.rollout.enforce_eager, cfg.evaluate.enforce_eager, cfg.serve.enforce_eager) == (None, None, None)
    cfg = load_config("quickstart", ["rollout.enforce_eager=false", "evaluate.enforce_eager=true",
                                     "serve.enforce_eager=false"])
    assert (cfg.rollout.enforce_eager, cfg.evaluate.enforce_eager, cfg.serve.enforce_eager) == (False, True, False)


@pytest.mark.parametrize("cuda, want", [(False, True), (True, False)])
def test_vllm_engine_gets_the_resolved_value(monkeypatch, cuda, want):
    seen = {}

    class RecordingLLM:
        def __init__(self, **kwargs):
            seen.update(kwargs)

        def get_tokenizer(self):
            return None

    @contextmanager
    def fake_in_process_vllm(num_threads):
        yield RecordingLLM

    monkeypatch.setattr(rollout_engine, "_in_process_vllm", fake_in_process_vllm)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    rollout_engine.VllmEngine("model")
    assert seen["enforce_eager"] is want


def test_serve_engine_gets_the_resolved_value(monkeypatch):
    from vllm.v1.engine.async_llm import AsyncLLM

    from creason.serve.engine import ServeEngine

    seen = []

    class Stop(Exception):
        pass

    def record(engine_args, *args, **kwargs):
        seen.append(engine_args.enforce_eager)
        raise Stop

    monkeypatch.setattr(AsyncLLM, "from_engine_args", record)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for value, want in ((None, False), (True, True)):
        with pytest.raises(Stop):
            ServeEngine("model", enforce_eager=value)
    assert seen == [False, True]


def test_rollout_and_evaluation_engines_get_the_config_value(monkeypatch):
    """The config value reaches the actors' engine arguments (resolved there, on the actor's node)."""
    import ray

    import creason.raycluster
    import creason.rollout.actor
    from creason.evaluate.run import default_answerer
    from creason.train.run import start_rollout_actors

    cfg = load_config("quickstart", ["rollout.enforce_eager=false", "evaluate.enforce_eager=true"])
    captured = {}
    monkeypatch.setattr(creason.rollout.actor, "create_rollout_actors",
                        lambda *a, engine_kwargs, **k: captured.setdefault("rollout", engine_kwargs))
    start_rollout_actors(cfg, "model")
    monkeypatch.setattr(creason.raycluster, "connect", lambda *a, **k: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64})
    answerer = default_answerer(cfg, print)
    assert captured["rollout"]["enforce_eager"] is False and answerer.engine_kwargs["enforce_eager"] is True
