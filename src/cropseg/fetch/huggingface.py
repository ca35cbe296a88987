"""The ``huggingface`` source of ``fetch_s4a``: S4A patches from a Hugging Face Hub dataset repo.

Why it works this way:

* **Resume through a cache outside the DVC outputs.** Files are downloaded by
  ``huggingface_hub.hf_hub_download`` into ``data.huggingface.cache_dir`` (the standard hub cache
  layout), never straight into ``data/netcdf`` (which ``fetch_s4a`` builds in a temporary folder and
  DVC owns). The revision is resolved to a commit once, and every file is listed and downloaded at
  that commit, so the listing and the bytes agree even if the repo moves meanwhile, and a file
  already in the cache is used without any request. A fetch that is interrupted, or that fails on
  one file, therefore resumes where it stopped when run again. Within one download a dropped
  connection is resumed by huggingface_hub with an HTTP ``Range`` request; a partial file left by a
  killed process is *not* reused (huggingface_hub 2.4.0 writes to a process-unique
  ``<etag>.<random>.incomplete`` and deletes it on failure), so across runs resume is per file.
* **Checksums.** huggingface_hub does not check the content it downloads against the repo. Each
  file is checked here against what the Hub lists for it: for LFS files the sha256 of the content
  (``lfs.sha256``), for plain git files the git blob id (sha1 of ``b"blob <size>\\0" + content``).
  A mismatch evicts the file from the cache and downloads it again; after ``retries`` retries it is
  an error naming the file, the expected and the found checksum. Cached files are re-checked on
  every fetch, so a cache damaged on disk is repaired, not propagated.
* **No second copy.** Verified files are hard-linked from the cache blob to
  ``dest_root/YYYY/TILE/name.nc`` (copied when the two are on different file systems).

Network errors (connection, timeout, HTTP 408/429/5xx) are retried with exponential backoff
(``backoff_s``, doubled each time, capped at :data:`MAX_BACKOFF_S`: the
:class:`cropseg.core.download.RetryPolicy` the DEM download uses too); errors the Hub gives as final
(repo, revision or file not found, no access, offline mode) are not. A checksum mismatch is
retried by the same policy.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import httpx2
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    DisabledRepoError,
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    XetDownloadError,
)
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import silent_tqdm
from tqdm import tqdm

from ..core.download import RetryPolicy
from ..core.files import link_or_copy
from ..core.params import Data, HuggingFaceData
from ..s4a.netcdf import PatchName, parse_patch_name

logger = logging.getLogger(__name__)

REPO_TYPE = "dataset"
MAX_BACKOFF_S = 120.0
_HASH_CHUNK = 1 << 20
_RETRY_STATUS = (408, 429, 500, 502, 503, 504)
T = TypeVar("T")


class HubError(RuntimeError):
    """Listing or downloading failed for good (a missing repo or revision, or transient errors until
    the retries ran out): a domain error, so the stage prints one line, not a traceback."""


class ChecksumMismatch(RuntimeError):
    """A downloaded file kept differing from the checksum the Hub lists for it."""


class NoMatchingPatches(ValueError):
    """The repo has no S4A patch file passing ``data.years`` / ``data.tiles``."""


@dataclass(frozen=True)
class RemotePatch:
    """One S4A patch file of the repo, with the checksum the Hub lists for it."""

    repo_path: str  # path inside the repo, e.g. data/2019/31TCG/2019_31TCG_patch_13_11.nc
    name: PatchName
    size: int
    algorithm: Literal["sha256", "git-sha1"]  # sha256 of the content (LFS) or git blob id
    checksum: str


def file_checksum(path: str | Path, algorithm: Literal["sha256", "git-sha1"]) -> str:
    """Hex checksum of a file as the Hub lists it: sha256 of the content, or the git blob sha1.

    Args:
        path: the file.
        algorithm: ``"sha256"`` (LFS files: sha256 of the content) or ``"git-sha1"`` (plain git
            files: sha1 of ``b"blob <size>\\0" + content``).

    Returns:
        The lowercase hex digest.

    Raises:
        ValueError: ``algorithm`` is neither.
    """
    path = Path(path)
    if algorithm == "sha256":
        digest = hashlib.sha256(usedforsecurity=False)
    elif algorithm == "git-sha1":
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(b"blob %d\0" % path.stat().st_size)
    else:
        raise ValueError(f"unknown checksum algorithm {algorithm!r}")
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _caused_by(error: BaseException, kinds: type | tuple[type, ...]) -> bool:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, kinds):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def is_transient(error: BaseException) -> bool:
    """Whether retrying may help: network trouble yes; not found, no access, offline mode no."""
    if _caused_by(error, OfflineModeIsEnabled):
        return False
    if isinstance(error, (RepositoryNotFoundError, RevisionNotFoundError, DisabledRepoError)):
        return False
    if isinstance(error, HfHubHTTPError):
        return error.response is not None and error.response.status_code in _RETRY_STATUS
    if isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError):
        return False
    if isinstance(error, LocalEntryNotFoundError):
        # raised when the HEAD request failed and the file is not cached: transient unless caused by a final error
        cause = error.__cause__
        return cause is None or is_transient(cause)
    if isinstance(error, (httpx2.TransportError, XetDownloadError)):
        return not isinstance(error, httpx2.UnsupportedProtocol)
    # huggingface_hub signals a truncated download as OSError("Consistency check failed ...") without errno;
    # OSErrors with an errno (disk full, permission denied) are local and final.
    return isinstance(error, OSError) and error.errno is None


def _policy(cfg: HuggingFaceData) -> RetryPolicy:
    return RetryPolicy(cfg.retries, cfg.backoff_s, MAX_BACKOFF_S)


def _with_retries(cfg: HuggingFaceData, what: str, call: Callable[[], T]) -> T:
    """``call()``, retried under :func:`_policy` while it raises a transient error; the last error is raised."""
    policy = _policy(cfg)
    for attempt in policy.attempts():
        try:
            return call()
        except Exception as error:
            if policy.is_last(attempt) or not is_transient(error):
                raise
            logger.warning("%s failed (%s: %s); retry %d/%d in %.3g s",
                           what, type(error).__name__, error, attempt + 1, cfg.retries, policy.delay(attempt))
    raise AssertionError("unreachable")


def _describe(data: Data) -> str:
    hub = data.huggingface
    return f"dataset {hub.repo_id!r} at revision {hub.revision!r}"


def list_patches(data: Data, api: HfApi | None = None) -> tuple[str, list[RemotePatch], list[RemotePatch]]:
    """Resolve ``data.huggingface.revision`` and list the repo's S4A patch files.

    Files are recognised by their name only (``YYYY_TILE_patch_XX_YY.nc``), wherever they are in
    the repo. Resolving and listing are retried on transient errors (:func:`is_transient`).

    Args:
        data: the ``data`` params: ``huggingface`` (repo, revision, retries, cache) and the
            ``years``/``tiles``/``limit`` filters.
        api: the Hub client; a default :class:`~huggingface_hub.HfApi` when ``None``.

    Returns:
        ``(commit, selected, all_patches)``: the resolved commit; the patches passing
        ``data.years``/``data.tiles``, sorted by ``YYYY/TILE/name.nc`` and cut to ``data.limit``;
        and every patch file of the repo, in the same order.

    Raises:
        HubError: the repo or revision does not exist, or listing failed for good (final
            error or retries used up; the message points at the network, ``HF_ENDPOINT`` and
            ``HF_HUB_OFFLINE``).
        ValueError: a selected patch name occurs at more than one path in the repo.
    """
    hub = data.huggingface
    api = api or HfApi()
    try:
        resolved = _with_retries(hub, f"resolving {_describe(data)}", lambda: api.resolve_revision(
            hub.repo_id, repo_type=REPO_TYPE, revision=hub.revision, cache_dir=hub.cache_dir))
        commit = resolved.resolved
        entries = _with_retries(hub, f"listing {_describe(data)}", lambda: list(api.list_repo_tree(
            hub.repo_id, repo_type=REPO_TYPE, revision=commit, recursive=True)))
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise HubError(f"cannot list {_describe(data)}: {error}") from error
    except Exception as error:
        raise HubError(f"cannot list {_describe(data)} ({type(error).__name__}: {error}); "
                           f"check the network, HF_ENDPOINT and HF_HUB_OFFLINE") from error

    patches: list[RemotePatch] = []
    for entry in entries:
        if not isinstance(entry, RepoFile):
            continue
        try:
            name = parse_patch_name(entry.path)
        except ValueError:
            continue
        if entry.lfs is not None:
            patches.append(RemotePatch(entry.path, name, entry.lfs.size, "sha256", entry.lfs.sha256))
        else:
            patches.append(RemotePatch(entry.path, name, entry.size, "git-sha1", entry.blob_id))
    patches.sort(key=lambda p: (p.name.relpath, p.repo_path))

    years = set(data.years)
    selected = [p for p in patches if p.name.year in years and data.wants_tile(p.name.tile)]
    by_relpath: dict[str, list[str]] = {}
    for patch in selected:
        by_relpath.setdefault(patch.name.relpath, []).append(patch.repo_path)
    duplicates = {k: v for k, v in by_relpath.items() if len(v) > 1}
    if duplicates:
        example, paths = next(iter(duplicates.items()))
        raise ValueError(f"{_describe(data)}: {len(duplicates)} patch name(s) occur more than once, "
                         f"e.g. {example} at {paths}")
    if data.limit is not None:
        selected = selected[:data.limit]
    return commit, selected, patches


def _no_match_message(data: Data, commit: str, patches: list[RemotePatch]) -> str:
    found = (f"the repo has {len(patches)} S4A patch file(s) (YYYY_TILE_patch_XX_YY.nc)")
    if patches:
        years = Counter(p.name.year for p in patches)
        tiles = Counter(p.name.tile for p in patches)
        shown = sorted(tiles)[:20]
        found += (f"; years: {dict(sorted(years.items()))}; tiles ({len(tiles)}): "
                  f"{', '.join(shown)}{', ...' if len(tiles) > len(shown) else ''}")
    return (f"no S4A patch file of {_describe(data)} (commit {commit}) matches "
            f"data.years={data.years} and data.tiles={data.tiles or 'all'}: {found}")


def _place(blob: Path, target: Path) -> Path:
    """Hard-link ``blob`` to ``target`` (copy across file systems); replace ``target`` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    tmp.unlink(missing_ok=True)
    try:
        link_or_copy(blob, tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def _evict(pointer: Path, blob: Path) -> None:
    """Remove a bad file from the hub cache (snapshot pointer and blob) so it is downloaded again."""
    for path in (pointer, blob):
        if os.path.lexists(path):
            path.unlink()


def fetch_patch(patch: RemotePatch, commit: str, cfg: HuggingFaceData, dest_root: Path) -> Path:
    """Download one patch into the cache (retrying), verify its checksum, place it under ``dest_root``.

    A file found in the cache is checked like a fresh one; a mismatch evicts it and counts as a
    failed attempt.

    Args:
        patch: the file to fetch, with its expected checksum.
        commit: the resolved commit it is downloaded at.
        cfg: ``data.huggingface`` (repo, cache folder, retries, backoff).
        dest_root: the folder the patch is placed under, at ``YYYY/TILE/name.nc``.

    Returns:
        The placed path, hard-linked from the cache blob (copied across file systems).

    Raises:
        ChecksumMismatch: the content still differs from the listed checksum after
            ``cfg.retries`` retries.
        HubError: the download failed with a final error, or with transient ones until the
            retries were used up.
    """
    found: str | None = None
    policy = _policy(cfg)
    for attempt in policy.attempts():
        try:
            pointer = Path(hf_hub_download(
                cfg.repo_id, patch.repo_path, repo_type=REPO_TYPE, revision=commit,
                cache_dir=cfg.cache_dir, tqdm_class=silent_tqdm))
        except Exception as error:
            if policy.is_last(attempt) or not is_transient(error):
                raise HubError(f"{cfg.repo_id}/{patch.repo_path}: download failed after {attempt + 1} "
                                   f"attempt(s): {type(error).__name__}: {error}") from error
            logger.warning("%s: download failed (%s: %s); retry %d/%d", patch.repo_path,
                           type(error).__name__, error, attempt + 1, cfg.retries)
            continue
        blob = Path(os.path.realpath(pointer))
        found = file_checksum(blob, patch.algorithm)
        if found == patch.checksum:
            return _place(blob, dest_root / patch.name.relpath)
        logger.warning("%s: %s checksum %s, expected %s; evicted from the cache, retry %d/%d",
                       patch.repo_path, patch.algorithm, found, patch.checksum, attempt + 1, cfg.retries)
        _evict(pointer, blob)
    raise ChecksumMismatch(
        f"{cfg.repo_id}/{patch.repo_path} (commit {commit}): {patch.algorithm} checksum mismatch after "
        f"{cfg.retries + 1} download(s): expected {patch.checksum}, found {found}")


def download_patches(data: Data, dest_root: Path) -> list[Path]:
    """Fetch the S4A patches selected by ``data`` from ``data.huggingface.repo_id`` into ``dest_root``.

    Each file lands at ``dest_root/YYYY/TILE/YYYY_TILE_patch_XX_YY.nc``, checksum-verified,
    hard-linked from the download cache; ``data.huggingface.workers`` files are fetched at once.

    Args:
        data: the ``data`` params (repo, revision, filters, retries, cache folder, workers).
        dest_root: the folder the patches are placed under; created as needed.

    Returns:
        The placed paths, sorted.

    Raises:
        NoMatchingPatches: no patch of the repo passes the filters.
        ChecksumMismatch: a file stays corrupt after the retries.
        HubError: listing or a download failed otherwise (see :func:`list_patches`,
            :func:`fetch_patch`).
        ValueError: a selected patch name occurs twice in the repo.
    """
    hub = data.huggingface
    dest_root = Path(dest_root)
    started = time.perf_counter()
    commit, selected, patches = list_patches(data)
    if not selected:
        raise NoMatchingPatches(_no_match_message(data, commit, patches))
    total = sum(p.size for p in selected)
    placed: list[Path] = []
    done = 0
    with tqdm(total=len(selected), unit="file", desc=f"fetch {hub.repo_id}") as bar, \
            ThreadPoolExecutor(max_workers=min(hub.workers, len(selected))) as pool:
        futures = {pool.submit(fetch_patch, patch, commit, hub, dest_root): patch for patch in selected}
        try:
            for future in as_completed(futures):
                placed.append(future.result())
                done += futures[future].size
                bar.set_postfix_str(f"{done / 1e6:.1f}/{total / 1e6:.1f} MB", refresh=False)
                bar.update()
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    elapsed = time.perf_counter() - started
    logger.info("fetched %d patch file(s), %.1f MB, from %s@%s in %.1f s",
                len(placed), total / 1e6, hub.repo_id, commit[:12], elapsed)
    return sorted(placed)
