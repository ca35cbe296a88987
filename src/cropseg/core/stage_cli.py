"""The one way a ``stages/`` script runs its stage: same error line, exit code and summary line.

Every stage script parses its arguments and hands the work to :func:`run_stage`. A *domain*
error (bad params, a missing input, a refused split: an exception class defined in a
``cropseg`` module, or one the stage names in ``errors``) becomes one line
``STAGE: error: MESSAGE`` on stderr and exit status 1, so ``dvc repro`` shows the cause rather
than a traceback; any other exception is a bug and keeps its traceback. On success the stage's
summary line goes to stdout.

This module imports nothing heavy (only :mod:`cropseg.core.atomic`), so a script that defers its
imports until after argument parsing (``fetch_s4a``: ``--help`` without netCDF or torch) stays
light.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from .atomic import restore_hint


class Summary(Protocol):
    """What a stage returns: its one-line summary."""

    def line(self) -> str: ...


def is_domain_error(error: BaseException, errors: tuple[type[BaseException], ...] = ()) -> bool:
    """Whether ``error`` is one the stage reports in one line (see the module docs)."""
    if isinstance(error, errors):
        return True
    return any(cls.__module__.split(".")[0] == "cropseg" for cls in type(error).__mro__)


def run_stage(name: str, body: Callable[[], Summary | str], *, errors: tuple[type[BaseException], ...] = (),
              restore: str | Path | None = None) -> int:
    """Run ``body`` and print its summary line; return the exit status for ``sys.exit``.

    Args:
        name: the stage's name, the first word of its error line (``fetch_s4a: error: ...``).
        body: does the stage's work and returns its summary (an object with ``line()``, or the line).
        errors: exception classes reported in one line besides those defined in ``cropseg``
            (``FileNotFoundError`` for a stage whose inputs are paths, ``ValueError`` for a guard).
        restore: the stage's DVC output; its :func:`cropseg.core.atomic.restore_hint` ends the error
            message (unless the message already ends with it), because ``dvc repro`` deleted
            that output before the stage ran.

    Returns:
        0 on success, 1 after a domain error.
    """
    try:
        summary = body()
    except Exception as error:
        if not is_domain_error(error, errors):
            raise
        message = f"{name}: error: {error}"
        if restore is not None and not message.endswith(hint := restore_hint(restore)):
            message += f"\n{hint}"
        print(message, file=sys.stderr)
        return 1
    print(summary if isinstance(summary, str) else summary.line())
    return 0
