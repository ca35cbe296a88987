"""A per-file md5 memo, so that recording an input's hash reads only the files that changed.

DVC decides that a file is unchanged when its inode, mtime and size are those it saw when it last
hashed it (``dvc_data.hashfile.state``); this memo applies the same test. Rows are keyed by
``(st_dev, st_ino)`` rather than by path: the checkouts DVC makes with ``cache.type: hardlink``
(a queued experiment's temporary copy included) are the same inode as the cache object, so every
copy of a file shares one row and the table stays as large as the data, not as the number of
copies. A row is used only when size and ``st_mtime_ns`` also match, so an edited file (new mtime),
a replaced file (new inode) or a truncated one (new size) is read again. A file modified less than
:data:`RACY_S` seconds ago is hashed but not remembered: the kernel stamps mtimes from a coarse
clock (one tick is milliseconds), so a second same-size write in that tick would keep its mtime
(git's "racy clean" problem); such a file is read again next time.

It is one SQLite file, ``<repository>/.dvc/tmp/lineage-md5.sqlite`` (``.dvc/tmp`` is ignored by
git and per machine, like DVC's own state), ``<repository>/.cache/`` outside a DVC repository, or
``CROPSEG_LINEAGE_CACHE``. Every failure (read-only disk, a locked or corrupt file) turns the memo
into a no-op: the caller then reads the files, which is slow but never wrong.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..core.workspace import repo_root

ENV = "CROPSEG_LINEAGE_CACHE"
SCHEMA = ("CREATE TABLE IF NOT EXISTS md5 (dev INTEGER NOT NULL, ino INTEGER NOT NULL, size INTEGER NOT NULL, "
          "mtime_ns INTEGER NOT NULL, md5 TEXT NOT NULL, PRIMARY KEY (dev, ino))")
RACY_S = 2.0  # files modified this recently are not remembered (mtime granularity)
BATCH = 900  # below SQLite's oldest limit on host parameters (999)


def default_location() -> Path:
    """``CROPSEG_LINEAGE_CACHE``, else ``.dvc/tmp/`` of the main repository, else its ``.cache/``.

    The main repository (:func:`cropseg.core.workspace.repo_root`), not a queued experiment's
    temporary copy, so that the memo outlives the copy.
    """
    explicit = os.environ.get(ENV)
    if explicit:
        return Path(explicit)
    root = repo_root()
    folder = root / ".dvc" / "tmp" if (root / ".dvc").is_dir() else root / ".cache"
    return folder / "lineage-md5.sqlite"


class HashCache:
    """md5 of files by ``(dev, inode)``, valid while size and mtime are unchanged."""

    def __init__(self, location: str | Path | None = None, timeout: float = 5.0):
        """Open (or create) the memo; on any failure the memo is a no-op.

        Args:
            location: the SQLite file (:func:`default_location` when None).
            timeout: seconds to wait for another process's write lock before giving up: a busy
                memo must not hold a stage back.
        """
        self.location = Path(location) if location is not None else default_location()
        self._db: sqlite3.Connection | None = None
        try:
            self.location.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.location), timeout=timeout)
            self._db.execute(SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as error:
            self._disable("opened", error)

    def _disable(self, what: str, error: Exception) -> None:
        print(f"tracking: input hash memo {self.location} not {what} ({type(error).__name__}: {error}); "
              f"reading the files instead")
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db = None

    def lookup(self, stats: Mapping[str, os.stat_result]) -> dict[str, str]:
        """The remembered md5 of each file whose inode, size and mtime match.

        Args:
            stats: path -> ``os.stat`` of each file, taken before the lookup.

        Returns:
            path -> md5 for the files found unchanged; the others are left out.
        """
        if self._db is None or not stats:
            return {}
        by_inode: dict[tuple[int, int], list[str]] = {}
        for path, st in stats.items():
            by_inode.setdefault((st.st_dev, st.st_ino), []).append(path)
        inodes = sorted({ino for _, ino in by_inode})
        found = {}
        try:
            for start in range(0, len(inodes), BATCH):
                chunk = inodes[start:start + BATCH]
                rows = self._db.execute(f"SELECT dev, ino, size, mtime_ns, md5 FROM md5 WHERE ino IN "
                                        f"({','.join('?' * len(chunk))})", chunk)
                for dev, ino, size, mtime_ns, md5 in rows:
                    for path in by_inode.get((dev, ino), ()):
                        st = stats[path]
                        if st.st_size == size and st.st_mtime_ns == mtime_ns:
                            found[path] = md5
        except sqlite3.Error as error:
            self._disable("read", error)
            return {}
        return found

    def store(self, entries: Iterable[tuple[os.stat_result, str]]) -> None:
        """Remember md5s, each with the stat taken *before* its file was read (a file written
        during the read then has a newer mtime and misses next time); files modified in the last
        :data:`RACY_S` seconds are left out.

        Args:
            entries: ``(stat, md5)`` pairs.
        """
        if self._db is None:
            return
        settled = time.time_ns() - int(RACY_S * 1e9)
        rows = [(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, md5) for st, md5 in entries
                if st.st_mtime_ns < settled]
        if not rows:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO md5 VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as error:
            self._disable("written", error)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
