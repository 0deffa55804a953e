"""Per-token log-probs (and entropies) of a batch's tokens under a causal LM, aligned as in `batch`.

Position t holds log p(token t | tokens < t), so the logits at t - 1 score token t; values are
float32 and zero wherever response_mask is 0. Only the logits that score response tokens are
computed (`logits_to_keep`), which matters when prompts are long: the (B, T, V) logits are the
largest activation of the forward pass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from creason.algo import entropy_from_logits, token_logprobs
from creason.train.batch import RolloutBatch


def first_response_column(response_mask: Tensor) -> int:
    """The first column holding a response token in any row (>= 1); the last column if none."""
    cols = response_mask.any(0).nonzero()
    return max(1, int(cols[0])) if len(cols) else response_mask.shape[1] - 1


def sequence_logprobs(
    model, batch: RolloutBatch, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """(logp (B, T), entropy (B, T) or None) of the batch's tokens under `model`.

    model: a Hugging Face causal LM, or anything that calls one (a DeepSpeed engine, `TorchEngine`).
    temperature: logits are divided by it, as the sampler did (the sampler must report log-probs
    of the tempered distribution, e.g. vLLM's logprobs_mode="processed_logprobs", or use 1.0).
    Gradients flow through logp; the entropy (nats, of the tempered distribution) is a metric
    computed without gradient.
    """
    T = batch.input_ids.shape[1]
    start = first_response_column(batch.response_mask)
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        use_cache=False,
        logits_to_keep=T - start + 1,  # positions start-1 .. T-1
    )
    logits = out.logits[:, :-1]  # (B, T - start, V): logits[:, j] scores token start + j
    if temperature != 1.0:
        logits = logits / temperature
    mask = batch.response_mask[:, start:].bool()
    logp = token_logprobs(logits, batch.input_ids[:, start:]).masked_fill(~mask, 0.0)
    logp = F.pad(logp, (start, 0))  # (B, T)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = F.pad(entropy_from_logits(logits).masked_fill(~mask, 0.0), (start, 0))
    return logp, entropy
