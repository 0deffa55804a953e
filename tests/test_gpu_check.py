"""ray_jobs/gpu_check.py on CPU (tiny model, gloo): every check passes, and it imports nothing a GPU
machine without Ray, vLLM or creason's own dependencies may lack."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "ray_jobs" / "gpu_check.py"
# Runs the script, then prints the top-level packages it imported. `block`: names made unimportable.
WRAPPER = """
import runpy, sys
for name in {block!r}:
    sys.modules[name] = None  # `import name` raises ImportError
sys.argv = [{script!r}, *{args!r}]
try:
    runpy.run_path({script!r}, run_name="__main__")
finally:
    print("IMPORTED", " ".join(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
NOT_ON_A_GPU_MACHINE = {"ray", "vllm", "pyarrow", "pandas", "pydantic"}  # pydantic: unless DeepSpeed brings it


# The trackers of creason's dev install, absent from the GPU machine; DeepSpeed and transformers
# import MLflow when they find it, and it brings pandas and pyarrow.
TRACKERS = ("mlflow", "wandb")


def run_check(*args: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    code = WRAPPER.format(block=(*TRACKERS, *block), script=str(SCRIPT), args=["--device", "cpu", *args])
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_every_check_passes_on_cpu_with_torch_transformers_and_deepspeed_only():
    out = run_check()
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for name in ("collectives", "grpo_update", "weight_sync", "zero3_refresh"):
        assert f"PASS {name} (" in out.stdout, out.stdout
    assert "gpu_check: 4 passed, 0 failed, 0 skipped" in out.stdout
    imported = set(out.stdout.rsplit("IMPORTED ", 1)[1].split())
    assert imported & NOT_ON_A_GPU_MACHINE == {"pydantic"}  # DeepSpeed's config classes


@pytest.mark.slow
def test_without_deepspeed_the_rest_runs_on_torch_and_transformers_alone():
    out = run_check(block=("deepspeed",))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "SKIP zero3_refresh (" in out.stdout and "DeepSpeed does not import" in out.stdout
    assert "gpu_check: 3 passed, 0 failed, 1 skipped" in out.stdout
    imported = set(out.stdout.rsplit("IMPORTED ", 1)[1].split())
    assert imported & NOT_ON_A_GPU_MACHINE == set()
