"""The tiles and years the real Sen4AgriNet (S4A) dataset has: one registry for the whole package.

S4A is published as patches of 11 Sentinel-2 tiles: 5 in Catalonia (2019 and 2020) and 6 in
France (2019 only), 16 tile-years in all, every tile in UTM zone 31N (EPSG:32631). The synthetic
generator places patches only on these tile-years, and ``params.yaml`` checks ``data.tiles``
against them, so a synthetic run has the real dataset's geography and a typo (or a tile S4A does
not cover) fails before any work instead of yielding an empty download.

Sources:

- tile lists: ``Orion-AI-Lab/S4A-Models: utils/settings/mappings/mappings_cat.py`` (``COUNTRY_CODE =
  'ES'``, ``SAMPLE_TILES``) and ``mappings_fr.py`` (``'FR'``) at commit db68141; the same lists
  are in IBM/terratorch ``terratorch/datasets/sen4agrinet.py`` (``CAT_TILES``, ``FR_TILES``);
- years: the Hugging Face folder listing, https://huggingface.co/datasets/paren8esis/S4A/tree/main/data/2019
  (11 tiles) and ``.../data/2020`` (the 5 Catalan tiles); the dataset's loading script ``S4A.py``
  has configs ``cat_2019``, ``cat_2020``, ``fr_2019`` and no ``fr_2020``;
- CRS: every tile id starts with zone ``31`` and a northern latitude band (T, U): WGS 84 / UTM 31N.
  Real files carry ``+init=epsg:32631`` in ``labels.crs`` (read by :mod:`cropseg.s4a.grid`).

This module imports nothing, so ``cropseg.core.params`` can validate ``data.tiles`` with it
without making every stage depend on pyproj (:mod:`cropseg.s4a.geo`).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every S4A tile is in WGS 84 / UTM zone 31N.
S4A_EPSG = 32631


@dataclass(frozen=True)
class Region:
    """A region of S4A: its tiles and the years its patches cover."""

    name: str
    country: str
    tiles: tuple[str, ...]
    years: tuple[int, ...]

    def describe(self) -> str:
        """``France: 2019 only`` or ``Catalonia: 2019, 2020`` (for error messages)."""
        years = ", ".join(map(str, self.years))
        return f"{self.name}: {years} only" if len(self.years) == 1 else f"{self.name}: {years}"


#: The regions of S4A (sources in the module docstring).
S4A_REGIONS = (
    Region("Catalonia", "ES", ("31TBF", "31TCF", "31TCG", "31TDF", "31TDG"), (2019, 2020)),
    Region("France", "FR", ("31TCJ", "31TDK", "31TCL", "31TDM", "31UCP", "31UDR"), (2019,)),
)
#: Every S4A tile, sorted.
S4A_TILES = tuple(sorted(t for r in S4A_REGIONS for t in r.tiles))
#: Every (year, tile) S4A has patches for: 16 tile-years, sorted.
S4A_TILE_YEARS = tuple(sorted((y, t) for r in S4A_REGIONS for t in r.tiles for y in r.years))
#: Every S4A year, sorted.
S4A_YEARS = tuple(sorted({y for y, _ in S4A_TILE_YEARS}))
_REGION = {tile: region for region in S4A_REGIONS for tile in region.tiles}


class TileYearError(ValueError):
    """Chosen years and tiles that S4A does not have; ``field`` is ``"tiles"`` or ``"years"``."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"data.{field}: {message}")

    def __reduce__(self):
        # Exception pickles only the message; a worker's error must come back whole
        return type(self), (self.field, self.message)


def region_of(tile: str) -> Region | None:
    """The S4A region of ``tile``, or None for a tile S4A does not cover."""
    return _REGION.get(tile)


def country_of(tile: str) -> str:
    """Country code of an S4A tile as S4A files write it (``ES``, ``FR``); ``XX`` for other tiles."""
    region = region_of(tile)
    return region.country if region else "XX"


def known_tiles() -> str:
    """The S4A tiles by region, with their years (for error messages)."""
    return "; ".join(f"{r.name} ({r.country}) {', '.join(map(str, r.years))}: {' '.join(sorted(r.tiles))}"
                     for r in S4A_REGIONS)


def unknown_tiles(tiles: list[str]) -> list[str]:
    """The tiles of ``tiles`` that are not S4A tiles, in the given order."""
    return [t for t in tiles if t not in _REGION]


def unknown_tiles_message(unknown: list[str]) -> str:
    """``31TCK is not an S4A tile (S4A has ...)``, naming every S4A tile and its years."""
    verb = "is not an S4A tile" if len(unknown) == 1 else "are not S4A tiles"
    return f"{', '.join(unknown)} {verb} (S4A has {known_tiles()})"


TileYear = tuple[int, str]


def select_tile_years(years: list[int], tiles: list[str] | None) -> tuple[list[TileYear], list[TileYear]]:
    """The S4A tile-years among ``years`` x ``tiles``, and the asked pairs S4A does not have.

    A pair S4A lacks is skipped, not an error, as long as each chosen tile has patches in some
    chosen year and each chosen year on some chosen tile: years [2019, 2020] with tiles
    [31TCG, 31TCJ] gives 31TCG in both years and 31TCJ in 2019 (France has no 2020 patches),
    which is what a user asking for both tiles and both years expects. A tile or year that yields
    nothing at all is a mistake, hence an error.

    Args:
        years: the chosen years.
        tiles: the chosen tiles; None means every S4A tile of ``years``.

    Returns:
        ``(pairs, skipped)``: the (year, tile) pairs S4A has, sorted, and the asked pairs it lacks
        (none when ``tiles`` is None: "every tile of the years" asks for no missing pair).

    Raises:
        TileYearError: a tile that is not an S4A tile, a tile with no patches in any of
            ``years``, or a year with no patches on any of ``tiles``; the message names it and
            what S4A has instead.
    """
    if tiles is not None and (unknown := unknown_tiles(tiles)):
        raise TileYearError("tiles", unknown_tiles_message(unknown))
    chosen = sorted(set(tiles)) if tiles is not None else list(S4A_TILES)
    asked = [(y, t) for y in sorted(set(years)) for t in chosen]
    pairs = [p for p in asked if p in S4A_TILE_YEARS]
    if tiles is not None:
        for tile in chosen:
            if not any(t == tile for _, t in pairs):
                missing = ", ".join(map(str, sorted(set(years))))
                raise TileYearError("tiles", f"{tile} has no {missing} patches in S4A ({_REGION[tile].describe()})")
    for year in sorted(set(years)):
        if not any(y == year for y, _ in pairs):
            has = sorted(t for y, t in S4A_TILE_YEARS if y == year)
            where = f"it has {year} patches on {' '.join(has)} only" if has else \
                f"S4A has patches of {', '.join(map(str, S4A_YEARS))} only"
            on = "" if tiles is None else f" on {' '.join(chosen)}"
            raise TileYearError("years", f"{year} has no patches{on} in S4A ({where})")
    skipped = [p for p in asked if p not in S4A_TILE_YEARS] if tiles is not None else []
    return pairs, skipped


def skipped_message(skipped: list[TileYear]) -> str:
    """One line naming the asked tile-years S4A does not have, e.g. ``31TCJ 2020 (France: 2019 only)``."""
    items = ", ".join(f"{t} {y} ({_REGION[t].describe()})" for y, t in skipped)
    return f"skipped tile-years S4A does not have: {items}"
