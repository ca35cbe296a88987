"""The comparison protocol's label noise as a dataset takes it: per sample or per parcel.

One function so that the three places that must noise the same labels the same way (the holdout
model's training set, the target model's training set, the irreducible losses of that set) build
it from ``params.protocol`` identically.
"""

from __future__ import annotations

from pathlib import Path

from ..split.labels import LabelSet
from .label_noise import LabelNoise
from .parcel_noise import ParcelNoise


def protocol_noise(protocol, label_set: LabelSet, netcdf_root: Path = Path("data/netcdf")) -> LabelNoise | ParcelNoise | None:
    """``params.protocol``'s noise for datasets of ``label_set`` (None when nothing is noised)."""
    if not protocol.noisy:
        return None
    if protocol.noise_unit == "parcel":
        return ParcelNoise.from_protocol(protocol, label_set.class_names, netcdf_root)
    return LabelNoise(protocol.label_noise, protocol.noise_seed, label_set.n_classes)
