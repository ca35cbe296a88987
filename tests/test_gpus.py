"""The GPU allocator without GPUs: fake device counts, holders in other processes, killed holders.

Holders are real processes that take a lock through :func:`cropseg.core.gpus.acquire_gpu` and
sleep; killing one with SIGKILL must hand its GPU to the next process at once.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from cropseg.core import gpus
from cropseg.core.gpus import GpusBusy, acquire_gpu, gpu_names, wait_limit
from cropseg.nn.precision import pick_device

SRC = Path(__file__).resolve().parents[1] / "src"
HOLD = ("import sys, time; from pathlib import Path; from cropseg.core.gpus import acquire_gpu; "
        "lease = acquire_gpu(int(sys.argv[1]), directory=Path(sys.argv[2]), wait=0, holder='test-holder'); "
        "print(lease.index, flush=True); time.sleep(120)")


@pytest.fixture(autouse=True)
def _no_lease_held():
    """Each test starts as a fresh process would: holding no GPU."""
    for lease in list(gpus._HELD.values()):
        lease.release()
    yield
    for lease in list(gpus._HELD.values()):
        lease.release()


@pytest.fixture
def holders(tmp_path):
    """Start processes that each take a GPU of ``count`` in ``tmp_path``; killed at the end."""
    started: list[subprocess.Popen] = []

    def start(count: int) -> tuple[subprocess.Popen, int]:
        env = os.environ | {"PYTHONPATH": str(SRC)}
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(count), str(tmp_path)], env=env,
                                   stdout=subprocess.PIPE, text=True)
        started.append(process)
        return process, int(process.stdout.readline())

    yield start
    for process in started:
        process.kill()
        process.wait()


def test_each_process_takes_a_free_gpu_and_a_killed_holder_gives_it_back(tmp_path, holders):
    first, first_gpu = holders(3)
    _, second_gpu = holders(3)
    assert (first_gpu, second_gpu) == (0, 1)
    lease = acquire_gpu(3, directory=tmp_path, wait=0)
    assert lease.index == 2 and lease.name == "2"
    assert acquire_gpu(3, directory=tmp_path, wait=0) is lease  # one GPU per process, however often asked
    lease.release()

    first.send_signal(signal.SIGKILL)  # no cleanup runs: the kernel drops the lock with the process
    first.wait()
    assert (tmp_path / "gpu-0.lock").exists()  # the file stays; only a held lock means taken
    assert acquire_gpu(3, directory=tmp_path, wait=0).index == 0


def test_every_gpu_taken_is_a_clear_error_naming_the_holders(tmp_path, holders):
    first, _ = holders(2)
    second, _ = holders(2)
    with pytest.raises(GpusBusy, match="every GPU of this machine is taken") as error:
        acquire_gpu(2, directory=tmp_path, wait=0)
    message = str(error.value)
    assert f"gpu 0: pid {first.pid} test-holder" in message and f"gpu 1: pid {second.pid} test-holder" in message
    assert "dvc queue start -j 2" in message


def test_a_waiting_process_gets_the_gpu_its_holder_leaves(tmp_path, holders):
    holder, _ = holders(1)
    threading.Timer(1.0, holder.kill).start()
    lines: list[str] = []
    started = time.monotonic()
    lease = acquire_gpu(1, directory=tmp_path, wait=30, poll=0.1, log=lines.append)
    assert lease.index == 0 and 0.9 < time.monotonic() - started < 20
    assert lines and lines[0].startswith("waiting for a free GPU: all 1 taken (gpu 0: pid")


def test_locks_are_named_after_the_visible_devices(tmp_path, monkeypatch):
    assert gpu_names(2, "GPU-1a2b,GPU-3c4d") == ["GPU-1a2b", "GPU-3c4d"]
    assert gpu_names(2, "3,5,7") == ["3", "5"]
    assert gpu_names(3, "") == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,3")
    lease = acquire_gpu(2, directory=tmp_path, wait=0)
    assert (lease.index, lease.name) == (0, "5") and lease.path == tmp_path / "gpu-5.lock"


def test_lock_dir_and_wait_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CROPSEG_GPU_LOCK_DIR", str(tmp_path / "locks"))
    assert gpus.lock_dir() == tmp_path / "locks"
    monkeypatch.delenv("CROPSEG_GPU_LOCK_DIR")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # a queued experiment: the main repository's .dvc/tmp
    assert gpus.lock_dir() == tmp_path / ".dvc" / "tmp" / "gpu-locks"
    monkeypatch.setenv("CROPSEG_GPU_WAIT", "")
    assert wait_limit() is None
    monkeypatch.setenv("CROPSEG_GPU_WAIT", "30")
    assert wait_limit() == 30.0
    monkeypatch.setenv("CROPSEG_GPU_WAIT", "soon")
    with pytest.raises(ValueError, match="CROPSEG_GPU_WAIT='soon'"):
        wait_limit()


def _fake_cuda(monkeypatch, count: int) -> list[int]:
    chosen: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    return chosen


def test_pick_device_auto_takes_the_free_gpu(tmp_path, monkeypatch, holders):
    monkeypatch.setenv("CROPSEG_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    chosen = _fake_cuda(monkeypatch, 2)
    holders(2)  # another experiment holds GPU 0
    assert pick_device("auto") == torch.device("cuda", 1) and chosen == [1]
    assert pick_device("cuda:auto") == torch.device("cuda", 1)  # the same lease
    assert pick_device("cuda") == torch.device("cuda", 0)  # explicit: no allocation
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun placed the ranks
    assert pick_device("auto", local_rank=1) == torch.device("cuda", 1)


def test_pick_device_without_gpus_is_the_cpu_or_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("CROPSEG_GPU_LOCK_DIR", str(tmp_path))
    _fake_cuda(monkeypatch, 0)
    assert pick_device("auto") == torch.device("cpu")
    assert not list(tmp_path.iterdir())  # a CPU run takes no lock
    with pytest.raises(RuntimeError, match="device: cuda:auto was requested but torch sees no CUDA device"):
        pick_device("cuda:auto")
