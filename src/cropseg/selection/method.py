"""The grammar of ``selection.method`` (no torch): params validation imports it without the selector.

``cropseg.core.params`` validates ``selection.method`` when params.yaml is loaded, which every stage does;
the selector itself needs torch and the dataset, so the grammar lives here, alone, and
``cropseg.selection.selector`` re-exports it.
"""

from __future__ import annotations

import re

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
