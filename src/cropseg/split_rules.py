"""Split rules: which patch goes to train, val or test, declared in a YAML preset.

A rules file (``configs/split_rules/NAME.yaml``) has one key, ``rules:``, a list of rules. Each
rule may filter on the patch's ``year``, ``tile``, ``patch_x``, ``patch_y`` and ``path`` and then
sets exactly one outcome:

``target: NAME``
    every patch reaching the rule goes to split ``NAME`` (``train``, ``val`` or ``test``).
``target: [{target: NAME, split: FRACTION}, ...]``
    a seeded random split of the patches reaching the rule. Entries without ``split`` share what
    the others leave evenly; when every entry has a fraction and they sum to less than 1, the rest
    is left out. ``count: N`` instead of ``split`` asks for N patches (all entries then use
    ``count``; if fewer patches reach the rule, the counts are scaled down by the same rounding).
    The rule may add ``stratify_on: [{column: elevation_mean, bins: 6}, ...]``: patches are
    grouped into strata by binned columns of the per-patch table and each stratum is split alone.
    Or it may add ``group_by: [tile, {column: patch_x, size: 10}, ...]``: the random split then
    draws whole *groups* (patches with equal values of the columns; ``size`` cuts a numeric
    column into blocks ``value // size``), fractions and counts are of groups, and every patch of
    a group lands in the same split: a spatial hold-out (whole tiles, or whole blocks of a
    tile's 30 x 30 patch grid).
``rules: [...]``
    nested rules, applied to the patches that pass this rule's filters. A patch reaching a nested
    list that no nested rule matches is left out (``rules: []`` leaves out everything it matches).
``assert_none: true``
    an error if any patch reaches the rule: a guard that earlier rules caught everything.

A filter value is a value, a list of values (any of them), or ``{min, max, in}`` (inclusive
bounds and a list, all given conditions must hold). ``path`` is the path under ``data/netcdf``
(``2019/31TCG/2019_31TCG_patch_13_11.nc``); a path value without ``/`` is compared to the file
name. The first matching rule wins; patches no rule matches are left out and counted.

**Rounding.** A random split of ``n`` patches with fractions ``f_i`` (exact decimals) gives each
target ``floor(n * f_i)`` and hands the ``round_half_up(n * sum f) - sum floor(n * f_i)`` left
over patches to the largest remainders ``n * f_i - floor(n * f_i)`` (ties: earlier entry first).
Then, when there are at least as many patches to give out as targets with a nonzero fraction,
every such target with no patch takes one from the target with the most (ties: later entry).
80/10/10 of 8 patches is 6/1/1; of 10, 8/1/1; of 2, 2/0/0.

**Randomness.** Each rule draws from its own generator seeded by ``(seed, crc32(location))``,
over its patches sorted by path: the same seed and data give the same split, and editing one rule
never reshuffles the others.

**Stratification.** Per ``stratify_on`` column, among the patches reaching the rule: numeric
columns with more distinct values than ``bins`` are cut into ``bins`` quantile bins of equal size
(by rank, ties broken by path), other columns use their values as categories; missing values
(e.g. no DEM) form their own stratum, ordered last. Strata are the combinations of bins, ordered
by bin. A stratum smaller than ``max(targets, ceil(1 / smallest fraction))`` patches cannot give
every split a patch, so it is merged with its smaller neighbour (in stratum order) until all are
large enough or one remains. Each stratum is then split with the rounding above, so every split
gets a patch of every stratum.

Every problem in the file (unknown key, a rule with no or two outcomes, fractions above 1, an
unknown target, a stratification on an unknown column, a reached ``assert_none`` ...) is an
:class:`RuleError` naming the rule's location, e.g. ``rules[1].rules[0]``, and where relevant
the patch. The whole file is validated before any patch is assigned.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

SPLITS = ("train", "val", "test")
FILTER_KEYS = ("year", "tile", "patch_x", "patch_y", "path")
OUTCOME_KEYS = ("target", "rules", "assert_none")
RULE_KEYS = FILTER_KEYS + OUTCOME_KEYS + ("stratify_on", "group_by")
RANGE_KEYS = ("min", "max", "in")
_INT_FILTERS = ("year", "patch_x", "patch_y")
_TILE = re.compile(r"^\d{2}[C-X][A-Z]{2}$")
DEFAULT_BINS = 4
#: Reasons a patch is left out by the rules.
UNMATCHED = "unmatched"
REMAINDER = "remainder"


class RuleError(ValueError):
    """A rules file is invalid, or a guard fired; lists every problem with its rule location."""

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {where}: {what}" for where, what in problems)
        super().__init__(f"{source}: {len(problems)} problem(s) in the split rules:\n{lines}")

    def __reduce__(self):
        # Exception pickles only the message; a worker's error must come back whole
        return type(self), (self.source, self.problems)


@dataclass(frozen=True)
class Filter:
    """One filter: ``values`` (any of), ``low``/``high`` (inclusive), all given conditions hold."""

    column: str
    values: tuple | None = None
    low: Any = None
    high: Any = None


@dataclass(frozen=True)
class Share:
    """One entry of a random split: a target and its exact fraction or count (None: remainder)."""

    target: str
    fraction: Fraction | None = None
    count: int | None = None


@dataclass(frozen=True)
class Stratum:
    column: str
    bins: int = DEFAULT_BINS


@dataclass(frozen=True)
class GroupKey:
    """One part of a group's key: a column's value, or its block ``value // size``."""

    column: str
    size: int | None = None


@dataclass(frozen=True)
class Rule:
    location: str
    filters: tuple[Filter, ...] = ()
    target: str | None = None
    shares: tuple[Share, ...] | None = None
    rules: tuple["Rule", ...] | None = None
    assert_none: bool = False
    stratify_on: tuple[Stratum, ...] = ()
    group_by: tuple[GroupKey, ...] = ()


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    source: str = "<rules>"

    def walk(self):
        """Every rule, depth first, in file order."""
        stack = list(reversed(self.rules))
        while stack:
            rule = stack.pop()
            yield rule
            stack.extend(reversed(rule.rules or ()))

    def columns(self) -> set[str]:
        """Columns of the per-patch table the rules read."""
        used = set()
        for rule in self.walk():
            used.update(f.column for f in rule.filters)
            used.update(s.column for s in rule.stratify_on)
            used.update(g.column for g in rule.group_by)
        return used


# --------------------------------------------------------------------------- parsing


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: Any) -> Fraction | None:
    """Exact fraction of a YAML number (0.1 is 1/10, not the nearest binary float)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)


class _Parser:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[tuple[str, str]] = []

    def error(self, where: str, what: str) -> None:
        self.problems.append((where, what))

    def scalar(self, column: str, value: Any, where: str) -> bool:
        if column in _INT_FILTERS:
            if not _is_int(value):
                self.error(where, f"{column} must be an integer, got {value!r}")
                return False
        elif not isinstance(value, str):
            self.error(where, f"{column} must be a string, got {value!r}")
            return False
        elif column == "tile" and not _TILE.match(value):
            self.error(where, f"tile {value!r} is not an MGRS tile name like '31TCG'")
            return False
        return True

    def filter(self, column: str, raw: Any, where: str) -> Filter | None:
        if isinstance(raw, list):
            if not raw:
                self.error(where, "empty list matches no patch")
                return None
            ok = [self.scalar(column, v, f"{where}[{i}]") for i, v in enumerate(raw)]
            return Filter(column, values=tuple(raw)) if all(ok) else None
        if isinstance(raw, dict):
            unknown = [k for k in raw if k not in RANGE_KEYS]
            for key in unknown:
                self.error(where, f"unknown key {key!r} in a range (expected {', '.join(RANGE_KEYS)})")
            if not raw:
                self.error(where, "empty range: give min, max and/or in")
            if unknown or not raw:
                return None
            ok = all(self.scalar(column, raw[k], f"{where}.{k}") for k in ("min", "max") if k in raw)
            values = None
            if "in" in raw:
                inner = self.filter(column, raw["in"], f"{where}.in") if isinstance(raw["in"], list) else None
                if not isinstance(raw["in"], list):
                    self.error(f"{where}.in", f"expected a list, got {raw['in']!r}")
                ok = ok and inner is not None
                values = inner.values if inner is not None else None
            if ok and "min" in raw and "max" in raw and raw["min"] > raw["max"]:
                self.error(where, f"min {raw['min']!r} is above max {raw['max']!r}")
                ok = False
            return Filter(column, values=values, low=raw.get("min"), high=raw.get("max")) if ok else None
        return Filter(column, values=(raw,)) if self.scalar(column, raw, where) else None

    def target_name(self, value: Any, where: str) -> bool:
        if value not in SPLITS:
            self.error(where, f"unknown target {value!r} (expected one of {', '.join(SPLITS)})")
            return False
        return True

    def shares(self, raw: list, where: str) -> tuple[Share, ...] | None:
        if not raw:
            self.error(where, "empty list of targets")
            return None
        shares, ok = [], True
        for i, entry in enumerate(raw):
            at = f"{where}[{i}]"
            if not isinstance(entry, dict):
                self.error(at, f"expected {{target: NAME, split: FRACTION}}, got {entry!r}")
                ok = False
                continue
            for key in entry:
                if key not in ("target", "split", "count"):
                    self.error(at, f"unknown key {key!r} (expected target, split or count)")
                    ok = False
            if "target" not in entry:
                self.error(at, "missing 'target'")
                ok = False
                continue
            ok = self.target_name(entry["target"], f"{at}.target") and ok
            if "split" in entry and "count" in entry:
                self.error(at, "give either split (a fraction) or count, not both")
                ok = False
                continue
            fraction = count = None
            if "split" in entry:
                fraction = _fraction(entry["split"])
                if fraction is None or not 0 <= fraction <= 1:
                    self.error(f"{at}.split", f"expected a fraction between 0 and 1, got {entry['split']!r}")
                    ok = False
            if "count" in entry:
                count = entry["count"]
                if not _is_int(count) or count < 0:
                    self.error(f"{at}.count", f"expected a number of patches >= 0, got {count!r}")
                    ok = False
            shares.append(Share(entry["target"], fraction, count))
        if not ok:
            return None
        names = [s.target for s in shares]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            self.error(where, f"target(s) {', '.join(duplicates)} listed twice")
            return None
        counted = [s.count is not None for s in shares]
        if any(counted):
            if not all(counted):
                self.error(where, "either every entry has a count or none (do not mix count with split)")
                return None
            return tuple(shares)
        given = sum((s.fraction for s in shares if s.fraction is not None), Fraction(0))
        missing = [s for s in shares if s.fraction is None]
        if given > 1:
            self.error(where, f"fractions add up to {float(given):g}, above 1")
            return None
        if missing:
            if given == 1:
                self.error(where, f"fractions already add up to 1: nothing left for "
                                  f"{', '.join(s.target for s in missing)}")
                return None
            each = (1 - given) / len(missing)
            shares = [s if s.fraction is not None else Share(s.target, each) for s in shares]
        return tuple(shares)

    def strata(self, raw: Any, where: str) -> tuple[Stratum, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.error(where, f"expected a non-empty list of {{column: NAME, bins: N}}, got {raw!r}")
            return None
        strata, ok = [], True
        for i, entry in enumerate(raw):
            at = f"{where}[{i}]"
            if isinstance(entry, str):
                entry = {"column": entry}
            if not isinstance(entry, dict):
                self.error(at, f"expected {{column: NAME, bins: N}}, got {entry!r}")
                ok = False
                continue
            for key in entry:
                if key not in ("column", "bins"):
                    self.error(at, f"unknown key {key!r} (expected column, bins)")
                    ok = False
            column, bins = entry.get("column"), entry.get("bins", DEFAULT_BINS)
            if not isinstance(column, str) or not column:
                self.error(at, f"'column' must name a column of the per-patch table, got {column!r}")
                ok = False
            if not _is_int(bins) or bins < 1:
                self.error(f"{at}.bins", f"expected a number of bins >= 1, got {bins!r}")
                ok = False
            if ok:
                strata.append(Stratum(column, bins))
        return tuple(strata) if ok else None

    def groups(self, raw: Any, where: str) -> tuple[GroupKey, ...] | None:
        if not isinstance(raw, list) or not raw:
            self.error(where, f"expected a non-empty list of columns or {{column: NAME, size: N}}, got {raw!r}")
            return None
        keys, ok = [], True
        for i, entry in enumerate(raw):
            at = f"{where}[{i}]"
            if isinstance(entry, str):
                entry = {"column": entry}
            if not isinstance(entry, dict) or set(entry) - {"column", "size"}:
                self.error(at, f"expected a column name or {{column: NAME, size: N}}, got {entry!r}")
                ok = False
                continue
            column, size = entry.get("column"), entry.get("size")
            if not isinstance(column, str) or not column:
                self.error(at, f"'column' must name a column of the per-patch table, got {column!r}")
                ok = False
            if size is not None and (not _is_int(size) or size < 1):
                self.error(f"{at}.size", f"expected a block size >= 1, got {size!r}")
                ok = False
            if ok:
                keys.append(GroupKey(column, size))
        return tuple(keys) if ok else None

    def rule(self, raw: Any, where: str) -> Rule | None:
        if not isinstance(raw, dict):
            self.error(where, f"a rule must be a mapping, got {raw!r}")
            return None
        problems_before = len(self.problems)
        for key in raw:
            if key not in RULE_KEYS:
                self.error(where, f"unknown key {key!r} (a rule filters on {', '.join(FILTER_KEYS)} and sets "
                                  f"one of {', '.join(OUTCOME_KEYS)}; a random split may add stratify_on)")
        outcomes = [k for k in OUTCOME_KEYS if k in raw]
        if not outcomes:
            self.error(where, "no outcome: set one of target, rules, assert_none")
        elif len(outcomes) > 1:
            self.error(where, f"two outcomes ({', '.join(outcomes)}): set exactly one of target, rules, assert_none")
        filters = [self.filter(k, raw[k], f"{where}.{k}") for k in FILTER_KEYS if k in raw]
        target = shares = rules = None
        assert_none = False
        strata: tuple[Stratum, ...] = ()
        if len(outcomes) == 1:
            outcome = outcomes[0]
            value = raw[outcome]
            if outcome == "target":
                if isinstance(value, list):
                    shares = self.shares(value, f"{where}.target")
                else:
                    target = value if self.target_name(value, f"{where}.target") else None
            elif outcome == "rules":
                rules = self.rules(value, f"{where}.rules")
            else:
                if value is not True:
                    self.error(f"{where}.assert_none", f"must be true, got {value!r} (remove the rule instead)")
                assert_none = True
        if "stratify_on" in raw:
            if not (len(outcomes) == 1 and outcomes[0] == "target" and isinstance(raw["target"], list)):
                self.error(f"{where}.stratify_on", "only a random split (target: [...]) can be stratified")
            else:
                strata = self.strata(raw["stratify_on"], f"{where}.stratify_on") or ()
        group_by: tuple[GroupKey, ...] = ()
        if "group_by" in raw:
            if not (len(outcomes) == 1 and outcomes[0] == "target" and isinstance(raw["target"], list)):
                self.error(f"{where}.group_by", "only a random split (target: [...]) can draw whole groups")
            elif "stratify_on" in raw:
                self.error(f"{where}.group_by", "a random split is either grouped or stratified, not both")
            else:
                group_by = self.groups(raw["group_by"], f"{where}.group_by") or ()
        if len(self.problems) > problems_before:
            return None
        return Rule(where, tuple(filters), target, shares, rules, assert_none, strata, group_by)

    def rules(self, raw: Any, where: str) -> tuple[Rule, ...] | None:
        if not isinstance(raw, list):
            self.error(where, f"expected a list of rules, got {raw!r}")
            return None
        parsed = [self.rule(item, f"{where}[{i}]") for i, item in enumerate(raw)]
        return None if any(r is None for r in parsed) else tuple(parsed)


def parse_rules(raw: Any, source: str = "<rules>") -> RuleSet:
    """Validate a loaded rules document; raise :class:`RuleError` listing every problem."""
    parser = _Parser(source)
    if not isinstance(raw, dict):
        raise RuleError(source, [("(file)", f"expected a mapping with key 'rules', got {type(raw).__name__}")])
    for key in raw:
        if key != "rules":
            parser.error("(file)", f"unknown key {key!r} (a rules file has only 'rules')")
    if "rules" not in raw:
        parser.error("(file)", "key 'rules' missing")
        raise RuleError(source, parser.problems)
    rules = parser.rules(raw["rules"], "rules")
    if parser.problems or rules is None:
        raise RuleError(source, parser.problems)
    return RuleSet(rules, source)


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules YAML file."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise RuleError(str(path), [("(file)", "file not found")]) from None
    except yaml.YAMLError as error:
        raise RuleError(str(path), [("(file)", f"not valid YAML: {error}")]) from None
    return parse_rules(raw, str(path))


# --------------------------------------------------------------------------- applying


def allocate(n: int, shares: tuple[Share, ...]) -> list[int]:
    """Patches per share out of ``n`` (see the module docstring for the rounding rule)."""
    if shares and shares[0].count is not None:
        wanted = [s.count for s in shares]
        total = sum(wanted)
        if total <= n:
            return wanted
        quotas = [Fraction(n * w, total) for w in wanted]
        give = n
    else:
        quotas = [n * s.fraction for s in shares]
        give = n if sum(s.fraction for s in shares) == 1 else math.floor(sum(quotas) + Fraction(1, 2))
    counts = [math.floor(q) for q in quotas]
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in order[: give - sum(counts)]:
        counts[i] += 1
    nonzero = [i for i, q in enumerate(quotas) if q > 0]
    if give >= len(nonzero):
        for i in nonzero:
            if counts[i] == 0:
                donor = max(range(len(counts)), key=lambda j: (counts[j], j))
                counts[donor] -= 1
                counts[i] += 1
    return counts


def min_stratum_size(shares: tuple[Share, ...]) -> int:
    """Smallest stratum that gives every nonzero fraction at least one patch on average."""
    nonzero = [s.fraction for s in shares if s.fraction > 0]
    if not nonzero:
        return 1
    return max(len(nonzero), math.ceil(1 / min(nonzero)))


def _bin_column(values: pd.Series, bins: int) -> list[tuple]:
    """Sort key of each row's bin: (0, bin) for values, (1, ) for missing."""
    missing = values.isna().to_numpy()
    present = values[~missing]
    keys: list[tuple] = [(1,)] * len(values)
    if pd.api.types.is_numeric_dtype(values) and present.nunique() > bins:
        ranks = present.rank(method="first").to_numpy() - 1  # rows are sorted by path: ties by path
        labels = np.floor(ranks * bins / len(present)).astype(int)
    else:
        categories = sorted(present.unique().tolist())
        lookup = {c: i for i, c in enumerate(categories)}
        labels = np.array([lookup[v] for v in present], dtype=int)
    for position, label in zip(np.flatnonzero(~missing), labels):
        keys[position] = (0, int(label))
    return keys


def strata_of(table: pd.DataFrame, strata: tuple[Stratum, ...], minimum: int) -> list[np.ndarray]:
    """Row positions of each stratum (in stratum order), small strata merged with neighbours."""
    if not strata or len(table) == 0:
        return [np.arange(len(table))]
    columns = [_bin_column(table[s.column], s.bins) for s in strata]
    keys = list(zip(*columns))
    groups: dict[tuple, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(key, []).append(position)
    ordered = [groups[k] for k in sorted(groups)]
    while len(ordered) > 1:
        sizes = [len(g) for g in ordered]
        smallest = min(range(len(ordered)), key=lambda i: (sizes[i], i))
        if sizes[smallest] >= minimum:
            break
        if smallest == 0:
            other = 1
        elif smallest == len(ordered) - 1:
            other = smallest - 1
        else:
            other = smallest - 1 if sizes[smallest - 1] <= sizes[smallest + 1] else smallest + 1
        low, high = sorted((smallest, other))
        ordered[low] = sorted(ordered[low] + ordered[high])
        del ordered[high]
    return [np.asarray(g, dtype=int) for g in ordered]


def group_keys(table: pd.DataFrame, group_by: tuple[GroupKey, ...]) -> list[tuple]:
    """Each row's group: per key ``(0, value)`` (or ``(0, value // size)``), ``(1,)`` when missing; sortable."""
    parts = []
    for key in group_by:
        column = table[key.column]
        numeric = pd.api.types.is_numeric_dtype(column)
        values = []
        for v in column:
            if pd.isna(v):
                values.append((1,))
            elif key.size is not None:
                values.append((0, int(v // key.size)))
            else:
                values.append((0, v.item() if numeric and hasattr(v, "item") else (v if numeric else str(v))))
        parts.append(values)
    return list(zip(*parts))


def _rng(seed: int, location: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(location.encode())])


def _matches(flt: Filter, table: pd.DataFrame) -> np.ndarray:
    column = table[flt.column]
    if flt.column == "path":
        names = column.map(lambda p: p.rsplit("/", 1)[-1])
    mask = np.ones(len(table), dtype=bool)
    if flt.values is not None:
        if flt.column == "path":
            full = [v for v in flt.values if "/" in v]
            bare = [v for v in flt.values if "/" not in v]
            mask &= (column.isin(full) | names.isin(bare)).to_numpy()
        else:
            mask &= column.isin(list(flt.values)).to_numpy()
    if flt.low is not None:
        mask &= (column >= flt.low).to_numpy()
    if flt.high is not None:
        mask &= (column <= flt.high).to_numpy()
    return mask


def check_columns(ruleset: RuleSet, table: pd.DataFrame) -> None:
    """Every column a rule reads must be in the table (checked before any assignment)."""
    problems = []
    for rule in ruleset.walk():
        for i, stratum in enumerate(rule.stratify_on):
            if stratum.column not in table.columns:
                problems.append((f"{rule.location}.stratify_on[{i}]",
                                 f"unknown column {stratum.column!r} (the per-patch table has: "
                                 f"{', '.join(table.columns)})"))
        for i, key in enumerate(rule.group_by):
            if key.column not in table.columns:
                problems.append((f"{rule.location}.group_by[{i}]",
                                 f"unknown column {key.column!r} (the per-patch table has: "
                                 f"{', '.join(table.columns)})"))
            elif key.size is not None and not pd.api.types.is_numeric_dtype(table[key.column]):
                problems.append((f"{rule.location}.group_by[{i}]",
                                 f"column {key.column!r} is not numeric: it cannot be cut into blocks of {key.size}"))
        for flt in rule.filters:
            if flt.column not in table.columns:
                problems.append((f"{rule.location}.{flt.column}", f"the table has no column {flt.column!r}"))
    if problems:
        raise RuleError(ruleset.source, problems)


def _describe(table: pd.DataFrame, positions: np.ndarray, limit: int = 5) -> str:
    paths = table["path"].iloc[positions].tolist()
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def apply_rules(ruleset: RuleSet, table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Assign each row of ``table`` (columns ``path``, ``year``, ``tile``, ``patch_x``, ``patch_y``
    and any stratification column) to a split.

    Returns a frame aligned with ``table`` with columns ``split`` (``train``/``val``/``test`` or
    ``""``), ``rule`` (location of the deciding rule, ``""`` when none matched) and ``reason``
    (``""``, :data:`UNMATCHED` or :data:`REMAINDER`). Raises :class:`RuleError` on an unknown column
    or a reached ``assert_none`` (naming the rule and the patches).
    """
    check_columns(ruleset, table)
    order = np.argsort(table["path"].to_numpy(), kind="stable")
    sorted_table = table.iloc[order].reset_index(drop=True)
    n = len(sorted_table)
    split = np.array([""] * n, dtype=object)
    rule_at = np.array([""] * n, dtype=object)
    reason = np.array([UNMATCHED] * n, dtype=object)

    def run(rules: tuple[Rule, ...], reaching: np.ndarray) -> None:
        remaining = reaching.copy()
        for rule in rules:
            matched = remaining.copy()
            for flt in rule.filters:
                matched &= _matches(flt, sorted_table)
            remaining &= ~matched
            positions = np.flatnonzero(matched)
            if rule.assert_none:
                if positions.size:
                    raise RuleError(ruleset.source, [(rule.location, f"assert_none reached by {positions.size} "
                                                      f"patch(es): {_describe(sorted_table, positions)}")])
            elif rule.rules is not None:
                run(rule.rules, matched)
            elif rule.target is not None:
                split[positions] = rule.target
                rule_at[positions] = rule.location
                reason[positions] = ""
            else:
                _random_split(rule, positions)

    def _random_split(rule: Rule, positions: np.ndarray) -> None:
        rule_at[positions] = rule.location
        reason[positions] = REMAINDER
        if positions.size == 0:
            return
        rng = _rng(seed, rule.location)
        shares = rule.shares
        if rule.stratify_on and shares[0].count is not None:
            # counts become fractions of the patches reaching the rule, then split per stratum
            totals = allocate(positions.size, shares)
            shares = tuple(Share(s.target, Fraction(c, positions.size)) for s, c in zip(shares, totals))
        if rule.group_by:
            _grouped_split(rule, positions, shares, rng)
            return
        minimum = min_stratum_size(shares) if rule.stratify_on else 1
        for stratum in strata_of(sorted_table.iloc[positions], rule.stratify_on, minimum):
            members = positions[stratum][rng.permutation(stratum.size)]
            start = 0
            for share, count in zip(shares, allocate(members.size, shares)):
                chosen = members[start:start + count]
                split[chosen] = share.target
                reason[chosen] = ""
                start += count

    def _grouped_split(rule: Rule, positions: np.ndarray, shares: tuple[Share, ...],
                       rng: np.random.Generator) -> None:
        keys = group_keys(sorted_table.iloc[positions], rule.group_by)
        ordered = sorted(set(keys))  # groups in key order, then a seeded permutation of whole groups
        members: dict[tuple, list[int]] = {}
        for position, key in zip(positions, keys):
            members.setdefault(key, []).append(int(position))
        drawn = [ordered[i] for i in rng.permutation(len(ordered))]
        start = 0
        for share, count in zip(shares, allocate(len(drawn), shares)):
            for key in drawn[start:start + count]:
                split[members[key]] = share.target
                reason[members[key]] = ""
            start += count

    run(ruleset.rules, np.ones(n, dtype=bool))
    result = pd.DataFrame({"split": split, "rule": rule_at, "reason": reason})
    unsorted = np.empty(n, dtype=int)
    unsorted[order] = np.arange(n)
    result = result.iloc[unsorted].reset_index(drop=True)
    result.index = table.index
    return result
