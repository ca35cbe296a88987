"""Model snapshots at fixed samples-seen points: the learning curve of a comparison run.

The train stage keeps the model (after precise BN) when ``samples_seen`` first reaches each of
``protocol.test_points`` equally spaced points of the budget ``protocol.samples_seen``: the same
points for every method, whatever its block size. The evaluate stage scores every snapshot on the
clean test labels (``metrics/evaluate/curve.csv``), so the training never reads the test split.

Folder layout (``models/snapshots/``, a DVC output of the train stage, always present):
``index.json`` (``[{"file", "point", "samples_seen", "step"}, ...]``, in order; ``[]`` without
points) and one model file per point, ``seen_<samples_seen, 9 digits>.pt``. Snapshots are written
beside the resume checkpoint first and copied to the output at the end, so a resumed run keeps
the ones taken before its interruption.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .checkpoint import save_atomic

INDEX_FILE = "index.json"


def points(budget: int | None, count: int) -> list[int]:
    """``count`` equally spaced samples-seen thresholds ending at ``budget`` (``[]`` without one)."""
    if budget is None or count <= 0:
        return []
    return sorted({max(1, round(budget * k / count)) for k in range(1, count + 1)})


class Snapshots:
    """Decides when a snapshot is due and writes it with its index entry."""

    def __init__(self, folder: Path, budget: int | None, count: int, seen_now: int, *, fresh: bool,
                 writer: bool = True):
        self.folder, self.writer = Path(folder), writer  # writer: False on DDP ranks but 0 (they only count)
        if fresh and writer:
            shutil.rmtree(self.folder, ignore_errors=True)
        if writer:
            self.folder.mkdir(parents=True, exist_ok=True)
        all_points = points(budget, count)
        self.numbers = {p: k + 1 for k, p in enumerate(all_points)}
        self.pending = [p for p in all_points if p > seen_now]
        # a resumed run drops snapshots logged after its checkpoint (they are taken again)
        self.entries = [e for e in read_index(self.folder) if e["samples_seen"] <= seen_now] if not fresh else []
        self._write_index()

    def due(self, seen: int) -> bool:
        """True once per point when ``seen`` first reaches it (points a single step jumps over
        are merged into that step's snapshot)."""
        reached = [p for p in self.pending if p <= seen]
        self.pending = [p for p in self.pending if p > seen]
        return bool(reached)

    def save(self, content: dict[str, Any], counters: dict[str, int]) -> None:
        seen = counters["samples_seen"]
        name = f"seen_{seen:09d}.pt"
        point = max(k for p, k in self.numbers.items() if p <= seen)
        save_atomic({**content, "counters": counters}, self.folder / name)
        self.entries.append({"file": name, "point": point, "samples_seen": seen, "step": counters["step"]})
        self._write_index()

    def _write_index(self) -> None:
        if not self.writer:
            return
        tmp = self.folder / f".{INDEX_FILE}.tmp"
        tmp.write_text(json.dumps(self.entries, indent=1) + "\n")
        tmp.replace(self.folder / INDEX_FILE)


def read_index(folder: Path) -> list[dict[str, Any]]:
    """The snapshots of a folder, in order (``[]`` when there is no index)."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        return []
    return json.loads(path.read_text())
