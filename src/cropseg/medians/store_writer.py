"""Writing the sharded medians store: plan every offset, create the shards, write blocks, write the index.

Why planned up front: every patch's shard and offsets follow from its path, year, tile and size,
so worker processes write their patches in any order with ``pwrite`` and the bytes never depend
on the order tasks finish in. The layout is :mod:`cropseg.medians.store_layout`'s.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .store_layout import (ALIGN, COUNT_DTYPE, COUNTS_FILE, FORMAT, LABELS_DTYPE, PATCHES_FILE, SHARD_DIR, STORE_FILE,
                           StoreError, patch_dtype)

DEFAULT_SHARD_BYTES = 4 << 30


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# ---------------------------------------------------------------------------------------------
# planning: every offset is known before any patch is computed


@dataclass(frozen=True)
class PatchSlot:
    """Where one patch goes: known from its path, year, tile and size before it is computed."""

    row: int
    path: str
    year: int
    tile: str
    size: int
    periods: int
    shard: int
    shard_name: str
    offset: int
    labels_offset: int
    medians_shape: tuple[int, ...]
    labels_shape: tuple[int, ...]


@dataclass
class StorePlan:
    """Every patch's place and every shard's size, fixed before the first block is written."""

    slots: list[PatchSlot]
    shards: list[dict[str, Any]]  # name, bytes, patches


def plan_store(patches: Sequence[tuple[str, int, str, int]], *, bands: int, window: int,
               periods_of_year: dict[int, int], dtype: str, shard_bytes: int = DEFAULT_SHARD_BYTES) -> StorePlan:
    """Assign every ``(path, year, tile, size)`` a shard and offsets: rows sorted by path, shards
    per tile-year in path order, a new shard whenever the next patch would pass ``shard_bytes``
    (a patch larger than the cap gets a shard of its own).

    Args:
        patches: ``(path, year, tile, size)`` of every patch; ``size`` in 10 m pixels.
        bands: bands per median.
        window: sub-patch side in pixels; a patch holds ``(size // window) ** 2`` sub-patches.
        periods_of_year: median periods of each year in ``patches``.
        dtype: the medians' numpy dtype (``float32`` or ``uint16``).
        shard_bytes: the most bytes a shard holds (unless one patch alone is larger).

    Returns:
        One slot per patch, in path order, and the shard list (name, bytes, patches).
    """
    item = np.dtype(dtype).itemsize
    rows = sorted(patches, key=lambda p: p[0])
    groups: dict[tuple[int, str], list[int]] = {}
    for row, (_, year, tile, _) in enumerate(rows):
        groups.setdefault((year, tile), []).append(row)
    slots: list[PatchSlot | None] = [None] * len(rows)
    shards: list[dict[str, Any]] = []
    for (year, tile) in sorted(groups):
        current, used, part = None, 0, 0
        for row in groups[(year, tile)]:
            path, _, _, size = rows[row]
            sub = size // window
            medians_shape = (sub, sub, periods_of_year[year], bands, window, window)
            labels_shape = (sub, sub, window, window)
            need = _aligned(int(np.prod(medians_shape)) * item) + _aligned(int(np.prod(labels_shape)) * 4)
            if current is None or (used and used + need > shard_bytes):
                current = {"name": f"{SHARD_DIR}/{year}_{tile}_{part:03d}.bin", "bytes": 0, "patches": 0}
                shards.append(current)
                part, used = part + 1, 0
            offset = used
            labels_offset = offset + _aligned(int(np.prod(medians_shape)) * item)
            used += need
            current["bytes"], current["patches"] = used, current["patches"] + 1
            slots[row] = PatchSlot(row, path, year, tile, size, periods_of_year[year], len(shards) - 1,
                                   current["name"], offset, labels_offset, medians_shape, labels_shape)
    return StorePlan([s for s in slots if s is not None], shards)


def create_shards(root: Path, plan: StorePlan) -> None:
    """Create every shard at its final size (sparse: unwritten gaps read as zeros, deterministically)."""
    (root / SHARD_DIR).mkdir()
    for shard in plan.shards:
        fd = os.open(root / shard["name"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.ftruncate(fd, shard["bytes"])
        finally:
            os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        written = os.pwrite(fd, data, offset)
        data, offset = data[written:], offset + written


def write_block(root: str | Path, slot: PatchSlot, medians: np.ndarray, labels: np.ndarray) -> None:
    """Write one patch into its pre-allocated shard. The shard is opened without ``O_CREAT``, so a
    late task cannot resurrect an output the stage already removed after an error.

    Args:
        root: the store folder (made by :func:`create_shards`).
        slot: where the patch goes (from :func:`plan_store`).
        medians: ``slot.medians_shape``, any byte order of the planned dtype; written little-endian.
        labels: ``slot.labels_shape``, S4A codes; written as little-endian uint32.

    Raises:
        StoreError: a shape differs from the plan.
        FileNotFoundError: the shard is gone (the stage removed its output).
    """
    if medians.shape != slot.medians_shape or labels.shape != slot.labels_shape:
        raise StoreError(f"{slot.path}: medians {medians.shape} / labels {labels.shape}, the store planned "
                         f"{slot.medians_shape} / {slot.labels_shape}")
    fd = os.open(Path(root) / slot.shard_name, os.O_WRONLY)
    try:
        _pwrite_all(fd, memoryview(np.ascontiguousarray(medians, medians.dtype.newbyteorder("<"))).cast("B"),
                    slot.offset)
        _pwrite_all(fd, memoryview(np.ascontiguousarray(labels, LABELS_DTYPE)).cast("B"), slot.labels_offset)
    finally:
        os.close(fd)


def code_counts(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sub-patch of ``labels`` (sub_y, sub_x, w, w): (sub-patch number, code, pixels), sorted."""
    per = labels.shape[0] * labels.shape[1]
    flat = np.asarray(labels, dtype=np.uint64).reshape(per, -1)
    keys = (np.arange(per, dtype=np.uint64)[:, None] << np.uint64(32)) | flat
    unique, pixels = np.unique(keys.ravel(), return_counts=True)
    return ((unique >> np.uint64(32)).astype(np.int64), (unique & np.uint64(0xFFFFFFFF)).astype(np.int64),
            pixels.astype(np.int64))


def write_index(root: Path, plan: StorePlan, counts: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                meta: dict[str, Any]) -> dict[str, Any]:
    """``patches.npy``, ``counts.npy`` and ``store.json`` for a planned store whose blocks are
    written; ``counts[row]`` is :func:`code_counts` of the row's labels.

    Args:
        root: the store folder.
        plan: the plan the blocks were written by.
        counts: :func:`code_counts` of each slot's labels, in slot order.
        meta: the stage's entries of ``store.json`` (bands, freq, window, dtype, ...); the layout,
            sizes, code vocabulary and shard list are added here.

    Returns:
        The ``store.json`` content written.

    Raises:
        StoreError: the store has more sub-patches than a uint32 sample number holds.
    """
    slots = plan.slots
    vocabulary = np.unique(np.concatenate([c[1] for c in counts])) if counts else np.zeros(0, np.int64)
    path_bytes = max((len(s.path.encode("ascii")) for s in slots), default=1)
    patches = np.zeros(len(slots), dtype=patch_dtype(path_bytes))
    per_patch = np.array([s.labels_shape[0] * s.labels_shape[1] for s in slots], dtype=np.int64)
    first = np.concatenate([[0], np.cumsum(per_patch)[:-1]]) if len(slots) else per_patch
    lengths = np.array([len(c[0]) for c in counts], dtype=np.int64)
    stops = np.cumsum(lengths)
    if len(slots) and first[-1] + per_patch[-1] > np.iinfo(np.uint32).max:
        raise StoreError(f"{first[-1] + per_patch[-1]} sub-patches: more than a uint32 sample number holds")
    for name, values in (("path", [s.path.encode("ascii") for s in slots]), ("year", [s.year for s in slots]),
                         ("tile", [s.tile.encode("ascii") for s in slots]), ("size", [s.size for s in slots]),
                         ("sub_y", [s.labels_shape[0] for s in slots]), ("sub_x", [s.labels_shape[1] for s in slots]),
                         ("periods", [s.periods for s in slots]), ("shard", [s.shard for s in slots]),
                         ("offset", [s.offset for s in slots]), ("labels_offset", [s.labels_offset for s in slots])):
        patches[name] = values
    patches["first_sample"] = first
    patches["counts_start"] = stops - lengths
    patches["counts_stop"] = stops
    table = np.zeros(int(stops[-1]) if len(stops) else 0, dtype=COUNT_DTYPE)
    for row, (sample, code, pixels) in enumerate(counts):
        part = table[stops[row] - lengths[row]:stops[row]]
        part["sample"] = sample + first[row]
        part["code"] = np.searchsorted(vocabulary, code)
        part["pixels"] = pixels
    np.save(root / PATCHES_FILE, patches, allow_pickle=False)
    np.save(root / COUNTS_FILE, table, allow_pickle=False)
    sizes = sorted({s.size for s in slots})
    subs = sorted(set(per_patch.tolist()))
    meta = {"format": FORMAT, **meta, "labels_dtype": "uint32", "byte_order": "little", "align": ALIGN,
            "layout": {"medians": ["sub_y", "sub_x", "period", "band", "y", "x"],
                       "labels": ["sub_y", "sub_x", "y", "x"]},
            "patch_size": sizes[0] if len(sizes) == 1 else None,
            "sub_patches_per_patch": subs[0] if len(subs) == 1 else None,
            "n_patches": len(slots), "n_samples": int(per_patch.sum()),
            "codes": vocabulary.tolist(), "shards": plan.shards}
    (root / STORE_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    return meta
