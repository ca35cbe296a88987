"""Which stages every point of a grid shares: run them once, before the grid, and let the points pull them.

A stage is shared when neither it nor any stage upstream of it reads a parameter whose value
differs between the points (its ``params:`` in ``dvc.yaml``, a section name covering every key
under it); the points then run it on identical params and inputs, and DVC's run cache, keyed by
exactly those, hands each point the one result (``dvc exp run --pull`` restores a stage from the
run cache of the DVC remote instead of running it). The dependency graph comes from ``dvc.yaml``
itself: a stage depends on another when one of its ``deps`` is, or lies under, one of the other's
outputs (``outs``, ``metrics``, ``plots``).

The same rule, applied to groups of points instead of the whole grid, gives the shared *steps*
(:func:`shared_steps`): a grid of replicates varies the data seed, so no data stage is shared by
every point, but the points of one replicate share its fetch, medians and split. Each step is the
stages that split the points into the same groups (the points that agree on every varied key those
stages read), run once per group of two or more points; coarser steps (fewer groups) run first,
since a stage's groups are never finer than those of the stages downstream of it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from .points import Point


@dataclass(frozen=True)
class PipelineStage:
    """What the sharing rule needs of one ``dvc.yaml`` stage."""

    name: str
    params: tuple[str, ...]
    deps: tuple[str, ...]
    outs: tuple[str, ...]


def read_pipeline(dvc_yaml: Path) -> dict[str, PipelineStage]:
    """The stages of ``dvc_yaml`` (params of ``params.yaml`` only; other params files are left out)."""
    try:
        stages = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages") or {}
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"{dvc_yaml}: cannot read the pipeline ({error})") from error
    result = {}
    for name, stage in stages.items():
        if "foreach" in stage or "matrix" in stage:
            raise ValueError(f"{dvc_yaml}: stage {name} uses foreach/matrix, which the sharing rule does not expand")
        params: list[str] = []
        for entry in stage.get("params") or []:
            if isinstance(entry, str):
                params.append(entry)
            elif isinstance(entry, dict):
                for file, keys in entry.items():
                    if Path(file).name == "params.yaml":
                        params.extend(keys or [])
        outs = [_path(o) for kind in ("outs", "metrics", "plots") for o in stage.get(kind) or []]
        result[name] = PipelineStage(name, tuple(params), tuple(_path(d) for d in stage.get("deps") or []),
                                     tuple(outs))
    return result


def _path(entry: str | dict) -> str:
    return (next(iter(entry)) if isinstance(entry, dict) else entry).rstrip("/")


def upstream(stages: Mapping[str, PipelineStage]) -> dict[str, set[str]]:
    """Each stage's direct upstream stages (whose outputs it depends on)."""
    def under(dep: str, out: str) -> bool:
        return dep == out or dep.startswith(out + "/") or out.startswith(dep + "/")

    return {name: {other.name for other in stages.values() if other.name != name
                   and any(under(dep, out) for dep in stage.deps for out in other.outs)}
            for name, stage in stages.items()}


def _closure(names: Sequence[str], parents: Mapping[str, set[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(parents[name])
    return seen


def varying_keys(points: Sequence[Point]) -> set[str]:
    """Override keys whose value is not the same in every point (missing somewhere counts as differing)."""
    keys = {key for point in points for key in point.overrides}
    return {key for key in keys if len({point.overrides.get(key) for point in points}) > 1}


def common_overrides(points: Sequence[Point]) -> dict[str, str]:
    """The overrides every point has with the same value, in the first point's order."""
    varying = varying_keys(points)
    return {key: value for key, value in points[0].overrides.items() if key not in varying} if points else {}


def reads(stage: PipelineStage, key: str) -> bool:
    """Whether ``stage`` reads the param ``key`` (``train`` covers ``train.seed``, and ``train.seed`` is read by ``train``)."""
    return any(key == p or key.startswith(p + ".") or p.startswith(key + ".") for p in stage.params)


def _needed(stages: Mapping[str, PipelineStage], points: Sequence[Point],
            parents: Mapping[str, set[str]]) -> set[str]:
    """The stages some point runs (its targets and their upstream; no target: all), after checking the targets."""
    for point in points:
        unknown = [t for t in point.targets if t not in stages]
        if unknown:
            raise ValueError(f"point {point.name or dict(point.overrides)}: no stage {unknown[0]!r} in dvc.yaml "
                             f"(stages: {', '.join(stages)})")
    return set().union(*(_closure(p.targets or list(stages), parents) for p in points)) if points else set()


@dataclass(frozen=True)
class SharedStep:
    """Stages that groups of points run on the same params and inputs: one task per group, before the points.

    ``groups`` holds indices into the grid's points (each group two or more points; a point alone in
    its group runs the stages itself), ``keys`` the varied keys the stages read (empty: every point
    is in the one group)."""

    stages: tuple[str, ...]
    groups: tuple[tuple[int, ...], ...]
    keys: tuple[str, ...]


def shared_steps(stages: Mapping[str, PipelineStage], points: Sequence[Point]) -> list[SharedStep]:
    """The stages worth running once per group of points before the grid, coarsest groups first.

    A stage is grouped by the values the points give to the varied keys it or any upstream stage
    reads; stages with the same grouping form one step. Groupings where every point is alone are
    left out. Stages appear in ``dvc.yaml`` order within a step."""
    parents = upstream(stages)
    needed = _needed(stages, points, parents)
    varying = sorted(varying_keys(points))
    by_partition: dict[tuple[tuple[int, ...], ...], tuple[list[str], set[str]]] = {}
    for name in stages:
        if name not in needed:
            continue
        closure = _closure([name], parents)
        keys = [key for key in varying if any(reads(stages[other], key) for other in closure)]
        groups: dict[tuple, list[int]] = {}
        for index, point in enumerate(points):
            groups.setdefault(tuple(point.overrides.get(key) for key in keys), []).append(index)
        partition = tuple(tuple(group) for group in groups.values())
        names, read = by_partition.setdefault(partition, ([], set()))
        names.append(name)
        read.update(keys)
    steps = [SharedStep(tuple(names), tuple(g for g in partition if len(g) > 1), tuple(sorted(read)))
             for partition, (names, read) in by_partition.items() if any(len(g) > 1 for g in partition)]
    return sorted(steps, key=lambda step: _group_count(step, len(points)))  # stable: dvc.yaml order kept


def _group_count(step: SharedStep, n_points: int) -> int:
    """How many groups the step splits the grid into, the points alone in theirs counted too."""
    return len(step.groups) + n_points - sum(len(group) for group in step.groups)


def shared_stages(stages: Mapping[str, PipelineStage], points: Sequence[Point]) -> list[str]:
    """The stages every point runs on the same params and inputs (the step of one group), in ``dvc.yaml`` order."""
    return [name for step in shared_steps(stages, points)
            if len(step.groups) == 1 and len(step.groups[0]) == len(points) for name in step.stages]
