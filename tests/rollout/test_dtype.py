"""`resolve_dtype`: "auto" becomes bfloat16 only where the hardware runs it fast."""

import torch

from creason.rollout.engine import cpu_has_amx, resolve_dtype

XEON = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
EPYC = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"  # bf16 vector instructions, no AMX


def test_amx_is_read_from_the_flags_line():
    assert cpu_has_amx(XEON)
    assert not cpu_has_amx(EPYC)
    assert not cpu_has_amx("model name\t: amx_bf16 in a name is not a flag\n")
    assert not cpu_has_amx("")


def test_explicit_dtypes_pass_through_and_auto_follows_the_hardware():
    assert resolve_dtype("float32") == "float32" and resolve_dtype("bfloat16") == "bfloat16"
    expected = "bfloat16" if torch.cuda.is_available() or cpu_has_amx() else "float32"
    assert resolve_dtype("auto") == expected
