"""A training loader for a GPU: batches read by threads of the training process, pinned, in order.

Why not only ``torch.utils.data.DataLoader`` with worker processes: a worker process hands every
batch to the training process through shared memory, and at the thesis' batch size (128
sub-patches of 6 months x 4 bands x 61 x 61 float32: 45 MB) that hand-over, not reading the
store, limits the loop. Measured on an H200 machine (``bench/loader_feed.py``): one process reads
3,691 samples/s, yet 4 to 15 worker processes delivered only 4,183-5,857 samples/s to the
training process, so the GPU (5,000-7,800 samples/s) waited. Reading a batch is ``preadv`` into
one array plus a few numpy and torch operations, all of which release the GIL, so threads of
the training process read in parallel and hand over nothing: each batch is read, pinned and
queued by one thread. Batches come out in the sampler's order whatever thread finishes first,
so training sees exactly what a ``DataLoader`` would give it (the same blocks, the same order).

On a CPU the loop uses the plain ``DataLoader`` (a training step there takes far longer than a
read, and ``loader.workers`` is 0 by default).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch
from torch.utils.data import DataLoader, Dataset

from .dataset import Batch


class ThreadLoader:
    """Iterate ``dataset[positions]`` for every ``positions`` the sampler yields, read ahead by threads.

    Args:
        dataset: returns a whole :class:`~cropseg.nn.dataset.Batch` for a list of positions.
        sampler: yields lists of positions (a :class:`~cropseg.nn.dataset.BlockSampler`); iterated
            afresh for each pass, so ``sampler.set_epoch`` works as with a ``DataLoader``.
        threads: reading threads (at least 1).
        pin_memory: pin each batch (a CUDA copy from pinned memory can overlap compute).
        ahead: batches read ahead of the one being consumed (default: two per thread).
    """

    def __init__(self, dataset: Dataset, sampler: Iterable[list[int]], *, threads: int, pin_memory: bool,
                 ahead: int | None = None):
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.dataset, self.sampler, self.threads, self.pin_memory = dataset, sampler, threads, pin_memory
        self.ahead = ahead or 2 * threads

    def _read(self, positions: list[int]) -> Batch:
        batch = self.dataset[positions]
        return batch.pin_memory() if self.pin_memory else batch

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Batch]:
        with ThreadPoolExecutor(self.threads, thread_name_prefix="loader") as pool:
            pending: deque[Future[Batch]] = deque()
            try:
                for positions in self.sampler:
                    pending.append(pool.submit(self._read, positions))
                    if len(pending) > self.ahead:
                        yield pending.popleft().result()
                while pending:
                    yield pending.popleft().result()
            finally:  # a consumer that stops early (a budget reached) leaves no read running
                for future in pending:
                    future.cancel()


def training_loader(dataset: Dataset, sampler: Iterable[list[int]], *, workers: int,
                    device: torch.device) -> ThreadLoader | DataLoader:
    """The loader of the training loop: threads on CUDA (:class:`ThreadLoader`, ``workers`` of
    them, pinned), else a ``DataLoader`` with ``workers`` processes (0: in this process).

    Args:
        dataset: the training samples.
        sampler: the block sampler.
        workers: ``loader.workers`` as resolved (:func:`cropseg.nn.precision.loader_workers`).
        device: where the run computes.

    Returns:
        An iterable of :class:`~cropseg.nn.dataset.Batch`, one per block, in the sampler's order.
    """
    if device.type == "cuda" and workers > 0:
        return ThreadLoader(dataset, sampler, threads=workers, pin_memory=True)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0)
