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

This module holds what a validated file *is*: the rule types, the constants, and :class:`RuleError`,
which names the rule's location (``rules[1].rules[0]``) and, where relevant, the patch.
:mod:`cropseg.split.rules_schema` reads a file into these types, listing every problem before any
patch is assigned; :mod:`cropseg.split.rules_apply` assigns patches with them, and its docstring
gives the rounding, randomness and stratification rules. The schema (pydantic) and the assignment
(numpy, pandas) change for different reasons, so each has its own module.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

SPLITS = ("train", "val", "test")
FILTER_KEYS = ("year", "tile", "patch_x", "patch_y", "path")
OUTCOME_KEYS = ("target", "rules", "assert_none")
RULE_KEYS = FILTER_KEYS + OUTCOME_KEYS + ("stratify_on", "group_by")
RANGE_KEYS = ("min", "max", "in")
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
