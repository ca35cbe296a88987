"""Typed, validated view of ``params.yaml``.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an out-of-range value
fails before any work starts, with one message listing every bad field by its dotted path.
Each ``params.yaml`` section is one model below; later stages add their own section models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

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
    label_noise: float = Field(0.0, ge=0.0, le=1.0, description="fraction of crop parcels labelled with a wrong class")
    class_mix: Literal["s4a", "balanced"] = "s4a"

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
    """The ``fetch_s4a`` stage: which S4A patches land in ``data/netcdf``."""

    source: Literal["synthetic", "huggingface", "local"] = "synthetic"
    years: list[int] = Field(default_factory=lambda: [2019, 2020])
    tiles: list[str] = Field(default_factory=lambda: ["31TCG", "31TCJ"])
    limit: int | None = Field(None, ge=1, description="keep at most this many patches (sorted by path)")
    on_invalid: Literal["error", "skip"] = "error"
    synthetic: SyntheticData = Field(default_factory=SyntheticData)
    huggingface: HuggingFaceData = Field(default_factory=HuggingFaceData)
    local: LocalData = Field(default_factory=LocalData)

    @field_validator("years")
    @classmethod
    def _years(cls, value: list[int]) -> list[int]:
        bad = [y for y in value if not 2015 <= y <= 2100]
        if bad or not value:
            raise ValueError(f"expected a non-empty list of Sentinel-2 years (2015..2100), got {value}")
        return value

    @field_validator("tiles")
    @classmethod
    def _tiles(cls, value: list[str]) -> list[str]:
        bad = [t for t in value if not TILE_PATTERN.match(t)]
        if bad or not value:
            raise ValueError(f"expected a non-empty list of MGRS tile names like '31TCG', bad: {bad or value}")
        return value

    @model_validator(mode="after")
    def _local_needs_path(self) -> "Data":
        if self.source == "local" and not self.local.path:
            raise ValueError("data.source is 'local' but data.local.path is not set")
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


class Params(Section):
    """The whole params.yaml. Sections of stages not built yet are not accepted."""

    data: Data = Field(default_factory=Data)
    dem: Dem = Field(default_factory=Dem)


def _format_errors(error: ValidationError, source: str) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(root)"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not in the schema; check the spelling)"
        elif item["type"] not in ("missing", "value_error") and not isinstance(item.get("input"), (dict, type(None))):
            message = f"{message} (got {item['input']!r})"
        lines.append(f"  {path}: {message}")
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
