"""End to end on Ray: a small built question set, the tiny random Llama on one vLLM actor,
`evaluate` with the default (actor) answerer. One engine start for the module."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from creason.config import load_config
from creason.contracts import LETTERS
from creason.evaluate.protocol import FORCE_SUFFIX, forced_prompt_ids, letter_token_ids
from creason.evaluate.run import default_answerer, evaluate
from creason.rollout.engine import encode_chat

pytestmark = pytest.mark.ray


class Recording:
    """Wraps an answerer and keeps what it was asked and answered, per model folder."""

    def __init__(self, inner):
        self.inner, self.calls = inner, {}

    def __call__(self, path, questions):
        answers, run = self.inner(path, questions)
        self.calls[path] = (questions, answers)
        return answers, run


@pytest.fixture(scope="module")
def run(tiny_model_dir, small_question_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-e2e")
    cfg = load_config("quickstart", [
        f"output_dir={out}", f"evaluate.questions_dir={small_question_set}", f"evaluate.models=[tiny={tiny_model_dir}]",
        "evaluate.num_actors=1", "evaluate.precision=fp32", "evaluate.max_questions=24", "evaluate.max_new_tokens=12", "evaluate.max_model_len=1024",
        "evaluate.kv_cache_gib=0.0625", "evaluate.batch_size=8", "evaluate.bootstrap_samples=200",
    ])
    logs: list[str] = []
    recording = Recording(default_answerer(cfg, logs.append))
    results = evaluate(cfg, answerer=recording, log=logs.append)
    return {"cfg": cfg, "results": results, "folder": out / "eval", "logs": logs,
            "questions_answers": recording.calls[str(tiny_model_dir)], "model_dir": tiny_model_dir}


def test_results_json_has_accuracies_with_intervals(run):
    saved = json.loads((run["folder"] / "results.json").read_text())
    assert saved["n_questions"] == 24
    tiny = saved["systems"][-1]
    assert tiny["name"] == "tiny" and tiny["overall"]["n"] == 24
    o = tiny["overall"]
    assert 0 <= o["ci_low"] <= o["accuracy"] <= o["ci_high"] <= 1
    assert set(tiny["breakdowns"]) == {"question_kind", "section", "variable_kind", "num_options"}
    assert set(tiny["breakdowns"]["question_kind"]) == {"masked_value", "outcome"}
    assert {c["b"] for c in saved["comparisons"]} == {"Random guess (one draw)", "Majority answer (train)",
                                                      "Record regression (train)"}
    assert any(line.startswith("record regression fit on the train split") for line in run["logs"])
    assert all(0 <= c["p_value"] <= 1 for c in saved["comparisons"])
    assert tiny["run"]["questions"] == 24 and tiny["run"]["num_actors"] == 1 and tiny["run"]["dtype"] == "float32"
    for name in ("report.md", "answers.jsonl", "accuracy_overall.png", "accuracy_by_section.png"):
        assert (run["folder"] / name).stat().st_size > 0
    assert any("24/24 questions" in line for line in run["logs"])  # progress was printed


def test_forced_answers_are_always_valid_letters(run):
    records = [json.loads(line) for line in (run["folder"] / "answers.jsonl").read_text().splitlines()]
    assert len(records) == 24
    counts = {len(r["options"]) for r in records}
    assert 2 in counts and len(counts) > 1  # two-option questions and longer ones
    for r in records:
        valid = LETTERS[: len(r["options"])]
        answer = r["answers"]["tiny"]
        assert answer["letter"] in valid
        assert set(answer["letter_logprobs"]) == set(valid)
        assert answer["letter_logprobs"][answer["letter"]] is not None  # the chosen token is always returned
    # A random model's own next token is almost never a letter: the restriction did the work.
    assert sum(r["answers"]["tiny"]["top_token"].strip() in "ABCDE" for r in records) < len(records) / 2


def test_forced_letter_is_the_most_likely_valid_letter(run):
    """Recompute step 2 with a Hugging Face forward pass: the forced letter is the argmax of the
    model's logits over the question's letter tokens."""
    questions, answers = run["questions_answers"]
    tokenizer = AutoTokenizer.from_pretrained(str(run["model_dir"]))
    model = AutoModelForCausalLM.from_pretrained(str(run["model_dir"]), dtype=torch.float32).eval()
    letters, suffix = letter_token_ids(tokenizer), tokenizer.encode(FORCE_SUFFIX, add_special_tokens=False)
    for q, a in list(zip(questions, answers))[:6]:
        ids = forced_prompt_ids(encode_chat(tokenizer, q.prompt), a.reasoning_token_ids, suffix,
                                set(tokenizer.all_special_ids))
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]  # (V,)
        scores = {x: logits[letters[x]].item() for x in q.letters}
        assert a.forced == max(scores, key=scores.get), (q.question_id, scores, a.forced)
