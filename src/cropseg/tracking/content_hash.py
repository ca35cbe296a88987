"""The md5 DVC records for an input, without reading the files DVC or an earlier run already hashed.

DVC 3 (``hash: md5`` in ``dvc.lock``) records the md5 of a file's bytes and, for a directory, the
md5 of the JSON list of its files' ``{md5, relpath}`` sorted by path, plus ``.dir``. Reading every
byte to recompute that costs the size of the input at disk speed on every run (321 MB/s here:
~20 min for the medians of 15,000 real patches). A file's md5 is taken instead from, in order:

1. the stage's own memo (:mod:`cropseg.tracking.hash_cache`: ``(dev, inode)`` -> md5 while size
   and mtime are unchanged): no DVC import; measured 0.2 ms for a file (50 GiB or 5 GiB alike),
   ~20 µs per file of a folder (2,000 files: 43 ms);
2. DVC's state database (:mod:`cropseg.tracking.dvc_state`): what DVC computed before it ran the
   stage; 0.5 s for 3 files, 0.9-1.2 s for 2,000 (importing DVC and opening the repository
   dominate), so it is asked only for the files the memo lacks, and what it answers is memoised;
3. reading the file (:func:`file_md5`; 174-321 MB/s here), then remembered in the memo.

Why both and in that order: DVC's state alone already spares every read when DVC ran the stage,
but costs ~1 s per stage and knows nothing of a stage run by hand or of files outside the DVC
repository; the memo alone would read each new version of an input once more after DVC did.

Both caches decide "unchanged" by the same facts DVC uses (inode, size, mtime), so a file edited,
replaced or truncated since is read again, and a directory's ``.dir`` hash is rebuilt from
per-file md5s with only its changed files read. Measured by ``bench/lineage.py``.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

from .dvc_state import dvc_state_md5s
from .hash_cache import HashCache

CHUNK = 1 << 20


def file_md5(path: str | Path) -> str:
    """md5 of a file's bytes: the one place input bytes are read (tests count the calls)."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(path: str) -> dict[str, tuple[str, os.stat_result]]:
    """abs path -> (relpath in POSIX form, stat) of every file under ``path`` (following links to
    files, not descending into links to folders, as ``Path.rglob`` and DVC's walk do; broken links
    are skipped, as DVC does)."""
    files = {}
    folders = [(path, "")]
    while folders:
        folder, prefix = folders.pop()
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append((entry.path, f"{prefix}{entry.name}/"))
                    continue
                try:
                    st = entry.stat()  # follows a link; cached by scandir for a plain file
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    files[entry.path] = (prefix + entry.name, st)
    return files


def file_md5s(stats: dict[str, os.stat_result], cache: HashCache | None = None) -> dict[str, str]:
    """md5 of each file, reading only those neither the memo nor DVC's state knows unchanged.

    Args:
        stats: absolute path -> ``os.stat`` taken now (before any read).
        cache: the memo to use (a fresh :class:`HashCache` at its default place when None).

    Returns:
        path -> md5 of every file in ``stats``.
    """
    own = cache if cache is not None else HashCache()
    try:
        known = own.lookup(stats)
        missing = [p for p in stats if p not in known]
        learned = dvc_state_md5s(missing) if missing else {}
        for path in missing:
            if path not in learned:
                learned[path] = file_md5(path)
        own.store((stats[p], md5) for p, md5 in learned.items())
        return known | learned
    finally:
        if cache is None:
            own.close()


def dvc_md5(path: str | Path, cache: HashCache | None = None) -> str:
    """The md5 DVC 3 records for ``path`` in ``dvc.lock`` (``.dir``-suffixed for a directory).

    Args:
        path: a file or a directory.
        cache: the memo to use (a fresh :class:`HashCache` at its default place when None).
    """
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        return file_md5s({path: os.stat(path)}, cache)[path]
    files = _files(path)
    md5s = file_md5s({p: st for p, (_, st) in files.items()}, cache)
    entries = sorted(({"md5": md5s[p], "relpath": rel} for p, (rel, _) in files.items()),
                     key=lambda e: e["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing).hexdigest() + ".dir"
