"""Partial fine-tuning: train only the top decoder blocks of a Hugging Face causal LM. No Ray.

Why: on CPUs a training pass over a ~450-token registry prompt costs about three forward passes
(forward, then backward through every block). With the embeddings and the lower blocks frozen,
autograd records nothing below the first trainable block: those blocks run once, like inference,
and the backward pass stops at the first trainable one. The gradient of every trainable weight is
exact; the frozen weights simply do not move.
"""

from __future__ import annotations

import torch


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder's stack of blocks (`model.model.layers` for Llama, Qwen, Phi-3/4, Mistral)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else getattr(model, "model", model)
    blocks = getattr(decoder, "layers", None)
    if not isinstance(blocks, torch.nn.ModuleList):
        raise ValueError(f"{type(model).__name__}: no decoder `layers` to freeze; set train.trainable_layers=null")
    return blocks


def train_top_blocks(model: torch.nn.Module, trainable_layers: int | None) -> dict[str, int]:
    """Freeze all but the top `trainable_layers` blocks and what follows them (the final norm; the
    output head unless it is tied to the input embeddings, which stay frozen). None or at least the
    number of blocks: everything stays trainable. A weight frozen before stays frozen: with LoRA
    adapters only the top blocks' adapters train, never their base weights. Returns {"trainable",
    "total"} parameter counts."""
    blocks = decoder_blocks(model) if trainable_layers is not None else None
    if blocks is not None and trainable_layers < len(blocks):
        if trainable_layers < 1:
            raise ValueError(f"train.trainable_layers must be >= 1 (or null for all), got {trainable_layers}")
        frozen = [p for p in model.parameters() if not p.requires_grad]
        model.requires_grad_(False)
        blocks[len(blocks) - trainable_layers:].requires_grad_(True)
        decoder = model.get_decoder()
        if getattr(decoder, "norm", None) is not None:
            decoder.norm.requires_grad_(True)
        head = model.get_output_embeddings()
        if head is not None and head.weight is not model.get_input_embeddings().weight:
            head.requires_grad_(True)
        for p in frozen:
            p.requires_grad_(False)
    return {"trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "total": sum(p.numel() for p in model.parameters())}
