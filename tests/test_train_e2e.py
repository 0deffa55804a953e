"""End to end: 2 GRPO steps with a real vLLM rollout actor and 2 Ray Train workers running
DeepSpeed on a tiny model, the top block trained and synced alone; then a resume that must run
step 3 on the batch an uninterrupted run would have drawn. Whole-model training and sync run end
to end in tests/test_train_faults.py, tests/test_storage_e2e.py and tests/test_cluster_jobs.py."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from creason.config import load_config
from creason.train.checkpoint import latest_checkpoint
from creason.data.schema import load_questions
from creason.train.data import PromptStream, batch_fingerprint
from creason.train.run import train

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _config(out: Path, model: Path, questions: Path, steps: int, extra: tuple[str, ...] = ()):
    return load_config("quickstart", [*_overrides(out, model, steps), f"train.questions_dir={questions}", *extra])


def _overrides(out: Path, model: Path, steps: int) -> list[str]:
    return [
        f"output_dir={out}", "data.num_patients=400", "data.block_size=200", f"model.path={model}",
        "rollout.num_actors=1", "rollout.cpus_per_actor=1", "train.cpus_per_worker=0.5", "train.threads_per_worker=1",
        "train.zero_stage=2",
        "rollout.group_size=3", "rollout.rotate_options=true", "rollout.max_new_tokens=24", "rollout.max_model_len=1536", "rollout.kv_cache_gib=0.25",
        "train.prompts_per_step=2", f"train.steps={steps}", "train.checkpoint_every=2", "train.num_workers=2",
        "train.micro_batch_size=3", "train.lr=1e-3", "train.warmup_ratio=0", "algorithm.beta=0.04", "train.eval_every=2",
        "train.eval_questions=3", "evaluate.max_new_tokens=24",
        "algorithm.truncation=none", "algorithm.filter_zero_variance=false", "algorithm.rewards=[{path: 'tests.helpers:even_length_reward'}]",
        "algorithm.answer_balance=true",
    ]


@pytest.fixture(scope="module")
def first_run(tiny_model_dir, small_question_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("grpo")
    cfg = _config(out, tiny_model_dir, small_question_set, steps=2, extra=("train.trainable_layers=1", "train.lr=1e-2"))
    result = train(cfg)
    return cfg, out, result


def _all_records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train" / "metrics.jsonl").read_text().splitlines()]


def _records(out: Path) -> list[dict]:
    """The records of training steps (not the step-0 validation of the initial weights)."""
    return [r for r in _all_records(out) if r["step"] > 0]


def _logprob_change(base: Path, trained: Path) -> float:
    """Mean absolute change of the log-probabilities two Hugging Face folders give 16 fixed random
    tokens: the size of what training did, against which a sync's mismatch must be float noise."""
    from transformers import AutoModelForCausalLM

    tokens = torch.randint(5, 1000, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = AutoModelForCausalLM.from_pretrained(base)(input_ids=tokens).logits.log_softmax(-1)
        after = AutoModelForCausalLM.from_pretrained(trained)(input_ids=tokens).logits.log_softmax(-1)
    return (after - before).abs().mean().item()


def test_two_steps_train_and_change_weights(first_run, tiny_model_dir):
    cfg, out, result = first_run
    records = _records(out)
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert r["completions"] == 2 * 3  # each question's group of 3, spread over rotations of its options
        assert torch.isfinite(torch.tensor(r["loss"]))
        for phase in ("generate", "score", "reference", "train", "sync"):
            assert r[f"time_{phase}_s"] >= 0
        assert r["generate_tokens"] == round(r["completion_length"] * r["completions"])  # every sampled token counted
        assert r["answer_weight_mean"] > 0  # algorithm.answer_balance: the training questions' weights reached scoring
    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    after = load_file(str(latest_checkpoint(result.checkpoint.path) / "policy" / "model.safetensors"))
    top = max(int(k.split(".")[2]) for k in before if k.startswith("model.layers."))
    moved = sorted({k.split(".")[2] for k in before if k.startswith("model.layers.") and not torch.equal(before[k], after[k])})
    assert moved == [str(top)]  # train.trainable_layers=1: the top block alone


def test_validation_accuracy_every_eval_every_steps(first_run):
    """train.eval_every=2: the initial weights (step 0) and step 2, not step 1, carry the evaluation
    protocol's accuracy (forced letter) over 3 validation questions, per question kind too."""
    _, out, _ = first_run
    step0, step1, step2 = _all_records(out)
    assert step0["step"] == 0 and "reward_mean" not in step0
    assert "val_accuracy" not in step1 and "time_eval_s" not in step1
    for record in (step0, step2):
        assert record["val_questions"] == 3
        assert record["val_accuracy"] in (0.0, 1 / 3, 2 / 3, 1.0)
        assert record["time_eval_s"] > 0
        assert 0 < record["val_reasoning_tokens"] <= 24
        kinds = [k for k in record if k.startswith("val_accuracy_")]
        assert kinds and all(0.0 <= record[k] <= 1.0 for k in kinds)


def test_rollouts_after_sync_use_the_new_weights(first_run, tiny_model_dir):
    """Step 2 samples after the first sync, which sent the top block and the final norm alone:
    vLLM's log-probs must match the trainer's updated policy (mismatch at float noise), far below
    the change that training made, which they would not with the old weights."""
    _, out, result = first_run
    step2 = _records(out)[1]
    change = _logprob_change(tiny_model_dir, latest_checkpoint(result.checkpoint.path) / "policy")
    assert step2["weight_version"] == 1 and step2["mismatch"] < change / 10, (step2["mismatch"], change)


def test_checkpoint_is_a_hugging_face_folder(first_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, _, result = first_run
    policy = latest_checkpoint(result.checkpoint.path) / "policy"
    model = AutoModelForCausalLM.from_pretrained(policy)
    AutoTokenizer.from_pretrained(policy)
    assert sum(p.numel() for p in model.parameters()) > 1e6


def test_resume_runs_step_three_on_the_uninterrupted_batch(first_run):
    cfg, out, _ = first_run
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"steps": 3})})
    train(cfg, resume=True)
    records = _records(out)
    assert [r["step"] for r in records] == [1, 2, 3]
    stream = PromptStream(load_questions(cfg.train.questions_dir, "train", ["masked_value"]), 2, cfg.seed)
    assert records[2]["batch"] == batch_fingerprint(stream.batch(2))
    assert records[2]["data_position"] == 6


@pytest.mark.parametrize("sync, top", [("adapter", None), ("merged", 1)])
def test_lora_trains_adapters_and_rollouts_run_them(tiny_model_dir, small_question_set, tmp_path, sync, top):
    """model.lora: the adapters train (the checkpoint's adapter/ is a PEFT folder and its policy/
    the merged model, which has moved from the base); vLLM samples step 2 with step 1's adapters,
    run by its LoRA kernels (`sync: adapter`) or merged into its weights (`sync: merged`): mismatch
    at float noise, far below the change the step made. With `train.trainable_layers` only the top
    blocks' adapters move (B starts at zero, so the others stay zero). Two runs cover both syncs and
    both block settings (each run takes 40-50 s on 2 cores)."""
    from creason.models.lora import is_adapter_folder

    cfg = _config(tmp_path, tiny_model_dir, small_question_set, steps=2,
                  extra=("model.lora.rank=8", f"model.lora.sync={sync}", "train.lr=5e-2", "algorithm.beta=0",
                         "train.eval_every=0", f"train.trainable_layers={'null' if top is None else top}"))
    result = train(cfg)
    step1, step2 = _records(tmp_path)
    checkpoint = latest_checkpoint(result.checkpoint.path)
    assert is_adapter_folder(checkpoint / "adapter")
    b = {k: v for k, v in load_file(checkpoint / "adapter" / "adapter_model.safetensors").items() if ".lora_B." in k}
    blocks = sorted({int(k.split(".layers.")[1].split(".")[0]) for k in b})
    moved_blocks = sorted({int(k.split(".layers.")[1].split(".")[0]) for k, v in b.items() if v.abs().max() > 0})
    assert moved_blocks == (blocks if top is None else blocks[-top:]), (moved_blocks, blocks)
    moved = _logprob_change(tiny_model_dir, checkpoint / "policy")
    assert moved > 1e-3
    assert step2["weight_version"] == 1 and step2["mismatch"] < moved / 10, (step2["mismatch"], moved)


def test_async_rollouts_sample_the_next_step_during_the_update(tiny_model_dir, small_question_set, tmp_path):
    """`train.async_rollouts`: step 1 samples on policy; steps 2 and 3 were sampled during the update
    before them, with the weights of the step before (version, lag 1), on the batches an on-policy
    run draws. Step 2's sampler ran weights 0 while the trainer held weights 1: its mismatch is the
    size of step 1's change, not float noise (it is a real look-ahead, not a sync in disguise). The
    last step samples nothing ahead, so it has no generate wait."""
    cfg = _config(tmp_path, tiny_model_dir, small_question_set, steps=3,
                  extra=("train.async_rollouts=true", "algorithm.tis_cap=2", "train.trainable_layers=1", "train.lr=1e-2",
                         "algorithm.beta=0", "train.eval_every=0", "train.num_workers=1", "train.checkpoint_every=3"))
    result = train(cfg)
    records = _records(tmp_path)
    assert [(r["step"], r["weight_version"], r["policy_lag"]) for r in records] == [(1, 0, 0), (2, 0, 1), (3, 1, 1)]
    stream = PromptStream(load_questions(small_question_set, "train", ["masked_value"]), 2, cfg.seed)
    assert [r["batch"] for r in records] == [batch_fingerprint(stream.batch(s)) for s in range(3)]
    assert records[1]["mismatch"] > 1e-3, records[1]["mismatch"]
    assert all("time_generate_s" in r for r in records[:2]) and "time_generate_s" not in records[2]
    assert all(r["generate_seconds"] > 0 and torch.isfinite(torch.tensor(r["loss"])) for r in records)
    policy = latest_checkpoint(result.checkpoint.path) / "policy"
    before = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
    after = load_file(str(policy / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
