"""Per-parcel declaration noise (``protocol.noise_unit: parcel``), in model-class space.

Real label noise in the S4A labels comes from farmers' declarations (LPIS): one parcel is declared
as another crop, most often a similar one (barley for wheat), sometimes systematically (a crop
code used for another in one region). This module noises labels that way, the truth kept:

* **random**: a ``label_noise`` share of the crop parcels gets another class; with
  ``noise_classes: similar`` another class of the parcel's ``protocol.similar`` group (a class in
  no group, or alone in the label set's part of its group, gets any other crop class);
* **systematic**: a ``share`` of the parcels of class ``from`` in ``tiles`` is declared ``to``
  (drawn first; the random noise then acts on the other parcels).

Every draw depends only on ``(noise_seed, patch path, parcel id)`` through the integer hash of
:mod:`cropseg.nn.label_noise`, so a parcel is noised the same way in every sub-patch it crosses,
in every split list, method and ``train.seed``: the irreducible-loss stage scores the labels the
target model trains on. Parcel ids come from the patch's netCDF ``parcels`` group (the medians
store keeps S4A codes only: parcel ids are read here, for the noised splits, and nowhere else).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import netCDF4
import numpy as np

from ..s4a.netcdf import parse_patch_name
from .label_noise import _mix64

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
#: Independent streams of the per-parcel hash: is it noisy, which wrong class, systematic or not.
_NOISY, _CLASS, _SYSTEMATIC = np.uint64(0x1), np.uint64(0xD1B54A32D192ED03), np.uint64(0x8CB92BA72F3D8DD7)


class ParcelNoiseError(ValueError):
    """A class name the label set does not have, or a patch without parcel ids."""


@dataclass(frozen=True)
class ParcelNoise:
    """How parcels are noised: share, seed, similar groups and the systematic error, as model classes."""

    fraction: float
    seed: int
    n_classes: int
    groups: tuple[tuple[int, ...], ...] = ()  # similar classes (empty: any other crop class)
    systematic: tuple[int, int, frozenset[str], float] | None = None  # (from, to, tiles or empty: all, share)
    netcdf_root: Path = Path("data/netcdf")

    @classmethod
    def from_protocol(cls, protocol, class_names: tuple[str, ...], netcdf_root: Path) -> "ParcelNoise":
        """From ``params.protocol``; class names are checked against the label set's."""
        index = {name: i for i, name in enumerate(class_names) if i > 0}

        def class_of(name: str, field: str) -> int:
            if name not in index:
                raise ParcelNoiseError(f"protocol.{field}: class {name!r} is not in the label set "
                                       f"(classes: {', '.join(index)})")
            return index[name]

        groups: tuple[tuple[int, ...], ...] = ()
        if protocol.noise_classes == "similar":
            # names of another label set are skipped: the groups are s4a11 names by default
            groups = tuple(g for g in (tuple(index[n] for n in group if n in index) for group in protocol.similar)
                           if len(g) > 1)
        systematic = None
        rule = protocol.systematic
        if rule.source is not None:
            systematic = (class_of(rule.source, "systematic.from"), class_of(rule.to, "systematic.to"),
                          frozenset(rule.tiles), rule.share)
        if protocol.label_noise > 0 and len(class_names) < 3:
            raise ParcelNoiseError(f"protocol.label_noise needs at least 2 crop classes; the label set has "
                                   f"{len(class_names) - 1}")
        return cls(protocol.label_noise, protocol.noise_seed, len(class_names), groups, systematic, Path(netcdf_root))

    def _uniform(self, keys: np.ndarray, stream: np.uint64) -> np.ndarray:
        with np.errstate(over="ignore"):
            mixed = _mix64(_mix64(keys + np.uint64(self.seed) * _GOLDEN) ^ stream)
        return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)

    def parcel_classes(self, path: str, ids: np.ndarray, classes: np.ndarray) -> np.ndarray:
        """The declared (noisy) class of each parcel ``ids[i]`` whose true class is ``classes[i]``.

        Parcel id 0 (no parcel) and class 0 (background) are never changed."""
        ids = np.asarray(ids, np.uint64)
        classes = np.asarray(classes, np.int64)
        keys = np.uint64(zlib.crc32(path.encode())) << np.uint64(32) | (ids & np.uint64(0xFFFFFFFF))
        eligible = (ids > 0) & (classes > 0)
        out = classes.copy()
        systematic = np.zeros(len(ids), bool)
        if self.systematic is not None:
            source, target, tiles, share = self.systematic
            in_region = not tiles or parse_patch_name(Path(path).name).tile in tiles
            systematic = eligible & in_region & (classes == source) & (self._uniform(keys, _SYSTEMATIC) < share)
            out[systematic] = target
        noisy = eligible & ~systematic & (self._uniform(keys, _NOISY) < self.fraction)
        if noisy.any():
            pick = self._uniform(keys[noisy], _CLASS)
            out[noisy] = [self._wrong_class(int(c), float(u)) for c, u in zip(classes[noisy], pick)]
        return out

    def _wrong_class(self, true: int, u: float) -> int:
        """Another class: one of ``true``'s similar group if it has one, else any other crop class."""
        for group in self.groups:
            if true in group:
                others = [c for c in group if c != true]
                return others[min(int(u * len(others)), len(others) - 1)]
        others = [c for c in range(1, self.n_classes) if c != true]
        return others[min(int(u * len(others)), len(others) - 1)]

    def noisy_patch(self, path: str, classes: np.ndarray) -> np.ndarray:
        """``classes`` (model classes, the patch's ``(size, size)`` raster) as declared with noise."""
        parcels = read_parcels(self.netcdf_root / path)
        if parcels.shape != classes.shape:
            raise ParcelNoiseError(f"{self.netcdf_root / path}: parcels {parcels.shape}, labels {classes.shape}")
        ids, inverse = np.unique(parcels, return_inverse=True)
        parcel_class = np.zeros(len(ids), np.int64)
        parcel_class[inverse.ravel()] = classes.ravel()  # a parcel is one class; any of its pixels says which
        declared = self.parcel_classes(path, ids, parcel_class)
        # a pixel changes only where its parcel's declaration did (pixels of parcel 0 stay as labelled)
        changed = declared != parcel_class
        return np.where(changed[inverse].reshape(classes.shape), declared[inverse].reshape(classes.shape), classes)


def read_parcels(path: Path) -> np.ndarray:
    """The ``parcels`` raster (uint32 ids, ``(y, x)``) of one S4A file."""
    try:
        with netCDF4.Dataset(path) as dataset:
            group = dataset.groups.get("parcels")
            if group is None or "parcels" not in group.variables:
                raise ParcelNoiseError(f"{path}: no parcels group/variable: per-parcel noise needs parcel ids "
                                       f"(use protocol.noise_unit: sample)")
            variable = group.variables["parcels"]
            variable.set_auto_maskandscale(False)
            return np.asarray(variable[:])
    except OSError as error:
        raise ParcelNoiseError(f"{path}: cannot read the parcel ids ({error}); per-parcel noise reads data/netcdf") \
            from None
