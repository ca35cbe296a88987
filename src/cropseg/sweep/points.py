"""A grid as a list of points: one DVC experiment each, its ``-S`` overrides and its target stage.

``experiments/grid.py`` describes a grid as ``dvc exp run --queue`` commands in Hydra's sweep
grammar (``-S 'selection.method=loss,rho_loss'``, ``-S 'train.seed=range(0,5)'``), which DVC
expands when it queues them. An executor that is not DVC's queue needs the expanded points:
:func:`expand_command` does what DVC's Hydra expansion does for the grammar grid.py writes (comma
lists, ``range()``, ``choice()``), in the same order (cartesian product, last override fastest).

A point's experiment name is derived from its content (:func:`experiment_name`), so that running
the same grid again finds the experiments that already exist and submits only the others.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

_RANGE = re.compile(r"^range\(\s*(-?\d+)\s*,\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?\)$")
_CHOICE = re.compile(r"^choice\((.*)\)$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Point:
    """One experiment: ``overrides`` as ``dvc exp run -S KEY=VALUE`` takes them, in order, and its target stages."""

    overrides: Mapping[str, str]
    targets: tuple[str, ...] = ("evaluate",)
    name: str = field(default="", compare=False)

    def args(self) -> list[str]:
        """The ``-S KEY=VALUE ...`` arguments of ``dvc exp run``."""
        return [arg for key, value in self.overrides.items() for arg in ("-S", f"{key}={value}")]


def experiment_name(point: Point, prefix: str = "grid") -> str:
    """``PREFIX-<10 hex>``: the same overrides and targets always give the same name."""
    if not _NAME.match(prefix):
        raise ValueError(f"experiment name prefix {prefix!r}: letters, digits, '.', '_' and '-' only")
    content = json.dumps([sorted(point.overrides.items()), list(point.targets)])
    return f"{prefix}-{hashlib.sha1(content.encode()).hexdigest()[:10]}"


def named(points: Iterable[Point], prefix: str = "grid") -> list[Point]:
    """``points`` with their names set (kept where already set); duplicate names are an error."""
    result = [p if p.name else Point(dict(p.overrides), tuple(p.targets), experiment_name(p, prefix)) for p in points]
    seen: dict[str, Point] = {}
    for point in result:
        if point.name in seen:
            raise ValueError(f"two points of the grid are the same experiment {point.name}: {dict(point.overrides)}")
        seen[point.name] = point
    return result


def from_overrides(overrides: Sequence[Mapping[str, object]], targets: Sequence[str] = ("evaluate",)) -> list[Point]:
    """Points from one dict of ``-S`` overrides per experiment (what ``grid.points()`` returns)."""
    return [Point({str(k): str(v) for k, v in o.items()}, tuple(targets)) for o in overrides]


def expand_value(value: str) -> list[str]:
    """The values of one override in Hydra's sweep grammar: ``a,b``, ``range(0,5)``, ``choice(a,b)`` or one value."""
    value = value.strip()
    if match := _RANGE.match(value):
        start, stop, step = int(match[1]), int(match[2]), int(match[3] or 1)
        if step == 0:
            raise ValueError(f"override value {value!r}: range step 0")
        return [str(v) for v in range(start, stop, step)]
    if match := _CHOICE.match(value):
        value = match[1]
    parts, depth, current, quote = [], 0, "", ""
    for char in value:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    if any(not part for part in parts):
        raise ValueError(f"override value {value!r}: an empty item in a comma list")
    return parts


def expand_command(command: Sequence[str]) -> list[Point]:
    """The points of one ``dvc exp run [--queue] [TARGET ...] -S KEY=VALUE ...`` command, grid expanded."""
    words = list(command)
    if words[:3] != ["dvc", "exp", "run"]:
        raise ValueError(f"not a `dvc exp run` command: {shlex.join(words)}")
    keys: list[str] = []
    choices: list[list[str]] = []
    targets: list[str] = []
    rest = iter(words[3:])
    for word in rest:
        if word in ("-S", "--set-param"):
            assignment = next(rest, None)
            if assignment is None or "=" not in assignment:
                raise ValueError(f"`-S` without KEY=VALUE in: {shlex.join(words)}")
            key, value = assignment.split("=", 1)
            keys.append(key.strip())
            choices.append(expand_value(value))
        elif word == "--queue":
            continue
        elif word.startswith("-"):
            raise ValueError(f"option {word} of `dvc exp run` is not supported in a grid point: {shlex.join(words)}")
        else:
            targets.append(word)
    return [Point(dict(zip(keys, values)), tuple(targets)) for values in itertools.product(*choices)]


def expand_commands(commands: Iterable[Sequence[str]]) -> list[Point]:
    """The points of several commands, in order."""
    return [point for command in commands for point in expand_command(command)]
