"""Where a run's folders are: every stage asks here, so each default and fallback is written once.

    model.path                            the base model; unset: SmolLM2-135M-Instruct, fetched once
    <output_dir>/questions/               the question build (`creason build-questions` writes it);
                                          a stage reads another with its `questions_dir`, else
                                          `train.questions_dir`
    <output_dir>/ray_train/               Ray Train's storage: checkpoint_*/step_N/ (the checkpoints,
                                          `creason.train.checkpoint`), the policy in step_N/policy/
"""

from __future__ import annotations

from pathlib import Path

from creason.config import CreasonConfig


def resolve_model_path(cfg: CreasonConfig) -> str:
    """The base model's folder: `model.path`, else the default model (downloaded on first use)."""
    if cfg.model.path:
        return cfg.model.path
    from creason.models.fetch import fetch_default_model

    return str(fetch_default_model())


def question_build_dir(output_dir: str | Path) -> Path:
    """Where `creason build-questions` writes the question Parquet, manifest and plan."""
    return Path(output_dir) / "questions"


def questions_dir(cfg: CreasonConfig, stage_dir: str | None = None) -> Path:
    """The questions a stage reads: its own `questions_dir` (`stage_dir`: evaluate's, serve's), else
    `train.questions_dir`, else the run's own build."""
    return Path(stage_dir or cfg.train.questions_dir or question_build_dir(cfg.output_dir))


def checkpoint_root(output_dir: str | Path) -> Path:
    """Ray Train's storage of a run (its `RunConfig.storage_path`), which holds the checkpoints."""
    return Path(output_dir) / "ray_train"


def latest_policy(output_dir: str | Path) -> tuple[int, Path] | None:
    """(step, policy folder) of the complete training checkpoint of highest step under
    `checkpoint_root(output_dir)` (layout of `creason.train.checkpoint`: step_N/policy); None
    when there is none."""
    from creason.train.checkpoint import checkpoint_step, latest_checkpoint

    found = latest_checkpoint(checkpoint_root(output_dir))
    return None if found is None else (checkpoint_step(found), found / "policy")
