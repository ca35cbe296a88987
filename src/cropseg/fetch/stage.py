"""The ``fetch_s4a`` stage: put validated S4A patches in ``data/netcdf/`` from one source.

Sources: ``synthetic`` (generated here, deterministic), ``huggingface`` (the public dataset,
see :mod:`cropseg.fetch.huggingface`) and ``local`` (an S4A folder on disk, hard-linked). Whatever the source,
every file is validated, an ``index.csv`` lists the valid patches, and the output directory is
replaced atomically: it is complete or absent.

Errors name each bad file where the user can find it: its path in the ``local`` source folder,
else its final path under the output (never the temporary folder being filled), and end with
how to restore the previous output (:func:`cropseg.core.atomic.restore_hint`).
"""

from __future__ import annotations

import csv
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path


from ..core.atomic import atomic_dir, restore_hint
from ..core.executor import default_workers, ordered_map
from ..core.files import link_or_copy
from ..core.params import Data
from ..s4a.netcdf import (INDEX_FILE, InvalidPatch, PatchInfo, find_patches, parse_patch_name, validate_patch,
                  write_index)
from ..s4a.tiles import select_tile_years, skipped_message
from .synthetic import plan_patches
from .synthetic_files import TRUTH_DIR, write_patch, write_truth

INVALID_FILE = "invalid.csv"


class FetchError(RuntimeError):
    """The fetched data cannot be used (invalid files, an empty selection, a missing folder)."""


@dataclass(frozen=True)
class FetchSummary:
    source: str
    patches: int
    skipped: int
    bytes: int
    seconds: float

    def line(self) -> str:
        return (f"fetch_s4a: {self.source}, {self.patches} patches ({self.skipped} invalid skipped), "
                f"{self.bytes / 1e6:.0f} MB, {self.seconds:.1f} s")


def _select(paths: list[tuple[str, Path]], data: Data) -> list[tuple[str, Path]]:
    """Keep patches of the requested years and tiles, sorted by relative path, at most ``limit``."""
    kept = []
    for relpath, path in sorted(paths):
        name = parse_patch_name(path.name)
        if name.year in data.years and data.wants_tile(name.tile):
            kept.append((relpath, path))
    return kept[: data.limit] if data.limit else kept


def _generate_synthetic(data: Data, root: Path, workers: int) -> None:
    cfg = data.synthetic
    _, skipped = select_tile_years(data.years, data.tiles)
    if skipped:
        print(f"fetch_s4a: note: {skipped_message(skipped)}", file=sys.stderr)
    plans = plan_patches(cfg, data.years, data.tiles)
    if data.limit:
        plans = plans[: data.limit]
    rows = ordered_map(partial(write_patch, cfg, root=root), plans, workers, desc="synthetic S4A")
    write_truth([row for patch_rows in rows for row in patch_rows], root)


def _link_local(data: Data, root: Path) -> dict[Path, Path]:
    """Hard-link (or copy) the selected patches of an existing S4A folder, refoldered as YYYY/TILE/.

    Returns each linked file's source path, keyed by its path under ``root``.
    """
    source = Path(data.local.path)
    if not source.is_dir():
        raise FetchError(f"data.local.path: {source} is not a directory")
    candidates = []
    for path in find_patches(source):
        try:
            candidates.append((parse_patch_name(path.name).relpath, path))
        except ValueError:
            candidates.append((path.relative_to(source).as_posix(), path))  # validated (and rejected) below
    named = [(rel, p) for rel, p in candidates if _is_patch_name(p)]
    misnamed = [(rel, p) for rel, p in candidates if not _is_patch_name(p)]
    origins = {}
    for relpath, path in _select(named, data) + misnamed:
        if root / relpath in origins:
            raise FetchError(f"{path} and {origins[root / relpath]} are the same patch ({relpath}); "
                             f"keep one of them in {source}")
        link_or_copy(path, root / relpath)
        origins[root / relpath] = path
    return origins


def _is_patch_name(path: Path) -> bool:
    try:
        parse_patch_name(path.name)
        return True
    except ValueError:
        return False


def _validate(path: Path, root: Path, labels_required: bool = True) -> PatchInfo | InvalidPatch:
    try:
        return validate_patch(path, root, labels_required=labels_required)
    except InvalidPatch as error:
        return error


def _shown(error: InvalidPatch, origin: Path) -> InvalidPatch:
    """The same defects, naming the file by ``origin`` instead of its temporary path."""
    return InvalidPatch(origin, [d.replace(str(error.path), str(origin)) for d in error.defects])


def validate_tree(root: Path, on_invalid: str, workers: int, origins: dict[Path, Path] | None = None,
                  out: Path | None = None, labels_required: bool = True) -> tuple[list[PatchInfo], list[InvalidPatch]]:
    """Validate every ``*.nc`` under ``root``; fail listing all bad files, or drop them (``skip``).

    Bad files are named by ``origins[path]`` (their source) where given, else by their path
    under ``out`` (the final output folder), else under ``root``. The returned errors carry
    those names; the files themselves are deleted from ``root`` in ``skip`` mode. The synthetic
    truth folder (:data:`cropseg.fetch.synthetic_files.TRUTH_DIR`) is not validated.

    Args:
        root: the folder being filled (the temporary folder of :func:`cropseg.core.atomic.atomic_dir`).
        on_invalid: ``data.on_invalid``: ``"error"`` or ``"skip"``.
        workers: processes validating in parallel.
        origins: source path of each file under ``root`` (the ``local`` source), if any.
        out: the final output folder, to name files whose source is not in ``origins``.
        labels_required: ``False`` accepts files without ``labels``/``parcels``
            (:func:`cropseg.s4a.netcdf.validate_patch`).

    Returns:
        ``(valid, invalid)``: the valid patches' infos, in path order, and the skipped files'
        errors, named as above.

    Raises:
        FetchError: a file is invalid and ``on_invalid`` is ``"error"`` (the message lists every
            bad file with its defects).
    """
    paths = [p for p in find_patches(root) if TRUTH_DIR not in p.relative_to(root).parts[:1]]
    results = ordered_map(partial(_validate, root=root, labels_required=labels_required), paths, workers,
                          desc="validate")
    valid = [r for r in results if isinstance(r, PatchInfo)]
    invalid = [r for r in results if isinstance(r, InvalidPatch)]
    origins = origins or {}
    shown = [_shown(e, origins.get(e.path, (out or root) / e.path.relative_to(root))) for e in invalid]
    if invalid and on_invalid == "error":
        listing = "\n".join(f"  {e.path}: {'; '.join(e.defects)}" for e in shown)
        raise FetchError(f"{len(invalid)} invalid S4A file(s) (set data.on_invalid: skip to leave them out):\n{listing}")
    for error in invalid:
        error.path.unlink()
    return valid, shown


def _write_invalid_report(invalid: list[InvalidPatch], root: Path) -> None:
    """``invalid.csv``: each skipped file (by its source path) and its defects, sorted."""
    with open(root / INVALID_FILE, "w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "defects"])
        for error in sorted(invalid, key=lambda e: e.path.as_posix()):
            writer.writerow([error.path.as_posix(), "; ".join(error.defects)])


def fetch_s4a(data: Data, out: str | Path, workers: int | None = None, *, labels_required: bool = True) -> FetchSummary:
    """Fill ``out`` (``data/netcdf``) from ``data.source``, validate, index; atomically.

    Every :class:`FetchError` message ends with how to restore the previous output, since
    ``dvc repro`` deleted it before running the stage.

    Args:
        data: the ``data`` params (source, filters, ``on_invalid`` and the source's section).
        out: the output folder, replaced as a whole only when the fetch succeeds.
        workers: processes for generating and validating; :func:`cropseg.core.executor.default_workers`
            when ``None``.
        labels_required: ``False`` accepts files without ``labels``/``parcels`` (a season to map,
            ``python -m cropseg.predict.folder``); the stage always requires them.

    Returns:
        The stage's summary: source, valid and skipped patches, bytes, seconds.

    Raises:
        FetchError: invalid files (with ``on_invalid: error``), no valid patch, a missing or
            ambiguous ``local`` folder, or a ``huggingface`` checksum mismatch or empty selection.
        cropseg.fetch.huggingface.HubError: another ``huggingface`` failure, as :func:`cropseg.fetch.huggingface.download_patches`
            raises it (listing or a download failed for good).
    """
    try:
        return _fetch(data, Path(out), workers or default_workers(), labels_required)
    except FetchError as error:
        raise FetchError(f"{error}\n{restore_hint(out)}") from error.__cause__


def _fetch(data: Data, out: Path, workers: int, labels_required: bool = True) -> FetchSummary:
    started = time.perf_counter()
    with atomic_dir(out) as root:
        origins: dict[Path, Path] = {}
        if data.source == "synthetic":
            _generate_synthetic(data, root, workers)
        elif data.source == "local":
            origins = _link_local(data, root)
        else:
            from .huggingface import ChecksumMismatch, NoMatchingPatches, download_patches  # only this source needs the hub

            try:
                download_patches(data, root)
            except (ChecksumMismatch, NoMatchingPatches) as error:
                raise FetchError(str(error)) from error
        valid, invalid = validate_tree(root, data.on_invalid, workers, origins, out, labels_required)
        if not valid:
            raise FetchError(f"no valid S4A patch for source={data.source}, years={data.years}, "
                             f"tiles={data.tiles or 'all'}, limit={data.limit}")
        write_index(valid, root / INDEX_FILE)
        if invalid:
            _write_invalid_report(invalid, root)
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return FetchSummary(data.source, len(valid), len(invalid), size, time.perf_counter() - started)
