"""Evaluation of trained models on held-out questions (`creason evaluate`).

- `questions`   the training split's answer counts (the majority baseline)
- `protocol`    greedy reasoning, then the answer forced to a valid option letter (vLLM)
- `actor`       Ray actors owning a vLLM engine; questions sharded over them
- `baselines`   chance and the training majority answer, on the same questions
- `stats`       bootstrap intervals and McNemar's test (NumPy only)
- `scoring`     correctness, accuracies overall and per breakdown, paired comparisons
- `report`, `plots`, `outputs`   report.md, PNG figures, results.json and answers.jsonl
- `run`         the whole evaluation, top to bottom; `cli_command` its command line
"""
