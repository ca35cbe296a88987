"""One small interface over the ways a stage runs a function on many items.

``make_executor(scheduler, workers)`` gives an :class:`Executor` whose ``imap_unordered(fn, items)``
yields ``fn(item)`` as each finishes, in whatever order they finish, and whose ``close()`` frees
its workers. Stages sort the results themselves, so their outputs never depend on the order.

* ``serial``: in this process (``processes`` with ``workers=1`` is serial too: no pool to start);
* ``processes``: a :class:`concurrent.futures.ProcessPoolExecutor` (``forkserver`` start, so
  the pool is safe next to threads such as tqdm's monitor);
* ``dask``: a Dask distributed client on the scheduler at ``$DASK_SCHEDULER_ADDRESS``, else on a
  :class:`distributed.LocalCluster` of ``workers`` single-threaded workers started here. The
  workers must see the same file system as this process (they read inputs and write outputs by
  path; only small records travel back).

The first exception raised by ``fn`` stops the run: pending items are cancelled (the process
pool also waits for the items already running) and the exception propagates unchanged.
"""

from __future__ import annotations

import multiprocessing
import os
from functools import partial
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Literal

from tqdm import tqdm

DASK_ADDRESS_ENV = "DASK_SCHEDULER_ADDRESS"
Scheduler = Literal["serial", "processes", "dask"]
#: Most processes a stage starts by default: beyond this the disk, not the CPU, bounds the stages.
MAX_DEFAULT_WORKERS = 8


def default_workers() -> int:
    """Processes a stage uses when neither its params nor ``--workers`` say: the CPUs, at most 8."""
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


class Executor:
    """Runs ``fn`` over items; subclasses differ only in where it runs."""

    name = "serial"
    workers = 1

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``fn(item)`` for every item, as each finishes (serially: in item order).

        Args:
            fn: a picklable function of one item (it runs in other processes in subclasses).
            items: the inputs.

        Raises:
            Exception: the first exception ``fn`` raises, unchanged; the rest is cancelled.
        """
        for item in items:
            yield fn(item)

    def close(self) -> None:
        """Free the workers (the pool, the Dask client and its local cluster)."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> str:
        return f"{self.name} x{self.workers}"


class ProcessExecutor(Executor):
    """A local process pool; at most ``2 * workers`` items are in flight at once."""

    name = "processes"

    def __init__(self, workers: int):
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        pending: set[Future] = set()
        iterator = iter(items)
        try:
            while True:
                for item in iterator:
                    pending.add(self._pool.submit(fn, item))
                    if len(pending) >= 2 * self.workers:
                        break
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            # on an error (or an abandoned iteration) cancel what has not started and wait for what
            # has: no task may still be writing once the caller cleans up after the error
            for future in pending:
                future.cancel()
            wait(pending)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class DaskExecutor(Executor):
    """A Dask distributed client: the scheduler at ``address``, or a LocalCluster started here."""

    name = "dask"

    def __init__(self, workers: int, address: str | None = None, processes: bool = True):
        """Connect to a scheduler, or start a local cluster.

        Args:
            workers: single-threaded workers of the local cluster (with a scheduler: used only
                when it reports no worker).
            address: the scheduler; ``$DASK_SCHEDULER_ADDRESS`` when ``None``, else a local cluster.
            processes: local workers are processes (``False``: threads of this process).
        """
        from distributed import Client, LocalCluster

        self.address = address or os.environ.get(DASK_ADDRESS_ENV) or None
        self._cluster = None
        if self.address:
            self._client = Client(self.address)
            self.workers = len(self._client.scheduler_info(n_workers=-1).get("workers", {})) or workers
        else:
            self._cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes,
                                         dashboard_address=None)
            self._client = Client(self._cluster)
            self.workers = workers

    def imap_unordered(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        from distributed import as_completed

        futures = self._client.map(fn, list(items), pure=False)
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            self._client.cancel(futures)

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()

    def describe(self) -> str:
        where = self.address or "LocalCluster"
        return f"dask x{self.workers} ({where})"


def make_executor(scheduler: Scheduler, workers: int, **dask_options: Any) -> Executor:
    """The executor for a params ``scheduler``/``workers`` pair (see the module docstring).

    Args:
        scheduler: ``serial``, ``processes`` or ``dask``.
        workers: processes or Dask workers; ``processes`` with one worker runs serially.
        **dask_options: passed to :class:`DaskExecutor` (``address``, ``processes``).

    Raises:
        ValueError: an unknown ``scheduler``.
    """
    if scheduler == "dask":
        return DaskExecutor(workers, **dask_options)
    if scheduler == "processes" and workers > 1:
        return ProcessExecutor(workers)
    if scheduler in ("serial", "processes"):
        return Executor()
    raise ValueError(f"unknown scheduler {scheduler!r}: expected serial, processes or dask")


def _indexed(fn: Callable[[Any], Any], pair: tuple[int, Any]) -> tuple[int, Any]:
    return pair[0], fn(pair[1])


def ordered_map(fn: Callable[[Any], Any], items: list[Any], workers: int, *, desc: str,
                progress: bool = True, unit: str = "patch") -> list[Any]:
    """``[fn(item) for item in items]`` on a local process pool (serial for one worker), with a
    progress bar; results in item order, whatever order they finish in.

    Args:
        fn: a picklable function of one item.
        items: the inputs.
        workers: processes; one item, or one worker, runs in this process.
        desc: the progress bar's label.
        progress: show the progress bar.
        unit: what the progress bar counts.
    """
    results: list[Any] = [None] * len(items)
    with make_executor("processes", workers if len(items) > 1 else 1) as executor:
        for index, result in tqdm(executor.imap_unordered(partial(_indexed, fn), list(enumerate(items))),
                                  total=len(items), desc=desc, unit=unit, disable=not progress):
            results[index] = result
    return results
