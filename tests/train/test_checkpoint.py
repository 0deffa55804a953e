"""Checkpoints: an exact resume through DeepSpeed, a loadable HF folder, incomplete ones ignored."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creason.train.checkpoint import is_complete, latest_checkpoint, load_checkpoint, mark_complete, save_checkpoint
from creason.train.engine import build_deepspeed_engine, ensure_single_process_group, full_state_dict
from creason.train.step import TorchEngine, grpo_update
from tests.ranks import spawn_gloo_ranks
from tests.train import load_tiny, random_batch

KW = dict(mu=1, micro_batch_size=2, eps_low=0.2, eps_high=0.28, beta=0.0, agg="token-mean", kl_estimator="k3",
          temperature=1.0)


def deepspeed_engine(model_dir, zero_stage):
    return build_deepspeed_engine(load_tiny(model_dir), lr=1e-2, weight_decay=0.1, warmup_steps=1, total_steps=10,
                                  zero_stage=zero_stage, grad_clip=1.0, micro_batch_size=2)


def torch_engine(model_dir):
    model = load_tiny(model_dir)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    return TorchEngine(model, opt, sched, grad_clip=1.0), sched


@pytest.mark.parametrize("kind", ["zero0", "zero2", "torch"])
def test_resume_gives_the_same_next_update(tiny_model_dir, tmp_path, kind):
    if kind != "torch":
        ensure_single_process_group()
    build = (lambda: torch_engine(tiny_model_dir)) if kind == "torch" else (
        lambda: deepspeed_engine(tiny_model_dir, int(kind[-1])))
    first, second = random_batch(seed=1), random_batch(seed=2)
    engine, scheduler = build()
    grpo_update(engine, first, **KW)
    saved_weights = full_state_dict(engine)
    path = save_checkpoint(tmp_path, engine, scheduler, AutoTokenizer.from_pretrained(tiny_model_dir), step=2,
                           data_position={"epoch": 0, "index": 8}, config={"lr": 1e-2})
    draw, lr_at_save = torch.rand(4), scheduler.get_last_lr()  # the RNG stream right after the save
    grpo_update(engine, second, **KW)
    w2 = {k: v.clone() for k, v in engine.module.state_dict().items()}

    fresh, fresh_scheduler = build()
    state = load_checkpoint(latest_checkpoint(tmp_path), fresh, fresh_scheduler)
    assert state["step"] == 2 and state["data_position"] == {"epoch": 0, "index": 8} and state["path"] == path
    assert state["reference"] is None and state["meta"]["step"] == 2 and state["meta"]["config_hash"]
    assert torch.equal(torch.rand(4), draw)
    assert fresh_scheduler.get_last_lr() == lr_at_save
    grpo_update(fresh, second, **KW)
    resumed = fresh.module.state_dict()
    assert all(torch.equal(w2[k], resumed[k]) for k in w2)

    policy = AutoModelForCausalLM.from_pretrained(path / "policy")  # plain HF folder
    assert all(torch.equal(policy.state_dict()[k], saved_weights[k]) for k in saved_weights)
    assert (path / "policy" / "model.safetensors").exists() and (path / "policy" / "tokenizer.json").exists()
    assert json.loads((path / "meta.json").read_text())["step"] == 2


def test_reference_is_kept_and_a_root_loads_its_latest(tiny_model_dir, tmp_path):
    engine, scheduler = torch_engine(tiny_model_dir)
    reference = {"w": torch.arange(3.0)}
    save_checkpoint(tmp_path, engine, scheduler, step=1)
    save_checkpoint(tmp_path, engine, scheduler, step=3, reference=reference)
    fresh, fresh_scheduler = torch_engine(tiny_model_dir)
    state = load_checkpoint(tmp_path, fresh, fresh_scheduler)  # the root: its latest complete checkpoint
    assert state["step"] == 3 and torch.equal(state["reference"]["w"], reference["w"])
    assert not list(tmp_path.glob(".tmp-*"))


def fake_checkpoint(root, name, complete):
    path = root / name
    path.mkdir(parents=True)
    (path / "meta.json").write_text("{}")
    if complete:
        mark_complete(path)
    return path


def test_latest_checkpoint_ignores_incomplete_and_temporary(tmp_path):
    assert latest_checkpoint(tmp_path / "missing") is None
    assert latest_checkpoint(tmp_path) is None
    fake_checkpoint(tmp_path, "step_00000003", complete=True)
    best = fake_checkpoint(tmp_path, "step_00000010", complete=True)
    fake_checkpoint(tmp_path, "step_00000020", complete=False)  # crashed before the marker
    fake_checkpoint(tmp_path, ".tmp-step_00000030", complete=True)  # crashed before the rename
    fake_checkpoint(tmp_path, "other_00000040", complete=True)
    fake_checkpoint(tmp_path, "step_00000009", complete=True)  # by step number, not by name order alone
    assert latest_checkpoint(tmp_path) == best
    nested = fake_checkpoint(tmp_path / "grpo" / "checkpoint_2026-12-02_03-00-00", "step_00000011", complete=True)
    assert latest_checkpoint(tmp_path) == nested  # as Ray Train nests them


def test_a_copy_cut_short_is_not_complete(tmp_path):
    """What an upload or a merge of the ranks' folders interrupted leaves: a marker whose files are
    not all there (or not whole), or a missing rank's marker."""
    path = fake_checkpoint(tmp_path, "step_00000001", complete=False)
    (path / "policy").mkdir()
    (path / "policy" / "model.safetensors").write_bytes(b"x" * 100)
    mark_complete(path, rank=0, world_size=2)
    assert not is_complete(path)  # rank 1's marker missing
    mark_complete(path, rank=1, world_size=2)
    assert is_complete(path)
    (path / "policy" / "model.safetensors").write_bytes(b"x" * 50)  # truncated
    assert not is_complete(path)
    (path / "policy" / "model.safetensors").unlink()
    assert not is_complete(path)


def test_loading_an_incomplete_checkpoint_fails(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(fake_checkpoint(tmp_path, "step_00000001", complete=False), None)


def _two_rank_worker(rank, world, model_dir, out_dir):
    """One of 2 gloo ranks: ZeRO-2 updates on uneven shards, a Ray-style per-rank save, an exact resume."""
    import shutil
    from pathlib import Path

    import torch.distributed as dist

    from creason.train.batch import shard

    out = Path(out_dir)
    lens = dict(prompt_lens=(3, 5, 4, 6, 2), response_lens=(4, 2, 5, 3, 1))  # B = 5: rank 1 gets a pad row
    first, second = (shard(random_batch(seed=s, **lens), rank, world) for s in (1, 2))
    engine, scheduler = deepspeed_engine(model_dir, 2)
    grpo_update(engine, first, **KW)
    save_checkpoint(out / f"rank{rank}", engine, scheduler, step=1)  # each rank its own folder, like Ray Train
    grpo_update(engine, second, **KW)
    w2 = full_state_dict(engine)
    dist.barrier()
    if rank == 0:  # what Ray Train does with the workers' folders: one merged checkpoint
        for r in range(world):
            shutil.copytree(out / f"rank{r}", out / "merged", dirs_exist_ok=True)
    dist.barrier()
    fresh, fresh_scheduler = deepspeed_engine(model_dir, 2)
    load_checkpoint(out / "merged", fresh, fresh_scheduler)
    grpo_update(fresh, second, **KW)
    resumed = full_state_dict(fresh)
    exact = all(torch.equal(w2[k], resumed[k]) for k in w2)
    torch.save({"exact": exact, "w2": w2["model.norm.weight"]}, out / f"result{rank}.pt")


def test_two_ranks_zero2_uneven_shards_and_per_rank_folders(tiny_model_dir, tmp_path):
    spawn_gloo_ranks(_two_rank_worker, 2, str(tiny_model_dir), str(tmp_path))
    results = [torch.load(tmp_path / f"result{r}.pt") for r in range(2)]
    assert all(r["exact"] for r in results)
    assert torch.equal(results[0]["w2"], results[1]["w2"])  # data-parallel ranks agree
    assert (tmp_path / "merged" / "step_00000001" / "rng_rank1.pt").exists()


def _kill_a_checkpoint_writer(model_dir: Path, out: Path, delay: float) -> None:
    """Start a process that writes checkpoint after checkpoint into `out`; SIGKILL it `delay` s
    after its first save is recorded."""
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    writer = subprocess.Popen([sys.executable, "-m", "tests.train.checkpoint_writer", str(model_dir), str(out)],
                              cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "saved").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        writer.kill()
        writer.wait(30)
    finally:
        writer.kill()


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.15])
def test_a_write_killed_midway_leaves_the_latest_complete_checkpoint(tiny_model_dir, tmp_path, delay):
    """SIGKILL a process that writes checkpoint after checkpoint, at a moment it is writing: every
    `step_N` folder is complete, the root loads its latest, a later save clears the debris. A kill
    can fall between two saves on a busy machine: up to 3 tries for one inside a save."""
    for attempt in range(3):
        out = tmp_path / f"try{attempt}"
        out.mkdir()
        _kill_a_checkpoint_writer(tiny_model_dir, out, delay)
        saved = int((out / "saved").read_text())
        steps = sorted(out.glob("step_*"))
        assert steps and all(is_complete(p) for p in steps)  # a step_N folder is never half-written
        latest = latest_checkpoint(out)
        assert latest == steps[-1] and int(latest.name.split("_")[1]) >= saved
        if list(out.glob(".tmp-step_*")):
            break
    else:
        pytest.fail("in 3 tries no kill landed inside a save (saves run back to back)")
    fresh, fresh_scheduler = torch_engine(tiny_model_dir)
    state = load_checkpoint(out, fresh, fresh_scheduler)
    assert state["path"] == latest and state["data_position"] == state["step"]
    save_checkpoint(out, fresh, fresh_scheduler, step=state["step"] + 1)
    assert not list(out.glob(".tmp-step_*")) and is_complete(out / f"step_{state['step'] + 1:08d}")
