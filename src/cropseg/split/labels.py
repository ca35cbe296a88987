"""Label sets: which S4A crop codes make up each model class (``configs/labels/NAME.yaml``).

A label set file is a short comment, then ``classes:``, a list of ``{name, codes}``. Model class
0 is always ``background`` (ignored by the loss and the metrics) and is implicit: every code not
listed maps to 0. ``codes`` holds positive S4A codes, or inclusive ranges written ``"a-b"`` for a
whole FAO ICC group (``"100-199"`` = every cereal code).

The thesis' label-encoder files load unchanged beside ours: ``labels:``, a list of ``{name, id}``
with ``id`` one code or a list of codes, whose first entry is the background (model class 0; its
codes, usually ``0``, may not appear in another class). Entry ``i`` becomes model class ``i``, and
the validation is the same (a code in one class only, no duplicate names, codes in range).

Both formats are pydantic models (as ``params.yaml`` is); :mod:`cropseg.core.validation` turns their
errors into messages naming the file and the entry.

Mapping is one table lookup (:attr:`LabelSet.lut` indexed by code), for numpy arrays and torch
tensors alike, so it never loops over pixels or classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from ..core.validation import error_items, located
from ..core.workspace import missing_file_hint

BACKGROUND = "background"
MAX_CODE = 65_535  # a sanity bound on S4A codes (they are three digits); keeps the table small
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class LabelSetError(ValueError):
    """A label set is unknown or its file is malformed; the message names the file and entry."""


@dataclass(frozen=True, eq=False)
class LabelSet:
    """Model classes as groups of S4A codes.

    ``class_names[0]`` is ``"background"`` with ``codes[0] == ()``; ``lut[code]`` is the model
    class of an S4A code (uint8). The table is one entry longer than the largest listed code and
    its last entry is 0, so codes are clipped into the table and every code beyond it maps to 0.
    """

    name: str
    class_names: tuple[str, ...]
    codes: tuple[tuple[int, ...], ...]
    lut: np.ndarray = field(repr=False)
    _torch_luts: dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def n_classes(self) -> int:
        """Number of model classes, background included."""
        return len(self.class_names)

    def map(self, codes: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
        """Model class of every S4A code in ``codes`` (any shape; codes outside the table -> 0).

        numpy in -> numpy ``uint8`` out; torch in -> ``int64`` tensor on the same device (what
        ``nll_loss`` wants). Negative codes map to 0 too.

        Raises:
            TypeError: a numpy (or array-like) input whose dtype is not integer or bool.
        """
        last = len(self.lut) - 1
        if isinstance(codes, torch.Tensor):
            lut = self._torch_luts.get(codes.device)
            if lut is None:
                lut = torch.from_numpy(self.lut.astype(np.int64)).to(codes.device)
                self._torch_luts[codes.device] = lut
            return lut[codes.long().clamp(0, last)]
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iub":
            raise TypeError(f"label set {self.name!r}: codes must be integers, got dtype {codes.dtype}")
        return self.lut[np.clip(codes, 0, last)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form (for a model file loaded with ``weights_only=True``)."""
        return {
            "name": self.name,
            "classes": [{"name": n, "codes": list(c)} for n, c in zip(self.class_names[1:], self.codes[1:])],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> LabelSet:
        """Inverse of :meth:`to_dict`; validates like :func:`load_label_set`.

        Args:
            data: ``{"name": ..., "classes": [...]}`` as :meth:`to_dict` writes it.
            source: what to call it in error messages (e.g. the model file).

        Raises:
            LabelSetError: ``data`` is not a mapping with ``name``, or its classes are invalid.
        """
        if not isinstance(data, dict) or "name" not in data:
            raise LabelSetError(f"{source}: expected a mapping with 'name' and 'classes'")
        return _build(str(data["name"]), {k: v for k, v in data.items() if k != "name"}, source)


def available_label_sets(root: str | Path = "configs/labels") -> list[str]:
    """Names of the label sets in ``root`` (the ``*.yaml`` stems), sorted."""
    return sorted(p.stem for p in Path(root).glob("*.yaml"))


def load_label_set(name: str, root: str | Path = "configs/labels") -> LabelSet:
    """Read and validate ``root/NAME.yaml`` (either format, see the module docs).

    Args:
        name: the label set (``labels.name`` in ``params.yaml``).
        root: the folder of label set files.

    Returns:
        The label set, with its lookup table built.

    Raises:
        LabelSetError: an unknown name (listing the available sets), a file that is not YAML, a
            missing or misspelt key, a class named ``background``, a duplicate class name, a
            non-positive code, or a code listed in two classes; each message names the file and
            the entry.
    """
    import yaml

    path = Path(root) / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(available_label_sets(root)) or "none"
        raise LabelSetError(f"unknown label set {name!r}: no {path}; available in {root}: {available}"
                            f"{missing_file_hint(path)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LabelSetError(f"{path}: not valid YAML: {err}") from err
    return _build(name, data, str(path))


def _parse_codes(value: Any, key: str, *, allow_zero: bool = False) -> tuple[int, ...]:
    """Codes and ``"a-b"`` ranges, expanded (raises a located error naming the bad item)."""
    if not isinstance(value, list) or not value:
        raise located(f"'{key}' must be a non-empty list of S4A codes, got {value!r}")
    out: list[int] = []
    lowest = 0 if allow_zero else 1
    for item in value:
        if isinstance(item, bool):
            raise located(f"code {item!r} is not an integer")
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str) and (m := _RANGE.match(item)):
            lo, hi = int(m[1]), int(m[2])
            if lo > hi:
                raise located(f"empty code range {item!r}")
        else:
            raise located(f"code {item!r} is neither an integer nor a range 'a-b'")
        if lo < lowest or hi > MAX_CODE:
            raise located(f"code {item!r} outside {lowest}..{MAX_CODE}"
                          + ("" if allow_zero else " (0 is background, implicit)"))
        out.extend(range(lo, hi + 1))
    return tuple(out)


class _Class(BaseModel):
    """One ``{name, codes}`` entry of ``classes:``."""

    model_config = ConfigDict(frozen=True)
    codes_key: ClassVar[str] = "codes"
    background_is: ClassVar[str] = "model class 0 and implicit"
    name: str
    codes: tuple[int, ...]

    @model_validator(mode="before")
    @classmethod
    def _keys(cls, entry: Any) -> dict:
        expected = {"name", cls.codes_key}
        if not isinstance(entry, dict):
            raise located(f"expected a mapping {{name, {cls.codes_key}}}, got {entry!r}")
        if missing := expected - set(entry):
            raise located(f"missing key(s) {sorted(missing)} in {entry!r}")
        if extra := set(entry) - expected:
            raise located(f"unknown key(s) {sorted(extra)}; expected only 'name' and '{cls.codes_key}'")
        return {"name": entry["name"], "codes": entry[cls.codes_key]}

    @field_validator("name", mode="before")
    @classmethod
    def _name(cls, name: Any) -> str:
        if not isinstance(name, str) or not name.strip():
            raise located(f"'name' must be a non-empty string, got {name!r}")
        if name.strip().lower() == BACKGROUND:
            raise located(f"'background' is {cls.background_is}; do not list it again")
        return name

    @field_validator("codes", mode="before")
    @classmethod
    def _codes(cls, codes: Any) -> tuple[int, ...]:
        return _parse_codes(codes, cls.codes_key)


class _EncoderClass(_Class):
    """One ``{name, id}`` entry of the thesis' ``labels:`` after the background (``id`` may be one code)."""

    codes_key: ClassVar[str] = "id"
    background_is: ClassVar[str] = "labels[0]"

    @field_validator("codes", mode="before")
    @classmethod
    def _codes(cls, codes: Any) -> tuple[int, ...]:
        return _parse_codes(codes if isinstance(codes, list) else [codes], "id")


class _ClassesFile(BaseModel):
    """Our format: ``classes: [{name, codes}, ...]``; background implicit."""

    model_config = ConfigDict(frozen=True)
    key: ClassVar[str] = "classes"
    codes_key: ClassVar[str] = "codes"
    background: tuple[int, ...] = ()
    classes: list[_Class]

    @model_validator(mode="before")
    @classmethod
    def _top_level(cls, data: Any) -> dict:
        cls._only_key(data)
        if not isinstance(data[cls.key], list) or not data[cls.key]:
            raise located(f"'{cls.key}' must be a non-empty list of {{name, {cls.codes_key}}}")
        return {"classes": data[cls.key]}

    @classmethod
    def _only_key(cls, data: Any) -> None:
        extra = set(data) - {cls.key}
        if extra:
            raise located(f"unknown top-level keys {sorted(extra)}; expected only '{cls.key}'")

    @model_validator(mode="after")
    def _one_class_per_code(self) -> "_ClassesFile":
        if len(self.classes) > 254:
            raise located(f"{len(self.classes)} classes; at most 254 fit the uint8 table")
        names: set[str] = set()
        owner = {code: "background (labels[0])" for code in self.background}
        for i, entry in enumerate(self.classes):
            if entry.name in names:
                raise located("class name listed twice", "classes", i, "name")
            names.add(entry.name)
            for code in entry.codes:
                if code in owner:
                    what = "twice in this class" if owner[code] == entry.name else f"also in class {owner[code]!r}"
                    raise located(f"code {code} is {what}; a code belongs to one class", "classes", i, "codes")
                owner[code] = entry.name
        return self


class _EncoderFile(_ClassesFile):
    """The thesis' label-encoder format: ``labels: [{name, id}, ...]``, the first entry the background."""

    key: ClassVar[str] = "labels"
    codes_key: ClassVar[str] = "id"
    classes: list[_EncoderClass]

    @model_validator(mode="before")
    @classmethod
    def _top_level(cls, data: Any) -> dict:
        cls._only_key(data)
        entries = data[cls.key]
        if not isinstance(entries, list) or len(entries) < 2:
            raise located("'labels' must list the background, then at least one class, as {name, id}")
        first = entries[0]
        if not isinstance(first, dict) or set(first) != {"name", "id"}:
            raise located(f"expected a mapping {{name, id}}, got {first!r}", "background")
        return {"background": first["id"], "classes": entries[1:]}

    @field_validator("background", mode="before")
    @classmethod
    def _background(cls, codes: Any) -> tuple[int, ...]:
        return _parse_codes(codes if isinstance(codes, list) else [codes], "id", allow_zero=True)


def _where(loc: tuple, data: dict, key: str) -> str:
    """``labels[2]``, or ``class 'oats' (labels[2])`` for an error about a named entry's fields."""
    if not loc:
        return ""
    if loc[0] == "background":
        return "labels[0] (the background): "
    index = loc[1] + (key == "labels")
    entry = data[key][index]
    name = entry.get("name") if isinstance(entry, dict) else None
    if len(loc) > 2 and isinstance(name, str) and name.strip():
        return f"class {name!r} ({key}[{index}]): "
    return f"{key}[{index}]: "


def _build(name: str, data: Any, source: str) -> LabelSet:
    """Validate either format and build the lookup table."""
    encoder = isinstance(data, dict) and "labels" in data and "classes" not in data
    if not encoder and not (isinstance(data, dict) and "classes" in data):
        raise LabelSetError(f"{source}: missing top-level key 'classes' (a list of {{name, codes}}) "
                            f"or 'labels' (the label-encoder list of {{name, id}})")
    schema = _EncoderFile if encoder else _ClassesFile
    try:
        parsed = schema.model_validate(data)
    except ValidationError as error:
        problems = [f"{_where(loc, data, schema.key)}{message}" for loc, message in error_items(error)]
        raise LabelSetError(f"{source}: " + "; ".join(problems)) from None
    names = (BACKGROUND,) + tuple(c.name for c in parsed.classes)
    codes = ((),) + tuple(c.codes for c in parsed.classes)
    listed = [code for class_codes in codes[1:] for code in class_codes]
    lut = np.zeros(max(listed) + 2, dtype=np.uint8)  # last entry stays 0: the catch-all for codes beyond
    for k, class_codes in enumerate(codes[1:], start=1):
        lut[list(class_codes)] = k
    lut.flags.writeable = False
    return LabelSet(name=name, class_names=names, codes=codes, lut=lut)
