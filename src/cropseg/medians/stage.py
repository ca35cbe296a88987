"""The ``medians`` stage: every patch's medians (:mod:`cropseg.medians.recipe`) into the sharded store.

Why two passes: the first reads every patch's size and year (:func:`cropseg.medians.recipe.read_header`)
so the store plan fixes every shard offset before any patch is computed; the second computes the
patches on the executor, each worker writing its blocks at their planned offsets, so the bytes never
depend on the order tasks finish in.

Storage (``data/medians/``): the sharded store of :mod:`cropseg.medians.store_layout`: per patch a
block of float32 (or uint16) ``(sub_y, sub_x, periods, bands, window, window)`` and a block of
uint32 labels ``(sub_y, sub_x, window, window)`` in a shard per tile-year, and an index
(``patches.npy``, ``counts.npy``, ``store.json``). One sub-patch is one contiguous block.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..core.atomic import atomic_dir
from ..core.executor import Executor, make_executor
from ..core.params import Medians
from ..s4a.netcdf import INDEX_FILE, read_index
from .recipe import MediansError, compute_patch, period_edges, period_starts, read_header
from .store_layout import StoreError
from .store_writer import (DEFAULT_SHARD_BYTES, PatchSlot, StorePlan, code_counts, create_shards, plan_store,
                           write_block, write_index)


def _header_task(relpath: str, netcdf_root: str, window: int) -> tuple[str, int, int]:
    return (relpath, *read_header(Path(netcdf_root) / relpath, window))


def process_patch(slot: PatchSlot, netcdf_root: str, out_root: str, params: Medians) -> dict[str, Any]:
    """Compute one patch and write it into its planned place in a shard; return its pixel counts
    per sub-patch and code (for the index) and its bytes.

    Args:
        slot: the patch's place in the store (:func:`cropseg.medians.store_writer.plan_store`).
        netcdf_root: the folder ``slot.path`` is relative to.
        out_root: the store folder being filled, its shards already created.
        params: the ``medians`` params.

    Returns:
        ``{"row", "counts", "bytes"}``: the slot's row, :func:`cropseg.medians.store_writer.code_counts`
        of its labels, and the bytes of its two blocks.

    Raises:
        MediansError: the patch cannot be computed (:func:`compute_patch`), or its arrays do not
            have the planned shapes.
    """
    result = compute_patch(Path(netcdf_root) / slot.path, params)
    try:
        write_block(out_root, slot, result.medians, result.labels)
    except StoreError as error:
        raise MediansError(str(error)) from None
    return {"row": slot.row, "counts": code_counts(result.labels),
            "bytes": int(result.medians.nbytes + result.labels.nbytes)}


@dataclass(frozen=True)
class MediansSummary:
    patches: int
    seconds: float
    bytes: int
    executor: str
    shards: int = 0

    def line(self) -> str:
        rate = self.patches / self.seconds if self.seconds > 0 else float("inf")
        return (f"medians: {self.patches} patches, {self.seconds:.1f} s, {rate:.2f} patches/s "
                f"({self.bytes / 1e6:.0f} MB in {self.shards} shard(s), {self.executor})")


def store_meta(params: Medians, years: list[int]) -> dict[str, Any]:
    """What every array of the store means (``store.json``, beside the shard list and the index)."""
    return {"bands": list(params.bands), "freq": params.freq, "window": params.window, "dtype": params.dtype,
            "period_date": "start of the right-closed period (bins[i], bins[i+1]]",
            "periods": {str(y): period_starts(y, params.freq) for y in years}}


def plan_medians(netcdf_root: Path, relpaths: list[str], params: Medians, executor: Executor,
                 shard_bytes: int, progress: bool) -> StorePlan:
    """Read every patch's size and year (in parallel) and place it in the store.

    Args:
        netcdf_root: the fetched patches (its ``index.csv`` gives each patch's tile).
        relpaths: the patches to place, relative to ``netcdf_root``.
        params: the ``medians`` params (bands, freq, window, dtype).
        executor: runs :func:`read_header` on every patch.
        shard_bytes: the shard size cap (:func:`cropseg.medians.store_writer.plan_store`).
        progress: show a progress bar.

    Raises:
        MediansError: a header cannot be read (:func:`read_header`).
    """
    tiles = {info.path: info.tile for info in read_index(netcdf_root / INDEX_FILE)}
    task = functools.partial(_header_task, netcdf_root=str(netcdf_root.resolve()), window=params.window)
    headers = list(tqdm(executor.imap_unordered(task, relpaths), total=len(relpaths), desc="medians plan",
                        unit="patch", disable=not progress, leave=False))
    years = sorted({year for _, _, year in headers})
    periods = {year: len(period_edges(year, params.freq)) - 1 for year in years}
    patches = [(relpath, year, tiles.get(relpath) or "unknown", size) for relpath, size, year in headers]
    return plan_store(patches, bands=len(params.bands), window=params.window, periods_of_year=periods,
                      dtype="uint16" if params.dtype == "uint16" else "float32", shard_bytes=shard_bytes)


def run_medians(netcdf_root: str | Path, out: str | Path, params: Medians, *,
                executor: Executor | None = None, progress: bool = True,
                shard_bytes: int = DEFAULT_SHARD_BYTES) -> MediansSummary:
    """The stage: every patch of ``netcdf_root/index.csv`` into the sharded store ``out``
    (replaced atomically; see :mod:`cropseg.medians.store_layout`).

    Two passes over the patches on ``executor`` (default ``make_executor(params.scheduler,
    params.workers)``): headers (size, year) to plan every shard offset, then the medians, each
    worker writing its patch at its planned offset. The bytes depend on the inputs and params only,
    never on the order tasks finish in. On any error the previous ``out`` (if any) is left untouched
    and no partial output remains.

    Args:
        netcdf_root: the fetched patches with their ``index.csv``.
        out: the store folder (``data/medians``).
        params: the ``medians`` params.
        executor: where the per-patch tasks run; made from ``params`` (and closed) when ``None``.
        progress: show progress bars.
        shard_bytes: the shard size cap.

    Returns:
        The stage's summary: patches, seconds, bytes, executor, shards.

    Raises:
        MediansError: ``index.csv`` is missing or empty, or a patch cannot be read or computed.
    """
    netcdf_root = Path(netcdf_root)
    index_path = netcdf_root / INDEX_FILE
    if not index_path.is_file():
        raise MediansError(f"{index_path}: not found (run the fetch_s4a stage first)")
    relpaths = sorted(info.path for info in read_index(index_path))
    if not relpaths:
        raise MediansError(f"{index_path}: lists no patches")
    start = time.perf_counter()
    own_executor = executor is None
    if executor is None:
        executor = make_executor(params.scheduler, params.workers)
    with atomic_dir(out) as tmp:
        try:
            plan = plan_medians(netcdf_root, relpaths, params, executor, shard_bytes, progress)
            create_shards(tmp, plan)
            task = functools.partial(process_patch, netcdf_root=str(netcdf_root.resolve()),
                                     out_root=str(tmp.resolve()), params=params)
            results = list(tqdm(executor.imap_unordered(task, plan.slots), total=len(plan.slots),
                                desc="medians", unit="patch", disable=not progress))
        finally:
            if own_executor:  # workers stopped before atomic_dir removes tmp on an error
                executor.close()
        counts: list[Any] = [None] * len(plan.slots)
        for result in results:
            counts[result["row"]] = result["counts"]
        years = sorted({slot.year for slot in plan.slots})
        write_index(tmp, plan, counts, store_meta(params, years))
    return MediansSummary(len(results), time.perf_counter() - start, sum(r["bytes"] for r in results),
                          executor.describe(), len(plan.shards))
