"""A batch of rollouts as padded tensors, and how it is split across ranks and micro-batches.

Alignment convention (used by every per-token tensor of the training side):

    position t of a (B, T) log-prob tensor holds log p(input_ids[:, t] | input_ids[:, :t]),
    i.e. the logits at position t - 1 predict token t. Position 0 has no prediction.

Per-token tensors (`old_logp`, `ref_logp`, and the trainer's log-probs) are zero wherever
`response_mask` is 0: at position 0, on prompt tokens, on padding, and on rows masked out of the loss.

Example, prompt [5, 6] and response [7, 8] (log-probs -0.1, -0.2) in a batch padded to T = 5:

    input_ids       5     6     7     8   pad
    attention_mask  1     1     1     1     0
    response_mask   0     0     1     1     0
    old_logp        0     0  -0.1  -0.2     0
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from creason.algo import apply_truncation


PER_ROW_FIELDS = ("advantages", "prompt_lens", "group_ids")  # (B,) fields; the others are (B, T)


@dataclass
class RolloutBatch:
    """Prompt + response token ids, right-padded, with what the loss needs. B rows, T columns."""

    input_ids: Tensor  # (B, T) long: prompt then response, then pad_id
    attention_mask: Tensor  # (B, T) long: 1 on prompt and response tokens
    response_mask: Tensor  # (B, T) long: 1 on response tokens that count in the loss
    old_logp: Tensor  # (B, T) float32: sampler log-probs on response tokens, 0 elsewhere
    advantages: Tensor  # (B,) float32: one per sequence
    ref_logp: Tensor | None = None  # (B, T) float32: reference-model log-probs, when beta > 0
    prompt_lens: Tensor | None = None  # (B,) long: prompt tokens of each row
    group_ids: Tensor | None = None  # (B,) long: the GRPO group of each row; a group's rows are consecutive

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        """Response tokens that count in the loss."""
        return int(self.response_mask.sum())

    def _map(self, fn) -> RolloutBatch:
        return RolloutBatch(**{f.name: None if (v := getattr(self, f.name)) is None else fn(f.name, v)
                               for f in dataclasses.fields(self)})

    def rows(self, index: slice | Tensor) -> RolloutBatch:
        """The rows `index` (a slice or a long tensor of row numbers)."""
        return self._map(lambda _, v: v[index])

    def columns(self, length: int) -> RolloutBatch:
        """The first `length` columns (per-row fields untouched)."""
        return self._map(lambda name, v: v if name in PER_ROW_FIELDS else v[:, :length])

    def to(self, device: torch.device | str) -> RolloutBatch:
        return self._map(lambda _, v: v.to(device))


def collate(
    prompt_token_ids: list[list[int]],
    response_token_ids: list[list[int]],
    sampling_logprobs: list[list[float]],
    advantages: list[float],
    pad_id: int,
    truncated_mask_out: list[bool] | None = None,
    group_ids: list[int] | None = None,
) -> RolloutBatch:
    """Pad rollouts into a `RolloutBatch` (see the module docstring for the layout).

    sampling_logprobs[i][j] is the sampler's log-prob of response_token_ids[i][j]. Rows with
    truncated_mask_out[i] True keep their tokens but get response_mask 0 (DAPO overlong filtering,
    via `apply_truncation(mode="mask")`); their advantage still counts where it was computed.
    Every prompt needs at least one token (the first response token is predicted from it).
    group_ids[i] is the GRPO group of row i (a group's rows consecutive); None: consecutive rows
    with the same prompt are one group.
    """
    n = len(prompt_token_ids)
    if not (len(response_token_ids) == len(sampling_logprobs) == len(advantages) == n):
        raise ValueError("prompt_token_ids, response_token_ids, sampling_logprobs and advantages differ in length")
    lengths = [len(p) + len(r) for p, r in zip(prompt_token_ids, response_token_ids)]
    T = max(lengths)
    input_ids = torch.full((n, T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros(n, T, dtype=torch.long)
    response_mask = torch.zeros(n, T, dtype=torch.long)
    old_logp = torch.zeros(n, T, dtype=torch.float32)
    for i, (prompt, response, logps) in enumerate(zip(prompt_token_ids, response_token_ids, sampling_logprobs)):
        if not prompt:
            raise ValueError(f"row {i}: empty prompt")
        if len(logps) != len(response):
            raise ValueError(f"row {i}: {len(response)} response tokens but {len(logps)} log-probs")
        p, L = len(prompt), lengths[i]
        input_ids[i, :L] = torch.tensor(prompt + response, dtype=torch.long)
        attention_mask[i, :L] = 1
        response_mask[i, p:L] = 1
        old_logp[i, p:L] = torch.tensor(logps, dtype=torch.float32)
    adv = torch.tensor(advantages, dtype=torch.float32)
    if truncated_mask_out is not None:
        _, response_mask = apply_truncation(adv, response_mask, torch.tensor(truncated_mask_out), mode="mask")
        old_logp = old_logp * response_mask
    prompt_lens = torch.tensor([len(p) for p in prompt_token_ids], dtype=torch.long)
    groups = torch.tensor(group_ids if group_ids is not None else same_prompt_groups(prompt_token_ids), dtype=torch.long)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} group ids for {n} rows")
    return RolloutBatch(input_ids, attention_mask, response_mask, old_logp, adv, prompt_lens=prompt_lens, group_ids=groups)


def same_prompt_groups(prompt_token_ids: list[list[int]]) -> list[int]:
    """Group ids that make each run of consecutive rows with the same prompt one group.

    >>> same_prompt_groups([[1, 2], [1, 2], [3], [1, 2]])
    [0, 0, 1, 2]
    """
    ids = []
    for i, prompt in enumerate(prompt_token_ids):
        ids.append(0 if i == 0 else ids[-1] + (prompt != prompt_token_ids[i - 1]))
    return ids


def inert_rows(batch: RolloutBatch, n: int) -> RolloutBatch:
    """`n` copies of row 0 of `batch` with response_mask, log-probs and advantage 0: they add
    nothing to the loss, its gradient or the metrics."""
    blank = batch.rows(torch.zeros(n, dtype=torch.long))
    return dataclasses.replace(
        blank,
        response_mask=torch.zeros_like(blank.response_mask),
        old_logp=torch.zeros_like(blank.old_logp),
        advantages=torch.zeros_like(blank.advantages),
        ref_logp=None if blank.ref_logp is None else torch.zeros_like(blank.ref_logp),
    )


def concat_rows(first: RolloutBatch, second: RolloutBatch) -> RolloutBatch:
    """The rows of `first`, then those of `second` (same columns)."""
    return first._map(lambda name, v: torch.cat([v, getattr(second, name)]))


def pad_rows(batch: RolloutBatch, multiple: int) -> RolloutBatch:
    """Append inert copies of row 0 (`inert_rows`) until B is a multiple of `multiple`."""
    extra = -len(batch) % multiple
    return concat_rows(batch, inert_rows(batch, extra)) if extra else batch


def group_bounds(batch: RolloutBatch) -> list[tuple[int, int]]:
    """[lo, hi) bounds of the runs of consecutive rows of one group (`batch.group_ids`; without
    them, each row is a group).

    >>> b = collate([[1, 2], [1, 2], [3], [1, 2]], [[4], [5, 6], [7], [8]], [[0.0], [0.0, 0.0], [0.0], [0.0]], [0.0] * 4, 0)
    >>> group_bounds(b)
    [(0, 2), (2, 3), (3, 4)]
    """
    if batch.group_ids is None:
        return [(i, i + 1) for i in range(len(batch))]
    ids = batch.group_ids.tolist()
    bounds, lo = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or ids[i] != ids[lo]:
            bounds.append((lo, i))
            lo = i
    return bounds


def shard(batch: RolloutBatch, rank: int, world_size: int) -> RolloutBatch:
    """This rank's whole groups, padded with inert rows (`inert_rows`) to as many rows as the
    fullest rank holds.

    Groups are dealt in order, ceil(groups / world_size) to a rank: rank r gets groups
    [r * k, (r + 1) * k), so a group's rows stay on one rank (its shared record runs once) and
    concatenating the shards in rank order, without their padding, gives the batch. Every rank gets
    the same number of rows >= 1, so every rank runs the same number of micro-batches: required,
    because ZeRO-2/3 reduce gradients and gather parameters inside forward/backward, collectively.
    With one row per group this is ceil(B / world_size) rows each.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    groups = group_bounds(batch)
    k = max(1, math.ceil(len(groups) / world_size))
    dealt = [groups[r * k:(r + 1) * k] for r in range(world_size)]
    rows = max(1, max(sum(hi - lo for lo, hi in g) for g in dealt))
    mine = dealt[rank]
    part = batch.rows(slice(mine[0][0], mine[-1][1]) if mine else slice(0, 0))
    return concat_rows(part, inert_rows(batch, rows - len(part))) if len(part) < rows else part


def micro_batches(batch: RolloutBatch, size: int) -> list[RolloutBatch]:
    """Consecutive chunks of at most `size` rows, each cut to its longest row (fewer pad columns).
    A shard holds whole groups of G rows (`shard`), so chunks keep groups whole when `size` is a
    multiple of G; otherwise a group's rows are split over chunks, each of which runs the group's
    shared record again (correct, slower).

    ceil(B / size) chunks; the last may be smaller.
    """
    if size < 1:
        raise ValueError(f"micro-batch size must be >= 1, got {size}")
    chunks = []
    for k in range(math.ceil(len(batch) / size)):
        chunk = batch.rows(slice(k * size, (k + 1) * size))
        chunks.append(chunk.columns(int(chunk.attention_mask.sum(-1).max())))
    return chunks
