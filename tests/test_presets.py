"""Every shipped split preset and label set on the real S4A geography.

The patch table is built from names alone (no files): the synthetic generator's plan over all 16
S4A tile-years (11 tiles in 2019, the 5 Catalan ones in 2020), 40 patches each, plus seeded
elevation columns for the stratified presets. 40 is enough for s4a_tiny's 1 % shares: with
``cropseg.split.rules_apply``'s rounding, 5 % / 1 % / 1 % of n patches gives every split one from
n = 36 on.
"""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cropseg.core.params import SyntheticData
from cropseg.fetch.synthetic import CROPS, plan_patches
from cropseg.s4a.tiles import S4A_TILE_YEARS
from cropseg.split.labels import available_label_sets, load_label_set
from cropseg.split.rules_apply import apply_rules
from cropseg.split.rules_schema import load_rules

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "configs" / "split_rules"
LABELS = ROOT / "configs" / "labels"
PER_TILE_YEAR = 40
CATALONIA = {"31TBF", "31TCF", "31TCG", "31TDF", "31TDG"}
FRANCE = {"31TCJ", "31TCL", "31TDK", "31TDM", "31UCP", "31UDR"}


def real_geography_table() -> pd.DataFrame:
    """The per-patch table's name columns for 40 patches on each S4A tile-year, and elevation."""
    plans = plan_patches(SyntheticData(patches=PER_TILE_YEAR * 16, patch_size=61), [2019, 2020], None)
    table = pd.DataFrame([{"path": p.name.relpath, "year": p.name.year, "tile": p.name.tile, "patch_x": p.name.x,
                           "patch_y": p.name.y} for p in plans])
    rng = np.random.default_rng(0)
    table["elevation_mean"] = rng.uniform(0, 2000, len(table))
    table["elevation_std"] = rng.uniform(0, 300, len(table))
    return table


TABLE = real_geography_table()


def test_the_table_covers_every_real_tile_year():
    per_tile_year = TABLE.groupby(["year", "tile"]).size()
    assert sorted(per_tile_year.index) == list(S4A_TILE_YEARS) and len(S4A_TILE_YEARS) == 16
    assert (per_tile_year == PER_TILE_YEAR).all()


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_every_preset_gives_non_empty_splits_on_the_real_geography(preset):
    path = PRESETS / f"{preset}.yaml"
    assert path.read_text().startswith("# "), "a preset starts with a comment saying what it is"
    result = apply_rules(load_rules(path), TABLE, seed=0)  # an assert_none reached would raise
    counts = result["split"].value_counts()
    assert all(counts.get(split, 0) > 0 for split in ("train", "val", "test")), counts.to_dict()


def _splits(preset: str) -> pd.DataFrame:
    result = apply_rules(load_rules(PRESETS / f"{preset}.yaml"), TABLE, seed=0)
    return TABLE.assign(split=result["split"].to_numpy())


def _tile_years(frame: pd.DataFrame, split: str) -> set[tuple[int, str]]:
    return set(zip(frame.loc[frame.split == split, "year"], frame.loc[frame.split == split, "tile"]))


def test_the_papers_scenarios_and_the_thesis_presets_place_the_right_tile_years():
    one = _splits("s4a_scenario1")  # 640 patches, 60/20/20
    assert one.split.value_counts().to_dict() == {"train": 384, "val": 128, "test": 128}

    two = _splits("s4a_scenario2")  # Catalonia 2019 + 2020 -> 75/25 train/val; France 2019 -> test
    assert two.split.value_counts().to_dict() == {"train": 300, "test": 240, "val": 100}
    assert {t for _, t in _tile_years(two, "test")} == FRANCE and {t for _, t in _tile_years(two, "train")} == CATALONIA

    three = _splits("s4a_scenario3")  # France 2019 -> train/val; Catalonia 2020 -> test; Catalonia 2019 out
    assert three.split.value_counts().to_dict() == {"": 200, "test": 200, "train": 180, "val": 60}
    assert _tile_years(three, "test") == {(2020, t) for t in CATALONIA}
    assert _tile_years(three, "") == {(2019, t) for t in CATALONIA}

    temporal1 = _splits("s4a_temporal1")
    assert _tile_years(temporal1, "train") == {(2019, t) for t in CATALONIA | FRANCE - {"31UDR"}}
    udr = temporal1[temporal1.tile == "31UDR"]
    assert (udr.split == np.where(udr.patch_x <= 14, "test", "val")).all()
    assert set(temporal1.loc[temporal1.tile.isin(["31TBF", "31TDF"]) & (temporal1.year == 2020), "split"]) == {"test"}

    temporal2 = _splits("s4a_temporal2")
    assert _tile_years(temporal2, "train") == {(2019, t) for t in CATALONIA | FRANCE}
    assert temporal2.split.value_counts().to_dict() == {"train": 440, "val": 100, "test": 100}

    rep = _splits("s4a_rep1-2tiles-e")  # 80 patches of 31TCJ and 31TCL in 2019, 80/10/10
    assert rep.split.value_counts().to_dict() == {"": 560, "train": 64, "val": 8, "test": 8}

    tiny = _splits("s4a_tiny")  # 40 patches of 31TCJ 2019: 7 % gives 3, 2 / 1 / 0, then test takes one: 1 / 1 / 1
    assert tiny.split.value_counts().to_dict() == {"": 637, "train": 1, "val": 1, "test": 1}
    assert set(tiny.loc[tiny.split != "", "tile"]) == {"31TCJ"}

    holdout = _splits("tile_holdout")  # 11 tiles: 7 / 2 / 2 whole tiles (60/20/20 of 11, rounded)
    tiles = {s: set(holdout.loc[holdout.split == s, "tile"]) for s in ("train", "val", "test")}
    assert [len(tiles[s]) for s in ("train", "val", "test")] == [7, 2, 2]


# --------------------------------------------------------------------------- label sets

#: What each shipped label set makes of the synthetic generator's codes (class name; "" = background).
SYNTHETIC = {
    "s4a11": {110: "wheat", 120: "maize", 140: "sorghum", 150: "barley", 160: "rye", 170: "oats", 330: "grapes",
              435: "rapeseed", 438: "sunflower", 510: "potatoes", 770: "peas"},
}
SYNTHETIC["s4a_with_grassland"] = {**SYNTHETIC["s4a11"], 910: "grassland"}
SYNTHETIC["s4a_no_wheat"] = {c: n for c, n in SYNTHETIC["s4a11"].items() if n != "wheat"}
SYNTHETIC["s4a_8class"] = {c: n for c, n in SYNTHETIC["s4a11"].items() if n not in ("wheat", "sunflower", "potatoes")}
SYNTHETIC["crop_presence"] = {c.code: "crop" for c in CROPS}  # grassland 910, sugar beet 810, 190: crops too
SYNTHETIC["crop_interest"] = {c.code: "crops_of_interest" if c.code in SYNTHETIC["s4a11"] else "other_crops"
                              for c in CROPS}
SYNTHETIC["eight"] = {110: "winter_cereals", 150: "winter_cereals", 160: "winter_cereals", 170: "winter_cereals",
                      190: "winter_cereals", 120: "maize", 140: "other_summer_crops", 330: "vines",
                      435: "oilseeds", 438: "oilseeds", 510: "potatoes_roots", 810: "potatoes_roots",
                      770: "legumes", 910: "grassland_fodder"}


def test_every_label_set_is_checked_here():
    assert set(available_label_sets(LABELS)) == set(SYNTHETIC)


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_every_label_set_loads_and_maps_the_synthetic_codes(name):
    label_set = load_label_set(name, LABELS)
    codes = np.array([0] + [c.code for c in CROPS])
    got = [label_set.class_names[k] for k in label_set.map(codes)]
    expected = ["background"] + [SYNTHETIC[name].get(c.code, "background") for c in CROPS]
    assert got == expected


def test_the_thesis_non_crop_codes_and_unknowns():
    presence, interest = load_label_set("crop_presence", LABELS), load_label_set("crop_interest", LABELS)
    codes = np.array([0, 192, 977, 970, 971, 972, 973, 974, 975, 976, 900, 960, 980, 981, 982, 998])
    assert [presence.class_names[k] for k in presence.map(codes)] == (
        ["background"] * 3 + ["non_crop"] * 7 + ["crop"] * 6)
    assert [interest.class_names[k] for k in interest.map(codes)] == (
        ["background"] * 3 + ["non_crop"] * 7 + ["other_crops"] * 6)
    every = np.arange(1000)
    assert ((presence.map(every) > 0) == (interest.map(every) > 0)).all()  # the same codes, split finer


def test_preset_configs_are_yaml_with_a_source_comment():
    for path in sorted(PRESETS.glob("s4a_*.yaml")) + [LABELS / f"{n}.yaml" for n in SYNTHETIC if n.startswith(("s4a_", "crop_"))]:
        text = path.read_text()
        assert text.startswith("# ") and ("jjurm/crop-segmentation" in text or "Orion-AI-Lab" in text), path
        assert isinstance(yaml.safe_load(text), dict)
