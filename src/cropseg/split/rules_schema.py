"""Reading a split-rules file (:mod:`cropseg.split.rules`) into a validated :class:`RuleSet`.

The whole file is validated before any patch is assigned, by pydantic models (one per mapping of
the file, as ``params.yaml`` is) whose errors :mod:`cropseg.core.validation` locates. Every problem
(unknown key, a rule with no or two outcomes, fractions above 1, an unknown target ...) comes back
at once in one :class:`RuleError`, each at its location (``rules[1].rules[0]``), so a preset is
fixed in one pass rather than one error per run. Fractions are read exactly (``0.1`` is 1/10), so
the rounding of :mod:`cropseg.split.rules_apply` does not depend on binary floats.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from ..core.validation import bracketed, error_items, located
from .rules import (DEFAULT_BINS, FILTER_KEYS, OUTCOME_KEYS, RANGE_KEYS, SPLITS, Filter, GroupKey, Rule, RuleError,
                    RuleSet, Share, Stratum)

_INT_FILTERS = ("year", "patch_x", "patch_y")
_TILE = re.compile(r"^\d{2}[C-X][A-Z]{2}$")


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
