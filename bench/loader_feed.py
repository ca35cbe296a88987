"""How fast the training loader feeds a GPU, with no GPU work: one process vs DataLoader worker processes.

    python bench/loader_feed.py                 # 64 patches, batches of 128, on CUDA (or the CPU)

Prints the samples/s of ``dataset[positions]`` in the main process (what one loader worker can
read), then of a ``DataLoader`` with 4, 8 or 15 worker processes, pinned memory or not, and of the
training loop's thread loader (:class:`cropseg.nn.prefetch.ThreadLoader`) with 4, 8 or 15
threads, whose batches are only copied to the device. When the second is not many times the first, the hand-over
of batches from worker processes to the main process is the limit, not reading the store. The
store is the one ``bench/train_throughput.py`` writes (same needs: no netCDF4, dvc or wandb).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

from cropseg.nn.dataset import BlockSampler, SubPatchDataset  # noqa: E402
from cropseg.nn.prefetch import ThreadLoader  # noqa: E402
from cropseg.split.labels import load_label_set  # noqa: E402
from train_throughput import MONTHS, write_store  # noqa: E402

SETTINGS = [(8, True, 2), (8, False, 2), (15, True, 4), (15, False, 4), (4, True, 2)]  # workers, pin, prefetch


def feed_rate(dataset: SubPatchDataset, batch: int, device: torch.device, workers: int, pin: bool, prefetch: int,
              batches: int = 60, threads: bool = False) -> float:
    """Samples/s a DataLoader (or, with ``threads``, the train loop's :class:`ThreadLoader`) delivers onto
    ``device`` (after 8 warm-up batches)."""
    sampler = BlockSampler(len(dataset), batch, seed=0)
    loader = (ThreadLoader(dataset, sampler, threads=workers, pin_memory=pin) if threads else
              DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers, pin_memory=pin,
                         persistent_workers=True, prefetch_factor=prefetch))

    def endless():
        for epoch in itertools.count():
            sampler.set_epoch(epoch)
            yield from loader

    stream = endless()
    for _ in range(8):
        next(stream).to(device, non_blocking=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started, n = time.perf_counter(), 0
    for _ in range(batches):
        n += len(next(stream).to(device, non_blocking=True))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_store(Path(tmp) / "medians", args.patches)
        dataset = SubPatchDataset(Path(tmp) / "medians", paths, load_label_set("s4a11", ROOT / "configs" / "labels"),
                                  months=MONTHS, normalize=10000.0, skip_empty=True)
        started, n = time.perf_counter(), 0
        for i in range(10):
            n += len(dataset[np.random.default_rng(i).permutation(len(dataset))[:args.batch_size]])
        print(f"in-process dataset[...]: {n / (time.perf_counter() - started):.0f} samples/s (one process)")
        for workers, pin, prefetch in SETTINGS:
            rate = feed_rate(dataset, args.batch_size, device, workers, pin, prefetch)
            print(f"loader workers={workers} pin={pin} prefetch={prefetch}: {rate:.0f} samples/s", flush=True)
        for threads in (4, 8, 15):
            rate = feed_rate(dataset, args.batch_size, device, threads, device.type == "cuda", 0, threads=True)
            print(f"thread loader threads={threads} pin={device.type == 'cuda'}: {rate:.0f} samples/s", flush=True)


if __name__ == "__main__":
    main()
