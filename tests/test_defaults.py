"""A default that a function and the config both state says the same in both places (the config
is what runs; a function's default is what a direct caller, a test or a script, gets)."""

from __future__ import annotations

import inspect

import pytest

from creason.algo.losses import clipped_policy_loss
from creason.config import AlgorithmConfig, EvalConfig, RolloutConfig, ServeConfig
from creason.rollout.engine import DEFAULT_MAX_MODEL_LEN, VllmEngine
from creason.rollout.hf_engine import HfEngine
from creason.serve.engine import ServeEngine
from creason.train.step import grpo_update


def default(fn, name: str):
    return inspect.signature(fn).parameters[name].default


@pytest.mark.parametrize("fn", [grpo_update, clipped_policy_loss])
@pytest.mark.parametrize("name", ["eps_low", "eps_high"])
def test_clip_bounds(fn, name):
    assert default(fn, name) == AlgorithmConfig.model_fields[name].default


def test_max_model_len():
    assert DEFAULT_MAX_MODEL_LEN == default(VllmEngine, "max_model_len") == default(HfEngine, "max_model_len")
    assert DEFAULT_MAX_MODEL_LEN == default(ServeEngine, "max_model_len")
    for section in (RolloutConfig, EvalConfig, ServeConfig):
        assert section.model_fields["max_model_len"].default == DEFAULT_MAX_MODEL_LEN, section.__name__
