"""Devices, numeric precision and loader workers: where a run computes, in which dtype, fed by whom.

A run's precision is one :class:`Precision` value, resolved once from params (``auto``, ``32``,
``bf16``, ``fp16``) and the device, then handed to everything that runs the model (training,
selection scoring, precise BN, validation, irreducible losses, evaluate, predict), so all of them
compute in the same dtype. fp16 has a narrow exponent range: its gradients need a loss scaler
(:meth:`Precision.grad_scaler`), which stays a no-op in the other precisions.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.gpus import acquire_gpu, wait_limit


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """Where this process computes, from ``train.device`` / ``holdout.device``.

    ``cpu``: the CPU. ``cuda``: GPU ``local_rank`` (0 outside torchrun). ``auto`` and ``cuda:auto``:
    a free GPU of the machine, taken and held until the process exits (:mod:`cropseg.core.gpus`),
    so that the experiments ``dvc queue start -j N`` runs side by side each get their own GPU;
    ``auto`` falls back to the CPU where torch sees no GPU. Under torchrun (``WORLD_SIZE`` > 1)
    the launcher has placed the ranks: each takes the GPU of its local rank.
    """
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device: {requested} was requested but torch sees no CUDA device")
    if requested == "cuda" or int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", local_rank)
    if requested not in ("auto", "cuda:auto"):
        raise ValueError(f"device: expected auto, cpu, cuda or cuda:auto, got {requested!r}")
    lease = acquire_gpu(torch.cuda.device_count(), wait=wait_limit(), holder=" ".join(sys.argv[:2]),
                        log=lambda line: print(line, file=sys.stderr, flush=True))
    torch.cuda.set_device(lease.index)
    return torch.device("cuda", lease.index)


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic (AVX512-BF16 or AMX): where CPU autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass(frozen=True)
class Precision:
    """The dtype a run's forward passes autocast to (``dtype`` None: none, plain float32).

    ``name`` is the params spelling (``32``, ``bf16``, ``fp16``), recorded beside results.
    """

    name: str
    dtype: torch.dtype | None

    @property
    def autocasts(self) -> bool:
        """Forward passes run under autocast (channels_last then pays off on tensor cores)."""
        return self.dtype is not None

    @property
    def scales_loss(self) -> bool:
        """fp16 only: small gradients underflow to zero in fp16 unless the loss is scaled up first."""
        return self.dtype == torch.float16

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager:
        """The autocast context of this precision on ``device`` (a null context in float32)."""
        return torch.autocast(device.type, dtype=self.dtype) if self.dtype is not None else contextlib.nullcontext()

    def grad_scaler(self, device: torch.device) -> torch.amp.GradScaler:
        """The loss scaler of a training run: enabled under fp16, else a no-op (identity scale, plain step)."""
        return torch.amp.GradScaler(device.type, enabled=self.scales_loss)


FP32 = Precision("32", None)
BF16 = Precision("bf16", torch.bfloat16)
FP16 = Precision("fp16", torch.float16)


def resolve_precision(requested: str, device: torch.device) -> Precision:
    """The precision of a run on ``device`` from ``train.precision`` / ``holdout.precision``.

    Args:
        requested: ``auto`` (bf16 on a CUDA GPU that computes it natively, else float32: on a
            CPU always float32, so that the default model does not depend on the processor), ``32``,
            ``bf16`` or ``fp16``.
        device: where the run computes.

    Returns:
        :data:`FP32`, :data:`BF16` or :data:`FP16`.

    Raises:
        ValueError: ``fp16`` on a CPU, where fp16 arithmetic is emulated (slower than float32, and
            no more accurate than bf16): a params mistake, not something to fall back from silently.
    """
    if requested == "32":
        return FP32
    if requested == "bf16":
        return BF16
    if requested == "fp16":
        if device.type != "cuda":
            raise ValueError(f"precision fp16 needs a CUDA device (this run computes on {device.type}); "
                             "on a CPU choose 32, or bf16 where the CPU has AVX512-BF16/AMX")
        return FP16
    if requested != "auto":
        raise ValueError(f"precision: expected auto, 32, bf16 or fp16, got {requested!r}")
    if device.type == "cuda":
        return BF16 if torch.cuda.is_bf16_supported() else FP32
    # a CPU run computes in float32 whatever the processor: bf16 autocast only on CPUs with native
    # bf16 (AVX512-BF16/AMX) would make the default model depend on the machine it was trained on
    return FP32


def loader_workers(requested: int | None, device: torch.device, *, cpus: int | None = None,
                   gpus: int | None = None) -> int:
    """DataLoader worker processes: ``requested`` when set, else chosen from the machine.

    The rule for ``loader.workers: null``: on a CPU run, 0 (the model's forward and backward passes
    already use every core through torch's intra-op threads; worker processes would compete with
    them for the same cores, and reading a sub-patch from the store is one contiguous read); on
    CUDA, ``min(8, CPUs per GPU - 1)`` (at least 0): one core stays with the process that drives
    the GPU, the others read and pin the next blocks while the GPU computes.

    Args:
        requested: ``loader.workers`` (None: choose).
        device: where the run computes.
        cpus: CPUs this process may use (default: its affinity mask); for tests.
        gpus: GPUs of the machine (default: torch's count); for tests.

    Returns:
        The number of worker processes (0: load in the main process).
    """
    if requested is not None:
        return requested
    if device.type != "cuda":
        return 0
    cpus = cpus if cpus is not None else len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count() or 1
    gpus = gpus if gpus is not None else max(torch.cuda.device_count(), 1)
    return max(0, min(8, cpus // max(gpus, 1) - 1))


def fix_cpu_threads(threads: int | None, device: torch.device) -> int:
    """Fix torch's CPU threads for a run on the CPU, so its float sums do not depend on the machine's cores.

    A convolution or matrix product splits its sums over torch's intra-op threads, one per core by
    default, and the order of a float sum changes its last bits: the same training on a 2-core and a
    16-core machine drifts apart within an epoch. With a fixed count (``train.cpu_threads``) two
    machines of the same processor family and the same torch build train the same model, bit for
    bit (a different vector unit, e.g. AVX2 vs AVX-512, or another torch version still changes the
    kernels). ``None`` keeps torch's default: fastest on a machine with many cores, results
    machine-dependent. No effect on CUDA runs (the GPU's arithmetic does not use these threads).

    Args:
        threads: ``train.cpu_threads``; None: leave torch's default.
        device: where the run computes.

    Returns:
        The number of threads torch uses from now on.
    """
    if threads is not None and device.type == "cpu":
        torch.set_num_threads(threads)
    return torch.get_num_threads()
