"""Label sets: which S4A crop codes make up each model class (``configs/labels/NAME.yaml``).

A label set file is a short comment, then ``classes:``, a list of ``{name, codes}``. Model class
0 is always ``background`` (ignored by the loss and the metrics) and is implicit: every code not
listed maps to 0. ``codes`` holds positive S4A codes, or inclusive ranges written ``"a-b"`` for a
whole FAO ICC group (``"100-199"`` = every cereal code).

The thesis' label-encoder files load unchanged beside ours: ``labels:``, a list of ``{name, id}``
with ``id`` one code or a list of codes, whose first entry is the background (model class 0; its
codes, usually ``0``, may not appear in another class). Entry ``i`` becomes model class ``i``, and
the validation is the same (a code in one class only, no duplicate names, codes in range).

Mapping is one table lookup (:attr:`LabelSet.lut` indexed by code), for numpy arrays and torch
tensors alike, so it never loops over pixels or classes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

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
        """Inverse of :meth:`to_dict`; validates like :func:`load_label_set`."""
        if not isinstance(data, dict) or "name" not in data:
            raise LabelSetError(f"{source}: expected a mapping with 'name' and 'classes'")
        return _build(str(data["name"]), {k: v for k, v in data.items() if k != "name"}, source)


def available_label_sets(root: str | Path = "configs/labels") -> list[str]:
    """Names of the label sets in ``root`` (the ``*.yaml`` stems), sorted."""
    return sorted(p.stem for p in Path(root).glob("*.yaml"))


def _hint(path: Path) -> str:
    from .lineage import missing_file_hint

    return missing_file_hint(path)


def load_label_set(name: str, root: str | Path = "configs/labels") -> LabelSet:
    """Read and validate ``root/NAME.yaml``.

    Raises :class:`LabelSetError` for an unknown name (listing the available sets), a missing or
    misspelt key, a class named ``background``, a duplicate class name, a non-positive code, or
    a code listed in two classes; each message names the file and the entry.
    """
    import yaml

    path = Path(root) / f"{name}.yaml"
    if not path.is_file():
        available = ", ".join(available_label_sets(root)) or "none"
        raise LabelSetError(f"unknown label set {name!r}: no {path}; available in {root}: {available}"
                            f"{_hint(path)}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise LabelSetError(f"{path}: not valid YAML: {err}") from err
    return _build(name, data, str(path))


def _parse_codes(value: Any, where: str, *, key: str = "codes", allow_zero: bool = False) -> list[int]:
    if not isinstance(value, list) or not value:
        raise LabelSetError(f"{where}: '{key}' must be a non-empty list of S4A codes, got {value!r}")
    out: list[int] = []
    lowest = 0 if allow_zero else 1
    for item in value:
        if isinstance(item, bool):
            raise LabelSetError(f"{where}: code {item!r} is not an integer")
        if isinstance(item, int):
            lo = hi = item
        elif isinstance(item, str) and (m := _RANGE.match(item)):
            lo, hi = int(m[1]), int(m[2])
            if lo > hi:
                raise LabelSetError(f"{where}: empty code range {item!r}")
        else:
            raise LabelSetError(f"{where}: code {item!r} is neither an integer nor a range 'a-b'")
        if lo < lowest or hi > MAX_CODE:
            raise LabelSetError(f"{where}: code {item!r} outside {lowest}..{MAX_CODE}"
                                + ("" if allow_zero else " (0 is background, implicit)"))
        out.extend(range(lo, hi + 1))
    return out


def _build(name: str, data: Any, source: str) -> LabelSet:
    if isinstance(data, dict) and "labels" in data and "classes" not in data:
        return _build_encoder(name, data, source)
    if not isinstance(data, dict) or "classes" not in data:
        raise LabelSetError(f"{source}: missing top-level key 'classes' (a list of {{name, codes}}) "
                            f"or 'labels' (the label-encoder list of {{name, id}})")
    extra = set(data) - {"classes"}
    if extra:
        raise LabelSetError(f"{source}: unknown top-level keys {sorted(extra)}; expected only 'classes'")
    return _from_entries(name, data["classes"], source, key="classes", codes_key="codes")


def _build_encoder(name: str, data: dict, source: str) -> LabelSet:
    """The thesis' label-encoder format: ``labels: [{name, id}, ...]``, ``id`` a code or a list of
    codes, the first entry the background (its codes, usually ``0``, map to model class 0)."""
    extra = set(data) - {"labels"}
    if extra:
        raise LabelSetError(f"{source}: unknown top-level keys {sorted(extra)}; expected only 'labels'")
    entries = data["labels"]
    if not isinstance(entries, list) or len(entries) < 2:
        raise LabelSetError(f"{source}: 'labels' must list the background, then at least one class, "
                            f"as {{name, id}}")
    first = entries[0]
    where = f"{source}: labels[0] (the background)"
    if not isinstance(first, dict) or set(first) != {"name", "id"}:
        raise LabelSetError(f"{where}: expected a mapping {{name, id}}, got {first!r}")
    background = _parse_codes(first["id"] if isinstance(first["id"], list) else [first["id"]], where,
                              key="id", allow_zero=True)
    return _from_entries(name, entries[1:], source, key="labels", codes_key="id", start=1,
                         reserved={c: "background (labels[0])" for c in background})


def _from_entries(name: str, classes: Any, source: str, *, key: str, codes_key: str, start: int = 0,
                  reserved: dict[int, str] | None = None) -> LabelSet:
    """Validate ``[{name, <codes_key>}, ...]`` (entry ``i`` is ``key[i + start]`` in messages)."""
    if not isinstance(classes, list) or not classes:
        raise LabelSetError(f"{source}: '{key}' must be a non-empty list of {{name, {codes_key}}}")
    if len(classes) > 254:
        raise LabelSetError(f"{source}: {len(classes)} classes; at most 254 fit the uint8 table")

    names: list[str] = [BACKGROUND]
    codes: list[tuple[int, ...]] = [()]
    owner: dict[int, str] = dict(reserved or {})
    expected = {"name", codes_key}
    for i, entry in enumerate(classes, start=start):
        where = f"{source}: {key}[{i}]"
        if not isinstance(entry, dict):
            raise LabelSetError(f"{where}: expected a mapping {{name, {codes_key}}}, got {entry!r}")
        missing = expected - set(entry)
        if missing:
            raise LabelSetError(f"{where}: missing key(s) {sorted(missing)} in {entry!r}")
        extra = set(entry) - expected
        if extra:
            raise LabelSetError(f"{where}: unknown key(s) {sorted(extra)}; expected only 'name' and '{codes_key}'")
        cname = entry["name"]
        if not isinstance(cname, str) or not cname.strip():
            raise LabelSetError(f"{where}: 'name' must be a non-empty string, got {cname!r}")
        where = f"{source}: class {cname!r} ({key}[{i}])"
        if cname.strip().lower() == BACKGROUND:
            first = "labels[0]" if start else "model class 0 and implicit"
            raise LabelSetError(f"{where}: 'background' is {first}; do not list it again")
        if cname in names:
            raise LabelSetError(f"{where}: class name listed twice")
        value = entry[codes_key]
        if codes_key == "id" and not isinstance(value, list):
            value = [value]  # the encoder format allows a single code
        class_codes = _parse_codes(value, where, key=codes_key)
        for code in class_codes:
            if code in owner:
                other = owner[code]
                what = "twice in this class" if other == cname else f"also in class {other!r}"
                raise LabelSetError(f"{where}: code {code} is {what}; a code belongs to one class")
            owner[code] = cname
        names.append(cname)
        codes.append(tuple(class_codes))

    listed = [code for class_codes in codes[1:] for code in class_codes]
    lut = np.zeros(max(listed) + 2, dtype=np.uint8)  # last entry stays 0: the catch-all for codes beyond
    for k, class_codes in enumerate(codes[1:], start=1):
        lut[list(class_codes)] = k
    lut.flags.writeable = False
    return LabelSet(name=name, class_names=tuple(names), codes=tuple(codes), lut=lut)
