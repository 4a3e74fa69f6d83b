"""Which torch devices exist on this machine, checked before any model is loaded."""


def device_name_problem(device):
    """Why ``device`` names no device vlsr runs on, whichever the machine, or None: a job
    queued here may run on a worker that has it."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return f"device {device!r} is not a torch device name (cpu, cuda, cuda:1, mps, ...)"
    if dev.type not in ("cpu", "cuda", "mps"):
        return f"device {device!r}: vlsr runs on cpu, cuda or mps"
    return None


def device_problem(device):
    """Why ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ...) cannot be used here,
    or None."""
    import torch

    problem = device_name_problem(device)
    if problem:
        return problem
    dev = torch.device(device)
    if dev.type == "cpu":
        return None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            return f"device {device!r}: this machine has no CUDA GPU (torch {torch.__version__})"
        if dev.index is not None and dev.index >= count:
            return (f"device {device!r}: this machine has {count} CUDA "
                    f"GPU{'' if count == 1 else 's'}, numbered from 0")
        return None
    return None if torch.backends.mps.is_available() else f"device {device!r}: MPS is not available here"
