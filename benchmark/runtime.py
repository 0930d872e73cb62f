"""Device, precision and memory-format helpers (the only place that knows about them)."""

from __future__ import annotations

import contextlib
import functools
import os
import resource
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]


def select_device(name: str = "auto") -> torch.device:
    """``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; one that
    does not exist or is not available here is a one-line error (before any compute)."""
    from .errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"--device {name}: not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
            raise ConfigError(f"--device {name}: CUDA is not available ({why}); use --device cpu or auto.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1}).")
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise ConfigError(f"--device {name}: Apple MPS is not available here; use --device cpu or auto.")
    elif dev.type != "cpu":
        raise ConfigError(f"--device {name}: dbench runs on cpu, cuda or mps; use one of those (or auto).")
    return dev


def autocast(device: torch.device, precision: Precision):
    """bf16 autocast on CPU or CUDA; fp16 AMP on CUDA only; fp32 = no autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        dtype = torch.bfloat16
    return torch.autocast(device.type, dtype=dtype)


def channels_last(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if enabled and x.ndim == 4 else x


def _embed(net, x):
    return net.embed(x)


def logits_and_ce(net, x, y):
    """``(logits, fp32 cross-entropy)`` of ``net(x)``: one training step's forward."""
    logits = net(x)
    return logits, torch.nn.functional.cross_entropy(logits.float(), y)


@functools.cache
def compiled_embed():
    """``torch.compile``d ``net.embed(x)``, built once per process. Parameters are graph
    inputs (inlined nn.Modules), so a fresh network of the same architecture (DM draws one per
    iteration, IDM keeps a queue) reuses the compiled graph instead of recompiling; the fused
    instance norm is what makes it fast on CPU. Call it inside :func:`autocast`."""
    return torch.compile(_embed)


@functools.cache
def compiled_logits_and_ce():
    """``torch.compile``d :func:`logits_and_ce`, forward and
    backward (AOTAutograd), shared by every network of one architecture. Call it inside
    :func:`autocast`; the loss is computed in fp32."""
    return torch.compile(logits_and_ce)


def hardware() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    name = ""
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    return f"cpu x{os.cpu_count()} {name}".strip()


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def peak_cuda_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def effective_precision(device: torch.device, precision: str) -> str:
    """The precision that actually runs (:func:`autocast` runs fp16 as bf16 on the CPU)."""
    return "bf16" if (precision == "fp16" and device.type == "cpu") else precision


@functools.cache
def git_commit() -> str:
    """The commit of the dbench checkout this process runs from ('' when not a git checkout),
    with '+dirty' when tracked files differ from it."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return ""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{head}+dirty" if head and dirty else head
