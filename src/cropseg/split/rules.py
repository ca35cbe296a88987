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
the patch. The whole file is validated before any patch is assigned, by pydantic models (one per
mapping of the file, as ``params.yaml`` is) whose errors :mod:`cropseg.core.validation` locates.
"""

from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..core.validation import bracketed, error_items, located

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
    """One ``stratify_on`` entry: a column of the per-patch table and its number of quantile bins."""

    column: str
    bins: int = DEFAULT_BINS


@dataclass(frozen=True)
class GroupKey:
    """One part of a group's key: a column's value, or its block ``value // size``."""

    column: str
    size: int | None = None


@dataclass(frozen=True)
class Rule:
    """One validated rule: its location (``rules[1].rules[0]``), filters and exactly one outcome.

    The outcome is ``target`` (one split), ``shares`` (a random split, optionally stratified or
    grouped), ``rules`` (nested rules) or ``assert_none``.
    """

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
    """A validated rules file: its top-level rules and where it came from (for error messages)."""

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


def _scalar(column: str, value: Any, *where: str | int) -> None:
    """Raise a located error unless ``value`` is a valid value of the filter ``column``."""
    if column in _INT_FILTERS:
        if not _is_int(value):
            raise located(f"{column} must be an integer, got {value!r}", *where)
    elif not isinstance(value, str):
        raise located(f"{column} must be a string, got {value!r}", *where)
    elif column == "tile" and not _TILE.match(value):
        raise located(f"tile {value!r} is not an MGRS tile name like '31TCG'", *where)


def _filter(column: str, raw: Any) -> Filter:
    """A filter value: a value, a list of values, or ``{min, max, in}``."""
    if isinstance(raw, list):
        if not raw:
            raise located("empty list matches no patch")
        for i, value in enumerate(raw):
            _scalar(column, value, i)
        return Filter(column, values=tuple(raw))
    if not isinstance(raw, dict):
        _scalar(column, raw)
        return Filter(column, values=(raw,))
    for key in raw:
        if key not in RANGE_KEYS:
            raise located(f"unknown key {key!r} in a range (expected {', '.join(RANGE_KEYS)})")
    if not raw:
        raise located("empty range: give min, max and/or in")
    for key in ("min", "max"):
        if key in raw:
            _scalar(column, raw[key], key)
    values = None
    if "in" in raw:
        if not isinstance(raw["in"], list):
            raise located(f"expected a list, got {raw['in']!r}", "in")
        try:
            values = _filter(column, raw["in"]).values
        except PydanticCustomError as error:
            raise located(error.context["message"], "in", *error.context["where"]) from None
    if "min" in raw and "max" in raw and raw["min"] > raw["max"]:
        raise located(f"min {raw['min']!r} is above max {raw['max']!r}")
    return Filter(column, values=values, low=raw.get("min"), high=raw.get("max"))


class _Entry(BaseModel):
    """A mapping of the rules file: unknown keys are errors; ``shape`` says what a non-mapping should be."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    shape: ClassVar[str] = "a mapping"
    bare: ClassVar[str | None] = None  # a plain string stands for {bare: string}

    @model_validator(mode="before")
    @classmethod
    def _mapping(cls, value: Any) -> Any:
        if cls.bare and isinstance(value, str):
            return {cls.bare: value}
        if not isinstance(value, dict):
            raise located(f"expected {cls.shape}, got {value!r}")
        return value


def _column(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise located(f"'column' must name a column of the per-patch table, got {value!r}")
    return value


def _target_name(value: Any) -> str:
    if value not in SPLITS:
        raise located(f"unknown target {value!r} (expected one of {', '.join(SPLITS)})")
    return value


class _ShareEntry(_Entry):
    shape: ClassVar[str] = "{target: NAME, split: FRACTION}"
    target: str
    split: Fraction | None = None
    count: int | None = None

    _target = field_validator("target", mode="before")(lambda value: _target_name(value))

    @field_validator("split", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Fraction:
        fraction = _fraction(value)
        if fraction is None or not 0 <= fraction <= 1:
            raise located(f"expected a fraction between 0 and 1, got {value!r}")
        return fraction

    @field_validator("count", mode="before")
    @classmethod
    def _count(cls, value: Any) -> int:
        if not _is_int(value) or value < 0:
            raise located(f"expected a number of patches >= 0, got {value!r}")
        return value

    @model_validator(mode="after")
    def _one_amount(self) -> "_ShareEntry":
        if self.split is not None and self.count is not None:
            raise located("give either split (a fraction) or count, not both")
        return self


class _StratumEntry(_Entry):
    shape: ClassVar[str] = "{column: NAME, bins: N}"
    bare: ClassVar[str] = "column"
    column: str
    bins: int = DEFAULT_BINS

    _column = field_validator("column", mode="before")(lambda value: _column(value))

    @field_validator("bins", mode="before")
    @classmethod
    def _bins(cls, value: Any) -> int:
        if not _is_int(value) or value < 1:
            raise located(f"expected a number of bins >= 1, got {value!r}")
        return value


class _GroupEntry(_Entry):
    shape: ClassVar[str] = "a column name or {column: NAME, size: N}"
    bare: ClassVar[str] = "column"
    column: str
    size: int | None = None

    _column = field_validator("column", mode="before")(lambda value: _column(value))

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int | None:
        if value is not None and (not _is_int(value) or value < 1):
            raise located(f"expected a block size >= 1, got {value!r}")
        return value


def _non_empty_list(value: Any, what: str) -> list:
    if not isinstance(value, list) or not value:
        raise located(f"expected a non-empty list of {what}, got {value!r}")
    return value


def _shares(entries: list[_ShareEntry]) -> tuple[Share, ...]:
    """Check a random split's entries together; entries without a fraction share the rest."""
    names = [e.target for e in entries]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise located(f"target(s) {', '.join(duplicates)} listed twice")
    shares = [Share(e.target, e.split, e.count) for e in entries]
    counted = [s.count is not None for s in shares]
    if any(counted):
        if not all(counted):
            raise located("either every entry has a count or none (do not mix count with split)")
        return tuple(shares)
    given = sum((s.fraction for s in shares if s.fraction is not None), Fraction(0))
    missing = [s for s in shares if s.fraction is None]
    if given > 1:
        raise located(f"fractions add up to {float(given):g}, above 1")
    if missing:
        if given == 1:
            raise located(f"fractions already add up to 1: nothing left for {', '.join(s.target for s in missing)}")
        each = (1 - given) / len(missing)
        shares = [s if s.fraction is not None else Share(s.target, each) for s in shares]
    return tuple(shares)


class _RuleEntry(_Entry):
    """One rule as written; both ``target`` forms read the key ``target`` (a name, or a list of shares)."""

    shape: ClassVar[str] = "a rule (a mapping)"
    year: Filter | None = None
    tile: Filter | None = None
    patch_x: Filter | None = None
    patch_y: Filter | None = None
    path: Filter | None = None
    target: str | None = Field(None, validation_alias="target")
    shares: list[_ShareEntry] | None = Field(None, validation_alias="target")
    rules: list["_RuleEntry"] | None = None
    assert_none: bool = False
    stratify_on: list[_StratumEntry] | None = None
    group_by: list[_GroupEntry] | None = None

    @field_validator(*FILTER_KEYS, mode="before")
    @classmethod
    def _filters(cls, value: Any, info: ValidationInfo) -> Filter:
        return _filter(info.field_name, value)

    @field_validator("target", mode="before")
    @classmethod
    def _name(cls, value: Any) -> str | None:
        return None if isinstance(value, list) else _target_name(value)

    @field_validator("shares", mode="before")
    @classmethod
    def _shares_given(cls, value: Any) -> list | None:
        if isinstance(value, list) and not value:
            raise located("empty list of targets")
        return value if isinstance(value, list) else None

    _checked_shares = field_validator("shares")(lambda value: value and _shares(value))

    @field_validator("rules", mode="before")
    @classmethod
    def _rule_list(cls, value: Any) -> list:
        if not isinstance(value, list):
            raise located(f"expected a list of rules, got {value!r}")
        return value

    @field_validator("assert_none", mode="before")
    @classmethod
    def _true(cls, value: Any) -> bool:
        if value is not True:
            raise located(f"must be true, got {value!r} (remove the rule instead)")
        return value

    _strata = field_validator("stratify_on", mode="before")(
        lambda value: _non_empty_list(value, "{column: NAME, bins: N}"))
    _groups = field_validator("group_by", mode="before")(
        lambda value: _non_empty_list(value, "columns or {column: NAME, size: N}"))

    @model_validator(mode="after")
    def _one_outcome(self) -> "_RuleEntry":
        given = self.model_fields_set
        outcomes = [k for k, field in zip(OUTCOME_KEYS, ("target", "rules", "assert_none")) if field in given]
        if not outcomes:
            raise located("no outcome: set one of target, rules, assert_none")
        if len(outcomes) > 1:
            raise located(f"two outcomes ({', '.join(outcomes)}): set exactly one of target, rules, assert_none")
        random = self.shares is not None
        if self.stratify_on is not None and not random:
            raise located("only a random split (target: [...]) can be stratified", "stratify_on")
        if self.group_by is not None and not random:
            raise located("only a random split (target: [...]) can draw whole groups", "group_by")
        if self.group_by is not None and self.stratify_on is not None:
            raise located("a random split is either grouped or stratified, not both", "group_by")
        return self

    def to_rule(self, location: str) -> Rule:
        """The rule as :func:`apply_rules` runs it, at ``location`` (``rules[1].rules[0]``)."""
        rules = None if self.rules is None else tuple(
            r.to_rule(f"{location}.rules[{i}]") for i, r in enumerate(self.rules))
        return Rule(location, tuple(f for f in (getattr(self, k) for k in FILTER_KEYS) if f is not None),
                    self.target, self.shares, rules, self.assert_none,
                    tuple(Stratum(s.column, s.bins) for s in self.stratify_on or ()),
                    tuple(GroupKey(g.column, g.size) for g in self.group_by or ()))


class _RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    rules: list[_RuleEntry]

    _rule_list = field_validator("rules", mode="before")(lambda value: _RuleEntry._rule_list(value))


_UNKNOWN_KEY_HINTS = {
    "rules": f"(a rule filters on {', '.join(FILTER_KEYS)} and sets one of {', '.join(OUTCOME_KEYS)}; "
             f"a random split may add stratify_on)",
    "target": "(expected target, split or count)",
    "stratify_on": "(expected column, bins)",
    "group_by": "(expected column, size)",
}


def _unknown_key(loc: tuple) -> tuple[tuple, str]:
    """An unknown key is reported at the mapping holding it, with the keys that mapping accepts."""
    *parent, key = loc
    hint = _UNKNOWN_KEY_HINTS[parent[-2]] if len(parent) >= 2 else "(a rules file has only 'rules')"
    return tuple(parent), f"unknown key {key!r} {hint}"


def parse_rules(raw: Any, source: str = "<rules>") -> RuleSet:
    """Validate a loaded rules document; raise :class:`RuleError` listing every problem.

    Args:
        raw: the document as YAML loads it.
        source: what to call it in error messages (the file's path).

    Returns:
        The rules, each with its location.

    Raises:
        RuleError: the document is not a mapping with ``rules``, or anything in it is invalid
            (every problem, each at its location).
    """
    if not isinstance(raw, dict):
        raise RuleError(source, [("(file)", f"expected a mapping with key 'rules', got {type(raw).__name__}")])
    try:
        parsed = _RulesFile.model_validate(raw)
    except ValidationError as error:
        problems = [("(file)", "key 'rules' missing") if loc == ("rules",) and message == "Field required"
                    else (bracketed(loc), message) for loc, message in error_items(error, _unknown_key)]
        raise RuleError(source, problems) from None
    return RuleSet(tuple(r.to_rule(f"rules[{i}]") for i, r in enumerate(parsed.rules)), source)


def load_rules(path: str | Path) -> RuleSet:
    """Read and validate a rules YAML file.

    Raises:
        RuleError: the file is missing, is not YAML, or is invalid (see :func:`parse_rules`).
    """
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
    """Patches per share out of ``n`` (see the module docstring for the rounding rule).

    Args:
        n: patches (or groups) to share out.
        shares: all with a fraction (the parser has resolved remainder shares) or all with a
            count.

    Returns:
        Patches per share, in order; they add up to at most ``n``.
    """
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
    """Row positions of each stratum (in stratum order), small strata merged with neighbours.

    Args:
        table: the patches reaching the rule, sorted by path.
        strata: the rule's ``stratify_on`` columns; none gives one stratum of every row.
        minimum: the smallest stratum kept alone (:func:`min_stratum_size`).

    Returns:
        Positions into ``table``, one array per stratum, each sorted.
    """
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
    """Every column a rule reads must be in the table (checked before any assignment).

    Raises:
        RuleError: a filter, ``stratify_on`` or ``group_by`` column is not in ``table``, or a
            ``group_by`` column with a block ``size`` is not numeric (every such problem listed).
    """
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

    Args:
        ruleset: the validated rules.
        table: one row per patch (the per-patch table); its row order does not matter.
        seed: ``split.seed``; each rule draws from ``(seed, crc32(location))``.

    Returns:
        A frame aligned with ``table`` with columns ``split`` (``train``/``val``/``test`` or
        ``""``), ``rule`` (location of the deciding rule, ``""`` when none matched) and ``reason``
        (``""``, :data:`UNMATCHED` or :data:`REMAINDER`).

    Raises:
        RuleError: a rule reads a column the table lacks (:func:`check_columns`), or an
            ``assert_none`` rule is reached (naming the rule and the patches).
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
