"""Typed, validated view of ``params.yaml``.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an out-of-range value
fails before any work starts, with one message listing every bad field by its dotted path.
Each ``params.yaml`` section is one model below; later stages add their own section models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .validation import dotted, error_items, located

TILE_PATTERN = re.compile(r"^\d{2}[C-X][A-Z]{2}$")


class ParamsError(ValueError):
    """params.yaml does not match the schema; the message lists every bad field."""


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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


class Model(Section):
    """The network (``cropseg.nn.models`` registry)."""

    arch: Literal["unet", "convstar"] = "unet"
    width: int = Field(16, ge=1, le=1024, description="channels of the first level / recurrent layers")
    depth: int = Field(3, ge=1, le=6, description="U-Net down-samplings / ConvSTAR layers")
    norm: Literal["precise", "batch"] = Field(
        "precise", description="precise: BatchNorm population statistics recomputed before each validation "
                               "(batch-independent predictions); batch: each batch's own statistics, also in eval "
                               "(predictions depend on batch mates)")
    precise_bn_samples: int = Field(128, ge=1, le=1_000_000,
                                    description="training sub-patches (a fixed seeded sample) that recompute them")


class Loader(Section):
    """How sub-patches are read from ``data/medians`` into tensors."""

    months: list[int] = Field(default_factory=lambda: [4, 9], description="first and last month, 1-indexed, inclusive")
    normalize: float = Field(10000.0, gt=0, description="reflectance scale: inputs are divided by it")
    skip_empty: bool = Field(True, description="drop sub-patches without any labelled parcel pixel")
    workers: int | None = Field(
        None, ge=0, le=64, description="DataLoader worker processes (0: in the main process); null: chosen from the "
                                       "machine: 0 on CPU, min(8, CPUs per GPU - 1) on CUDA "
                                       "(cropseg.nn.precision.loader_workers)")

    @field_validator("months")
    @classmethod
    def _months(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or not 1 <= value[0] <= value[1] <= 12:
            raise ValueError(f"expected [first, last] with 1 <= first <= last <= 12, got {value}")
        return value


class Loss(Section):
    """NLL over parcel pixels with class weights from the training split's pixel counts."""

    weighted: bool = True
    class_weights_weight: float = Field(0.1, ge=0.0, le=1.0, description="0: uniform .. 1: inverse frequency")


class Run(Section):
    """One training run (the ``holdout`` and ``train`` sections share this schema)."""

    seed: int = Field(0, ge=0)
    epochs: int = Field(20, ge=1, le=100_000, description="passes over the training data considered")
    lr: float = Field(0.003, gt=0, le=10)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, ge=1, description="samples per optimiser step")
    physical_batch_size: int = Field(16, ge=1, description="samples per forward/backward (gradient accumulation)")
    precision: Literal["auto", "32", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where supported, else float32; fp16: autocast with a loss scaler "
                            "(CUDA only: GPUs without fast bf16, e.g. V100, T4)")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 disables clipping")
    val_every: int = Field(1, ge=1, description="validate every N epochs (and after the last)")
    plateau_patience: int = Field(3, ge=0, description="U-Net: ReduceLROnPlateau patience (epochs validated)")
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    step_size: int = Field(10, ge=1, description="ConvSTAR: StepLR period in epochs seen (training-set sizes of samples seen)")
    step_gamma: float = Field(0.5, gt=0, le=1)
    deterministic: bool = Field(True, description="deterministic kernels and seeded everything (same metrics on CPU)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    allow_degenerate_split: bool = Field(
        False, description="train stage: train although a class has no training pixel or val has < 2 classes")

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: object) -> object:
        return str(value) if value == 32 else value

    @model_validator(mode="after")
    def _accumulation(self) -> "Run":
        if self.batch_size % self.physical_batch_size:
            raise ValueError(f"batch_size {self.batch_size} is not a multiple of physical_batch_size "
                             f"{self.physical_batch_size}")
        return self


class Selection(Section):
    """Which samples of each block the target model trains on (``cropseg.selection.selector``).

    ``method``'s grammar is checked by the stages that train (:func:`cropseg.selection.method.check_method`),
    not here: a stage that never selects would otherwise depend on the grammar's module.
    """

    method: str = Field("rho_loss", description="uniform | random | loss | margin | irreducible | rho_loss, "
                                               "or a weighted sum such as '1.0*loss - 0.5*irreducible'")
    block_size: int = Field(2, ge=1, le=1000, description="samples considered per sample kept (1: no selection)")
    n_batches_per_block: int = Field(1, ge=1, le=1000, description="optimiser steps per selected block")
    scoring_norm: Literal["population", "batch"] = Field(
        "batch", description="BatchNorm statistics the scores use: batch (the scored sub-batch's own, as the "
                            "model trains) | population (the running statistics, as the model predicts)")


class Protocol(Section):
    """How one run is measured so that one DVC experiment is one point of a method comparison.

    Noise is per sample (a whole sub-patch relabelled, as in the RHO-Loss paper's noisy-label
    benchmarks), in model-class space, on the train split only (val too with ``noisy_val``);
    test is scored on clean labels. ``samples_seen``, ``lr_schedule``, ``test_points`` and
    ``keep`` apply to the target model (the ``train`` stage), never to the irreducible-loss model.
    """

    label_noise: float = Field(0.0, ge=0.0, le=1.0, description="fraction of training sub-patches whose every "
                                                                "parcel pixel gets a wrong model class")
    noise_seed: int = Field(0, ge=0, description="which sub-patches are noisy and how: the same for every "
                                                 "method and train.seed (a fixed noisy dataset)")
    noisy_val: bool = Field(False, description="also noise the val split (the irreducible-loss model's training data)")
    samples_seen: int | None = Field(None, ge=1, description="null: train.epochs passes over the samples considered; "
                                                             "N: train until N samples seen, whatever the block size")
    lr_schedule: Literal["auto", "cosine", "constant"] = Field(
        "auto", description="auto: the thesis' (unet: ReduceLROnPlateau on val weighted F1, convstar: StepLR per "
                            "epoch seen); cosine: train.lr to 0 over samples_seen, per sample seen; constant")
    test_points: int = Field(0, ge=0, le=1000, description="model snapshots at this many equally spaced "
                                                           "samples-seen points, scored by evaluate on clean test labels")
    keep: Literal["best_val", "last"] = Field("best_val", description="models/model.pt: the best val weighted F1 "
                                                                      "(thesis) | the final model (no choice on val)")

    @model_validator(mode="after")
    def _needs_budget(self) -> "Protocol":
        for name, needs in (("lr_schedule", self.lr_schedule == "cosine"), ("test_points", self.test_points > 0)):
            if needs and self.samples_seen is None:
                raise ValueError(f"{name}: {getattr(self, name)!r} needs samples_seen (the budget it is spread over)")
        return self


class Tracking(Section):
    """Experiment tracking beside DVCLive."""

    wandb: Literal["offline", "online", "disabled"] = Field("offline", description="online needs WANDB_API_KEY")
    project: str = "cropseg"


class Params(Section):
    """The whole params.yaml. Sections of stages not built yet are not accepted."""

    data: Data = Field(default_factory=Data)
    dem: Dem = Field(default_factory=Dem)
    split: Split = Field(default_factory=Split)
    labels: str = Field("s4a11", description="label set: configs/labels/NAME.yaml")
    model: Model = Field(default_factory=Model)
    loader: Loader = Field(default_factory=Loader)
    loss: Loss = Field(default_factory=Loss)
    holdout: Run = Field(default_factory=Run)
    train: Run = Field(default_factory=Run)
    selection: Selection = Field(default_factory=Selection)
    protocol: Protocol = Field(default_factory=Protocol)
    tracking: Tracking = Field(default_factory=Tracking)
    medians: Medians = Field(default_factory=Medians)


def flatten(values: dict[str, Any], sep: str = ".", prefix: str = "") -> dict[str, Any]:
    """A nested mapping as one level of joined keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``): params
    as ``dvc exp run -S`` names them, metrics as W&B summary keys (``sep="/"``). Lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= flatten(value, sep, f"{prefix}{key}{sep}")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"  {dotted(loc)}: {message}" for loc, message in error_items(error)]
    return f"{source}: {len(lines)} invalid field(s):\n" + "\n".join(lines)


def parse_params(raw: dict[str, Any] | None, source: str = "params.yaml") -> Params:
    """Validate an already-loaded mapping; raise :class:`ParamsError` listing every bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as error:
        raise ParamsError(_format_errors(error, source)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found (run from the repository root)") from None
    except yaml.YAMLError as error:
        raise ParamsError(f"{path}: not valid YAML: {error}") from None
    return parse_params(raw, str(path))
