"""Training checkpoints that are complete or absent, and resume exactly. No Ray.

Layout of `root/step_00000042/`:

    policy/             the policy in Hugging Face format (safetensors + tokenizer): loads as is
                        with transformers' from_pretrained and with vLLM (with LoRA: merged)
    adapter/            with `model.lora` only: the adapters as a PEFT folder
    engine/state/       the engine's own checkpoint (DeepSpeed `save_checkpoint`): module weights,
                        optimizer state (each rank writes its ZeRO partition), exact fp32 masters
    trainer_state.pt    step, data position, LR-scheduler state, RNG states of rank 0, and the
                        reference model's state when one was refreshed (else None)
    rng_rank{r}.pt      RNG states of rank r > 0
    meta.json           step, time, config hash
    COMPLETE.rank{r}    written last by each rank r: the world size and every file it sees, with sizes

Why DeepSpeed's own checkpoint for the optimizer: with ZeRO 1/2/3 each rank holds a partition of
the optimizer state (and of the fp32 master weights under bf16); `engine.save_checkpoint` /
`load_checkpoint` write and read those per rank, for every stage (resume verified exact on CPU for
ZeRO 0-3, fp32 and bf16, and for 2 ranks at ZeRO-2). Restoring only the HF weights would lose
Adam's moments, and with bf16 the fp32 masters. A `TorchEngine` has the same two methods.

Every rank calls `save_checkpoint` (DeepSpeed's save and, at ZeRO-3, gathering the weights are
collective); they write into `root/.tmp-step_.../`, which is renamed to `step_...` once every rank
has written its marker. The root is shared by the ranks, or each rank's own folder that Ray Train
merges into one (uploading them one by one).

Complete or absent: a checkpoint counts (`is_complete`) only when the marker of every rank is there
and every file a marker lists has its size. A process killed while writing leaves a `.tmp-` folder
that nothing reads; a copy cut short (an upload to shared storage, one rank's folder of two merged)
misses a marker or a file, and is skipped too, so resume takes the latest complete checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from creason.models.lora import is_peft, save_adapter
from creason.train.engine import full_state_dict

MARKER = "COMPLETE.rank{rank}"
ENGINE_TAG = "state"
_NAME = re.compile(r"^step_(\d+)$")


def checkpoint_name(step: int) -> str:
    """'step_00000042' for step 42: names sort by step."""
    return f"step_{step:08d}"


def config_hash(config: Mapping[str, Any] | None) -> str | None:
    """First 16 hex digits of the SHA-256 of the config as sorted JSON (None for no config)."""
    if config is None:
        return None
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def rng_state() -> dict:
    """Python, NumPy and torch (CPU, and CUDA when present) RNG states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(
    root: str | Path,
    engine,
    scheduler=None,
    tokenizer=None,
    *,
    step: int,
    data_position: int | dict | None = None,
    reference: Mapping[str, torch.Tensor] | None = None,
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Write `root/step_{step:08d}/` (layout in the module docstring) and return its path.

    Call on every rank. `root` may be shared by the ranks, or a folder of each rank's own (as Ray
    Train's `report(checkpoint=Checkpoint.from_directory(d))` expects: it merges the workers'
    folders, and file names never collide). `reference`: the reference model's state dict, when
    one was refreshed. An existing checkpoint of the same step is replaced.
    """
    rank, world = _rank_world()
    root = Path(root)
    final, tmp = root / checkpoint_name(step), root / f".tmp-{checkpoint_name(step)}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a crash
    _barrier()
    tmp.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(tmp / "engine"), tag=ENGINE_TAG, client_state={}, save_latest=False)
    weights = full_state_dict(engine, keep=rank == 0)  # a collective at ZeRO-3; rank 0 alone copies
    if rank == 0:
        _write_shared(tmp, engine.module, weights, tokenizer, step=step, data_position=data_position,
                      scheduler=scheduler, reference=reference, config=config)
    else:
        torch.save(rng_state(), tmp / f"rng_rank{rank}.pt")
    _barrier()
    mark_complete(tmp, rank, world)
    _barrier()
    if rank == 0:
        _replace(tmp, final)
    _barrier()
    if tmp.exists():  # a folder of this rank's own: its files go in place too
        _replace(tmp, final)
    return final


def mark_complete(folder: str | Path, rank: int = 0, world_size: int = 1) -> Path:
    """Write rank `rank`'s marker into `folder`: the world size and the size of every file there
    (but markers). Written last, once the rank's files (and, in a shared folder, all ranks') are in."""
    folder = Path(folder)
    files = {str(f.relative_to(folder)): f.stat().st_size for f in sorted(folder.rglob("*"))
             if f.is_file() and "COMPLETE.rank" not in f.name}  # nor another rank's marker being written
    marker = folder / MARKER.format(rank=rank)
    tmp = marker.with_name(f".{marker.name}.tmp")
    tmp.write_text(json.dumps({"world_size": world_size, "files": files}))
    tmp.rename(marker)
    return marker


def is_complete(path: str | Path) -> bool:
    """Whether `path` holds a complete checkpoint: rank 0's marker, the marker of every other rank
    it names, and every listed file with its listed size."""
    path = Path(path)
    return markers_complete(lambda rank: json.loads((path / MARKER.format(rank=rank)).read_text()),
                            lambda name: (path / name).stat().st_size if (path / name).is_file() else None)


def markers_complete(read_marker: Callable[[int], dict], size_of: Callable[[str], int | None]) -> bool:
    """`is_complete` on any filesystem: `read_marker(rank)` reads a rank's marker (OSError when
    there is none), `size_of(name)` is a file's size (None when there is none)."""
    try:
        world = read_marker(0)["world_size"]
        for rank in range(world):
            if any(size_of(name) != size for name, size in read_marker(rank)["files"].items()):
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def _write_shared(tmp: Path, module, weights, tokenizer, *, step, data_position, scheduler, reference, config) -> None:
    """Rank 0's files: the HF policy folder (and with LoRA the adapter folder), trainer_state.pt
    and meta.json."""
    if is_peft(module):  # `weights` are merged: policy/ is a plain model, adapter/ the PEFT folder
        save_adapter(module, tmp / "adapter")
        module = module.get_base_model()
    module.save_pretrained(tmp / "policy", state_dict=weights)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / "policy")
    torch.save({
        "step": step,
        "data_position": data_position,
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(),
        "reference": None if reference is None else {k: v.detach().cpu() for k, v in reference.items()},
    }, tmp / "trainer_state.pt")
    meta = {"step": step, "time": time.time(), "time_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config_hash": config_hash(config)}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))


def _replace(src: Path, dst: Path) -> None:
    """Rename src to dst; an existing dst is moved aside first and deleted after."""
    old = dst.with_name(f".old-{dst.name}")
    if dst.exists():
        shutil.rmtree(old, ignore_errors=True)
        dst.rename(old)
    src.rename(dst)
    shutil.rmtree(old, ignore_errors=True)


def checkpoint_step(path: str | Path) -> int:
    """42 for `.../step_00000042`."""
    return int(_NAME.match(Path(path).name).group(1))


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint (`step_N/`, see `is_complete`) of highest step anywhere under root
    (Ray Train nests them: `root/grpo/checkpoint_<time>/step_N/`), or None."""
    root = Path(root)
    if not root.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in root.rglob("step_*")
             if p.is_dir() and (m := _NAME.match(p.name)) and is_complete(p)]
    return max(found)[1] if found else None


def latest_checkpoint_at(root_uri: str) -> tuple[int, str] | None:
    """`latest_checkpoint` for a root on object storage (`creason.storage`): (step, URI of the
    step_N folder) of the complete checkpoint of highest step, or None. Reads the listing and the
    markers only."""
    from creason import storage

    files = storage.listing(root_uri)
    folders: dict[str, int] = {}
    for rel in files:
        parts = rel.split("/")
        found = next((i for i, part in enumerate(parts[:-1]) if _NAME.match(part)), None)
        if found is not None:
            folders["/".join(parts[:found + 1])] = checkpoint_step(parts[found])
    for folder, step in sorted(folders.items(), key=lambda item: -item[1]):
        sizes = {rel[len(folder) + 1:]: size for rel, size in files.items() if rel.startswith(folder + "/")}
        uri = f"{root_uri.rstrip('/')}/{folder}"
        if markers_complete(lambda rank: json.loads(storage.read_text(f"{uri}/{MARKER.format(rank=rank)}")), sizes.get):
            return step, uri
    return None


def load_checkpoint(path: str | Path, engine, scheduler=None) -> dict:
    """Restore weights and optimizer (through the engine), scheduler and RNG states.

    path: a checkpoint folder (step_N/), or a root holding some, whose latest complete one is used.
    Call on every rank, with an engine built like the saved one (same ZeRO stage and world size).
    Returns {"step", "data_position", "reference" (a state dict or None), "meta", "path"}.
    """
    path = Path(path)
    if not is_complete(path) and (latest := latest_checkpoint(path)) is not None:
        path = latest
    if not is_complete(path):
        raise FileNotFoundError(f"{path} is not a complete checkpoint (a rank's marker or a file it lists is missing)")
    loaded, _ = engine.load_checkpoint(str(path / "engine"), tag=ENGINE_TAG, load_optimizer_states=True,
                                       load_lr_scheduler_states=False)
    if loaded is None:
        raise RuntimeError(f"the engine could not load {path / 'engine'}")
    state = torch.load(path / "trainer_state.pt", weights_only=False)
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
        for group, lr in zip(scheduler.optimizer.param_groups, scheduler.get_last_lr()):
            group["lr"] = lr
    rank, _ = _rank_world()
    set_rng_state(state["rng"] if rank == 0 else torch.load(path / f"rng_rank{rank}.pt", weights_only=False))
    return {
        "step": state["step"],
        "data_position": state["data_position"],
        "reference": state["reference"],
        "meta": json.loads((path / "meta.json").read_text()),
        "path": path,
    }
