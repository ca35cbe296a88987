"""The split stage: rules engine (exact assignments on hand-built names), COCO import, options,
presets, and an end-to-end run on tiny synthetic patches (byte-identical twice)."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402

from cropseg.core.params import ParamsError, Split, SyntheticData, parse_params  # noqa: E402
from cropseg.s4a.netcdf import parse_patch_name, validate_patch, write_index  # noqa: E402
from cropseg.split.stage import (SplitError, apply_subsets, coco_assign, limit_sample, read_coco,  # noqa: E402
                           run_split)
from cropseg.split.rules import RuleError, Share  # noqa: E402
from cropseg.split.rules_apply import allocate, apply_rules, strata_of  # noqa: E402
from cropseg.split.rules_schema import load_rules, parse_rules  # noqa: E402
from cropseg.fetch.synthetic import plan_patches  # noqa: E402
from cropseg.fetch.synthetic_files import write_patch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ROOT / "configs" / "split_rules"


def name(year: int, tile: str, x: int, y: int) -> str:
    return f"{year}/{tile}/{year}_{tile}_patch_{x:02d}_{y:02d}.nc"


def names_table(paths: list[str]) -> pd.DataFrame:
    """The name columns of the per-patch table (``path``, ``year``, ``tile``, ``patch_x``,
    ``patch_y``) from paths alone: enough for rules without stratification, no files needed."""
    rows = []
    for path in paths:
        parsed = parse_patch_name(path)
        rows.append({"path": path, "year": parsed.year, "tile": parsed.tile, "patch_x": parsed.x,
                     "patch_y": parsed.y})
    return pd.DataFrame(rows, columns=["path", "year", "tile", "patch_x", "patch_y"])


#: 12 hand-built patches: 2 years x 2 tiles x 3 positions.
PATHS = [name(year, tile, x, x + 1) for year in (2019, 2020) for tile in ("31TCG", "31TCJ") for x in (1, 5, 9)]


def assign(rules: list, paths=PATHS, seed: int = 0, table: pd.DataFrame | None = None) -> dict[str, str]:
    table = names_table(paths) if table is None else table
    result = apply_rules(parse_rules({"rules": rules}), table, seed)
    return dict(zip(table["path"], result["split"]))


def errors(rules) -> list[tuple[str, str]]:
    with pytest.raises(RuleError) as caught:
        parse_rules(rules if isinstance(rules, dict) else {"rules": rules}, "test.yaml")
    return caught.value.problems


# --------------------------------------------------------------------------- rules engine


def test_nested_rules_ranges_lists_and_first_match_exact():
    rules = [
        {"path": "2019_31TCG_patch_05_06.nc", "target": "test"},       # by file name, wins first
        {"year": 2019, "rules": [
            {"tile": "31TCG", "patch_x": {"max": 5}, "target": "train"},
            {"tile": ["31TCJ"], "patch_x": {"min": 5, "in": [5, 7]}, "target": "val"},
            {"tile": "31TCJ", "target": "train"},
        ]},
        {"year": [2020], "patch_y": {"min": 6, "max": 10}, "target": "val"},
        {"path": name(2020, "31TCJ", 1, 2), "target": "test"},         # by full path
    ]
    got = assign(rules)
    assert got == {
        name(2019, "31TCG", 1, 2): "train", name(2019, "31TCG", 5, 6): "test", name(2019, "31TCG", 9, 10): "",
        name(2019, "31TCJ", 1, 2): "train", name(2019, "31TCJ", 5, 6): "val", name(2019, "31TCJ", 9, 10): "train",
        name(2020, "31TCG", 1, 2): "", name(2020, "31TCG", 5, 6): "val", name(2020, "31TCG", 9, 10): "val",
        name(2020, "31TCJ", 1, 2): "test", name(2020, "31TCJ", 5, 6): "val", name(2020, "31TCJ", 9, 10): "val",
    }


#: One rules file per construct of the thesis' format, as YAML text, and the patches (of PATHS)
#: each one sends to each split ("" = left out).
THESIS_FILES = {
    "year_min": ("rules:\n  - year: {min: 2020}\n    target: test\n",
                 {p: "test" if p.startswith("2020") else "" for p in PATHS}),
    "year_max_in": ("rules:\n  - year: {max: 2019, in: [2019, 2021]}\n    target: train\n",
                    {p: "train" if p.startswith("2019") else "" for p in PATHS}),
    "tile_in": ("rules:\n  - tile: {in: [31TCJ]}\n    target: val\n",
                {p: "val" if "31TCJ" in p else "" for p in PATHS}),
    "tile_value_list": ("rules:\n  - tile: [31TCG]\n    year: 2020\n    target: val\n",
                        {p: "val" if p.startswith("2020/31TCG") else "" for p in PATHS}),
    "patch_x_min_max": ("rules:\n  - patch_x: {min: 2, max: 6}\n    target: train\n",
                        {p: "train" if "_patch_05_" in p else "" for p in PATHS}),
    "patch_y_in": ("rules:\n  - patch_y: {in: [2, 10]}\n    target: test\n",
                   {p: "test" if p.endswith(("_02.nc", "_10.nc")) else "" for p in PATHS}),
    "path_in": (f"rules:\n  - path: {{in: [2019_31TCG_patch_01_02.nc, {name(2020, '31TCJ', 9, 10)}]}}\n"
                f"    target: test\n",
                {p: "test" if p in (name(2019, "31TCG", 1, 2), name(2020, "31TCJ", 9, 10)) else "" for p in PATHS}),
    "nested_with_guard": ("rules:\n  - year: 2019\n    rules:\n      - {tile: 31TCG, target: train}\n"
                          "      - {tile: 31TCJ, target: val}\n  - year: 2020\n    target: test\n"
                          "  - assert_none: true\n",
                          {p: "test" if p.startswith("2020") else "train" if "31TCG" in p else "val" for p in PATHS}),
}


@pytest.mark.parametrize("construct", sorted(THESIS_FILES))
def test_thesis_rule_files_load_unchanged(construct, tmp_path):
    text, expected = THESIS_FILES[construct]
    path = tmp_path / f"{construct}.yaml"
    path.write_text(text)
    table = names_table(PATHS)
    result = apply_rules(load_rules(path), table, seed=0)
    assert dict(zip(table["path"], result["split"])) == expected


def test_thesis_fractional_target_list(tmp_path):
    path = tmp_path / "fractions.yaml"
    path.write_text("rules:\n  - target:\n      - {target: train, split: 0.5}\n"
                    "      - {target: val, split: 0.25}\n      - {target: test}\n")
    table = names_table(PATHS)
    first = apply_rules(load_rules(path), table, seed=3)
    assert first["split"].value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    assert first["split"].tolist() == apply_rules(load_rules(path), table, seed=3)["split"].tolist()


def test_thesis_stratify_on_with_bins(tmp_path):
    path = tmp_path / "strata.yaml"
    path.write_text("rules:\n  - target:\n      - {target: train, split: 0.5}\n      - {target: test, split: 0.5}\n"
                    "    stratify_on:\n      - {column: elevation_mean, bins: 2}\n")
    table = elevation_table([10.0 * i for i in range(6)] + [1000.0 + i for i in range(6)])
    result = apply_rules(load_rules(path), table, seed=0)
    high = table["elevation_mean"] >= 1000
    assert pd.crosstab(high, result["split"]).to_dict() == {"test": {False: 3, True: 3}, "train": {False: 3, True: 3}}


def test_thesis_assert_none_reached_is_an_error(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text("rules:\n  - {year: 2019, target: train}\n  - assert_none: true\n")
    with pytest.raises(RuleError, match=r"rules\[1\]") as caught:
        apply_rules(load_rules(path), names_table(PATHS), seed=0)
    assert "2020_31TCG_patch_01_02.nc" in str(caught.value)


def test_unmatched_patches_are_left_out_with_their_reason_and_rule():
    table = names_table(PATHS)
    ruleset = parse_rules({"rules": [
        {"year": 2019, "rules": [{"tile": "31TCG", "target": "train"}]},  # 2019 31TCJ reaches no nested rule
        {"tile": "31TCJ", "target": "val"},
    ]})
    result = apply_rules(ruleset, table).set_index(table["path"])
    assert result.loc[name(2019, "31TCJ", 1, 2)].tolist() == ["", "", "unmatched"]  # claimed by rules[0], not by rules[1]
    assert result.loc[name(2020, "31TCG", 1, 2)].tolist() == ["", "", "unmatched"]
    assert result.loc[name(2019, "31TCG", 1, 2)].tolist() == ["train", "rules[0].rules[0]", ""]
    assert result.loc[name(2020, "31TCJ", 9, 10)].tolist() == ["val", "rules[1]", ""]
    assert (result["reason"] == "unmatched").sum() == 6


@pytest.mark.parametrize("n, fractions, expected", [
    (8, [0.8, 0.1, 0.1], [6, 1, 1]),
    (10, [0.8, 0.1, 0.1], [8, 1, 1]),
    (6, [0.8, 0.1, 0.1], [4, 1, 1]),   # 4.8/.6/.6 -> 5/1/0 -> test takes one from train
    (3, [0.8, 0.1, 0.1], [1, 1, 1]),
    (2, [0.8, 0.1, 0.1], [2, 0, 0]),   # fewer patches than targets: no minimum
    (0, [0.8, 0.1, 0.1], [0, 0, 0]),
    (7, [0.5, 0.25, 0.25], [3, 2, 2]),  # 3.5/1.75/1.75: the largest remainders get the 2 left
    (6, [0.25, 0.25, 0.5], [2, 1, 3]),  # 1.5/1.5/3: remainders tie, earlier entry first
    (8, [0.5, 0.0, 0.25], [4, 0, 2]),  # sum .75: round(6) given out, zero fraction gets none
    (9, [0.3], [3]),                   # 2.7 -> 3, the other 6 left out
])
def test_allocation_rounding_rule(n, fractions, expected):
    shares = tuple(Share(t, Fraction(repr(f))) for t, f in zip(("train", "val", "test"), fractions))
    assert allocate(n, shares) == expected


def test_counts_are_exact_or_scaled_down():
    shares = (Share("train", count=4), Share("val", count=2), Share("test", count=2))
    assert allocate(20, shares) == [4, 2, 2]
    assert allocate(8, shares) == [4, 2, 2]
    assert allocate(5, shares) == [3, 1, 1]
    assert allocate(2, shares) == [1, 1, 0]


def test_missing_fractions_share_the_remainder_evenly():
    ruleset = parse_rules({"rules": [{"target": [{"target": "train", "split": 0.5}, {"target": "val"},
                                                  {"target": "test"}]}]})
    assert [s.fraction for s in ruleset.rules[0].shares] == [Fraction(1, 2), Fraction(1, 4), Fraction(1, 4)]
    got = assign([{"year": 2019, "target": [{"target": "train", "split": 0.5}, {"target": "val"}, {"target": "test"}]}])
    counts = pd.Series([v for k, v in got.items() if k.startswith("2019")]).value_counts().to_dict()
    assert counts == {"train": 3, "val": 2, "test": 1}  # 3/1.5/1.5: remainders tie, val first
    assert {v for k, v in got.items() if k.startswith("2020")} == {""}


def test_fractions_below_one_leave_the_rest_out_as_remainder():
    table = names_table(PATHS)
    result = apply_rules(parse_rules({"rules": [{"target": [{"target": "train", "split": 0.25}]}]}), table)
    assert (result["split"] == "train").sum() == 3
    assert (result["reason"] == "remainder").sum() == 9
    assert set(result["rule"]) == {"rules[0]"}


def test_random_split_is_seeded_deterministic_and_rule_local():
    rules = [{"target": [{"target": "train", "split": 0.5}, {"target": "val", "split": 0.25}, {"target": "test"}]}]
    first, again, other = assign(rules, seed=3), assign(rules, seed=3), assign(rules, seed=4)
    assert first == again and first != other
    assert pd.Series(first).value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    # a rule added before, on other patches, does not reshuffle this one (its location is the same)
    nested = [{"year": 2019, "rules": rules}]
    alone = assign(nested, seed=3)
    with_more = assign(nested + [{"year": 2020, "target": "test"}], seed=3)
    assert {k: v for k, v in alone.items() if k.startswith("2019")} == \
        {k: v for k, v in with_more.items() if k.startswith("2019")}


def test_default_presets_on_the_default_synthetic_patches():
    from cropseg.core.params import load_params

    data = load_params(ROOT / "params.yaml").data  # 12 patches on 4 Catalan tiles x 2019, 2020
    paths = [p.name.relpath for p in plan_patches(data.synthetic, data.years, data.tiles)]
    assert sorted({p[:10] for p in paths}) == ["2019/31TCF", "2019/31TCG", "2019/31TDF", "2019/31TDG",
                                               "2020/31TCF", "2020/31TCG", "2020/31TDF", "2020/31TDG"]
    for preset, expected in (("random_80_10_10", {"train": 10, "val": 1, "test": 1}),
                             ("tiny", {"train": 4, "val": 2, "test": 2, "": 4}),
                             ("temporal_tile_year", {"train": 8, "val": 2, "test": 2})):
        ruleset = parse_rules(yaml.safe_load((PRESETS / f"{preset}.yaml").read_text()), preset)
        result = apply_rules(ruleset, names_table(paths), seed=0)
        assert result["split"].value_counts().to_dict() == expected, preset
    temporal = parse_rules(yaml.safe_load((PRESETS / "temporal_tile_year.yaml").read_text()))
    got = dict(zip(paths, apply_rules(temporal, names_table(paths))["split"]))
    assert all(v == "train" for k, v in got.items() if k.startswith("2019"))
    assert {k for k, v in got.items() if v == "val"} == {p for p in paths if p[:10] in ("2020/31TCF", "2020/31TDF")}
    assert {k for k, v in got.items() if v == "test"} == {p for p in paths if p[:10] in ("2020/31TCG", "2020/31TDG")}


def test_every_preset_is_valid_and_commented():
    presets = sorted(PRESETS.glob("*.yaml"))
    assert {p.stem for p in presets} >= {"random_80_10_10", "stratified_elevation", "temporal_tile_year", "tiny",
                                        "tile_holdout"}
    for path in presets:
        assert path.read_text().startswith("# "), path
        parse_rules(yaml.safe_load(path.read_text()), str(path))


def test_assert_none_reached_names_rule_and_patch():
    rules = [{"year": 2019, "target": "train"},
             {"year": 2020, "rules": [{"tile": "31TCJ", "target": "val"}, {"patch_x": 5, "assert_none": True},
                                      {"target": "test"}]}]
    with pytest.raises(RuleError) as caught:
        assign(rules)
    assert caught.value.problems == [("rules[1].rules[1]", "assert_none reached by 1 patch(es): "
                                                          "2020/31TCG/2020_31TCG_patch_05_06.nc")]
    rules[1]["rules"][1]["patch_x"] = 7  # nobody there: the guard passes
    assert pd.Series(assign(rules)).value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}


# --------------------------------------------------------------------------- stratification


def elevation_table(values) -> pd.DataFrame:
    paths = [name(2019, "31TCG", i % 30, i // 30) for i in range(len(values))]
    table = names_table(paths)
    table["elevation_mean"] = values
    return table


def test_stratified_split_puts_every_stratum_in_every_split():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.uniform(0, 100, 20), rng.uniform(500, 600, 20), rng.uniform(1500, 1600, 20)])
    table = elevation_table(rng.permutation(values))
    rules = [{"target": [{"target": "train", "split": 0.8}, {"target": "val", "split": 0.1}, {"target": "test", "split": 0.1}],
              "stratify_on": [{"column": "elevation_mean", "bins": 3}]}]
    result = apply_rules(parse_rules({"rules": rules}), table, seed=1)
    band = pd.cut(table["elevation_mean"], [-1, 200, 1000, 2000], labels=["low", "mid", "high"])
    crosstab = pd.crosstab(band, result["split"])
    assert crosstab.to_dict() == {"train": {"low": 16, "mid": 16, "high": 16},
                                  "val": {"low": 2, "mid": 2, "high": 2}, "test": {"low": 2, "mid": 2, "high": 2}}
    # without stratification the same seed does not balance the strata
    plain = apply_rules(parse_rules({"rules": [{"target": rules[0]["target"]}]}), table, seed=1)
    assert plain["split"].value_counts().to_dict() == {"train": 48, "val": 6, "test": 6}


def test_quantile_bins_are_balanced_even_with_ties():
    table = elevation_table([5.0] * 7 + list(range(13)))  # 20 values, 7 tied
    groups = strata_of(table, parse_rules({"rules": [{
        "target": [{"target": "train"}], "stratify_on": [{"column": "elevation_mean", "bins": 4}]}]}).rules[0].stratify_on, 1)
    assert [len(g) for g in groups] == [5, 5, 5, 5]


def test_small_strata_are_merged_with_neighbours_and_missing_is_last():
    values = [1.0] * 3 + [2.0] * 12 + [3.0] * 4 + [4.0] * 11 + [np.nan] * 2
    table = elevation_table(values)
    stratum = parse_rules({"rules": [{"target": [{"target": "train"}],
                                      "stratify_on": [{"column": "elevation_mean", "bins": 10}]}]}).rules[0].stratify_on
    groups = strata_of(table, stratum, minimum=10)
    assert [sorted(set(table["elevation_mean"].iloc[g].fillna(-1))) for g in groups] == [[1.0, 2.0], [-1, 3.0, 4.0]]
    assert [len(g) for g in groups] == [15, 17]
    assert [len(g) for g in strata_of(table, stratum, minimum=1)] == [3, 12, 4, 11, 2]
    # all too small: one stratum
    assert [len(g) for g in strata_of(table, stratum, minimum=100)] == [32]


def test_stratify_on_text_column_and_two_columns():
    table = names_table(PATHS * 1)
    table["country"] = np.where(table["tile"] == "31TCG", "ES", "FR")
    rules = [{"target": [{"target": "train", "split": 0.5}, {"target": "val", "split": 0.5}],
              "stratify_on": [{"column": "country"}, {"column": "year"}]}]
    result = apply_rules(parse_rules({"rules": rules}), table)
    crosstab = pd.crosstab([table["country"], table["year"]], result["split"])
    assert (crosstab.to_numpy() > 0).all() and crosstab.to_numpy().sum() == 12


# --------------------------------------------------------------------------- validation errors


@pytest.mark.parametrize("rules, location, message", [
    ([{"target": "train", "yaer": 2019}], "rules[0]", "unknown key 'yaer'"),
    ([{"year": 2019}], "rules[0]", "no outcome"),
    ([{"target": "train", "assert_none": True}], "rules[0]", "two outcomes (target, assert_none)"),
    ([{"target": "train"}, {"rules": [{"target": [{"target": "train", "split": 0.7}, {"target": "val", "split": 0.4}]}]}],
     "rules[1].rules[0].target", "fractions add up to 1.1, above 1"),
    ([{"target": "validation"}], "rules[0].target", "unknown target 'validation'"),
    ([{"year": "2019", "target": "train"}], "rules[0].year", "year must be an integer"),
    ([{"tile": "T31TCG", "target": "train"}], "rules[0].tile", "not an MGRS tile name"),
    ([{"patch_x": {"min": 9, "max": 2}, "target": "train"}], "rules[0].patch_x", "min 9 is above max 2"),
    ([{"patch_x": {"from": 2}, "target": "train"}], "rules[0].patch_x", "unknown key 'from' in a range"),
    ([{"year": [2019, "x"], "target": "val"}], "rules[0].year[1]", "year must be an integer"),
    ([{"rules": [{"year": 2019, "target": "train"}, {"assert_none": False}]}], "rules[0].rules[1].assert_none",
     "must be true"),
    ([{"target": "train", "stratify_on": [{"column": "elevation_mean"}]}], "rules[0].stratify_on",
     "only a random split"),
    ([{"target": []}], "rules[0].target", "empty list of targets"),
    ([{"target": [{"target": "val", "split": 0.5}, {"target": "val"}]}], "rules[0].target", "val listed twice"),
    ([{"target": [{"target": "train", "count": 3}, {"target": "val", "split": 0.5}]}], "rules[0].target",
     "do not mix count with split"),
    ([{"target": [{"target": "train", "split": 1.0}, {"target": "val"}]}], "rules[0].target",
     "nothing left for val"),
    ([{"target": [{"target": "train", "split": -0.1}]}], "rules[0].target[0].split", "between 0 and 1"),
    ([{"target": [{"target": "train", "share": 0.1}]}], "rules[0].target[0]", "unknown key 'share'"),
    ({"rule": [{"target": "train"}]}, "(file)", "unknown key 'rule'"),
    ({"rules": {"target": "train"}}, "rules", "expected a list of rules"),
    ([{"target": [{"target": "train"}], "stratify_on": [{"column": "elevation_mean", "bins": 0}]}],
     "rules[0].stratify_on[0].bins", "bins >= 1"),
])
def test_invalid_rules_give_located_errors(rules, location, message):
    problems = errors(rules)
    assert any(where == location and message in what for where, what in problems), problems


def test_every_problem_is_reported_at_once_with_the_file_name():
    with pytest.raises(RuleError) as caught:
        parse_rules({"rules": [{"year": 2019}, {"target": "train"}, {"rules": [{"tile": 5, "target": "test"}]}]},
                    "configs/split_rules/bad.yaml")
    assert [where for where, _ in caught.value.problems] == ["rules[0]", "rules[2].rules[0].tile"]
    assert str(caught.value).startswith("configs/split_rules/bad.yaml: 2 problem(s)")


def test_stratify_on_unknown_column_fails_before_any_assignment():
    ruleset = parse_rules({"rules": [{"year": 2019, "target": "train"},
                                     {"target": [{"target": "val"}], "stratify_on": [{"column": "elevation"}]}]})
    with pytest.raises(RuleError) as caught:
        apply_rules(ruleset, names_table(PATHS))
    assert caught.value.problems[0][0] == "rules[1].stratify_on[0]"
    assert "unknown column 'elevation'" in caught.value.problems[0][1]


# --------------------------------------------------------------------------- COCO and options


def write_coco(prefix: Path, splits: dict[str, list[str]]) -> None:
    for split, names in splits.items():
        images = [{"id": i, "file_name": f"netcdf/{n}", "width": 366, "height": 366} for i, n in enumerate(names)]
        Path(f"{prefix}_{split}.json").write_text(json.dumps({"images": images, "annotations": [], "categories": []}))


def base(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def test_coco_import_with_duplicates_dropped_in_order(tmp_path):
    a, b, c, d, e, f = (base(p) for p in PATHS[:6])
    write_coco(tmp_path / "exp", {"train": [a, b, c, "2018_31TCG_patch_00_00.nc"], "val": [c, d, e], "test": [b, e, f, c]})
    coco = read_coco(tmp_path / "exp")
    table = names_table(PATHS)
    with pytest.raises(SplitError, match=r"3 patch\(es\) in several COCO splits.*drop_duplicates"):
        coco_assign(table, coco, [])
    result, missing, dropped = coco_assign(table, coco, ["test", "val"])
    got = dict(zip(table["path"], result["split"]))
    # b: train+test -> train; c: all three -> train; e: val+test -> val
    assert [got[p] for p in PATHS[:6]] == ["train", "train", "train", "val", "val", "test"]
    assert set(result["reason"].iloc[6:]) == {"not_in_coco"} and result["rule"].iloc[0] == "coco:train"
    assert missing == {"train": 1, "val": 0, "test": 0}
    assert dropped == {"test": 3, "val": 1}
    # the other order keeps them in test
    result, _, _ = coco_assign(table, coco, ["train", "val"])
    assert [dict(zip(table["path"], result["split"]))[p] for p in PATHS[:6]] == ["train", "test", "test", "val", "test", "test"]


def test_coco_file_errors_name_the_file(tmp_path):
    write_coco(tmp_path / "exp", {"train": ["x.nc"], "val": ["y.nc"]})
    with pytest.raises(SplitError, match=r"exp_test\.json: COCO file not found"):
        read_coco(tmp_path / "exp")
    Path(f"{tmp_path / 'exp'}_test.json").write_text(json.dumps({"images": [{"id": 1}]}))
    with pytest.raises(SplitError, match=r"exp_test\.json: images\[0\]: 'file_name' missing"):
        read_coco(tmp_path / "exp")


def _paper_coco(file_names: list[str], first_id: int) -> dict:
    """A COCO document shaped like the S4A paper's scenario files: info, licenses, images named by
    the patch file, parcel annotations (category_id, segmentation, bbox, area), categories."""
    images = [{"id": first_id + i, "file_name": f, "width": 366, "height": 366, "license": 1,
               "date_captured": f[:4]} for i, f in enumerate(file_names)]
    annotations = [{"id": 10 * image["id"] + k, "image_id": image["id"], "category_id": code, "iscrowd": 0,
                    "segmentation": [[10.0, 10.0, 60.0, 10.0, 60.0, 40.0, 10.0, 40.0]],
                    "bbox": [10.0, 10.0, 50.0, 30.0], "area": 1500.0}
                   for image in images for k, code in enumerate((110, 330))]
    return {"info": {"description": "Sen4AgriNet", "version": "21.03", "year": 2021,
                     "contributor": "NOA", "date_created": "2021/04/27"},
            "licenses": [{"id": 1, "name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}],
            "images": images, "annotations": annotations,
            "categories": [{"id": 110, "name": "wheat", "supercategory": "cereals"},
                           {"id": 330, "name": "grapes", "supercategory": "fruits"}]}


def test_coco_files_shaped_like_the_papers_import(tmp_path):
    paths = [name(2020, "31TCG", 14, 14), name(2020, "31TCG", 14, 15), name(2019, "31TCJ", 3, 4),
             name(2019, "31TCJ", 3, 5), name(2019, "31TCJ", 7, 7)]
    names = [base(p) for p in paths]
    assert names[0] == "2020_31TCG_patch_14_14.nc"
    for split, chosen, first in (("train", names[:2], 1), ("val", names[2:3], 100), ("test", names[3:4], 200)):
        Path(f"{tmp_path / 'scenario_1'}_{split}.json").write_text(json.dumps(_paper_coco(chosen, first)))
    coco = read_coco(tmp_path / "scenario_1")
    assert coco == {"train": names[:2], "val": names[2:3], "test": names[3:4]}
    result, missing, dropped = coco_assign(names_table(paths), coco, [])
    assert result["split"].tolist() == ["train", "train", "val", "test", ""]
    assert result["reason"].tolist()[-1] == "not_in_coco"
    assert missing == {"train": 0, "val": 0, "test": 0} and dropped == {}


def test_subset_fractions_and_limit_are_seeded_samples():
    table = names_table(PATHS)
    assignment = pd.DataFrame({"split": ["train"] * 8 + ["val"] * 4, "rule": "x", "reason": ""})
    sub = apply_subsets(assignment, table["path"], {"train": 0.2, "val": 0.5}, seed=0)
    assert sub["split"].value_counts().to_dict() == {"train": 2, "val": 2, "": 8}  # 1.6 -> 2, 2
    assert (sub["reason"] == "subset").sum() == 8
    assert sub.equals(apply_subsets(assignment, table["path"], {"train": 0.2, "val": 0.5}, seed=0))
    assert apply_subsets(assignment, table["path"], {"train": 0.01}, seed=0)["split"].eq("train").sum() == 1
    sample = limit_sample(PATHS, 5, seed=0)
    assert len(sample) == 5 and sample == sorted(sample) and sample == limit_sample(list(reversed(PATHS)), 5, seed=0)
    assert limit_sample(PATHS, 50, seed=0) == sorted(PATHS)


def test_split_params_defaults_and_errors():
    split = parse_params({}).split
    assert (split.rules, split.coco, split.seed, split.shuffle) == ("random_80_10_10", None, 0, False)
    with pytest.raises(ParamsError) as caught:
        parse_params({"split": {"subset_fractions": {"train": 1.5}, "drop_duplicates": ["test", "test"],
                                "rules": "../x", "limit": 3}})
    text = str(caught.value)
    for field in ("split.subset_fractions", "split.drop_duplicates", "split.rules", "split.limit"):
        assert field in text


# --------------------------------------------------------------------------- end to end


def write_tif(path: Path, values: np.ndarray, crs: str, west: float, north: float, step: float) -> None:
    import rasterio
    from affine import Affine

    with rasterio.open(path, "w", driver="GTiff", width=values.shape[1], height=values.shape[0], count=1,
                       dtype="float32", crs=crs, transform=Affine(step, 0, west, 0, -step, north), nodata=-9999.0) as tif:
        tif.write(values.astype(np.float32), 1)


def test_elevation_from_any_crs_ignores_nodata_and_joins_tiles_on_an_edge(tmp_path):
    from cropseg.split.patch_table import elevation_stats, find_dem_tiles

    footprint = (300000.0, 4600000.0, 300610.0, 4600610.0)  # a 61 x 61 px patch in EPSG:32631
    left = np.full((100, 130), 100.0)  # x 299000..300300, y 4600000..4601000 (10 m pixels)
    left[:, 100] = -9999.0             # the footprint's first column: nodata
    left[:, 101] = np.nan              # and NaN
    write_tif(tmp_path / "a.tif", left, "EPSG:32631", 299000, 4601000, 10)
    write_tif(tmp_path / "b.tif", np.full((100, 70), 200.0), "EPSG:32631", 300300, 4601000, 10)
    mean, std, median = elevation_stats(32631, footprint, find_dem_tiles(tmp_path))
    n_left, n_right = 28 * 61, 31 * 61
    assert mean == pytest.approx((100 * n_left + 200 * n_right) / (n_left + n_right))
    assert median == 200.0 and std > 0
    # a tile covering the whole footprint wins over the edge tiles (here in EPSG:4326, another CRS)
    write_tif(tmp_path / "c.tif", np.full((200, 200), 7.0), "EPSG:4326", 0.5, 41.6, 0.002)
    assert elevation_stats(32631, footprint, find_dem_tiles(tmp_path)) == (7.0, 0.0, 7.0)
    assert np.isnan(elevation_stats(32631, (0, 0, 610, 610), find_dem_tiles(tmp_path))).all()
    assert np.isnan(elevation_stats(32631, footprint, find_dem_tiles(tmp_path / "none"))).all()


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> Path:
    """6 tiny synthetic patches in data/netcdf layout, with index.csv, and a DEM over tile 31TCG only.

    31TCG in 2019 and 2020, 31TCJ (France) in 2019 only, as in S4A: 2 patches per tile-year."""
    root = tmp_path_factory.mktemp("data")
    netcdf = root / "netcdf"
    cfg = SyntheticData(patches=6, patch_size=61, acquisitions=3)
    plans = plan_patches(cfg, [2019, 2020], ["31TCG", "31TCJ"])
    for plan in plans:
        write_patch(cfg, plan, netcdf)
    write_index([validate_patch(netcdf / p.name.relpath, netcdf) for p in plans], netcdf / "index.csv")
    # a DEM over tile 31TCG only (lon 0..2, lat 40.5..42.5; 31TCJ is near 44N): 250 m, nodata west of 0.1E
    dem = root / "dem"
    dem.mkdir()
    width, height = 1000, 1000
    values = np.full((height, width), 250.0, dtype=np.float32)
    values[:, :50] = -9999.0
    write_tif(dem / "a.tif", values, "EPSG:4326", 0.0, 42.5, 0.002)
    (dem / "tiles.csv").write_text("name,status,path\na,synthetic,a.tif\n")
    return root


def test_end_to_end_outputs_are_complete_and_byte_identical(patches, tmp_path):
    from cropseg.fetch.dem import patch_footprint

    params = Split()
    outs = []
    for attempt, workers in enumerate((1, 2)):
        out = tmp_path / f"split{attempt}"
        summary = run_split(params, patches / "netcdf", patches / "dem", out, PRESETS, workers=workers, progress=False)
        outs.append(out)
    files = sorted(p.relative_to(outs[0]).as_posix() for p in outs[0].rglob("*") if p.is_file())
    assert files == ["holdout/test.txt", "holdout/train.txt", "holdout/val.txt", "patches.csv", "patches.geojson",
                     "summary.json", "test.txt", "train.txt", "val.txt"]
    for file in files:
        assert (outs[0] / file).read_bytes() == (outs[1] / file).read_bytes(), file
    out = outs[0]
    assert summary.counts == {"train": 4, "val": 1, "test": 1} and summary.left_out == 0
    lists = {s: (out / f"{s}.txt").read_text().splitlines() for s in ("train", "val", "test")}
    holdout = {s: (out / "holdout" / f"{s}.txt").read_text().splitlines() for s in ("train", "val", "test")}
    assert holdout == {"train": lists["val"], "val": lists["train"], "test": lists["test"]}
    assert lists["train"] == sorted(lists["train"])

    table = pd.read_csv(out / "patches.csv")
    assert sorted(sum(lists.values(), [])) == table["path"].tolist()
    assert dict(zip(table["path"], table["split"])) == {p: s for s, ps in lists.items() for p in ps}
    assert (table["n_pixels"] == 61 * 61).all() and (table["n_dates"] == 3).all()
    assert (table["size"] == 61).all() and set(table["country"]) == {"ES", "FR"}
    classes = [c for c in table.columns if c.startswith("pixels_")]
    assert (table[classes].sum(axis=1) == table["n_pixels"]).all()
    assert (table["parcel_pixels"] == table["n_pixels"] - table["pixels_0"]).all()
    crops = table[[c for c in classes if c != "pixels_0"]]
    assert (table["largest_class_pixels"] == crops.max(axis=1)).all()
    for row in table.itertuples():
        expected = patch_footprint(patches / "netcdf" / row.path)
        assert np.allclose([row.lon_min, row.lat_min, row.lon_max, row.lat_max], expected, atol=1e-6)
    on_dem = table["tile"] == "31TCG"
    assert (table.loc[on_dem, "elevation_mean"] == 250).all() and (table.loc[on_dem, "elevation_std"] == 0).all()
    assert table.loc[~on_dem, ["elevation_mean", "elevation_median"]].isna().all().all()

    summary_json = json.loads((out / "summary.json").read_text())
    assert summary_json["patches"] == {"indexed": 6, "considered": 6, "train": 4, "val": 1, "test": 1, "left_out": 0}
    assert summary_json["pixels"]["train"]["all"] == 4 * 61 * 61
    assert summary_json["pixels"]["val"]["classes"]["0"] == int(table.loc[table["split"] == "val", "pixels_0"].sum())
    geojson = json.loads((out / "patches.geojson").read_text())
    assert len(geojson["features"]) == 6 and geojson["features"][0]["properties"]["split"] in ("train", "val", "test")
    ring = geojson["features"][0]["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) == 5


def test_end_to_end_coco_shuffle_subset_and_limit(patches, tmp_path):
    netcdf = patches / "netcdf"
    paths = sorted(line.split(",")[0] for line in (netcdf / "index.csv").read_text().splitlines()[1:])
    names = [base(p) for p in paths]
    write_coco(tmp_path / "s4a", {"train": names[:4], "val": names[3:5], "test": names[5:]})
    params = Split(coco=str(tmp_path / "s4a"), drop_duplicates=["val"], shuffle=True, seed=2)
    run_split(params, netcdf, None, tmp_path / "out", PRESETS, workers=1, progress=False)
    train = (tmp_path / "out" / "train.txt").read_text().splitlines()
    assert sorted(train) == paths[:4] and (tmp_path / "out" / "val.txt").read_text().splitlines() == [paths[4]]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["duplicates_dropped"] == {"val": 1} and summary["source"].startswith("coco ")
    assert pd.read_csv(tmp_path / "out" / "patches.csv")["elevation_mean"].isna().all()  # no DEM given

    params = Split(rules="tiny", limit_patches=4, subset_fractions={"train": 0.5}, seed=1)
    run_split(params, netcdf, patches / "dem", tmp_path / "out", PRESETS, workers=1, progress=False)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    # 4 patches considered: tiny scales 4/2/2 down to 2/1/1, then half of train kept
    assert summary["patches"] == {"indexed": 6, "considered": 4, "train": 1, "val": 1, "test": 1, "left_out": 1}
    assert summary["left_out"]["subset"] == 1


def test_stage_errors_leave_previous_output_alone(patches, tmp_path):
    out = tmp_path / "out"
    run_split(Split(), patches / "netcdf", None, out, PRESETS, workers=1, progress=False)
    before = (out / "train.txt").read_bytes()
    with pytest.raises(SplitError, match="preset 'nope' not found.*available: .*random_80_10_10"):
        run_split(Split(rules="nope"), patches / "netcdf", None, out, PRESETS, progress=False)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "guarded.yaml").write_text(yaml.safe_dump({"rules": [{"year": 2019, "target": "train"},
                                                                  {"assert_none": True}]}))
    with pytest.raises(RuleError, match=r"rules\[1\]: assert_none reached by 2 patch\(es\): 2020/"):
        run_split(Split(rules="guarded"), patches / "netcdf", None, out, rules, progress=False)
    (rules / "broken.yaml").write_text("rules:\n  - year: 2019\n")
    with pytest.raises(RuleError, match=r"(?s)broken.yaml: 1 problem.*rules\[0\]: no outcome"):
        run_split(Split(rules="broken"), patches / "netcdf", None, out, rules, progress=False)
    with pytest.raises(SplitError, match="index.csv: patch index not found"):
        run_split(Split(), tmp_path / "nowhere", None, out, PRESETS, progress=False)
    assert (out / "train.txt").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rules"]  # no temporary left behind


def test_stage_script_help_and_run(patches, tmp_path):
    script = ROOT / "stages" / "split.py"
    help_text = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--rules-dir" in help_text and "data/split" in help_text
    (tmp_path / "params.yaml").write_text("split:\n  rules: temporal_tile_year\n")
    done = subprocess.run([sys.executable, str(script), "--params", str(tmp_path / "params.yaml"),
                           "--netcdf", str(patches / "netcdf"), "--dem", str(patches / "dem"),
                           "--rules-dir", str(PRESETS), "--out", str(tmp_path / "split")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # 2019 -> train; 2020/31TCG -> test; no 2020 patch of the val tiles (31TCF, 31TDF)
    assert done.stdout.startswith("split: rules temporal_tile_year: 6 patches -> train 4, val 0, test 2")


#: 5 tiles x 2 years x 3 grid positions, hand-built (the 5 S4A tiles with 2019 and 2020 patches).
TILES5 = ("31TBF", "31TCF", "31TCG", "31TDF", "31TDG")
GRID_PATHS = [name(year, tile, x, y) for year in (2019, 2020) for tile in TILES5
              for x, y in ((1, 1), (12, 3), (25, 28))]
SPATIAL = [{"target": [{"target": "train", "split": 0.6}, {"target": "val", "split": 0.2},
                       {"target": "test", "split": 0.2}], "group_by": ["tile"]}]


def _tiles_of(got: dict[str, str]) -> dict[str, set[str]]:
    by_split: dict[str, set[str]] = {}
    for path, split in got.items():
        by_split.setdefault(split, set()).add(path.split("/")[1])
    return by_split


def test_group_by_tile_puts_whole_tiles_in_one_split():
    for seed in range(4):
        got = assign(SPATIAL, paths=GRID_PATHS, seed=seed)
        tiles = _tiles_of(got)
        assert {k: len(v) for k, v in tiles.items()} == {"train": 3, "val": 1, "test": 1}  # allocate(5) over tiles
        assert tiles["train"].isdisjoint(tiles["test"] | tiles["val"]) and tiles["val"].isdisjoint(tiles["test"])
        assert sum(1 for v in got.values() if v == "test") == 6  # a tile: 2 years x 3 positions
    draws = {frozenset(_tiles_of(assign(SPATIAL, paths=GRID_PATHS, seed=s))["test"]) for s in range(6)}
    assert len(draws) > 1  # the seed chooses the tiles


def test_group_by_blocks_of_the_patch_grid():
    rules = [{**SPATIAL[0], "group_by": ["tile", {"column": "patch_x", "size": 10}, {"column": "patch_y", "size": 10}]}]
    got = assign(rules, paths=GRID_PATHS, seed=1)
    blocks: dict[tuple, set[str]] = {}
    for path, split in got.items():
        year, tile, rest = path.split("/")
        x, y = int(rest[-8:-6]), int(rest[-5:-3])
        blocks.setdefault((tile, x // 10, y // 10), set()).add(split)
    assert len(blocks) == 15 and all(len(s) == 1 for s in blocks.values())  # both years of a block together
    counts = pd.Series([next(iter(s)) for s in blocks.values()]).value_counts().to_dict()
    assert counts == {"train": 9, "val": 3, "test": 3}


def test_group_by_errors_name_the_rule():
    with pytest.raises(RuleError) as caught:
        parse_rules({"rules": [{"target": "train", "group_by": ["tile"]},
                               {**SPATIAL[0], "stratify_on": ["elevation_mean"]},
                               {**SPATIAL[0], "group_by": [{"column": "patch_x", "size": 0}]}]})
    assert [p[0] for p in caught.value.problems] == ["rules[0].group_by", "rules[1].group_by",
                                                     "rules[2].group_by[0].size"]
    with pytest.raises(RuleError, match=r"rules\[0\].group_by\[0\]: unknown column 'county'"):
        assign([{**SPATIAL[0], "group_by": ["county"]}], paths=GRID_PATHS)
    with pytest.raises(RuleError, match=r"column 'tile' is not numeric"):
        assign([{**SPATIAL[0], "group_by": [{"column": "tile", "size": 2}]}], paths=GRID_PATHS)


def test_the_default_run_holds_out_whole_tiles_with_three_test_patches():
    from cropseg.core.params import load_params

    params = load_params(ROOT / "params.yaml")
    assert params.split.rules == "tile_holdout"
    paths = [p.name.relpath for p in plan_patches(params.data.synthetic, params.data.years, params.data.tiles)]
    preset = PRESETS / f"{params.split.rules}.yaml"
    result = apply_rules(parse_rules(yaml.safe_load(preset.read_text()), str(preset)), names_table(paths),
                         seed=params.split.seed)
    got = dict(zip(paths, result["split"]))
    assert pd.Series(list(got.values())).value_counts().to_dict() == {"train": 6, "val": 3, "test": 3}
    tiles = _tiles_of(got)
    assert tiles["test"].isdisjoint(tiles["train"]) and tiles["val"].isdisjoint(tiles["train"])


def test_split_warns_when_the_label_set_lacks_training_pixels_or_val_has_one_class():
    from cropseg.split.labels import load_label_set
    from cropseg.split.stage import label_set_warnings

    # counts by S4A code as in the default synthetic data: crops and grassland (910), no 970-976 (non-crop) code
    summary = {"pixels": {"train": {"classes": {"0": 9, "110": 143621, "120": 86209, "910": 40812}},
                          "val": {"classes": {"0": 3, "110": 13802, "120": 19427}}}}
    labels = Path(__file__).resolve().parents[1] / "configs" / "labels"
    warnings = label_set_warnings(summary, load_label_set("crop_presence", labels))
    assert warnings == ["1 class(es) of the label set have no training pixel: non_crop",
                        "the val split holds 1 class(es) (crop): val F1 cannot tell a model from a constant "
                        "prediction"]
    summary["pixels"]["val"]["classes"]["975"] = 5
    summary["pixels"]["train"]["classes"]["975"] = 1
    assert label_set_warnings(summary, load_label_set("crop_presence", labels)) == []
