"""A synthetic Sen4AgriNet: S4A-format patches with known truth, made offline and deterministically.

Each patch is a random partition into parcels (a Voronoi tessellation with background field
margins). Every crop parcel gets an S4A crop code drawn with S4A-like imbalance, and its pixels
follow that class's seasonal reflectance curve: a soil/vegetation mixture whose vegetation
fraction rises and falls on class-specific dates, with class-specific spectra, per-parcel timing
and brightness variation, per-pixel noise and clouds. Classes are therefore separable from their
monthly curves, while a ``mislabelled`` fraction of crop parcels carries a wrong label that no
model can learn from the pixels. The clean labels and a per-window truth table are written beside
the S4A files (:mod:`cropseg.fetch.synthetic_files`) so that selection and accuracy can be measured
against the truth.

``redundancy`` makes a fraction of the 61x61 windows redundant: each is covered entirely by one
clean wheat field (the dominant class, as wheat dominates real S4A), so the data holds many
near-duplicate, easy samples. RHO-Loss claims to skip two kinds of samples that do not help:
redundant (already learnt) ones and noisy ones; ``mislabelled`` gives the second kind, this the
first. With ``redundancy: 0`` (the default) nothing changes: the windows are drawn from their own
random stream, and the other draws stay as they were.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from ..core.params import SyntheticData
from ..s4a.geo import TILE_PIXELS
from ..s4a.bands import BANDS
from ..s4a.netcdf import PatchName
from ..s4a.tiles import select_tile_years

#: Side of the windows the truth table counts and that redundancy and window noise act on.
TRUTH_WINDOW = 61
#: Side of a real S4A patch in 10 m pixels; patch names index a 30 x 30 grid of these.
S4A_PATCH_SIZE = 366

#: Soil and green-vegetation reflectance per band (0..1), typical Sentinel-2 values.
SOIL = {"B01": .10, "B02": .11, "B03": .14, "B04": .18, "B05": .20, "B06": .22, "B07": .23,
        "B08": .24, "B8A": .25, "B09": .08, "B10": .006, "B11": .30, "B12": .25}
LEAF = {"B01": .03, "B02": .035, "B03": .07, "B04": .03, "B05": .10, "B06": .30, "B07": .38,
        "B08": .42, "B8A": .43, "B09": .12, "B10": .005, "B11": .20, "B12": .10}


@dataclass(frozen=True)
class CropClass:
    """An S4A crop code with its share of crop parcels and its phenology (days of year)."""

    code: int
    name: str
    share: float
    green_up: float
    senescence: float
    peak: float
    base: float = 0.05


#: The S4A crop codes the generator uses, with an S4A-like long-tailed class mix.
CROPS = (
    CropClass(110, "wheat", 0.22, 60, 175, 0.85),
    CropClass(150, "barley", 0.15, 45, 155, 0.80),
    CropClass(120, "maize", 0.13, 150, 265, 0.90),
    CropClass(330, "grapes", 0.08, 110, 285, 0.45, base=0.15),
    CropClass(438, "sunflower", 0.07, 130, 225, 0.80),
    CropClass(435, "rapeseed", 0.06, 15, 150, 0.90, base=0.25),
    CropClass(910, "grassland", 0.06, 70, 300, 0.35, base=0.45),
    CropClass(810, "sugar beet", 0.04, 120, 290, 0.90),
    CropClass(170, "oats", 0.03, 80, 190, 0.75),
    CropClass(190, "other cereals", 0.03, 70, 165, 0.60),
    CropClass(770, "peas", 0.025, 75, 160, 0.60, base=0.08),
    CropClass(510, "potatoes", 0.02, 120, 210, 0.85),
    CropClass(160, "rye", 0.02, 35, 180, 0.70),
    CropClass(140, "sorghum", 0.015, 160, 280, 0.75),
)
_BAND_NAMES = tuple(BANDS)


def _class_spectra() -> np.ndarray:
    """(classes, bands) multiplicative tweak of the leaf spectrum, fixed per crop code.

    Seeded by the code only, so a class looks the same in every patch, year and run.
    """
    return np.stack([np.random.default_rng([7, c.code]).uniform(0.8, 1.2, len(_BAND_NAMES)) for c in CROPS])


_SPECTRA = _class_spectra()


def _stable_hash(text: str) -> int:
    return zlib.crc32(text.encode())


@dataclass(frozen=True)
class PatchPlan:
    """What one synthetic patch will be: its name and its tile-year's acquisition dates."""

    index: int
    name: PatchName
    dates: np.ndarray  # datetime64[D], sorted


def acquisition_dates(cfg: SyntheticData, year: int, tile: str) -> np.ndarray:
    """Irregular dates for one tile-year, shared by its patches, with ``empty_months`` months empty."""
    rng = np.random.default_rng([cfg.seed, 1, year, _stable_hash(tile)])
    empty = rng.choice(np.arange(1, 13), size=cfg.empty_months, replace=False)
    days = np.arange(np.datetime64(f"{year}-01-01"), np.datetime64(f"{year + 1}-01-01"))
    months = days.astype("datetime64[M]").astype(int) % 12 + 1
    allowed = days[~np.isin(months, empty)]
    count = min(cfg.acquisitions, allowed.size)
    return np.sort(rng.choice(allowed, size=count, replace=False))


def plan_patches(cfg: SyntheticData, years: list[int], tiles: list[str] | None) -> list[PatchPlan]:
    """Spread ``cfg.patches`` over the real S4A tile-years among years x tiles (round robin).

    Only (year, tile) pairs the published S4A dataset has get patches (:mod:`cropseg.s4a.tiles`),
    so synthetic runs have the real geography; a pair it lacks is skipped (see
    :func:`cropseg.s4a.tiles.select_tile_years`, which also says when that is an error instead).
    Each patch sits at a distinct position of its tile's 30 x 30 grid, named as the real files are.

    Args:
        cfg: the generator's knobs (``patches``, ``seed``, dates).
        years: the chosen years (``data.years``).
        tiles: the chosen tiles (``data.tiles``); None: every S4A tile of ``years``.

    Returns:
        The plans, sorted by relative path, ``index`` numbering them in that order.

    Raises:
        cropseg.s4a.tiles.TileYearError: a tile that is not an S4A tile, or a tile or year
            without any S4A tile-year among the choice.
        ValueError: more patches per tile-year than the 30 x 30 grid holds.
    """
    combos, _ = select_tile_years(years, tiles)
    grid = TILE_PIXELS // S4A_PATCH_SIZE  # 30 x 30 positions, as named in the real dataset
    counts = {combo: 0 for combo in combos}
    for i in range(cfg.patches):
        counts[combos[i % len(combos)]] += 1
    if max(counts.values()) > grid * grid:
        raise ValueError(f"data.synthetic.patches={cfg.patches} does not fit: at most {grid * grid} "
                         f"patches per tile-year ({len(combos)} tile-years)")
    plans = []
    for year, tile in combos:
        rng = np.random.default_rng([cfg.seed, 2, year, _stable_hash(tile)])
        positions = rng.choice(grid * grid, size=counts[(year, tile)], replace=False)
        dates = acquisition_dates(cfg, year, tile)
        for position in sorted(int(p) for p in positions):
            x, y = divmod(position, grid)
            plans.append(PatchPlan(0, PatchName(year, tile, x, y), dates))
    plans.sort(key=lambda p: p.name.relpath)
    return [PatchPlan(i, p.name, p.dates) for i, p in enumerate(plans)]


def _parcels(rng: np.random.Generator, size: int, n_parcels: int) -> np.ndarray:
    """Parcel index per pixel (0..n-1): a Voronoi partition with elongated, field-like cells."""
    seeds = rng.uniform(0, size, (n_parcels, 2)) * np.array([1.0, 1.6])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    _, nearest = cKDTree(seeds).query(np.column_stack([yy.ravel(), xx.ravel() * 1.6]))
    return nearest.reshape(size, size).astype(np.int64)


def _field_margins(index: np.ndarray) -> np.ndarray:
    """Pixels on a parcel edge (a neighbour belongs to another parcel): roads, hedges, margins."""
    edge = np.zeros(index.shape, dtype=bool)
    edge[1:, :] |= index[1:, :] != index[:-1, :]
    edge[:, 1:] |= index[:, 1:] != index[:, :-1]
    return edge


def _vegetation(doy: np.ndarray, crop_idx: np.ndarray, shift: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Vegetation fraction (dates, parcels): a double logistic between green-up and senescence."""
    green = np.array([c.green_up for c in CROPS])[crop_idx] + shift
    senes = np.array([c.senescence for c in CROPS])[crop_idx] + shift
    peak = np.array([c.peak for c in CROPS])[crop_idx] * amp
    base = np.array([c.base for c in CROPS])[crop_idx]
    t = doy[:, None]
    rise = 1 / (1 + np.exp(-(t - green) / 8))
    fall = 1 / (1 + np.exp((t - senes) / 8))
    return np.clip(base + (peak - base) * rise * fall, 0, 1)


def _cloud_masks(rng: np.random.Generator, n_dates: int, size: int, fraction: float) -> dict[int, np.ndarray]:
    """Opacity (0..1, float32) of a soft cloud blob for a ``fraction`` of the dates."""
    masks = {}
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    for t in np.flatnonzero(rng.random(n_dates) < fraction):
        cy, cx = rng.uniform(-0.2, 1.2, 2)
        radius = rng.uniform(0.2, 0.6)
        distance = np.hypot(yy - cy, xx - cx) / radius
        masks[int(t)] = np.clip(1.5 - distance, 0, 1).astype(np.float32) * rng.uniform(0.6, 1.0)
    return masks


def _downsample(grid: np.ndarray, factor: int) -> np.ndarray:
    """Nearest sample at the centre of each ``factor`` x ``factor`` block (10 m -> 20/60 m).

    The last block may be partial (61 px -> 31 at 20 m): it samples the last pixel it covers.
    """
    if factor == 1:
        return grid
    centres = np.minimum(np.arange(-(-grid.shape[0] // factor)) * factor + factor // 2, grid.shape[0] - 1)
    return grid[np.ix_(centres, centres)]


@dataclass
class SyntheticPatch:
    """Everything generated for one patch, before it is written."""

    plan: PatchPlan
    bands: dict[str, np.ndarray]  # band -> (time, y, x) uint16
    labels: np.ndarray  # (size, size) uint32, noisy as an annotator gave them
    clean_labels: np.ndarray  # (size, size) uint32, the class the pixels really show
    parcels: np.ndarray  # (size, size) uint32, 0 outside parcels


def generate_patch(cfg: SyntheticData, plan: PatchPlan) -> SyntheticPatch:
    """Generate one patch; depends only on ``cfg`` and ``plan`` (so patches can run in any order)."""
    rng = np.random.default_rng([cfg.seed, 3, plan.index])
    size = cfg.patch_size
    n_parcels = max(2, round(cfg.parcels * (size / 366) ** 2))
    index = _parcels(rng, size, n_parcels)
    margins = _field_margins(index)

    shares = np.array([c.share for c in CROPS]) if cfg.class_mix == "s4a" else np.ones(len(CROPS))
    crop_idx = rng.choice(len(CROPS), size=n_parcels, p=shares / shares.sum())
    is_crop = rng.random(n_parcels) >= cfg.background
    codes = np.array([c.code for c in CROPS], dtype=np.uint32)
    clean_code = np.where(is_crop, codes[crop_idx], 0).astype(np.uint32)
    noisy = is_crop & (rng.random(n_parcels) < cfg.mislabelled) & (cfg.mislabelled_unit == "parcel")
    wrong = (crop_idx + rng.integers(1, len(CROPS), n_parcels)) % len(CROPS)
    label_code = np.where(noisy, codes[wrong], clean_code).astype(np.uint32)

    # background parcels are bare-ish land: give them the grassland curve at low cover
    doy = (plan.dates - plan.dates.astype("datetime64[Y]")).astype(int).astype(np.float64)
    shift = rng.normal(0, 5, n_parcels)
    amp = np.where(is_crop, rng.normal(1, 0.05, n_parcels), 0.3)
    brightness = rng.normal(1, 0.06, n_parcels)
    clouds = _cloud_masks(rng, len(plan.dates), size, cfg.clouds)
    if cfg.redundancy > 0:
        field, extra = _redundant_fields(cfg, plan)
        inside = field >= 0
        index = np.where(inside, n_parcels + field, index)
        margins &= ~inside
        wheat = np.full(len(extra["shift"]), codes[0], dtype=np.uint32)
        crop_idx = np.concatenate([crop_idx, np.zeros(len(wheat), dtype=crop_idx.dtype)])
        is_crop = np.concatenate([is_crop, np.ones(len(wheat), dtype=bool)])
        clean_code = np.concatenate([clean_code, wheat])
        label_code = np.concatenate([label_code, wheat])
        shift = np.concatenate([shift, extra["shift"]])
        amp = np.concatenate([amp, extra["amp"]])
        brightness = np.concatenate([brightness, extra["brightness"]])
    vegetation = _vegetation(doy, crop_idx, shift, amp)  # (dates, parcels)

    bands = {}
    for b, band in enumerate(_BAND_NAMES):
        factor = BANDS[band] // 10
        cell = _downsample(index, factor)
        leaf = LEAF[band] * np.where(is_crop, _SPECTRA[crop_idx, b], 1.0)
        per_parcel = SOIL[band] * brightness * (1 - vegetation) + leaf * vegetation  # (dates, parcels)
        values = per_parcel[:, cell].astype(np.float32)
        values += rng.standard_normal(values.shape, dtype=np.float32) * np.float32(0.008)
        for t, mask in clouds.items():
            opacity = _downsample(mask, factor)
            values[t] = values[t] * (1 - opacity) + np.float32(0.55) * opacity
        bands[band] = np.clip(np.rint(values * 10000), 1, 65535).astype(np.uint16)

    parcel_ids = np.where(is_crop, np.arange(1, len(is_crop) + 1) + 1000 * plan.index, 0).astype(np.uint32)
    keep = ~margins
    labels = np.where(keep, label_code[index], 0).astype(np.uint32)
    clean = np.where(keep, clean_code[index], 0).astype(np.uint32)
    parcels = np.where(keep, parcel_ids[index], 0).astype(np.uint32)
    if cfg.mislabelled_unit == "window":
        labels = _mislabel_windows(labels, cfg.mislabelled, np.random.default_rng([cfg.seed, 4, plan.index]))
    return SyntheticPatch(plan, bands, labels, clean, parcels)


def _redundant_fields(cfg: SyntheticData, plan: PatchPlan) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The redundant windows of a patch: each covered entirely by one new field of the dominant class.

    Every 61x61 window is redundant with probability ``cfg.redundancy``, drawn (row by row) from
    its own stream, ``[seed, 5, patch index]``, which also draws the fields' per-parcel timing
    shift, amplitude and brightness (as for any crop parcel). Returns the field number (0..k-1)
    of every pixel, -1 outside the redundant windows, and those ``k`` draws. The fields have no
    margin: all 61x61 pixels are wheat, up to the window border, where they meet the neighbouring
    parcels (whose margins stay as they were).
    """
    rng = np.random.default_rng([cfg.seed, 5, plan.index])
    n = cfg.patch_size // TRUTH_WINDOW
    chosen = np.flatnonzero(rng.random(n * n) < cfg.redundancy)
    field = np.full((cfg.patch_size, cfg.patch_size), -1, dtype=np.int64)
    for k, window in enumerate(chosen):
        wy, wx = divmod(int(window), n)
        field[wy * TRUTH_WINDOW:(wy + 1) * TRUTH_WINDOW, wx * TRUTH_WINDOW:(wx + 1) * TRUTH_WINDOW] = k
    extra = {"shift": rng.normal(0, 5, len(chosen)), "amp": rng.normal(1, 0.05, len(chosen)),
             "brightness": rng.normal(1, 0.06, len(chosen))}
    return field, extra


def _mislabel_windows(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Relabel every crop pixel of a ``fraction`` of the 61x61 windows with a wrong class.

    Per-sample noise, as in the RHO-Loss paper's noisy-label benchmarks (a whole training sample
    mislabelled), beside the default per-parcel noise. Within a window the class codes are shifted
    cyclically by a random non-zero step, so every crop pixel gets a wrong code and parcels stay
    uniform; background stays background.
    """
    codes = np.array([c.code for c in CROPS], dtype=np.uint32)
    position = np.zeros(int(codes.max()) + 1, dtype=np.int64)
    position[codes] = np.arange(len(codes))
    labels = labels.copy()
    n = labels.shape[0] // TRUTH_WINDOW
    for wy in range(n):
        for wx in range(n):
            if rng.random() >= fraction:
                continue
            window = labels[wy * TRUTH_WINDOW:(wy + 1) * TRUTH_WINDOW, wx * TRUTH_WINDOW:(wx + 1) * TRUTH_WINDOW]
            crop = window > 0
            window[crop] = codes[(position[window[crop]] + rng.integers(1, len(codes))) % len(codes)]
    return labels
