"""Device and dtype policy.

CUDA: bf16 where the GPU supports it, fp16 otherwise. CPU: bf16 *weights* where the processor
has native bf16 instructions (AVX512-BF16 or AMX), fp32 otherwise. Autocast is not used for
inference: on CPU it was measured several times slower than plain fp32.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(requested: str = "auto") -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else is passed to torch."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {requested!r} requested but CUDA is not available")
    return device


@cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU executes bf16 natively (avx512_bf16 or amx_bf16 flags)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """The compute dtype for ``device`` under the policy above, or the one requested."""
    if requested != "auto":
        if requested not in DTYPES:
            raise ValueError(f"dtype must be auto, {', '.join(DTYPES)}; got {requested!r}")
        dtype = DTYPES[requested]
        if device.type == "cpu" and dtype == torch.float16:
            raise ValueError("float16 is not supported on CPU; use bfloat16 or float32")
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else torch.float32
