"""Which stages every point of a grid shares: run them once, before the grid, and let the points pull them.

A stage is shared when neither it nor any stage upstream of it reads a parameter whose value
differs between the points (its ``params:`` in ``dvc.yaml``, a section name covering every key
under it); the points then run it on identical params and inputs, and DVC's run cache, keyed by
exactly those, hands each point the one result (``dvc exp run --pull`` restores a stage from the
run cache of the DVC remote instead of running it). The dependency graph comes from ``dvc.yaml``
itself: a stage depends on another when one of its ``deps`` is, or lies under, one of the other's
outputs (``outs``, ``metrics``, ``plots``).
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


def shared_stages(stages: Mapping[str, PipelineStage], points: Sequence[Point]) -> list[str]:
    """The stages every point runs on the same params and inputs, in ``dvc.yaml`` order.

    Only stages some point runs count (its targets and their upstream; no target: all stages).
    """
    parents = upstream(stages)
    for point in points:
        unknown = [t for t in point.targets if t not in stages]
        if unknown:
            raise ValueError(f"point {point.name or dict(point.overrides)}: no stage {unknown[0]!r} in dvc.yaml "
                             f"(stages: {', '.join(stages)})")
    needed = set().union(*(_closure(p.targets or list(stages), parents) for p in points)) if points else set()
    varying = varying_keys(points)
    affected = {name for name, stage in stages.items() if any(reads(stage, key) for key in varying)}
    return [name for name in stages if name in needed and not (_closure([name], parents) & affected)]
