"""Per-token log-probabilities and entropies from logits, in float32 and without a (B, T, V) copy.

`logits[:, t]` is the distribution that produced `tokens[:, t]`: the caller shifts (drops the last
logit and the first token) before calling. Rows are processed one at a time, so the extra memory is
one (T, V) float32 block, never a float32 copy of the whole (B, T, V) bf16 tensor (under
`torch.no_grad`, as for old and reference log-probs; with autograd, backward keeps what it needs).
"""

from __future__ import annotations

import torch
from torch import Tensor


def token_logprobs(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[token] per position: (B, T, V), (B, T) long -> (B, T) float32.

    Computed as logit[token] - logsumexp(logits) in float32, row by row.

    >>> token_logprobs(torch.zeros(1, 2, 4), torch.tensor([[0, 3]]))
    tensor([[-1.3863, -1.3863]])
    """
    if logits.shape[:2] != tokens.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} disagree on (B, T)")
    out = []
    for row_logits, row_tokens in zip(logits, tokens):  # (T, V), (T,)
        row = row_logits.float()
        picked = row.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1)  # (T,)
        out.append(picked - torch.logsumexp(row, dim=-1))
    return torch.stack(out)


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) per position: (B, T, V) -> (B, T) float32, in nats.

    H = -sum_v p_v log p_v in float32, row by row; -inf logits (masked tokens) contribute 0.

    >>> entropy_from_logits(torch.zeros(1, 1, 4))  # uniform over 4: log 4
    tensor([[1.3863]])
    """
    out = []
    for row_logits in logits:  # (T, V)
        row = row_logits.float()
        logp = torch.log_softmax(row, dim=-1)
        masked = logp == -torch.inf
        safe = logp.masked_fill(masked, 0.0)  # keeps 0 * -inf (NaN) out of forward and backward
        out.append(-(safe.exp() * safe).masked_fill(masked, 0.0).sum(-1))
    return torch.stack(out)
