"""Reduced precision for the image tower on a CPU: bfloat16 autocast and dynamic int8
quantisation of the linear layers.

Both approximate the full-precision embeddings (the agreement measured is in
``docs/benchmarks.md``), so they are opt-in and recorded with the run: embeddings made at two
precisions are not mixed. Whether either is faster depends on the CPU: bfloat16 needs
AVX512-BF16 or AMX to pay off (elsewhere it is emulated, and slower than float32).
"""

import contextlib
import warnings

import torch

from ..engine.defaults import PRECISIONS

# torch.cpu.get_capabilities() keys of bfloat16 instructions (x86: AVX512-BF16, AMX; Arm: BF16)
BF16_CAPABILITIES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def native_bf16():
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX on x86, BF16 on Arm);
    None where this torch cannot tell."""
    if not hasattr(torch.cpu, "get_capabilities"):  # an older torch
        return None
    caps = torch.cpu.get_capabilities()
    return any(caps.get(name) for name in BF16_CAPABILITIES)


def precision_problem(precision, device):
    """Why ``precision`` cannot run on ``device`` (a torch.device), or None."""
    if precision not in PRECISIONS:
        return f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}"
    if precision == "int8" and device.type != "cpu":
        return f"precision int8 runs on the CPU only (device {device}); choose bf16 or full"
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        return f"precision bf16 runs on a CPU or CUDA (device {device}); choose full"
    return None


def quantized(module):
    """A copy of ``module`` whose ``nn.Linear`` layers (the bulk of a transformer's work) compute
    in int8: weights quantised once, per output channel (per tensor loses twice as much on a
    real transformer), activations quantised on the fly, per batch."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # eager-mode quantisation is deprecated, and still works
        warnings.simplefilter("ignore")
        return quantize_dynamic(torch.nn.ModuleDict(dict(m=module)),
                                {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)["m"]


def autocast(precision, device):
    """The context a forward pass at ``precision`` runs in: bfloat16 autocast on a CPU for
    ``bf16`` (matrix products in bfloat16, normalisations and softmax in float32; on CUDA the
    image tower's weights are bfloat16 instead)."""
    if precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
