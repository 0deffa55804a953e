"""LoRA adapters on the policy (`model.lora`), through PEFT. No Ray.

The trainer trains the adapters only (`add_lora`). The rollout engines get, after each step,
either the adapters alone (`adapter_weights`, `model.lora.sync: adapter`: vLLM runs them with its
LoRA kernels, `write_adapter`) or the merged weights (`merged_weights`: W + scale * B A for every
adapted layer, under the base model's own parameter names; engines without LoRA); `sync: auto`
(the default) picks the adapters for GPU actors, the merged weights for CPU ones.
Each checkpoint holds the merged model in `policy/` beside the adapter as a PEFT folder in
`adapter/`, and evaluation and serving accept an adapter folder by merging it once into a plain
Hugging Face folder (`plain_model_folder`, `creason merge`). Sync times of both: docs/benchmarks.md.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_NAME = "default"


def lora_sync(cfg: Any) -> str | None:
    """How the policy's LoRA adapters reach the rollout engines of `cfg` (a `CreasonConfig`):
    "adapter" or "merged" (`LoraSettings.resolved_sync`); None without LoRA."""
    lora = cfg.model.lora
    return None if lora is None else lora.resolved_sync(cfg.rollout.gpus_per_actor)


def peft_config(settings: dict, base_model: str | None = None):
    """PEFT's `LoraConfig` of `model.lora` settings (a `LoraSettings` as a dict)."""
    from peft import LoraConfig

    return LoraConfig(r=settings["rank"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
                      target_modules=list(settings["target_modules"]), bias="none", task_type="CAUSAL_LM",
                      base_model_name_or_path=base_model)


def add_lora(model: torch.nn.Module, settings: Any) -> torch.nn.Module:
    """`model` wrapped by PEFT with LoRA adapters of `settings` (a `LoraSettings`): only the
    adapters require gradients; the base weights are frozen."""
    from peft import get_peft_model

    return get_peft_model(model, peft_config(settings.model_dump()))


def is_peft(model: Any) -> bool:
    """Whether `model` is a PEFT model (the policy with `model.lora`)."""
    return hasattr(model, "peft_config") and hasattr(model, "get_base_model")


@torch.no_grad()
def merged_weights(model: torch.nn.Module) -> dict[str, Tensor]:
    """The full weights of a PEFT LoRA model with its adapters merged, on CPU, keyed by the base
    model's Hugging Face names (what `from_pretrained` and vLLM read); the model is not modified.

    Tied tensors (embeddings and lm_head) stay one tensor under both names.
    """
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model()
    deltas = {f"{name}.weight": module.get_delta_weight(ADAPTER_NAME)
              for name, module in base.named_modules() if isinstance(module, LoraLayer)}
    out: dict[str, Tensor] = {}
    copies: dict[int, Tensor] = {}
    for key, tensor in base.state_dict(keep_vars=True).items():
        if ".lora_" in key:
            continue
        name = key.replace(".base_layer.", ".")
        if name in deltas:
            out[name] = (tensor.detach() + deltas[name].to(tensor.dtype)).cpu()
        else:
            if id(tensor) not in copies:
                copies[id(tensor)] = tensor.detach().cpu().clone()
            out[name] = copies[id(tensor)]
    return out


@torch.no_grad()
def adapter_weights(model: torch.nn.Module) -> dict[str, Tensor]:
    """The adapters only, on CPU, under the names of a PEFT adapter file
    (`base_model.model.<module>.lora_A.weight`): what `write_adapter` writes and vLLM loads."""
    from peft import get_peft_model_state_dict

    return {name: tensor.detach().cpu().clone() for name, tensor in get_peft_model_state_dict(model).items()}


def is_adapter_tensors(names: list[str]) -> bool:
    """Whether tensor names are those of a PEFT LoRA adapter (`adapter_weights`), not a model's."""
    return bool(names) and all(".lora_A." in n or ".lora_B." in n for n in names)


def write_adapter(folder: Path, tensors: dict[str, Tensor], settings: dict, base_model: str) -> Path:
    """A PEFT adapter folder from `adapter_weights` tensors and `model.lora` settings (as a dict):
    `adapter_config.json` and `adapter_model.safetensors`, what vLLM's `LoRARequest` reads."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    peft_config(settings, base_model).save_pretrained(str(folder))
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / "adapter_model.safetensors"))
    return folder


def save_adapter(model: torch.nn.Module, folder: Path) -> None:
    """The adapters as a PEFT folder (`adapter_config.json`, `adapter_model.safetensors`)."""
    model.save_pretrained(str(folder))


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def merge_adapter(adapter: str | Path, out: str | Path, base: str | Path | None = None) -> Path:
    """Merge a PEFT adapter folder into its base model and write a plain Hugging Face folder to
    `out` (through a temporary folder, renamed when complete). `base`: the base model folder;
    None: the one the adapter names (`base_model_name_or_path`)."""
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter, out = Path(adapter), Path(out)
    base = str(base or PeftConfig.from_pretrained(str(adapter)).base_model_name_or_path)
    if not Path(base).is_dir():
        raise FileNotFoundError(f"{adapter}: its base model {base} is not a folder here; pass the base model's folder")
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = out.with_name(f".tmp-{out.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer_from = adapter if (adapter / "tokenizer_config.json").is_file() else Path(base)
    AutoTokenizer.from_pretrained(str(tokenizer_from)).save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def plain_model_folder(path: str | Path) -> Path:
    """A folder that transformers and vLLM load: `path` itself, or for a PEFT adapter folder the
    merged model beside it (`<adapter>-merged`, merged on first use)."""
    path = Path(path)
    if not is_adapter_folder(path):
        return path
    merged = path.with_name(f"{path.name}-merged")
    if not (merged / "config.json").is_file():
        merge_adapter(path, merged)
    return merged
