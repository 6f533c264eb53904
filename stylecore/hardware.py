"""What this machine computes natively: bfloat16 on the CPU or a GPU, and so the precision "auto" means."""

from __future__ import annotations

import functools
import re
from pathlib import Path

import tensorflow as tf

# x86 flags of native bf16 arithmetic: AVX-512 BF16 dot products (Cooper Lake, Zen 4 and later)
# and AMX tiles (Sapphire Rapids and later); oneDNN uses either for TensorFlow's bf16 kernels.
# Without them oneDNN emulates bf16 in float32 and converts, which measured slower than float32.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# GPUs whose tensor cores take bf16: compute capability 8.0 (Ampere) and later.
GPU_BF16_CAPABILITY = (8, 0)


@functools.lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags as Linux lists them; empty where there is no /proc/cpuinfo."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    match = re.search(r"^flags\s*:(.*)$", text, re.MULTILINE)
    return frozenset(match.group(1).split()) if match else frozenset()


def cpu_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU does bfloat16 math natively (AVX-512 BF16 or AMX)."""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def gpu_bf16(device: str) -> bool:
    """Whether the GPU named by a TF device string (…/device:GPU:k) has bf16 tensor cores."""
    match = re.search(r"GPU:(\d+)", device, re.IGNORECASE)
    gpus = tf.config.list_physical_devices("GPU")
    if not match or not gpus:
        return False
    gpu = gpus[min(int(match.group(1)), len(gpus) - 1)]
    capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
    return capability is not None and tuple(capability) >= GPU_BF16_CAPABILITY


def resolve_precision(precision: str, device: str) -> str:
    """The network's arithmetic for an option value on a device (a TF device string):
    "auto" is bfloat16 where that device does bf16 natively, float32 elsewhere."""
    if precision != "auto":
        return precision
    native = gpu_bf16(device) if "GPU" in device.upper() else cpu_bf16()
    return "bfloat16" if native else "float32"
