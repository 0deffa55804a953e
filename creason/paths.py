"""Where a run's folders are: every stage asks here, so each default and fallback is written once.

    model.path                            the base model; unset: SmolLM2-135M-Instruct, fetched once
    <output_dir>/questions/               the question build (`creason build-questions` writes it);
                                          a stage reads another with its `questions_dir`, else
                                          `train.questions_dir`
    <output_dir>/ray_train/               Ray Train's storage: checkpoint_*/step_N/ (the checkpoints,
                                          `creason.train.checkpoint`), the policy in step_N/policy/

`output_dir` may be a URI (`s3://bucket/run`, `creason.storage`): stages then read and write a
working copy on the local disk (`creason.storage.local_dir`), and Ray Train the URI's `ray_train/` itself.
"""

from __future__ import annotations

from pathlib import Path

from creason.config import CreasonConfig
from creason.storage import CHECKPOINTS, is_remote, join, local_dir

#: The question build's folder under `output_dir` (in the working copy, and in the bucket of a URI one).
QUESTIONS = "questions"


def resolve_model_path(cfg: CreasonConfig) -> str:
    """The base model's folder: `model.path`, else the default model (downloaded on first use)."""
    if cfg.model.path:
        return cfg.model.path
    from creason.models.fetch import fetch_default_model

    return str(fetch_default_model())


def absolute_output_dir(output_dir: str) -> str:
    """`output_dir` as Ray workers need it: a local folder made absolute, a URI as it is."""
    return output_dir if is_remote(output_dir) else str(Path(output_dir).resolve())


def train_metrics_path(output_dir: str | Path) -> Path:
    """The training run's `metrics.jsonl` (`creason.train.metrics.MetricsLog` in `<output_dir>/train`),
    in the working copy of a URI `output_dir`."""
    return local_dir(output_dir) / "train" / "metrics.jsonl"


def question_build_dir(output_dir: str | Path) -> Path:
    """Where `creason build-questions` writes the question Parquet, manifest and plan."""
    return local_dir(output_dir) / QUESTIONS


def questions_dir(cfg: CreasonConfig, stage_dir: str | None = None) -> str | Path:
    """The questions a stage reads: its own `questions_dir` (`stage_dir`: evaluate's, serve's), else
    `train.questions_dir`, else the run's own build (in the working copy of a URI `output_dir`).
    A URI stays a URI (pyarrow reads it)."""
    chosen = stage_dir or cfg.train.questions_dir
    if chosen:
        return chosen if is_remote(chosen) else Path(chosen)
    return question_build_dir(cfg.output_dir)


def checkpoint_root(output_dir: str | Path) -> str | Path:
    """Ray Train's storage of a run (its `RunConfig.storage_path`), which holds the checkpoints: a
    Path, or for a URI `output_dir` a URI."""
    return join(output_dir, CHECKPOINTS)


def latest_policy(output_dir: str | Path) -> tuple[int, Path] | None:
    """(step, local policy folder) of the complete training checkpoint of highest step under
    `checkpoint_root(output_dir)` (layout of `creason.train.checkpoint`: step_N/policy; on object
    storage, downloaded first); None when there is none."""
    from creason.train.checkpoint import checkpoint_step, latest_checkpoint, latest_checkpoint_at

    root = checkpoint_root(output_dir)
    if not is_remote(output_dir):
        found = latest_checkpoint(root)
        return None if found is None else (checkpoint_step(found), found / "policy")
    return _fetch_policy(str(root), local_dir(output_dir) / CHECKPOINTS, latest_checkpoint_at(str(root)))


def _fetch_policy(root: str, local_root: Path, found: tuple[int, str] | None) -> tuple[int, Path] | None:
    """Download the policy (and LoRA adapter) folders of a checkpoint on object storage into the
    working copy; the engine state, which only resume reads (Ray Train fetches it), stays there."""
    from creason.storage import pull

    if found is None:
        return None
    step, uri = found
    local = local_root / uri[len(root) + 1:]
    for folder in ("policy", "adapter"):
        pull(uri, local, skip=(), under=folder)
    return step, local / "policy"
