"""A tiny Llama with random weights and the SmolLM2 tokenizer: fast end-to-end tests of the real
stack (vLLM, DeepSpeed, Ray Train) without hub access."""

from __future__ import annotations

from pathlib import Path


def build_tiny_model(out_dir: str | Path, tokenizer_dir: str | Path, seed: int = 0, hidden: int = 128, layers: int = 2) -> Path:
    """Write a random `LlamaForCausalLM` (about 6.6M parameters, float32) with the tokenizer of
    `tokenizer_dir` into `out_dir`; returns `out_dir`. Idempotent.

    Heads are 64 wide: vLLM's CPU attention kernels reject small head sizes (16 fails)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    if (out / "config.json").exists():
        return out
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def top_block_weights(model_dir: str | Path) -> dict:
    """What a sync of the trainable weights sends with `train.trainable_layers` = 1: the weights of
    the top decoder block and the final norm, read from the model's safetensors file."""
    from safetensors.torch import load_file

    weights = load_file(str(Path(model_dir) / "model.safetensors"))
    top = max(int(name.split(".")[2]) for name in weights if name.startswith("model.layers."))
    return {k: v for k, v in weights.items() if k.startswith(f"model.layers.{top}.") or k == "model.norm.weight"}
