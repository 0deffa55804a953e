"""What `make setup` would run (make -n): the CPU torch from PyTorch's CPU index only as a fallback,
the mismatched torchvision removed for the CPU extra only."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def planned(*args: str) -> str:
    """The commands of a fresh set-up (`-W pyproject.toml`: as if the venv were stale) into a venv
    that does not exist."""
    out = subprocess.run(["make", "-n", "-W", "pyproject.toml", "setup", "VENV=/nonexistent/venv", *args],
                         cwd=ROOT, capture_output=True, text=True, check=True)
    return out.stdout


def test_cpu_setup_asks_pip_without_the_index_first_then_with_it():
    plan = planned()
    first, second = plan.index('pip install -q "torch==2.13.0+cpu"'), plan.index("--extra-index-url https://download.pytorch.org/whl/cpu")
    assert first < second < plan.index('pip install -e ".[cpu,dev]"')
    assert "--retries 1" in plan and "could not install torch==2.13.0+cpu" in plan and "TORCH_INDEX=" in plan
    assert "pip uninstall -y torchvision torchaudio torchcodec" in plan


def test_torch_index_can_be_replaced_or_emptied():
    assert "--extra-index-url https://mirror.example/cpu" in planned("TORCH_INDEX=https://mirror.example/cpu")
    assert "--extra-index-url" not in planned("TORCH_INDEX=")


def test_gpu_setup_keeps_torchvision_and_uses_no_cpu_index():
    plan = planned("EXTRA=gpu")
    assert 'pip install -e ".[gpu,dev]"' in plan
    assert "uninstall" not in plan and "download.pytorch.org" not in plan and "+cpu" not in plan
