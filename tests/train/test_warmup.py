"""The format warm-up: its examples and own letters (drawn from the model's own probabilities), and the
stage end to end on a tiny model: own letters from the train split only, weights that change, a
model GRPO then starts from."""

import json
import math
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from creason.config import load_config
from creason.contracts import Question
from creason.train.engine import native_bf16
from creason.train.warmup import nll_loss, own_letter, warmup_examples, warmup_letters


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def test_examples_box_the_letter_and_end_the_turn(tokenizer):
    (e,) = warmup_examples([[1, 2, 3]], [""], ["C"], tokenizer, [tokenizer.eos_token_id])
    assert e.prompt_ids == [1, 2, 3] and e.letter == "C"
    assert tokenizer.decode(e.completion_ids) == "\\boxed{C}" + tokenizer.eos_token


def test_examples_keep_the_models_own_reasoning_before_the_box(tokenizer):
    (e,) = warmup_examples([[1]], ["Lactate is high.\n"], ["A"], tokenizer, [])
    assert tokenizer.decode(e.completion_ids) == "Lactate is high. \\boxed{A}"


def test_examples_can_state_the_answers_text_before_the_box(tokenizer):
    """`warmup.state_answer`: the option's text, then its letter boxed (the text is the same whatever
    the option order; the letter is not)."""
    (e, f) = warmup_examples([[1], [1]], ["", ""], ["B", "A"], tokenizer, [tokenizer.eos_token_id],
                             answer_texts=["Yes", "Carbapenem"])
    assert tokenizer.decode(e.completion_ids) == "Yes \\boxed{B}" + tokenizer.eos_token
    assert tokenizer.decode(f.completion_ids) == "Carbapenem \\boxed{A}" + tokenizer.eos_token


def test_restated_examples_end_with_the_forced_steps_letter_token(tokenizer):
    """The restatement ends with the very token the protocol's forced step scores for that letter,
    right after the suffix it appends, so the taught sentence is the one the forced step continues."""
    from creason.evaluate.protocol import FORCE_SUFFIX, letter_token_ids

    (e,) = warmup_examples([[1]], [""], ["C"], tokenizer, [tokenizer.eos_token_id], restate=True)
    assert tokenizer.decode(e.completion_ids) == "\\boxed{C} Therefore, the answer is C." + tokenizer.eos_token
    suffix = tokenizer.encode(FORCE_SUFFIX, add_special_tokens=False)
    box = tokenizer.encode("\\boxed{C}", add_special_tokens=False)
    assert e.completion_ids[len(box):len(box) + len(suffix)] == suffix
    assert e.completion_ids[len(box) + len(suffix)] == letter_token_ids(tokenizer)["C"]
    assert len(e.completion_ids) <= 16  # fits the GRPO budget the option's description names


def test_own_letters_follow_the_models_probabilities():
    """Inverse CDF over the renormalised known letters: A 0.1/0.5 = 0.2, B 0.4/0.5 = 0.8, C unknown."""
    lp = {"A": math.log(0.1), "B": math.log(0.4), "C": None}
    assert [own_letter(lp, u) for u in (0.0, 0.19, 0.21, 0.99)] == ["A", "A", "B", "B"]
    draws = np.random.default_rng(0).random(4000)
    share_a = sum(own_letter(lp, u) == "A" for u in draws) / len(draws)
    assert abs(share_a - 0.2) < 0.02
    with pytest.raises(ValueError, match="no log-prob"):
        own_letter({"A": None}, 0.5)


def _question(n_options: int, right: str) -> Question:
    return Question(question_id="q", patient="0" * 16, split="train", question_kind="masked_value", variable="v",
                    display_name="V", section="S", variable_kind="categorical",
                    options=[f"o{i}" for i in range(n_options)], answer_text="o0", answer_value=None, messages=[],
                    ground_truth=right, data_source="test")


def test_random_letters_are_uniform_over_each_questions_options_and_blind_to_the_answer():
    """`random` teaches no answer: the letters are the same whatever the right ones are, cover each question's
    own options only, about evenly, and repeat with the seed."""
    twos, fives = [_question(2, "A")] * 2000, [_question(5, "E")] * 2000
    letters = warmup_letters("random", twos + fives, [], seed=3)
    moved = warmup_letters("random", [_question(2, "B")] * 2000 + [_question(5, "A")] * 2000, [], seed=3)
    assert letters == moved and letters == warmup_letters("random", twos + fives, [], seed=3)
    assert letters != warmup_letters("random", twos + fives, [], seed=4)
    assert set(letters[:2000]) == {"A", "B"} and set(letters[2000:]) == set("ABCDE")
    assert all(abs(letters[:2000].count(x) / 2000 - 0.5) < 0.04 for x in "AB")
    assert all(abs(letters[2000:].count(x) / 2000 - 0.2) < 0.03 for x in "ABCDE")
    assert warmup_letters("ground_truth", fives[:3], [], seed=3) == ["E"] * 3


def test_nll_is_the_token_mean_over_the_whole_batch():
    logp = torch.tensor([[0.0, -0.5, -1.5], [0.0, -1.0, -2.0]])
    mask = torch.tensor([[0, 1, 1], [0, 1, 0]])
    # micro-batches of one row each, 3 tokens in the batch: (0.5 + 1.5) / 3 + 1.0 / 3 = 1.0
    parts = [nll_loss(logp[i : i + 1], mask[i : i + 1], 3.0) for i in range(2)]
    assert sum(parts).item() == pytest.approx(1.0)


def test_training_from_the_warmup_needs_its_model(tmp_path):
    from creason.train.run import initial_policy_path

    cfg = load_config("quickstart", [f"output_dir={tmp_path}", "warmup.enabled=true", "model.path=/base"])
    with pytest.raises(FileNotFoundError, match="creason warmup"):
        initial_policy_path(cfg)
    (tmp_path / "warmup" / "model").mkdir(parents=True)
    (tmp_path / "warmup" / "model" / "config.json").write_text("{}")
    assert initial_policy_path(cfg) == str((tmp_path / "warmup" / "model").resolve())
    assert initial_policy_path(cfg.model_copy(update={"warmup": cfg.warmup.model_copy(update={"enabled": False})})) == "/base"


def answerer_never_called(model_path, questions):
    raise AssertionError("ground-truth letters without reasoning need no model answers")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("answers", ["own", "ground_truth"])
def test_warmup_stage_end_to_end(tiny_model_dir, small_question_set, tmp_path, answers):
    from creason.data.schema import load_questions
    from creason.train.warmup import run_warmup

    cfg = load_config("quickstart", [
        f"output_dir={tmp_path}", f"train.questions_dir={small_question_set}", f"model.path={tiny_model_dir}",
        "evaluate.num_actors=1", "evaluate.max_model_len=1536", "evaluate.kv_cache_gib=0.25",
        "train.cpus_per_worker=0.5", "train.threads_per_worker=1", "train.trainable_layers=1",
        "warmup.questions=6", "warmup.batch_size=3", "warmup.micro_batch_size=2", "warmup.epochs=2", "warmup.lr=1e-2",
        f"warmup.answers={answers}", f"warmup.state_answer={answers == 'ground_truth'}",
        f"warmup.mixed_precision={'auto' if answers == 'ground_truth' else 'no'}",  # the learning recipe's warm-up
    ])
    summary = run_warmup(cfg, answerer=answerer_never_called if answers == "ground_truth" else None)
    assert summary["steps"] == 4 and summary["loss_last"] < summary["loss_first"]
    assert sum(summary["letters"].values()) == 6 and summary["answers"] == answers
    assert summary["mixed_precision"] == ("bf16" if answers == "ground_truth" and native_bf16() else "no")
    if answers == "ground_truth":  # supervised: every boxed letter is the right one, its text stated first
        assert summary["letters_right"] == 1.0 and summary["forced_letters"] == {}
        first = load_questions(small_question_set, "train", cfg.train.question_kinds, 6, cfg.seed)[0]
        assert first.question_id == summary["question_ids"][0]
        assert summary["first_completion"].startswith(f"{first.answer_text} \\boxed{{{first.ground_truth}}}")
    splits = {}
    for split in ("train", "validation", "test"):
        info = pq.read_table(small_question_set / split, columns=["extra_info"]).column("extra_info").to_pylist()
        splits[split] = {(x["question_id"], x["patient"]) for x in info}
    used = set(summary["question_ids"])
    train_ids = {qid for qid, _ in splits["train"]}
    assert used <= train_ids  # no validation or test question reaches the warm-up
    model = Path(summary["model"])
    before, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(model / "model.safetensors"))
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("model.layers.1.", "model.norm.")) for k in changed)  # the top block only
    assert json.loads((tmp_path / "warmup" / "summary.json").read_text())["model"] == str(model)
