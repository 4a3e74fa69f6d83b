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

PRECISIONS = ("full", "bf16", "int8")


def native_bf16():
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX)."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def precision_problem(precision, device):
    """Why ``precision`` cannot run on ``device`` (a torch.device), or None."""
    if precision == "int8" and device.type != "cpu":
        return f"precision int8 runs on the CPU only (device {device}); choose bf16 or full"
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
    ``bf16`` (matrix products in bfloat16, normalisations and softmax in float32)."""
    if precision == "bf16" and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()
