"""The grammar of ``selection.method`` (no torch), and the check the training stage runs first.

``cropseg.core.params`` checks only that ``selection.method`` is a string, so that the stages that
never select do not depend on this module; ``stages/train.py`` calls :func:`check_method` right
after loading params.yaml, before any work, so a bad method fails the same way a bad field does.
The selector itself needs torch and the dataset, so the grammar lives here, alone, and
``cropseg.selection.selector`` re-exports it.
"""

from __future__ import annotations

import re

from ..core.params import ParamsError

SCORES = ("random", "loss", "margin", "irreducible", "rho_loss")
_TERM = re.compile(r"\s*([+-])?\s*(?:(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)\s*\*\s*)?([a-z_]+)\s*")


class SelectionError(ValueError):
    """A selection method that cannot be parsed or run."""


def parse_method(method: str) -> dict[str, float] | None:
    """``uniform`` -> None; a score name -> {name: 1}; ``"a*x - b*y"`` -> {x: a, y: -b}.

    Raises :class:`SelectionError` naming the position and the known score names.
    """
    text = method.strip()
    if text == "uniform":
        return None
    terms: dict[str, float] = {}
    position = 0
    while position < len(text):
        match = _TERM.match(text, position)
        if not match or (position > 0 and not match.group(1)):
            raise SelectionError(f"selection.method {method!r}: cannot parse at position {position} "
                                 f"(expected '[+|-] [number *] score'; scores: uniform, {', '.join(SCORES)})")
        sign, coefficient, name = match.groups()
        if name not in SCORES:
            raise SelectionError(f"selection.method {method!r}: unknown score {name!r} "
                                 f"(known: uniform, {', '.join(SCORES)})")
        value = float(coefficient) if coefficient else 1.0
        terms[name] = terms.get(name, 0.0) + (-value if sign == "-" else value)
        position = match.end()
    if not terms:
        raise SelectionError(f"selection.method {method!r}: empty")
    return terms


def check_method(method: str, source: str = "params.yaml") -> None:
    """Refuse a method outside the grammar as params.yaml's validation refuses a bad field.

    Args:
        method: ``selection.method``.
        source: the params file, named first in the message.

    Raises:
        ParamsError: ``{source}: 1 invalid field(s):`` then ``selection.method:`` and the grammar's message.
    """
    try:
        parse_method(method)
    except SelectionError as error:
        raise ParamsError(f"{source}: 1 invalid field(s):\n  selection.method: {error}") from None
