r"""What a model believes right after `\boxed{`: per variable, the mean loss (negative log-probability)
of the right letter against what the variable's answer prior alone scores, and how much the
model's probability of the variable's most common answer moves from record to record. A model that
reads the record beats the prior's loss and moves; a model that learnt the prior matches it and
stays put. One forward pass a question (Hugging Face, no sampling, no Ray): greedy evaluation
hides a shift of belief that does not change the argmax; this shows it.

    python ray_jobs/benchmarks/letter_probe.py --model runs/learning/warmup/model \
        --questions runs/learning/questions --split train --ids runs/learning/warmup/summary.json \
        --max-questions 400 --out docs/benchmarks/x.json

With `--ids` (a warm-up's summary.json) the questions are the ones the warm-up trained on, in its
order: the loss on its own training answers.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

from common import machine_line

from creason.contracts import LETTERS


def prior_logprob(counts: Counter, options: list[str], answer: str) -> float:
    """log P(answer) under the variable's training answer counts over the question's options
    (add-one smoothed, so an unseen option keeps some mass).

    >>> round(prior_logprob(Counter({"No": 7, "Yes": 1}), ["Yes", "No"], "No"), 4)  # 8 / 10
    -0.2231
    """
    total = sum(counts[o] + 1 for o in options)
    return math.log((counts[answer] + 1) / total)


def boxed_letter_ids(tokenizer, letters: str = LETTERS) -> tuple[list[int], dict[str, int]]:
    """The tokens of `\\boxed{`, and each letter's token as it follows them (as the warm-up writes it)."""
    prefix = tokenizer.encode("\\boxed{", add_special_tokens=False)
    ids = {}
    for x in letters:
        whole = tokenizer.encode("\\boxed{" + x + "}", add_special_tokens=False)
        if whole[:len(prefix)] != prefix:
            raise ValueError(f"the tokenizer merges {x!r} into the tokens of \\boxed{{")
        ids[x] = whole[len(prefix)]
    return prefix, ids


def probe_rows(model, tokenizer, questions: list) -> list[dict]:
    """Per question: the log-softmax over its letters' tokens at the step after `\\boxed{`."""
    import torch

    from creason.rollout.engine import encode_chat

    prefix, ids_of = boxed_letter_ids(tokenizer)
    rows = []
    with torch.no_grad():
        for q in questions:
            logits = model(torch.tensor([encode_chat(tokenizer, q.prompt) + prefix])).logits[0, -1]
            logp = torch.log_softmax(logits[[ids_of[x] for x in q.letters]].float(), -1).tolist()
            rows.append({"question_id": q.question_id, "variable": q.variable, "options": list(q.options),
                         "answer": q.answer_text, "truth": q.ground_truth, "logprobs": dict(zip(q.letters, logp))})
    return rows


def summarize(rows: list[dict], train_counts: dict[str, Counter]) -> dict:
    """Per variable and over all: the model's loss and accuracy, the prior's loss and accuracy, and
    the mean and spread (population SD over questions) of the model's probability of the variable's
    most common training answer, where that answer is an option."""
    by_variable: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_variable[r["variable"]].append(r)
    out, totals = {}, Counter()
    for variable, rs in sorted(by_variable.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        counts = train_counts.get(variable, Counter())
        top = counts.most_common(1)[0][0] if counts else None
        loss = -sum(r["logprobs"][r["truth"]] for r in rs)
        prior = -sum(prior_logprob(counts, r["options"], r["answer"]) for r in rs)
        right = sum(max(r["logprobs"], key=r["logprobs"].get) == r["truth"] for r in rs)
        prior_right = sum(r["answer"] == max(r["options"], key=lambda o: counts[o]) for r in rs)
        p_top = [math.exp(r["logprobs"][LETTERS[r["options"].index(top)]]) for r in rs if top in r["options"]]
        out[variable] = {"questions": len(rs), "loss": loss / len(rs), "prior_loss": prior / len(rs),
                         "accuracy": right / len(rs), "prior_accuracy": prior_right / len(rs), "top_answer": top,
                         "p_top_mean": statistics.fmean(p_top) if p_top else None,
                         "p_top_sd": statistics.pstdev(p_top) if len(p_top) > 1 else None}
        totals.update({"questions": len(rs), "loss": loss, "prior_loss": prior, "right": right, "prior_right": prior_right})
    n = totals["questions"]
    overall = {"questions": n, "loss": totals["loss"] / n, "prior_loss": totals["prior_loss"] / n,
               "accuracy": totals["right"] / n, "prior_accuracy": totals["prior_right"] / n}
    return {"overall": overall, "by_variable": out}


def table(summary: dict) -> str:
    lines = ["| variable | questions | loss | prior's loss | accuracy | prior's accuracy | P(most common answer): mean, SD |",
             "|---|---|---|---|---|---|---|"]
    for variable, s in summary["by_variable"].items():
        p = "" if s["p_top_mean"] is None else f"{s['p_top_mean']:.2f}, {s['p_top_sd'] or 0:.3f} ({s['top_answer']})"
        lines.append(f"| {variable} | {s['questions']} | {s['loss']:.3f} | {s['prior_loss']:.3f} | {s['accuracy']:.1%} | "
                     f"{s['prior_accuracy']:.1%} | {p} |")
    o = summary["overall"]
    lines.append(f"| **all** | {o['questions']} | **{o['loss']:.3f}** | **{o['prior_loss']:.3f}** | {o['accuracy']:.1%} | "
                 f"{o['prior_accuracy']:.1%} | |")
    return "\n".join(lines)


def main() -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from creason.data.schema import load_questions
    from creason.evaluate.questions import answer_counts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a Hugging Face model folder")
    parser.add_argument("--questions", required=True, type=Path, help="the question folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--ids", type=Path, default=None, help="a warm-up's summary.json: its questions, in its order")
    parser.add_argument("--max-questions", type=int, default=400)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    questions = load_questions(args.questions, args.split, ["masked_value", "outcome"], None if args.ids else args.max_questions, 0)
    if args.ids:
        by_id = {q.question_id: q for q in questions}
        questions = [by_id[i] for i in json.loads(args.ids.read_text())["question_ids"] if i in by_id]
    questions = questions[:args.max_questions]
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    start = time.perf_counter()
    rows = probe_rows(model, tokenizer, questions)
    summary = summarize(rows, answer_counts(args.questions, "train"))
    print(table(summary))
    result = {"machine": machine_line(), "model": args.model, "split": args.split, "ids": str(args.ids or ""),
              "seconds": time.perf_counter() - start, **summary, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
