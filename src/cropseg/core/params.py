"""Typed, validated view of ``params.yaml``.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an out-of-range value
fails before any work starts, with one message listing every bad field by its dotted path.
Each ``params.yaml`` section is one model: the data-side ones (``data``, ``dem``, ``split``,
``medians``) in :mod:`cropseg.core.params_data`, the training ones below.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from .params_base import ParamsError, Section
from .params_data import (TILE_PATTERN, CopernicusDem, Data, Dem, HuggingFaceData, LocalData,  # noqa: F401  (re-exported)
                          Medians, Split, SyntheticData)
from .validation import dotted, error_items



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
        "auto", description="auto: bf16 autocast on a CUDA GPU with native bf16, else float32 (on a CPU always "
                            "float32: the same model on any processor); fp16: autocast with a loss scaler "
                            "(CUDA only: GPUs without fast bf16, e.g. V100, T4)")
    cpu_threads: int | None = Field(
        2, ge=1, le=1024, description="torch threads of a CPU run, fixed so that a machine with more cores trains "
                                      "the same model; null: torch's default (one per core, faster, machine-dependent)")
    grad_clip: float = Field(1.0, ge=0, description="max gradient norm; 0 disables clipping")
    val_every: int = Field(1, ge=1, description="validate every N epochs (and after the last)")
    plateau_patience: int = Field(3, ge=0, description="U-Net: ReduceLROnPlateau patience (epochs validated)")
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    step_size: int = Field(10, ge=1, description="ConvSTAR: StepLR period in epochs seen (training-set sizes of samples seen)")
    step_gamma: float = Field(0.5, gt=0, le=1)
    deterministic: bool = Field(True, description="deterministic kernels and seeded everything (same metrics on CPU)")
    device: Literal["auto", "cpu", "cuda", "cuda:auto"] = Field(
        "auto", description="auto: a free GPU of the machine (held until the stage ends) when torch sees one, else the "
                            "CPU; cuda:auto: a free GPU, an error without one; cuda: GPU 0 (the local rank under torchrun)")
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
    drop_irreducible: float = Field(0.0, ge=0.0, lt=1.0, description="before training, drop this fraction of the "
                                    "training samples with the highest irreducible loss (the IL filter; 0: off)")
    scoring_norm: Literal["population", "batch"] = Field(
        "batch", description="BatchNorm statistics the scores use: batch (the scored sub-batch's own, as the "
                            "model trains) | population (the running statistics, as the model predicts)")


#: Crops LPIS declarations confuse (same season and growth form, hard to tell on the ground and
#: from space): winter cereals, summer row crops, broadleaf spring crops. Names of the s4a11 label set;
#: a class outside every group (grapes: perennial) is confused with any other crop.
SIMILAR_CROPS = [["wheat", "barley", "rye", "oats"], ["maize", "sorghum", "sunflower"],
                 ["rapeseed", "peas", "potatoes"]]


class Systematic(Section):
    """One class declared as another in a region (``protocol.systematic``): a systematic declaration
    error, e.g. a regional rule or a mistranslated crop code, that no amount of data averages out."""

    source: str | None = Field(None, alias="from", description="model class name declared as `to`; null: off")
    to: str | None = Field(None, description="the class it is declared as")
    tiles: list[str] = Field(default_factory=list, description="the region: these MGRS tiles (empty: every tile)")
    share: float = Field(1.0, ge=0.0, le=1.0, description="fraction of the region's `from` parcels declared `to`")

    @model_validator(mode="after")
    def _both_or_neither(self) -> "Systematic":
        if (self.source is None) != (self.to is None):
            raise ValueError("from and to: give both class names, or neither")
        if self.source is not None and self.source == self.to:
            raise ValueError(f"from and to are the same class {self.source!r}")
        return self


class Protocol(Section):
    """How one run is measured so that one DVC experiment is one point of a method comparison.

    Noise (:mod:`cropseg.nn.label_noise`, :mod:`cropseg.nn.parcel_noise`) is in model-class space,
    on the train split (and val, the irreducible-loss model's training data, with ``noisy_val``),
    never on test, which is scored on clean labels. ``noise_unit: sample`` relabels whole
    sub-patches (the RHO-Loss paper's noisy-label benchmarks); ``parcel`` relabels single parcels
    (LPIS declaration errors), with any other crop or (``noise_classes: similar``) a similar one.
    ``samples_seen``, ``lr_schedule``, ``test_points``, ``keep`` and ``train_on_holdout`` apply to
    the target model (the ``train`` stage), never to the irreducible-loss model.
    """

    label_noise: float = Field(0.0, ge=0.0, le=1.0, description="fraction of training sub-patches (noise_unit: "
                                                                "sample) or crop parcels (parcel) given a wrong class")
    noise_unit: Literal["sample", "parcel"] = Field("sample", description="sample: every parcel pixel of a noisy "
                                                    "sub-patch wrong | parcel: a noisy parcel's pixels wrong")
    noise_classes: Literal["any", "similar"] = Field("any", description="the wrong class: any other crop class | "
                                                     "another of its `similar` group (parcel noise only)")
    similar: list[list[str]] = Field(default_factory=lambda: [list(g) for g in SIMILAR_CROPS],
                                     description="groups of class names confused with each other (noise_classes: similar)")
    systematic: Systematic = Field(default_factory=Systematic, description="one class declared as another in a region "
                                                                           "(parcel level, beside label_noise)")
    noise_seed: int = Field(0, ge=0, description="which sub-patches are noisy and how: the same for every "
                                                 "method and train.seed (a fixed noisy dataset)")
    noisy_val: bool = Field(False, description="also noise the val split (the irreducible-loss model's training data)")
    train_on_holdout: bool = Field(False, description="the target model trains on train + val (the holdout, with its "
                                                      "labels as noised by noisy_val): the equal-information baseline")
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
        if self.noise_classes == "similar" and self.noise_unit != "parcel":
            raise ValueError("noise_classes: 'similar' needs noise_unit: parcel (a sub-patch holds several crops)")
        if self.systematic.source is not None and self.noise_unit != "parcel":
            raise ValueError("systematic: needs noise_unit: parcel (a declaration error is a parcel's)")
        return self

    @property
    def noisy(self) -> bool:
        """Whether any label is noised (random or systematic)."""
        return self.label_noise > 0 or (self.systematic.source is not None and self.systematic.share > 0)


class Tracking(Section):
    """Experiment tracking beside DVCLive."""

    wandb: Literal["offline", "online", "disabled"] = Field("offline", description="online needs WANDB_API_KEY")
    project: str = "cropseg"


class Predict(Section):
    """predict: the parcel table's declaration check (``docs/decisions.md``: how the threshold was measured)."""

    suspect_threshold: float = Field(0.8, ge=0.0, lt=1.0, description="a declared parcel is suspect when the "
                                     "predicted class differs with a mean probability above this")


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
    predict: Predict = Field(default_factory=Predict)


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
