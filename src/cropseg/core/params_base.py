"""The base of every ``params.yaml`` section model and the error they raise together.

Apart from :mod:`cropseg.core.params` so that the section modules (:mod:`cropseg.core.params_data`
and the training sections in ``params``) share it without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ParamsError(ValueError):
    """params.yaml does not match the schema; the message lists every bad field."""


class Section(BaseModel):
    """Base of every params section: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
