"""One GPU per process: a free GPU of the machine, held by an OS file lock until the process exits.

``dvc queue start -j 4`` starts four experiments in four processes that know nothing of each
other (DVC's queue has no per-worker environment), so a stage cannot be *told* its GPU: it takes
one. Each GPU has a lock file in a directory every stage of the machine shares (the main
repository's ``.dvc/tmp/gpu-locks/``, or ``CROPSEG_GPU_LOCK_DIR``); a stage takes the first GPU
whose lock it can get and keeps the lock open until it exits. The lock is an advisory lock of the
operating system (``flock`` on POSIX, ``msvcrt.locking`` on Windows), owned by the open file: the
kernel drops it when the process ends, however it ends (``kill -9``, OOM killer, a crashed
driver), so a killed stage never leaves a GPU marked as taken. A lock file that merely exists
means nothing; only a held lock does.

When every GPU is taken the stage waits for one (a line every minute says who holds them), up to
``CROPSEG_GPU_WAIT`` seconds (unset: without limit, so that ``-j`` larger than the GPUs queues
the surplus instead of failing it; ``0``: fail at once with the holders named). Locks are named
after the GPU as the machine knows it (the entry of ``CUDA_VISIBLE_DEVICES`` when that is set,
else the index), so two processes with different visible-device lists still agree on which
physical GPU a lock guards.

This module imports nothing but the standard library (and :mod:`cropseg.core.workspace`): the
tests drive it with fake device counts, without torch or a GPU.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .workspace import repo_root

LOCK_DIR_ENV = "CROPSEG_GPU_LOCK_DIR"
WAIT_ENV = "CROPSEG_GPU_WAIT"

try:  # POSIX
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
except ImportError:  # pragma: no cover - Windows
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True


class GpusBusy(RuntimeError):
    """Every GPU stayed taken for the whole wait."""


@dataclass
class GpuLease:
    """A GPU this process holds: ``index`` for torch, ``name`` as the machine knows it, the open lock."""

    index: int
    name: str
    path: Path
    fd: int = field(repr=False)

    def release(self) -> None:
        """Give the GPU back before the process ends (closing the file drops the lock)."""
        if self.fd >= 0:
            _HELD.pop(self.fd, None)
            os.close(self.fd)
            self.fd = -1


#: Leases held by this process, kept referenced so that they last until the process exits.
_HELD: dict[int, GpuLease] = {}


def gpu_names(count: int, visible: str | None = None) -> list[str]:
    """Names of devices ``0..count-1``: the ``CUDA_VISIBLE_DEVICES`` entries (index or UUID), else the index."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    entries = [entry.strip() for entry in (visible or "").split(",") if entry.strip()]
    if len(entries) >= count:
        return [_safe(entry) for entry in entries[:count]]
    return [str(index) for index in range(count)]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def lock_dir() -> Path:
    """Where the locks of this machine's GPUs live: ``CROPSEG_GPU_LOCK_DIR``, else the main repo's ``.dvc/tmp``."""
    configured = os.environ.get(LOCK_DIR_ENV)
    return Path(configured) if configured else repo_root() / ".dvc" / "tmp" / "gpu-locks"


def wait_limit() -> float | None:
    """Seconds to wait for a free GPU from ``CROPSEG_GPU_WAIT`` (None: without limit)."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{WAIT_ENV}={raw!r}: expected seconds to wait for a free GPU (a number >= 0)") from None
    if seconds < 0:
        raise ValueError(f"{WAIT_ENV}={raw!r}: expected seconds to wait for a free GPU (a number >= 0)")
    return seconds


def acquire_gpu(count: int, *, names: Sequence[str] | None = None, directory: Path | None = None,
                wait: float | None = None, poll: float = 2.0, holder: str = "",
                log: Callable[[str], None] = print) -> GpuLease:
    """Take the first free GPU of ``count`` and hold it until this process exits (or ``release``).

    Args:
        count: GPUs of the machine (torch's ``device_count()``).
        names: their names (default :func:`gpu_names`).
        directory: the shared lock directory (default :func:`lock_dir`).
        wait: seconds to wait while every GPU is taken (None: without limit; 0: not at all).
        poll: seconds between two tries.
        holder: what this process is (a stage name), written beside the lock for others' messages.
        log: where the waiting messages go.

    Returns:
        The lease; also kept by this module, so the lock lasts as long as the process. A process
        that already holds a GPU gets the same lease again: one GPU per process.

    Raises:
        ValueError: ``count`` < 1.
        GpusBusy: every GPU was still taken after ``wait`` seconds; the message names the holders.
    """
    if count < 1:
        raise ValueError("cuda:auto needs at least one CUDA device; torch sees none")
    if _HELD:
        return next(iter(_HELD.values()))
    names = list(names) if names is not None else gpu_names(count)
    directory = directory if directory is not None else lock_dir()
    directory.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    told = None
    while True:
        for index, name in enumerate(names[:count]):
            path = directory / f"gpu-{name}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            if _try_lock(fd):
                note = f"{os.getpid()} {holder or 'cropseg'} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                path.with_suffix(".holder").write_text(note)
                lease = GpuLease(index, name, path, fd)
                _HELD[fd] = lease
                return lease
            os.close(fd)
        waited = time.monotonic() - started
        if wait is not None and waited >= wait:
            raise GpusBusy(f"every GPU of this machine is taken ({_holders(directory, names[:count])}); waited "
                           f"{waited:.0f} s ({WAIT_ENV}={wait:g}). Run fewer experiments at once "
                           f"(`dvc queue start -j {count}`), or unset {WAIT_ENV} to wait for a free GPU")
        if told is None or time.monotonic() - told >= 60:
            log(f"waiting for a free GPU: all {count} taken ({_holders(directory, names[:count])})")
            told = time.monotonic()
        time.sleep(poll if wait is None else max(0.0, min(poll, wait - waited)))


def _holders(directory: Path, names: Sequence[str]) -> str:
    """``gpu 0: pid 123 train since ...`` for each GPU, from the notes its holder wrote."""
    notes = []
    for name in names:
        note = directory / f"gpu-{name}.holder"
        text = note.read_text().strip() if note.exists() else "?"
        notes.append(f"gpu {name}: pid {text}")
    return "; ".join(notes)
