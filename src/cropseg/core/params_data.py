"""The data-side sections of ``params.yaml``: ``data``, ``dem``, ``split``, ``medians``.

The stages before training read only these; :mod:`cropseg.core.params` assembles them with the
training sections into :class:`~cropseg.core.params.Params` (and re-exports them).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from .params_base import Section
from .validation import located

TILE_PATTERN = re.compile(r"^\d{2}[C-X][A-Z]{2}$")


class SyntheticData(Section):
    """Knobs of the built-in synthetic S4A generator (``data.source: synthetic``)."""

    seed: int = Field(0, ge=0, description="every random draw derives from it")
    patches: int = Field(8, ge=1, le=100_000, description="number of patches, spread over years x tiles")
    patch_size: int = Field(366, ge=61, description="10 m pixels per side; a multiple of 61")
    acquisitions: int = Field(60, ge=1, le=365, description="acquisition dates per tile and year")
    empty_months: int = Field(2, ge=0, le=10, description="months without any acquisition per tile-year")
    parcels: int = Field(60, ge=1, le=5000, description="parcels per 366x366 patch (scaled by area)")
    background: float = Field(0.25, ge=0.0, lt=1.0, description="fraction of parcels that are background (code 0)")
    clouds: float = Field(0.15, ge=0.0, le=1.0, description="fraction of acquisitions with a cloud")
    mislabelled: float = Field(0.0, ge=0.0, le=1.0, description="fraction of crop parcels (or windows) labelled wrong")
    mislabelled_unit: Literal["parcel", "window"] = Field(
        "parcel", description="parcel: whole parcels mislabelled; window: every crop pixel of whole 61x61 windows")
    class_mix: Literal["s4a", "balanced"] = "s4a"
    redundancy: float = Field(
        0.0, ge=0.0, lt=1.0, description="fraction of 61x61 windows covered entirely by one clean field of the "
        "dominant class (wheat): near-duplicate, easy samples; 0 leaves the data unchanged")

    #: Old key -> new key. ``label_noise`` was renamed because ``protocol.label_noise`` is another knob
    #: (per-sample noise of the comparison protocol, on the model's classes); an old key must not
    #: read as a mere typo.
    RENAMED: ClassVar[dict[str, str]] = {"label_noise": "mislabelled", "label_noise_unit": "mislabelled_unit"}

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, value: Any) -> Any:
        old = [key for key in cls.RENAMED if isinstance(value, dict) and key in value]
        if old:
            raise located("; ".join(f"data.synthetic.{key} was renamed to data.synthetic.{cls.RENAMED[key]}"
                                    for key in old))
        return value

    @field_validator("patch_size")
    @classmethod
    def _multiple_of_61(cls, value: int) -> int:
        if value % 61:
            raise ValueError(f"must be a multiple of 61 (the 60 m grid), got {value}")
        return value


class HuggingFaceData(Section):
    """Where the public S4A dataset lives on the Hugging Face Hub."""

    repo_id: str = "paren8esis/S4A"
    revision: str = "main"
    retries: int = Field(5, ge=0, le=100)
    backoff_s: float = Field(1.0, ge=0, le=600, description="first retry wait; doubles at each retry")
    workers: int = Field(4, ge=1, le=64, description="files downloaded in parallel")
    cache_dir: str = Field(".cache/huggingface", description="download cache outside DVC outputs, so fetches resume")


class LocalData(Section):
    """An S4A folder already on disk (``data.source: local``)."""

    path: str | None = None


class Data(Section):
    """The ``fetch_s4a`` stage: which S4A patches land in ``data/netcdf``.

    ``tiles`` is a list, or ``all`` (or null): every tile S4A has in ``years`` for the synthetic
    generator, no tile filter for ``huggingface`` and ``local``. The ``synthetic`` and
    ``huggingface`` sources only know the real S4A tiles (:mod:`cropseg.s4a.tiles`), so another tile
    is a mistake reported here, before any work; ``local`` takes any well-formed tile name (a
    folder may hold one's own patches). For ``synthetic``, a chosen tile without patches in any
    chosen year (or a year on none of the tiles) is an error, while single (year, tile) pairs S4A
    lacks are skipped: years [2019, 2020] with tiles [31TCG, 31TCJ] generates 31TCJ in 2019 only.
    """

    source: Literal["synthetic", "huggingface", "local"] = "synthetic"
    years: list[int] = Field(default_factory=lambda: [2019, 2020])
    tiles: list[str] | None = Field(default_factory=lambda: ["31TCG", "31TDG"],
                                    description="MGRS tiles to keep; all (or null): every tile")
    limit: int | None = Field(None, ge=1, description="keep at most this many patches (sorted by path)")
    on_invalid: Literal["error", "skip"] = "error"
    synthetic: SyntheticData = Field(default_factory=SyntheticData)
    huggingface: HuggingFaceData = Field(default_factory=HuggingFaceData)
    local: LocalData = Field(default_factory=LocalData)

    def wants_tile(self, tile: str) -> bool:
        """Whether ``tiles`` keeps ``tile`` (every tile with ``all``)."""
        return self.tiles is None or tile in self.tiles

    @field_validator("years")
    @classmethod
    def _years(cls, value: list[int]) -> list[int]:
        bad = [y for y in value if not 2015 <= y <= 2100]
        if bad or not value:
            raise ValueError(f"expected a non-empty list of Sentinel-2 years (2015..2100), got {value}")
        return value

    @field_validator("tiles", mode="before")
    @classmethod
    def _tiles(cls, value: Any) -> list[str] | None:
        if value is None or value == "all":
            return None
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise located(f"expected a list of MGRS tile names like '31TCG', or 'all', got {value!r}")
        bad = [t for t in value if not TILE_PATTERN.match(t)]
        if bad or not value:
            raise located(f"expected a non-empty list of MGRS tile names like '31TCG', or 'all', bad: {bad or value}")
        return value

    @model_validator(mode="after")
    def _local_needs_path(self) -> "Data":
        if self.source == "local" and not self.local.path:
            raise ValueError("data.source is 'local' but data.local.path is not set")
        return self

    @model_validator(mode="after")
    def _s4a_tile_years(self) -> "Data":
        from ..s4a.tiles import TileYearError, select_tile_years, unknown_tiles, unknown_tiles_message

        if self.source == "local" or self.tiles is None and self.source == "huggingface":
            return self
        if self.source == "huggingface" and (unknown := unknown_tiles(self.tiles)):
            raise located(f"{unknown_tiles_message(unknown)}; data.source: local takes any tile", "tiles")
        if self.source == "synthetic":
            try:
                select_tile_years(self.years, self.tiles)
            except TileYearError as error:
                raise located(error.message, error.field) from None
        return self


class CopernicusDem(Section):
    """Copernicus GLO-30 public tiles (no account)."""

    url: str = "https://copernicus-dem-30m.s3.amazonaws.com"
    retries: int = Field(5, ge=0, le=100)
    timeout_s: float = Field(60.0, gt=0)
    cache_dir: str = Field(".cache/dem", description="download cache outside DVC outputs, so fetches resume")


class Dem(Section):
    """The ``fetch_dem`` stage: elevation covering the patches' footprints."""

    source: Literal["synthetic", "copernicus", "none"] = "synthetic"
    seed: int = Field(0, ge=0)
    copernicus: CopernicusDem = Field(default_factory=CopernicusDem)


class Split(Section):
    """The ``split`` stage: train/val/test from a rules preset or COCO files (see cropseg.split.stage)."""

    rules: str = Field("random_80_10_10", pattern=r"^[A-Za-z0-9_.-]+$",
                       description="preset configs/split_rules/NAME.yaml")
    coco: str | None = Field(None, description="read PREFIX_{train,val,test}.json instead of the rules")
    drop_duplicates: list[Literal["train", "val", "test"]] = Field(
        default_factory=list, description="COCO: remove a patch found in several splits from these, in order")
    seed: int = Field(0, ge=0, description="every random draw of the split derives from it")
    shuffle: bool = Field(False, description="write the lists in a seeded random order instead of sorted")
    subset_fractions: dict[Literal["train", "val", "test"], float] = Field(
        default_factory=dict, description="keep a seeded sample of a split, e.g. {train: 0.2}")
    limit_patches: int | None = Field(None, ge=1, description="a seeded sample of at most this many patches")
    workers: int | None = Field(None, ge=1, le=256, description="processes for the per-patch table; null = CPUs (max 8)")

    @field_validator("drop_duplicates")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"a split listed twice: {value}")
        return value

    @field_validator("subset_fractions")
    @classmethod
    def _fractions(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {k: v for k, v in value.items() if not 0 < v <= 1}
        if bad:
            raise ValueError(f"fractions must be in (0, 1], bad: {bad}")
        return value


class Medians(Section):
    """The ``medians`` stage: per-period medians of each band, cut into sub-patches (``data/medians``)."""

    bands: list[str] = Field(default_factory=lambda: ["B02", "B03", "B04", "B08"],
                             description="S4A bands to keep, in this order (20 m / 60 m bands are repeated to 10 m)")
    freq: str = Field("1MS", description="pandas offset alias of the periods (1MS = calendar months)")
    window: int = Field(61, ge=1, description="sub-patch side in 10 m pixels; must divide the patch size")
    dtype: Literal["float32", "uint16"] = Field(
        "float32", description="float32: exact medians; uint16: rounded to whole DN (half the bytes)")
    scheduler: Literal["processes", "dask"] = "processes"
    workers: int = Field(2, ge=1, le=256, description="processes (or local Dask workers)")

    @field_validator("bands")
    @classmethod
    def _bands(cls, value: list[str]) -> list[str]:
        from ..s4a.bands import BANDS

        unknown = [b for b in value if b not in BANDS]
        if unknown or not value:
            raise ValueError(f"expected a non-empty list of S4A bands from {sorted(BANDS)}, bad: {unknown or value}")
        if len(set(value)) != len(value):
            raise ValueError(f"bands listed twice: {sorted({b for b in value if value.count(b) > 1})}")
        return value

    @field_validator("freq")
    @classmethod
    def _freq(cls, value: str) -> str:
        import pandas as pd

        try:
            counts = [len(pd.date_range(f"{y}-01-01", f"{y + 1}-01-01", freq=value)) - 1 for y in (2019, 2020)]
        except (ValueError, TypeError) as error:
            raise ValueError(f"not a pandas offset alias such as '1MS', 'SMS', '10D': {error}") from None
        if min(counts) < 2:
            raise ValueError(f"{value!r} gives fewer than 2 periods per year; at least 2 are needed")
        return value
