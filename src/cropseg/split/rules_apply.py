"""Assigning patches to splits with validated rules (:mod:`cropseg.split.rules`).

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

A rule that reads a column the per-patch table lacks, or a reached ``assert_none``, is a
:class:`RuleError` (naming the rule and, for ``assert_none``, the patches).
"""

from __future__ import annotations

import math
import zlib
from fractions import Fraction

import numpy as np
import pandas as pd

from .rules import REMAINDER, UNMATCHED, Filter, GroupKey, Rule, RuleError, RuleSet, Share, Stratum


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
