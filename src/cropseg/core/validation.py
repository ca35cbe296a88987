"""One way to turn pydantic validation errors into located messages.

``params.yaml``, split rules and label sets are all pydantic models; this module is the only place
their errors become ``(location, message)`` pairs. A validator that wants its own wording (and
perhaps a finer location than the field it validates) raises :func:`located`; the message is then
shown as is, and ``where`` is appended to the field's location (e.g. ``year`` + ``[1]``).
"""

from __future__ import annotations

from typing import Callable

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

Loc = tuple[str | int, ...]
#: Turns an unknown key's location into (location to report, message); None: the params wording.
UnknownKey = Callable[[Loc], tuple[Loc, str]]


def located(message: str, *where: str | int) -> PydanticCustomError:
    """An error for a validator to raise: ``message`` verbatim, reported at the field + ``where``.

    Args:
        message: the text shown, as is.
        *where: keys and indices below the validated field (e.g. ``"in"``, ``1``).
    """
    return PydanticCustomError("located", "{message}", {"message": message, "where": tuple(where)})


def error_items(error: ValidationError, unknown_key: UnknownKey | None = None) -> list[tuple[Loc, str]]:
    """Every error of ``error`` as (location tuple, message), in pydantic's order.

    Pydantic's own messages get the offending value appended (except for missing keys and
    :func:`located` errors).

    Args:
        error: what ``model_validate`` raised.
        unknown_key: rewords an unknown key's error (and may move its location); None gives
            ``params.yaml``'s wording.
    """
    items = []
    for item in error.errors():
        loc = tuple(item["loc"]) + tuple((item.get("ctx") or {}).get("where", ()))
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            if unknown_key is not None:
                loc, message = unknown_key(loc)
            else:
                message = "unknown key (not in the schema; check the spelling)"
        elif (item["type"] not in ("missing", "value_error", "located")
              and not isinstance(item.get("input"), (dict, type(None)))):
            message = f"{message} (got {item['input']!r})"
        items.append((loc, message))
    return items


def dotted(loc: Loc) -> str:
    """``data.years.0`` (the params.yaml style)."""
    return ".".join(str(part) for part in loc) or "(root)"


def bracketed(loc: Loc, root: str = "(file)") -> str:
    """``rules[1].target[0].split`` (the split-rules and label-set style)."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")
    return text or root
