"""Per-token log-probs (and entropies) of a batch's tokens under a causal LM, aligned as in `batch`.

Position t holds log p(token t | tokens < t), so the logits at t - 1 score token t; values are
float32 and zero wherever response_mask is 0. Only the logits that score response tokens are
computed (`logits_to_keep`), which matters when prompts are long: the (B, T, V) logits are the
largest activation of the forward pass.

Shared prompts: the G completions of a GRPO group share a prompt, and registry prompts are long
(~450 tokens against ~70 of a completion). With `share_prompts`, the tokens every row of a group
(`batch.group_ids`) begins with run once (their KV cache repeated G times, gradients flowing back
through it) and only the rest of each row G times: the whole prompt when the group shares it, the
options block onward when the group's rows show rotated options (`rollout.rotate_options`). The
same log-probs and gradients (float noise) for about a third of the compute at G = 4 (measured:
4.5 s against 11 s for a forward and backward of one group of SmolLM2-135M on 2 cores). A model
call per group, so the number of calls depends on the rows: not for ZeRO-3, whose calls gather
parameters collectively and must match across ranks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from creason.algo import entropy_from_logits, token_logprobs
from creason.train.batch import RolloutBatch, group_bounds


def first_response_column(response_mask: Tensor) -> int:
    """The first column holding a response token in any row (>= 1); the last column if none."""
    cols = response_mask.any(0).nonzero()
    return max(1, int(cols[0])) if len(cols) else response_mask.shape[1] - 1


def sequence_logprobs(
    model, batch: RolloutBatch, temperature: float = 1.0, with_entropy: bool = False, share_prompts: bool = False
) -> tuple[Tensor, Tensor | None]:
    """(logp (B, T), entropy (B, T) or None) of the batch's tokens under `model`.

    model: a Hugging Face causal LM, or anything that calls one (a DeepSpeed engine, `TorchEngine`).
    temperature: logits are divided by it, as the sampler did (the sampler must report log-probs
    of the tempered distribution, e.g. vLLM's logprobs_mode="processed_logprobs", or use 1.0).
    share_prompts: run the tokens each group's rows begin with once (module docstring); reads
    `batch.group_ids` and `batch.prompt_lens`.
    Gradients flow through logp; the entropy (nats, of the tempered distribution) is a metric
    computed without gradient.
    """
    if not share_prompts:
        start = first_response_column(batch.response_mask)
        logits = _response_logits(model, batch, start)
        return _score(logits, batch, start, temperature, with_entropy)
    parts = [_score_group(model, batch.rows(slice(lo, hi)), temperature, with_entropy) for lo, hi in group_bounds(batch)]
    logp = torch.cat([lp for lp, _ in parts])
    return logp, torch.cat([e for _, e in parts]) if with_entropy else None


def shared_prefix_len(rows: RolloutBatch) -> int:
    """The number of leading tokens that every row's prompt holds alike (0 if the first differs).

    >>> from creason.train.batch import collate
    >>> shared_prefix_len(collate([[1, 2, 3], [1, 2, 4, 5], [1, 2, 3]], [[6], [7], [8]], [[0.0]] * 3, [0.0] * 3, 0))
    2
    """
    p = int(rows.prompt_lens.min())
    differs = (rows.input_ids[:, :p] != rows.input_ids[:1, :p]).any(0).nonzero()
    return int(differs[0]) if len(differs) else p


def _score_group(model, rows: RolloutBatch, temperature: float, with_entropy: bool) -> tuple[Tensor, Tensor | None]:
    """`sequence_logprobs` of one group's rows, their shared prefix run once."""
    p = shared_prefix_len(rows)
    if p == 0:  # nothing shared: a plain forward
        start = first_response_column(rows.response_mask)
        return _score(_response_logits(model, rows, start), rows, start, temperature, with_entropy)
    return _score(_shared_prompt_logits(model, rows, p), rows, p, temperature, with_entropy)


def _response_logits(model, batch: RolloutBatch, start: int) -> Tensor:
    """(B, T - start, V) logits; [:, j] scores token start + j."""
    T = batch.input_ids.shape[1]
    out = model(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        use_cache=False,
        logits_to_keep=T - start + 1,  # positions start-1 .. T-1
    )
    return out.logits[:, :-1]


def _shared_prompt_logits(model, rows: RolloutBatch, p: int) -> Tensor:
    """(G, T - p, V) logits of G rows that begin with the same p tokens; [:, j] scores token p + j.

    The p tokens run once with a KV cache, which is then repeated for the G rows' own tokens. Rows
    are right-padded, so no attention mask is needed: causal attention keeps padding out of every
    real position, and the padding's own scores are masked by the caller.
    """
    G, T = rows.input_ids.shape
    prompt = model(input_ids=rows.input_ids[:1, :p], use_cache=True, logits_to_keep=1)
    cache = prompt.past_key_values
    cache.batch_repeat_interleave(G)
    positions = torch.arange(p, T, device=rows.input_ids.device).expand(G, T - p)
    completions = model(input_ids=rows.input_ids[:, p:], past_key_values=cache, position_ids=positions, use_cache=True)
    return torch.cat([prompt.logits[:, -1:].expand(G, 1, -1), completions.logits[:, :-1]], dim=1)


def _score(logits: Tensor, batch: RolloutBatch, start: int, temperature: float, with_entropy: bool
           ) -> tuple[Tensor, Tensor | None]:
    """Log-probs (and entropies) of tokens start.. from their logits, zero off the response mask,
    padded back to (B, T). Scored in float32 whatever the logits' dtype (bf16 under `train.mixed_precision`)."""
    logits = logits.float()
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
