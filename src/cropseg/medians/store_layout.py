"""The sharded medians store's on-disk layout (``data/medians``): what the writer and the reader share.

Why: at the real dataset's size (~250,000 patches) one file per array means 500,000 files that
DVC hashes, checks and pushes one by one (treeverse/dvc #7681, #7607), and one memory map per
patch exhausts open files (``ulimit -n``) and ``vm.max_map_count`` (65,530) after ~10,000
patches. So patches are packed into shards and every reader goes through a bounded cache.

Layout::

    store.json          format, bands, freq, window, dtypes, periods per year, shard list, code vocabulary
    patches.npy         the index: one row per patch (PATCH_DTYPE), sorted by path
    counts.npy          per sub-patch pixel counts per S4A code (COUNT_DTYPE), sorted by (sample, code)
    shards/YYYY_TILE_NNN.bin

* **Shards** hold the patches of one tile-year, in path order, split when a shard would exceed
  ``shard_bytes`` (default 4 GiB). A patch is two blocks at page-aligned (4096) offsets: its
  medians, C-order ``(sub_y, sub_x, periods, bands, window, window)`` of ``dtype``, then its labels,
  ``(sub_y, sub_x, window, window)`` uint32 (S4A codes as stored). So one sub-patch is one
  contiguous read, and a page never straddles two patches. Little-endian raw bytes, no header:
  ``patches.npy`` says where each block is. Tile-years keep a split by tile (or a predict mosaic)
  reading whole shards, and adding a tile-year adds shards without changing the bytes of the
  others (DVC stores and pushes only the new ones).
* **Why 4 GiB**: big enough that a 366 px patch (4 bands, 12 months, float32: 26 MB) packs ~160
  to a shard, so 250,000 patches make ~1,600 files (the design bound on the file count is patches / 100 + 10); small
  enough that DVC hashes a shard in seconds, a failed ``dvc push`` re-sends at most 4 GiB, and it
  fits every object store's single-object limit (S3: 5 TB) and any file system but FAT32.
* **Index**: ``patches.npy`` is a numpy structured array (``np.load`` reads 250,000 rows in
  milliseconds; no new dependency). ``counts.npy`` lists, for every sub-patch (``sample`` = the
  patch's ``first_sample`` + row-major sub-patch number), the pixels of each S4A code it contains
  (``code`` indexes ``store.json["codes"]``, so any label set maps it by table lookup). Parcel
  pixels (codes that are not 0) and class pixel counts of a split follow from it without reading
  a label map; it is read in chunks, so it never has to fit in memory.

The writer (:mod:`cropseg.medians.store_writer`) plans and fills a store; the reader
(:mod:`cropseg.medians.store_reader`) opens one. They share only this module, so code that reads
the store never runs (or depends on) the code that writes it, and the other way round.
"""

from __future__ import annotations

import numpy as np

FORMAT = "cropseg-medians/2"
STORE_FILE = "store.json"
PATCHES_FILE = "patches.npy"
COUNTS_FILE = "counts.npy"
SHARD_DIR = "shards"
ALIGN = 4096
LABELS_DTYPE = np.dtype("<u4")
COUNT_DTYPE = np.dtype([("sample", "<u4"), ("code", "<u4"), ("pixels", "<u4")])


class StoreError(ValueError):
    """The store is missing, of another format, or does not hold what was asked for."""


def patch_dtype(path_bytes: int) -> np.dtype:
    """One index row. ``path`` is ASCII (S4A names are); offsets are bytes into the shard."""
    return np.dtype([("path", f"S{max(1, path_bytes)}"), ("year", "<i4"), ("tile", "S8"), ("size", "<i4"),
                     ("sub_y", "<i4"), ("sub_x", "<i4"), ("periods", "<i4"), ("shard", "<i4"),
                     ("offset", "<i8"), ("labels_offset", "<i8"), ("first_sample", "<i8"),
                     ("counts_start", "<i8"), ("counts_stop", "<i8")])
