"""Shared builders for the training tests: small rollout batches and the tiny model."""

from __future__ import annotations

import torch

from creason.train.batch import RolloutBatch, collate


def random_batch(seed: int = 0, prompt_lens=(3, 5, 4, 6), response_lens=(4, 2, 5, 3), vocab: int = 1000
                 ) -> RolloutBatch:
    """Random token rollouts with fake sampler log-probs (-1.0) and advantages +-1, +-0.5."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, vocab, (n,), generator=g).tolist() for n in prompt_lens]
    responses = [torch.randint(5, vocab, (n,), generator=g).tolist() for n in response_lens]
    advantages = [1.0, -1.0, 0.5, -0.5, 1.0, -1.0][: len(prompts)]
    return collate(prompts, responses, [[-1.0] * len(r) for r in responses], advantages, pad_id=0)


def load_tiny(model_dir):
    """The tiny Llama in float32, in eval mode (no dropout)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
