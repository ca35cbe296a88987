"""Reading the sharded medians store: its index, per sub-patch code counts and patch arrays.

Readers open shards lazily through :class:`ShardCache`, an LRU of at most ``max_open`` file
descriptors read with ``preadv`` (one contiguous read per sub-patch, straight into the batch),
reset after ``fork`` and never pickled, so DataLoader worker processes each open their own.
The layout is :mod:`cropseg.medians.store_layout`'s; nothing here writes or relabels (label
noise is the dataset's), so editing that code does not rerun the stage that makes the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .store_layout import COUNT_DTYPE, COUNTS_FILE, FORMAT, LABELS_DTYPE, PATCHES_FILE, STORE_FILE, StoreError

DEFAULT_MAX_OPEN = 32


def store_digest(root: str | Path) -> str | None:
    """sha256 of ``store.json`` and ``patches.npy`` (what the store holds and where): a checkpoint
    of another store is stale. None when there is no store."""
    root = Path(root)
    if not (root / STORE_FILE).is_file():
        return None
    digest = hashlib.sha256()
    for name in (STORE_FILE, PATCHES_FILE):
        digest.update(name.encode() + b"\0" + (root / name).read_bytes())
    return digest.hexdigest()


def read_meta(root: str | Path) -> dict[str, Any]:
    """``store.json``: bands, freq, window, dtype, periods per year, shards, code vocabulary.

    Raises:
        StoreError: there is no ``store.json`` under ``root``.
    """
    path = Path(root) / STORE_FILE
    if not path.is_file():
        raise StoreError(f"{path}: not found (run the medians stage)")
    return json.loads(path.read_text())


def open_patch(root: str | Path, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map one patch's medians and labels (read-only) from its shard; ``record`` is a row of
    :class:`Store` (``store.record(row)`` or ``dataset.records[p]``). Opens its own maps: for the
    odd patch (previews); loaders go through the store's bounded cache instead."""
    meta = read_meta(root)
    return _patch_maps(Path(root) / record["shard"], np.dtype(meta["dtype"]).newbyteorder("<"), len(meta["bands"]),
                       int(meta["window"]), record)


def _patch_maps(shard: Path, dtype: np.dtype, bands: int, window: int,
                where: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The read-only memory maps of a patch's medians and labels blocks, as ``where`` (a record:
    sub_y, sub_x, periods, offset, labels_offset) places them in ``shard``."""
    sub_y, sub_x = where["sub_y"], where["sub_x"]
    medians = np.memmap(shard, dtype=dtype, mode="r", offset=where["offset"],
                        shape=(sub_y, sub_x, where["periods"], bands, window, window))
    labels = np.memmap(shard, dtype=LABELS_DTYPE, mode="r", offset=where["labels_offset"],
                       shape=(sub_y, sub_x, window, window))
    return medians, labels


class ShardCache:
    """At most ``max_open`` read-only shard file descriptors, least recently used closed first.

    Why descriptors and ``pread``, not memory maps: at 250,000 patches there are ~1,600 shards, so
    a uniformly shuffled epoch misses any bounded cache almost every time; a miss is then one
    ``open`` + ``close`` (microseconds), where a memory map also pays ``mmap``/``munmap`` and a
    page fault per page it touches again (measured 3.6x slower at 25,000 patches). Each sub-patch
    is read with one ``preadv`` straight into the batch array, which also never moves a file
    offset, so descriptors shared with a forked child could not interfere. The cache belongs to one
    process: after ``fork`` (DataLoader workers) the child closes its copies of the parent's
    descriptors and starts empty; it is never pickled.
    """

    def __init__(self, root: Path, max_open: int = DEFAULT_MAX_OPEN):
        """An empty cache over the shards of ``root``.

        Args:
            root: the store folder; shard names are relative to it.
            max_open: the most descriptors held at once.

        Raises:
            ValueError: ``max_open`` is below 1.
        """
        if max_open < 1:
            raise ValueError("max_open must be at least 1")
        self.root, self.max_open = Path(root), max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._paths: dict[str, str] = {}
        self._pid = os.getpid()
        self.opened = 0  # descriptors opened over the cache's life (a measure of misses)

    def get(self, name: str) -> int:
        """A read-only descriptor of shard ``name`` (opened on a miss, closing the least recently used).

        Raises:
            StoreError: the shard file is missing.
        """
        if self._pid != os.getpid():  # a forked child: its copies of the parent's descriptors
            self.close()
            self._pid = os.getpid()
        found = self._fds.get(name)
        if found is not None:
            self._fds.move_to_end(name)
            return found
        while len(self._fds) >= self.max_open:
            os.close(self._fds.popitem(last=False)[1])
        path = self._paths.get(name)
        if path is None:  # pathlib costs ~9 us per join: more than the open itself
            path = self._paths[name] = str(self.root / name)
        try:
            fd = os.open(path, os.O_RDONLY)  # non-inheritable across exec (PEP 446)
        except FileNotFoundError:
            raise StoreError(f"{path}: shard missing (the store is incomplete; re-run the medians stage)") from None
        self._fds[name] = fd
        self.opened += 1
        return fd

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        while self._fds:
            os.close(self._fds.popitem()[1])

    def __getstate__(self) -> dict:
        return {"root": self.root, "max_open": self.max_open, "_fds": OrderedDict(), "_paths": {}, "_pid": -1,
                "opened": 0}


def _pread_into(fd: int, out: np.ndarray, offset: int, name: str) -> None:
    view = memoryview(out).cast("B")
    got = os.preadv(fd, [view], offset)
    while 0 < got < len(view):  # a short read (large blocks, signals): go on where it stopped
        more = os.preadv(fd, [view[got:]], offset + got)
        got = got + more if more > 0 else -got
    if got != len(view):
        raise StoreError(f"{name}: {len(view)} bytes expected at offset {offset}, the shard ends earlier "
                         "(truncated store: re-run the medians stage)")


class Store:
    """A medians store opened for reading: its metadata, its index, and patch arrays on demand."""

    def __init__(self, root: str | Path, *, max_open: int = DEFAULT_MAX_OPEN):
        """Open the store: read ``store.json`` and the index (shards open on demand).

        Args:
            root: the store folder (``data/medians``).
            max_open: the most shard descriptors :attr:`cache` holds (per thread).

        Raises:
            StoreError: there is no ``store.json`` (or only an older per-patch store), or its
                format is not :data:`FORMAT`.
        """
        self.root = Path(root)
        meta_path = self.root / STORE_FILE
        if not meta_path.is_file():
            legacy = " (a per-patch store of an older version: re-run the medians stage)" \
                if (self.root / "meta.json").is_file() else " (run the medians stage)"
            raise StoreError(f"{meta_path}: not found{legacy}")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise StoreError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r} "
                             "(re-run the medians stage)")
        self.patches = np.load(self.root / PATCHES_FILE, allow_pickle=False)
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        self.shard_names = [s["name"] for s in self.meta["shards"]]
        self._max_open = max_open
        self._local = threading.local()  # one descriptor cache per thread (a thread loader reads in parallel)
        self._counts: np.ndarray | None = None
        # plain columns: the per-batch lookups in arrays() stay a few microseconds per patch
        self._window, self._bands = int(self.meta["window"]), len(self.meta["bands"])
        self._columns = {name: self.patches[name].tolist() for name in
                         ("shard", "sub_y", "sub_x", "periods", "offset", "labels_offset")}

    def __len__(self) -> int:
        return len(self.patches)

    def __getstate__(self) -> dict:
        # a memmap would pickle as a full copy; descriptor caches belong to their process and thread
        return {key: value for key, value in self.__dict__.items() if key != "_local"} | {"_counts": None}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    @property
    def cache(self) -> ShardCache:
        """This thread's shard descriptors (:class:`ShardCache`): threads never share one, so a
        descriptor is never closed by one thread while another reads through it."""
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = ShardCache(self.root, self._max_open)
        return cache

    @property
    def counts(self) -> np.ndarray:
        """The per sub-patch code counts, memory-mapped (opened on first use)."""
        if self._counts is None:
            self._counts = np.load(self.root / COUNTS_FILE, mmap_mode="r", allow_pickle=False)
        return self._counts

    def rows_of(self, paths: Sequence[str]) -> np.ndarray:
        """Index rows of ``paths`` (vectorised lookup in the sorted path column).

        Raises:
            StoreError: a path is not in the index.
        """
        keys = self.patches["path"]
        wanted = np.array([p.encode("ascii", "replace") for p in paths], dtype=keys.dtype) if len(paths) else \
            np.zeros(0, keys.dtype)
        rows = np.searchsorted(keys, wanted)
        found = (rows < len(keys)) & (keys[np.minimum(rows, len(keys) - 1)] == wanted) if len(keys) else \
            np.zeros(len(wanted), bool)
        # a path longer than the column is truncated by the cast: compare the full strings too
        bad = [i for i in np.flatnonzero(~found)] + [i for i in np.flatnonzero(found)
                                                     if len(paths[i].encode("ascii", "replace")) > keys.dtype.itemsize]
        if bad:
            raise StoreError(f"{len(bad)} patch(es) are not in {self.root / PATCHES_FILE}, e.g. {paths[bad[0]]} "
                             f"(re-run the medians stage)")
        return rows.astype(np.int64)

    def record(self, row: int) -> dict[str, Any]:
        """One index row as a plain dict (what ``meta.json``'s records were, plus shard and offsets)."""
        r = self.patches[row]
        return {"path": r["path"].decode(), "year": int(r["year"]), "tile": r["tile"].decode(),
                "size": int(r["size"]), "sub_y": int(r["sub_y"]), "sub_x": int(r["sub_x"]),
                "periods": int(r["periods"]), "shard": self.shard_names[int(r["shard"])],
                "offset": int(r["offset"]), "labels_offset": int(r["labels_offset"]),
                "first_sample": int(r["first_sample"]), "row": int(row)}

    def arrays(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        """Read-only memory maps of one patch's medians and labels (their own maps, released with
        the arrays: for the odd whole patch, e.g. previews; batches go through :meth:`read_samples`)."""
        c = self._columns
        where = {name: c[name][row] for name in ("sub_y", "sub_x", "periods", "offset", "labels_offset")}
        return _patch_maps(self.root / self.shard_names[c["shard"][row]], self.dtype, self._bands, self._window, where)

    def read_samples(self, row: int, subs: Sequence[int], periods: slice, xs: Sequence[np.ndarray],
                     labels: Sequence[np.ndarray]) -> None:
        """Read sub-patches ``subs`` (row-major numbers in the patch) of index row ``row``: periods
        ``periods`` of their medians into ``xs[k]`` (C-contiguous ``(months, bands, w, w)``, float32)
        and their labels into ``labels[k]`` (C-contiguous uint32 ``(w, w)``). Two ``preadv`` per
        sub-patch, each one contiguous range of the shard, through the bounded descriptor cache.

        Args:
            row: the patch's index row.
            subs: sub-patch numbers (row-major in the patch's sub-patch grid).
            periods: the periods to read (a slice with a ``start``; contiguous in the block).
            xs: one output array per sub-patch, filled in place.
            labels: one output array per sub-patch, filled in place.

        Raises:
            StoreError: the shard is missing or ends before the block (a truncated store).
        """
        c, w, bands = self._columns, self._window, self._bands
        name = self.shard_names[c["shard"][row]]
        fd = self.cache.get(name)
        per_period = bands * w * w * self.dtype.itemsize
        block = c["periods"][row] * per_period
        start = c["offset"][row] + periods.start * per_period
        little = sys.byteorder == "little"
        for out, target, sub in zip(xs, labels, subs):
            if out.dtype == self.dtype and little:
                _pread_into(fd, out, start + sub * block, name)
            else:  # uint16 store (or a big-endian host): read, then convert
                scratch = np.empty(out.shape, self.dtype)
                _pread_into(fd, scratch, start + sub * block, name)
                out[...] = scratch
            _pread_into(fd, target, c["labels_offset"][row] + sub * w * w * 4, name)
            if not little:
                target.byteswap(inplace=True)

    def samples_of(self, rows: np.ndarray) -> np.ndarray:
        """Store sample numbers of every sub-patch of ``rows``, row by row (all rows share a grid).

        Raises:
            StoreError: the rows have different sub-patch grids.
        """
        if not len(rows):
            return np.zeros(0, np.int64)
        per = self.patches["sub_y"][rows].astype(np.int64) * self.patches["sub_x"][rows]
        if len(np.unique(per)) > 1:
            raise StoreError("patches with different sub-patch grids cannot be numbered together")
        return (self.patches["first_sample"][rows][:, None] + np.arange(per[0])).ravel()

    def class_lookup(self, lut_of_codes) -> np.ndarray:
        """Model class of every code of the vocabulary (``lut_of_codes`` maps an array of codes)."""
        return np.asarray(lut_of_codes(np.asarray(self.meta["codes"], dtype=np.int64)), dtype=np.int64)

    def iter_counts(self, chunk: int = 1 << 20) -> Iterator[np.ndarray]:
        """The counts table in chunks of ``chunk`` rows, read (not mapped): memory stays one chunk
        (12 MB) whatever the table's size, and no file page is charged to the process.

        Raises:
            StoreError: ``counts.npy`` is not a 1-d array of :data:`COUNT_DTYPE`.
        """
        with open(self.root / COUNTS_FILE, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            shape, _, dtype = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)(handle)
            if dtype != COUNT_DTYPE or len(shape) != 1:
                raise StoreError(f"{self.root / COUNTS_FILE}: {dtype} {shape}, expected a 1-d {COUNT_DTYPE}")
            for start in range(0, shape[0], chunk):
                yield np.fromfile(handle, dtype=COUNT_DTYPE, count=min(chunk, shape[0] - start))

    def pixels_per_sample(self, classes: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """Pixels of a class > 0 (``classes[code]``: model class per vocabulary entry) in each of
        ``samples`` (store sample numbers), from the index alone.

        Args:
            classes: model class of each vocabulary code (:meth:`class_lookup`).
            samples: store sample numbers (:meth:`samples_of`).

        Returns:
            One pixel count per entry of ``samples``.
        """
        total = int(self.meta["n_samples"])
        out = np.zeros(total, dtype=np.int64)
        for part in self.iter_counts():
            keep = classes[part["code"]] > 0
            sample = part["sample"][keep].astype(np.int64)
            if len(sample):
                low = int(sample[0])
                out[low:int(sample[-1]) + 1] += np.bincount(sample - low, weights=part["pixels"][keep],
                                                            minlength=int(sample[-1]) - low + 1).astype(np.int64)
        return out[samples]

    def class_pixel_parts(self, classes: np.ndarray,
                          samples: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """The code counts of ``samples`` (store sample numbers) as model classes, chunk by chunk of
        the counts table, from the index alone: what class pixel counts are summed from. The caller
        sums them (and may relabel a sample's classes first: label noise is the dataset's).

        Args:
            classes: model class of each vocabulary code (:meth:`class_lookup`).
            samples: store sample numbers (:meth:`samples_of`).

        Yields:
            Per chunk ``(at, chosen, pixels)``, one entry per counted (sample, code): the sample's
            position in ``samples`` (the last one if it occurs twice), its model class and its pixels.
        """
        of = np.full(int(self.meta["n_samples"]), -1, dtype=np.int64)  # -1: not chosen
        of[samples] = np.arange(len(samples), dtype=np.int64)
        for part in self.iter_counts():
            at = of[part["sample"]]
            keep = at >= 0
            yield at[keep], classes[part["code"][keep]], part["pixels"][keep]


@dataclass
class PatchRecords(Sequence):
    """``dataset.records``: one dict per patch of a split, made on access (250,000 dicts would
    cost seconds and hundreds of MB at dataset construction)."""

    store: Store
    rows: np.ndarray
    _paths: list[str] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.store.record(int(self.rows[index]))

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.store.record(int(r)) for r in self.rows)

    @property
    def paths(self) -> list[str]:
        if self._paths is None:
            self._paths = [p.decode() for p in self.store.patches["path"][self.rows]]
        return self._paths
