"""The ``split`` stage: assign S4A patches to train/val/test and describe every patch.

Patches come from ``data/netcdf/index.csv``; the assignment from a rules preset
(``configs/split_rules/${split.rules}.yaml``, see :mod:`cropseg.split.rules`) or, when
``split.coco`` is set, from the COCO files published with the S4A paper. Options (params section
``split``): ``limit_patches`` (a seeded sample of that many patches, taken before anything else),
``subset_fractions`` (keep a seeded sample of a split), ``shuffle`` (seeded order of the lists
instead of sorted), ``seed``.

Outputs, written atomically to ``data/split/``:

- ``train.txt``, ``val.txt``, ``test.txt``: patch paths relative to ``data/netcdf``, one a line;
- ``holdout/{train,val,test}.txt``: the same with train and val swapped (the training data of
  the RHO-Loss irreducible-loss model);
- ``patches.csv``: the per-patch table (:mod:`cropseg.split.patch_table`) with ``split`` (empty when left
  out), ``rule`` (deciding rule location, or ``coco:<split>``) and ``reason`` (why left out:
  ``unmatched``, ``remainder``, ``subset``, ``not_in_coco``);
- ``patches.geojson``: footprints (EPSG:4326) with their split;
- ``summary.json``: patch counts, left-out counts, pixel counts per split and class, and the
  warnings of :mod:`cropseg.split.guards` for the label set (an output, not DVC metrics: per-class
  counts would add a column per class to ``dvc exp show``).

Same params and inputs give the same bytes.
"""

from __future__ import annotations

import json
import math
import sys
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.atomic import atomic_dir
from ..core.executor import default_workers
from ..core.workspace import missing_file_hint
from .guards import split_problems
from .labels import LabelSet
from ..core.params import Split
from .patch_table import build_table, class_columns, write_geojson, write_table
from ..s4a.netcdf import INDEX_FILE, read_index
from .rules import REMAINDER, SPLITS, UNMATCHED, RuleError, RuleSet
from .rules_apply import apply_rules
from .rules_schema import load_rules

HOLDOUT_DIR = "holdout"
SUMMARY_FILE = "summary.json"
TABLE_FILE = "patches.csv"
GEOJSON_FILE = "patches.geojson"
NOT_IN_COCO = "not_in_coco"
SUBSET = "subset"
LEFT_OUT_REASONS = (UNMATCHED, REMAINDER, SUBSET, NOT_IN_COCO)


class SplitError(RuntimeError):
    """The split cannot be made (missing inputs, a bad COCO file, duplicates, nothing assigned)."""


@dataclass(frozen=True)
class SplitSummary:
    source: str
    counts: dict[str, int]
    left_out: int
    seconds: float

    def line(self) -> str:
        total = sum(self.counts.values()) + self.left_out
        rate = total / self.seconds if self.seconds > 0 else float("inf")
        splits = ", ".join(f"{name} {self.counts[name]}" for name in SPLITS)
        return (f"split: {self.source}: {total} patches -> {splits} ({self.left_out} left out), "
                f"{self.seconds:.1f} s, {rate:.1f} patches/s")


def _seeded(seed: int, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(purpose.encode())])


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


# --------------------------------------------------------------------------- COCO


def read_coco(prefix: str | Path) -> dict[str, list[str]]:
    """``PREFIX_{train,val,test}.json`` -> split -> patch file names (``images[].file_name``).

    Args:
        prefix: ``split.coco``: the three files' common path prefix.

    Returns:
        The ``file_name`` of every image, per split, in file order.

    Raises:
        SplitError: a file is missing, is not JSON, has no ``images`` list, or an image has no
            ``file_name`` string.
    """
    names = {}
    for split in SPLITS:
        path = Path(f"{prefix}_{split}.json")
        try:
            document = json.loads(path.read_text())
        except FileNotFoundError:
            raise SplitError(f"{path}: COCO file not found (split.coco: {prefix} needs "
                             f"{prefix}_train.json, {prefix}_val.json and {prefix}_test.json)") from None
        except json.JSONDecodeError as error:
            raise SplitError(f"{path}: not valid JSON ({error})") from None
        images = document.get("images") if isinstance(document, dict) else None
        if not isinstance(images, list):
            raise SplitError(f"{path}: expected a COCO object with an 'images' list")
        files = []
        for i, image in enumerate(images):
            file_name = image.get("file_name") if isinstance(image, dict) else None
            if not isinstance(file_name, str) or not file_name:
                raise SplitError(f"{path}: images[{i}]: 'file_name' missing or not a string")
            files.append(file_name)
        names[split] = files
    return names


def coco_assign(table: pd.DataFrame, coco: dict[str, list[str]], drop_duplicates: list[str]
                ) -> tuple[pd.DataFrame, dict[str, int], dict[str, int]]:
    """Map COCO file names to the table's patches (by file name).

    Args:
        table: the patch table (its ``path`` column; index kept in the result).
        coco: split -> file names, from :func:`read_coco` (folders in the names are ignored).
        drop_duplicates: ``split.drop_duplicates`` (e.g. ``[test, val]``): a patch in several
            splits is removed from each listed split in that order while it is still in another
            one.

    Returns:
        ``(assignment, not_found, dropped)``: ``split``/``rule``/``reason`` columns like
        :func:`cropseg.split.rules_apply.apply_rules` (patches in no COCO split get reason
        ``not_in_coco``), the COCO names not in the table per split, and the duplicates dropped
        per split.

    Raises:
        SplitError: a patch is still in several splits after ``drop_duplicates``.
    """
    by_name = {path.rsplit("/", 1)[-1]: path for path in table["path"]}
    members: dict[str, set[str]] = {}
    missing = {}
    for split in SPLITS:
        wanted = {name.replace("\\", "/").rsplit("/", 1)[-1] for name in coco.get(split, [])}
        members[split] = {by_name[n] for n in wanted if n in by_name}
        missing[split] = len([n for n in wanted if n not in by_name])
    dropped = {}
    for split in drop_duplicates:
        others = set().union(*(members[s] for s in SPLITS if s != split))
        duplicates = members[split] & others
        members[split] -= duplicates
        dropped[split] = len(duplicates)
    seen: dict[str, list[str]] = {}
    for split in SPLITS:
        for path in members[split]:
            seen.setdefault(path, []).append(split)
    clashes = sorted((p, s) for p, s in seen.items() if len(s) > 1)
    if clashes:
        listing = "; ".join(f"{p} in {'+'.join(s)}" for p, s in clashes[:5])
        more = f" and {len(clashes) - 5} more" if len(clashes) > 5 else ""
        raise SplitError(f"{len(clashes)} patch(es) in several COCO splits: {listing}{more} "
                         f"(set split.drop_duplicates, e.g. [test, val], to keep each in one split)")
    split = [seen.get(p, [""])[0] for p in table["path"]]
    result = pd.DataFrame({
        "split": split,
        "rule": [f"coco:{s}" if s else "" for s in split],
        "reason": ["" if s else NOT_IN_COCO for s in split],
    }, index=table.index)
    return result, missing, dropped


# --------------------------------------------------------------------------- options


def limit_sample(paths: list[str], limit: int | None, seed: int) -> list[str]:
    """A seeded sample of ``limit`` paths (all when ``limit`` is None or not smaller), sorted."""
    paths = sorted(paths)
    if limit is None or limit >= len(paths):
        return paths
    keep = _seeded(seed, "limit_patches").choice(len(paths), size=limit, replace=False)
    return sorted(paths[i] for i in keep)


def apply_subsets(assignment: pd.DataFrame, paths: pd.Series, fractions: dict[str, float], seed: int) -> pd.DataFrame:
    """Keep a seeded ``round_half_up(n * fraction)`` (at least 1) of each listed split's patches.

    Args:
        assignment: ``split``/``rule``/``reason`` columns; not changed (a copy is returned).
        paths: the patches' paths, aligned with ``assignment`` (the draw goes by sorted path).
        fractions: ``split.subset_fractions``: split -> share of its patches to keep.
        seed: ``split.seed``; each split draws from its own stream.

    Returns:
        The assignment with the patches not kept moved out of their split (reason ``subset``).
    """
    assignment = assignment.copy()
    for split in SPLITS:
        if split not in fractions:
            continue
        rows = np.flatnonzero((assignment["split"] == split).to_numpy())
        rows = rows[np.argsort(paths.iloc[rows].to_numpy(), kind="stable")]
        if rows.size == 0:
            continue
        keep = max(1, _round_half_up(rows.size * Fraction(repr(float(fractions[split])))))
        chosen = _seeded(seed, f"subset:{split}").choice(rows.size, size=min(keep, rows.size), replace=False)
        dropped = np.setdiff1d(np.arange(rows.size), chosen)
        index = assignment.index[rows[dropped]]
        assignment.loc[index, "split"] = ""
        assignment.loc[index, "reason"] = SUBSET
    return assignment


def ordered(paths: list[str], shuffle: bool, seed: int, split: str) -> list[str]:
    """A split's list as written: sorted, or a seeded permutation of the sorted paths.

    Args:
        paths: the split's patch paths.
        shuffle: ``split.shuffle``.
        seed: ``split.seed``.
        split: the split's name: each split draws from its own stream.
    """
    paths = sorted(paths)
    if not shuffle:
        return paths
    order = _seeded(seed, f"shuffle:{split}").permutation(len(paths))
    return [paths[i] for i in order]


# --------------------------------------------------------------------------- summary


def summarize(table: pd.DataFrame, source: str, indexed: int, extra: dict) -> dict:
    """The content of ``summary.json`` (without ``warnings``).

    Args:
        table: the patch table with its ``split`` and ``reason`` columns.
        source: what assigned the patches (``rules NAME`` or ``coco PREFIX``).
        indexed: patches in ``index.csv`` (before ``limit_patches``).
        extra: entries added after ``left_out`` (the COCO counts).

    Returns:
        Patch counts, left-out counts by reason, and pixel counts (all, parcel, per S4A code)
        per split.
    """
    classes = class_columns(table)
    counts = {s: int((table["split"] == s).sum()) for s in SPLITS}
    reasons = table.loc[table["split"] == "", "reason"].value_counts()
    pixels = {}
    for split in SPLITS:
        part = table[table["split"] == split]
        pixels[split] = {
            "all": int(part["n_pixels"].sum()),
            "parcel": int(part["parcel_pixels"].sum()),
            "classes": {c[len("pixels_"):]: int(part[c].sum()) for c in classes},
        }
    return {
        "source": source,
        "patches": {"indexed": indexed, "considered": len(table), **counts,
                    "left_out": int((table["split"] == "").sum())},
        "left_out": {r: int(reasons.get(r, 0)) for r in LEFT_OUT_REASONS},
        **extra,
        "pixels": pixels,
    }


def label_set_warnings(summary: dict, label_set: LabelSet) -> list[str]:
    """:func:`cropseg.split.guards.split_problems` on the summary's per-code pixel counts."""
    def per_class(split: str) -> list[int]:
        codes = summary["pixels"][split]["classes"]
        return [sum(codes.get(str(c), 0) for c in group) for group in label_set.codes]

    return split_problems(per_class("train"), per_class("val"), label_set.class_names)


# --------------------------------------------------------------------------- the stage


def _write_lists(folder: Path, lists: dict[str, list[str]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        (folder / f"{split}.txt").write_text("".join(f"{p}\n" for p in lists[split]))


def rules_path(params: Split, rules_dir: str | Path) -> Path:
    """The preset file ``rules_dir/{split.rules}.yaml``.

    Raises:
        SplitError: it does not exist (the message lists the presets there).
    """
    path = Path(rules_dir) / f"{params.rules}.yaml"
    if not path.is_file():
        available = sorted(p.stem for p in Path(rules_dir).glob("*.yaml"))
        raise SplitError(f"split.rules: preset {params.rules!r} not found ({path}); "
                         f"available: {', '.join(available) or 'none'}{missing_file_hint(path)}")
    return path


def run_split(params: Split, netcdf_dir: str | Path = "data/netcdf", dem_dir: str | Path | None = "data/dem",
              out: str | Path = "data/split", rules_dir: str | Path = "configs/split_rules",
              workers: int | None = None, progress: bool = True, label_set: LabelSet | None = None) -> SplitSummary:
    """Make the split of ``netcdf_dir`` into ``out`` (replaced atomically); see the module docs.

    With ``label_set``, warns (stderr and ``summary.json: warnings``) when a class of it has no
    training pixel or val holds fewer than two classes (:mod:`cropseg.split.guards`).

    Args:
        params: the ``split`` params.
        netcdf_dir: the fetched patches with their ``index.csv``.
        dem_dir: ``fetch_dem``'s output, for the elevation columns; ``None`` for none.
        out: the output folder.
        rules_dir: the folder of the rules presets.
        workers: processes building the patch table; ``split.workers``, else
            :func:`cropseg.core.executor.default_workers`, when ``None``.
        progress: show progress bars.
        label_set: the label set whose classes the warnings are about.

    Returns:
        The stage's summary: source, patches per split, left out, seconds.

    Raises:
        SplitError: no index or an empty one, a missing preset, a bad COCO file, COCO
            duplicates, or no patch assigned to any split.
        RuleError: the preset is invalid, names a column the table lacks, or an ``assert_none``
            rule is reached.
        PatchTableError: a patch cannot be placed or a DEM tile cannot be read
            (:mod:`cropseg.split.patch_table`).
    """
    started = time.perf_counter()
    netcdf_dir = Path(netcdf_dir)
    index = netcdf_dir / INDEX_FILE
    if not index.is_file():
        raise SplitError(f"{index}: patch index not found (run the fetch_s4a stage first)")
    infos = read_index(index)
    if not infos:
        raise SplitError(f"{index}: no patch listed")

    # validate the assignment source before reading any patch
    ruleset: RuleSet | None = None
    coco = None
    if params.coco:
        coco = read_coco(params.coco)
        source = f"coco {params.coco}"
    else:
        ruleset = load_rules(rules_path(params, rules_dir))
        source = f"rules {params.rules}"

    keep = set(limit_sample([i.path for i in infos], params.limit_patches, params.seed))
    chosen = [i for i in sorted(infos, key=lambda i: i.path) if i.path in keep]
    workers = workers or params.workers or default_workers()
    table = build_table(chosen, netcdf_dir, dem_dir, workers=workers, progress=progress)

    extra: dict = {}
    if ruleset is not None:
        assignment = apply_rules(ruleset, table, params.seed)
    else:
        assignment, missing, dropped = coco_assign(table, coco, list(params.drop_duplicates))
        extra = {"coco_not_found": missing, "duplicates_dropped": dropped}
    assignment = apply_subsets(assignment, table["path"], dict(params.subset_fractions), params.seed)
    table = pd.concat([table, assignment], axis=1)
    if not (table["split"] != "").any():
        raise SplitError(f"{source}: no patch assigned to any split ({len(table)} patches considered)")

    lists = {s: ordered(table.loc[table["split"] == s, "path"].tolist(), params.shuffle, params.seed, s)
             for s in SPLITS}
    for split in SPLITS:
        if not lists[split]:
            print(f"split: warning: {split} is empty", file=sys.stderr)
    summary = summarize(table, source, len(infos), extra)
    if label_set is not None:
        summary["warnings"] = label_set_warnings(summary, label_set)
        for warning in summary["warnings"]:
            print(f"split: warning: labels {label_set.name}: {warning}", file=sys.stderr)
    with atomic_dir(out) as folder:
        _write_lists(folder, lists)
        _write_lists(folder / HOLDOUT_DIR, {"train": lists["val"], "val": lists["train"], "test": lists["test"]})
        write_table(table, folder / TABLE_FILE)
        write_geojson(table, folder / GEOJSON_FILE)
        (folder / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return SplitSummary(source, {s: len(lists[s]) for s in SPLITS}, summary["patches"]["left_out"],
                        time.perf_counter() - started)


__all__ = ["SplitError", "SplitSummary", "RuleError", "run_split", "read_coco", "coco_assign",
           "apply_subsets", "limit_sample"]
