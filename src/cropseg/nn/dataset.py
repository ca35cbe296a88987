"""Training samples: one per sub-patch of ``data/medians``, read from memory maps in whole batches.

Sample ``i`` of a split is sub-patch ``(sub_y, sub_x)`` of the split's ``p``-th patch, with the
global index ``i = p * sub_patches_per_patch + sub_y * sub_x_count + sub_x`` over the split list
as written by the split stage. The index does not depend on ``skip_empty`` or on the epoch, so
stored per-sample values (irreducible losses, synthetic truth) can be matched to it; every batch
carries it, as in the RHO-Loss reference code's ``(index, input, target)`` contract.

Batches are gathered with one ``preadv`` per sub-patch straight into the batch array (a
sub-patch's months are one contiguous range of its shard): only the months needed are read,
nothing is decompressed, and there is no Python loop over pixels or classes (labels are mapped
with the label set's lookup table).

Resources do not grow with the number of patches (:mod:`cropseg.medians.store_reader`):
construction reads the store's index only (parcel pixels per sample and class pixel counts come
from its per sub-patch code counts, never from a label map), and shards are opened lazily through
a bounded LRU of file descriptors, per process (DataLoader workers open their own after fork).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .label_noise import LabelNoise, relabel, sample_keys
from .parcel_noise import ParcelNoise
from ..split.labels import LabelSet
from ..medians.store_layout import StoreError
from ..medians.store_reader import DEFAULT_MAX_OPEN, PatchRecords, Store


class DatasetError(ValueError):
    """The medians store and the split list do not fit together."""


def read_split_list(path: str | Path) -> list[str]:
    """Patch paths (relative to data/netcdf) of one split file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: split list not found (run the split stage)")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def period_slice(meta: dict, year: int, months: list[int]) -> slice:
    """The contiguous periods whose start month lies in ``months`` = [first, last] (1-indexed)."""
    starts = meta["periods"][str(year)]
    chosen = [i for i, s in enumerate(starts) if months[0] <= int(s[5:7]) <= months[1]]
    if not chosen:
        raise DatasetError(f"loader.months {months} selects no period of {meta['freq']} periods {starts}")
    return slice(chosen[0], chosen[-1] + 1)


@dataclass(frozen=True)
class Batch:
    """A batch of samples: global indices, inputs (N, T, B, H, W) and model-class labels (N, H, W)."""

    index: torch.Tensor
    x: torch.Tensor
    y: torch.Tensor

    def to(self, device: torch.device, non_blocking: bool = False) -> "Batch":
        return Batch(self.index.to(device, non_blocking=non_blocking), self.x.to(device, non_blocking=non_blocking),
                     self.y.to(device, non_blocking=non_blocking))

    def take(self, rows: torch.Tensor | slice) -> "Batch":
        return Batch(self.index[rows], self.x[rows], self.y[rows])

    def __len__(self) -> int:
        return int(self.index.shape[0])

    def pin_memory(self) -> "Batch":
        return Batch(self.index.pin_memory(), self.x.pin_memory(), self.y.pin_memory())


class SubPatchDataset(Dataset):
    """The sub-patches of one split. ``dataset[list_of_indices]`` returns a whole :class:`Batch`.

    ``max_open`` bounds the shard files each process holds open (an LRU; see
    :mod:`cropseg.medians.store_reader`).
    ``noise`` gives a fixed share of the samples (:mod:`cropseg.nn.label_noise`) or of the parcels
    (:mod:`cropseg.nn.parcel_noise`) wrong classes: the comparison protocol's noise, given only to
    datasets of the noised splits; the patches of ``clean_paths`` stay clean (a clean holdout
    inside a noisy train + holdout set). ``noisy_pixels[i]`` counts the parcel pixels of global
    sample ``i`` whose label the noise changed (None without noise): the truth of the telemetry.
    """

    def __init__(self, medians_root: str | Path, split_list: list[str], label_set: LabelSet, *,
                 months: list[int], normalize: float, skip_empty: bool, max_open: int = DEFAULT_MAX_OPEN,
                 noise: LabelNoise | ParcelNoise | None = None, clean_paths: frozenset[str] = frozenset()):
        self.root = Path(medians_root)
        try:
            self.store = Store(self.root, max_open=max_open)
            rows = self.store.rows_of(split_list)
        except StoreError as error:
            raise DatasetError(str(error)) from None
        self.meta = self.store.meta
        self.records = PatchRecords(self.store, rows)
        self.label_set = label_set
        self.normalize = float(normalize)
        table = self.store.patches[rows]
        shapes = sorted(set(zip(table["sub_y"].tolist(), table["sub_x"].tolist())))
        if len(shapes) > 1:
            raise DatasetError(f"patches of the split have different sub-patch grids {shapes}")
        self.sub_y, self.sub_x = shapes[0] if shapes else (0, 0)
        self.per_patch = self.sub_y * self.sub_x
        years = sorted(set(table["year"].tolist()))
        spans = {(s.start, s.stop) for s in (period_slice(self.meta, y, months) for y in years)}
        if len(spans) > 1:
            raise DatasetError(f"loader.months {months} selects different periods in years {years}")
        self.periods = slice(*spans.pop()) if spans else slice(0, 0)
        self._samples = self.store.samples_of(rows)  # dataset sample -> store sample
        self._classes = self.store.class_lookup(label_set.map)  # store code -> model class
        self.parcel_pixels = self.store.pixels_per_sample(self._classes, self._samples)
        every = np.arange(len(rows) * self.per_patch)
        self.indices = every[self.parcel_pixels > 0] if skip_empty else every
        # sample noise: a class shift per global index (0: clean); parcel noise: the noisy label maps of
        # the sub-patches it changed. Parcel pixels stay parcel pixels either way, so the above holds.
        self.noise_shift: np.ndarray | None = None
        self.noisy_labels: dict[int, np.ndarray] = {}
        self.noisy_pixels: np.ndarray | None = None
        self._count_delta: dict[int, np.ndarray] = {}
        clean = np.isin(np.asarray(self.records.paths, dtype=object), list(clean_paths)).repeat(self.per_patch)
        if isinstance(noise, LabelNoise) and noise.fraction > 0:
            self.noise_shift = np.where(clean, 0, noise.shifts(sample_keys(self.records.paths, self.per_patch)))
            self.noisy_pixels = np.where(self.noise_shift > 0, self.parcel_pixels, 0)
        elif isinstance(noise, ParcelNoise) and (noise.fraction > 0 or noise.systematic is not None):
            self._noise_parcels(noise, set(clean_paths))

    def _noise_parcels(self, noise: ParcelNoise, clean_paths: set[str]) -> None:
        """Noise every patch's labels per parcel once, keep the sub-patches that changed."""
        n_classes = self.label_set.n_classes
        self.noisy_pixels = np.zeros(len(self.records.paths) * self.per_patch, np.int64)
        w = self.window
        for p, path in enumerate(self.records.paths):
            if path in clean_paths:
                continue
            windows = self.label_set.map(np.asarray(self._open(p)[1]))  # (sub_y, sub_x, w, w) model classes
            full = windows.transpose(0, 2, 1, 3).reshape(self.sub_y * w, self.sub_x * w)
            noisy = noise.noisy_patch(path, full).astype(np.uint8)
            noisy = noisy.reshape(self.sub_y, w, self.sub_x, w).transpose(0, 2, 1, 3).reshape(self.per_patch, w, w)
            windows = windows.reshape(self.per_patch, w, w)
            for k in np.flatnonzero((noisy != windows).any(axis=(1, 2))):
                index = p * self.per_patch + int(k)
                self.noisy_labels[index] = noisy[k]
                self.noisy_pixels[index] = int(((noisy[k] != windows[k]) & (windows[k] > 0)).sum())
                self._count_delta[index] = (np.bincount(noisy[k].ravel(), minlength=n_classes)
                                            - np.bincount(windows[k].ravel(), minlength=n_classes))[:n_classes]

    @property
    def bands(self) -> int:
        return len(self.meta["bands"])

    @property
    def months(self) -> int:
        return self.periods.stop - self.periods.start

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    def _open(self, patch: int) -> tuple[np.ndarray, np.ndarray]:
        """Medians and labels of the split's ``patch``-th patch, memory-mapped (whole-patch reads)."""
        return self.store.arrays(int(self.records.rows[patch]))

    def class_pixel_counts(self) -> np.ndarray:
        """Pixels per model class over the samples of this dataset (class 0 = background), from the
        store's index: no label map is read. With noise, noisy samples count under their wrong classes
        (the labels the model is given); the shift is applied here, not in the store reader, so the
        store (and the stage that writes it) does not depend on the label-noise code."""
        n_classes = len(self.label_set.class_names)
        shift = None if self.noise_shift is None else self.noise_shift[self.indices]
        total = np.zeros(n_classes, dtype=np.int64)
        for at, chosen, pixels in self.store.class_pixel_parts(self._classes, self._samples[self.indices]):
            if shift is not None:
                chosen = relabel(chosen, shift[at], n_classes)
            total += np.bincount(chosen, weights=pixels, minlength=n_classes)[:n_classes].astype(np.int64)
        for index in np.intersect1d(self.indices, np.fromiter(self._count_delta, np.int64, len(self._count_delta))):
            total += self._count_delta[int(index)]
        return total

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions: list[int] | np.ndarray) -> Batch:
        """Gather the samples at ``positions`` (positions in ``self.indices``) as one batch: each
        sub-patch's months and labels are read straight into the batch arrays."""
        index = self.indices[np.asarray(positions, dtype=np.int64)]
        x = np.empty((len(index), self.months, self.bands, self.window, self.window), dtype=np.float32)
        raw = np.empty((len(index), self.window, self.window), dtype=np.uint32)
        patch, within = np.divmod(index, self.per_patch)
        rows = self.records.rows
        for p in np.unique(patch):
            at = np.flatnonzero(patch == p)
            self.store.read_samples(int(rows[p]), within[at].tolist(), self.periods, [x[i] for i in at],
                                    [raw[i] for i in at])
        y = self.label_set.map(raw).astype(np.int64)
        if self.noise_shift is not None:
            y = relabel(y, self.noise_shift[index][:, None, None], self.label_set.n_classes)
        if self.noisy_labels:  # parcel noise only: no per-batch Python loop otherwise
            for row, sample in enumerate(index.tolist()):
                if sample in self.noisy_labels:
                    y[row] = self.noisy_labels[sample]
        x *= np.float32(1.0 / self.normalize)
        return Batch(torch.from_numpy(index), torch.from_numpy(x), torch.from_numpy(y))


class BlockSampler(Sampler):
    """Yields blocks of dataset positions: a seeded permutation per epoch, cut into blocks.

    The permutation depends on (seed, epoch) only, so a resumed run sees the same order. Under
    DistributedDataParallel each rank takes every ``world_size``-th sample of each block.
    """

    def __init__(self, n: int, block: int, *, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.block, self.seed, self.shuffle = n, block, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        for start in range(0, self.n, self.block):
            block = order[start:start + self.block][self.rank::self.world_size]
            if len(block):
                yield block.tolist()

    def __len__(self) -> int:
        return -(-self.n // self.block)
