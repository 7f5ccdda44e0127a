"""What changes on a GPU: deterministic kernels, bf16 autocast (AMP) and compiled training steps.

The trainings are tiny, so on a GPU their cost is kernel launches and Python, not arithmetic:
compiling the forward and backward pass with mode="reduce-overhead" replays each as one CUDA graph.
On a CPU compiling the generic step does not pay (measured: a mnist-mlp epoch at batch 100 is
1.1-1.7x slower compiled, plus ~5 s of compiling; a cnn-7 step 38 -> 91 ms), so "auto" compiles
on CUDA only; the tiny MLPs have their own compiled path on every device (fast_mlp.py). Not yet
measured on a GPU: this project's development machine has none (tests/test_accel.py runs there
too when one is present).

Environment: DLSCOPE_COMPILE=0|1|auto overrides the choice for the generic step.
"""

from __future__ import annotations

import os
import warnings
from contextlib import nullcontext
from typing import Callable

import torch

_WARNED: set[str] = set()


def warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=3)


def configure(device: torch.device | str) -> None:
    """Deterministic kernels on CUDA, so that the same seed on the same GPU gives the same numbers
    (cuDNN picks one algorithm instead of timing several; cuBLAS gets a fixed workspace)."""
    if torch.device(device).type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=True)


def autocast(device: torch.device, enabled: bool):
    """bf16 autocast (no loss scaling needed, unlike fp16) where AMP is on, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def should_compile(setting: bool | str, device: torch.device) -> bool:
    env = os.environ.get("DLSCOPE_COMPILE", "").strip().lower()
    if env in ("0", "1"):
        return env == "1"
    if setting == "auto" or env == "auto":
        return device.type == "cuda"
    return bool(setting)


def allow_recompiles(limit: int = 64) -> None:
    """Each shape is compiled for itself (dynamic=False, so that a step becomes a few fused
    kernels): a sweep over batch sizes or architectures needs more than the default 8 versions of
    one Python function."""
    import torch._dynamo

    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, limit)


class CompiledStep:
    """fn compiled (CUDA graphs on a GPU), or fn itself once compiling has failed: the first call
    that raises is retried eagerly and a warning says so. fn must not mutate its inputs."""

    def __init__(self, fn: Callable, device: torch.device):
        allow_recompiles()
        self.fn, self.device = fn, device
        mode = "reduce-overhead" if device.type == "cuda" else None
        self.compiled: Callable | None = torch.compile(fn, mode=mode, dynamic=False)

    def __call__(self, *args):
        if self.compiled is None:
            return self.fn(*args)
        try:
            if self.device.type == "cuda":  # a new training step: earlier graph outputs may be reused
                torch.compiler.cudagraph_mark_step_begin()
            return self.compiled(*args)
        except Exception as e:  # the compiler failed: run eagerly from now on
            warn_once(f"torch.compile failed ({type(e).__name__}: {str(e).splitlines()[0][:200]}); running eagerly")
            self.compiled = None
            return self.fn(*args)
