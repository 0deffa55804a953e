"""The driver of a training run: rollout actors, a `TorchTrainer`, and where things are stored.

    creason train --config quickstart            (or: ray job submit ... ray_jobs/train_grpo.py)
"""

from __future__ import annotations

from pathlib import Path

from creason.config import CreasonConfig, TrainConfig
from creason.models.lora import lora_sync
from creason.paths import QUESTIONS, absolute_output_dir, checkpoint_root, questions_dir, resolve_model_path
from creason.raycluster import connect
from creason.storage import exists, is_remote, join


def initial_policy_path(cfg: CreasonConfig) -> str:
    """The weights GRPO starts from: the warm-up's model (`creason warmup`) when `warmup.enabled`,
    else the base model."""
    if not cfg.warmup.enabled:
        return resolve_model_path(cfg)
    from creason.train.warmup import warmup_dir

    folder = warmup_dir(cfg) / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"warmup.enabled is set but {folder} holds no warmed-up model: run `creason warmup` "
                                "with the same config first")
    return str(folder.resolve())


def resolve_questions_dir(cfg: CreasonConfig) -> str:
    """The training questions (`creason.paths.questions_dir`) as the workers, which run elsewhere,
    read them: a folder made absolute; the bucket's copy of a build in a URI `output_dir`, which
    every node reads."""
    if not cfg.train.questions_dir and is_remote(cfg.output_dir):
        return str(join(cfg.output_dir, QUESTIONS))
    folder = questions_dir(cfg)
    return str(folder) if is_remote(folder) else str(Path(folder).resolve())


def adapter_engine_kwargs(cfg: CreasonConfig) -> dict:
    """The rollout engine's LoRA settings when the policy's adapters are synced as adapters."""
    return {"lora": cfg.model.lora.model_dump()} if lora_sync(cfg) == "adapter" else {}


def start_rollout_actors(cfg: CreasonConfig, model_path: str) -> list:
    """The rollout actors of `cfg.rollout` (placed, restartable, engines sized), not yet ready."""
    from creason.rollout.actor import create_rollout_actors
    from creason.rollout.engine import ENGINE_DTYPES

    r = cfg.rollout
    return create_rollout_actors(
        r.num_actors, model_path, backend=r.backend, num_cpus_per_actor=r.cpus_per_actor, num_gpus_per_actor=r.gpus_per_actor,
        resources=r.custom_resources, max_restarts=r.max_restarts, num_threads=r.threads_per_actor,
        engine_kwargs={"dtype": ENGINE_DTYPES[cfg.model.precision], "max_model_len": r.max_model_len,
                       "kv_cache_memory_bytes": int(r.kv_cache_gib * 2**30), "seed": cfg.seed,
                       "enforce_eager": r.enforce_eager, **adapter_engine_kwargs(cfg)},
    )


def worker_scaling(t: TrainConfig) -> dict:
    """`TorchTrainer` keyword arguments for the `train.*` workers (count, resources, process-group
    backend): the GRPO run and the warm-up train on the same workers."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig

    return {"scaling_config": ScalingConfig(num_workers=t.num_workers, use_gpu=t.gpus_per_worker > 0,
                                            resources_per_worker={"CPU": t.cpus_per_worker, "GPU": t.gpus_per_worker,
                                                                  **t.custom_resources}),
            "torch_config": TorchConfig(backend="nccl" if t.gpus_per_worker > 0 else "gloo")}


def worker_run_config(t: TrainConfig, **run_config):
    """Ray Train's `RunConfig` (`run_config`'s fields) with the workers' environment, `train.worker_env`
    (none by default: the job's environment alone)."""
    from ray.train import RunConfig

    return RunConfig(worker_runtime_env={"env_vars": dict(t.worker_env)} if t.worker_env else {}, **run_config)


def train(cfg: CreasonConfig, resume: bool = False):
    """Run GRPO to `cfg.train.steps`; with `resume`, continue from the latest complete checkpoint."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig
    from ray.train.torch import TorchTrainer

    from creason.train.loop import train_loop_per_worker

    connect(cfg.ray)
    cfg = cfg.model_copy(update={"output_dir": absolute_output_dir(cfg.output_dir)})  # workers run elsewhere
    model_path = initial_policy_path(cfg)
    storage = checkpoint_root(cfg.output_dir)  # a folder, or a URI that Ray Train writes to itself
    if not resume and exists(join(storage, "grpo")):
        raise FileExistsError(f"{join(storage, 'grpo')} holds an earlier run: pass --resume to continue it, or use another output_dir")
    t = cfg.train
    actors = start_rollout_actors(cfg, model_path)  # their engines start while the workers do (rank 0 waits for them)
    try:
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"config": cfg.model_dump(mode="json"), "model_path": model_path,
                               "questions_dir": resolve_questions_dir(cfg), "actors": actors},
            **worker_scaling(t),
            run_config=worker_run_config(t, name="grpo", storage_path=str(storage),
                                         checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
                                         failure_config=FailureConfig(max_failures=t.max_failures)),
        )
        return trainer.fit()
    finally:  # the actors' engines hold memory and CPUs that the next stage needs
        for actor in actors:
            ray.kill(actor)
