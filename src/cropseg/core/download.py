"""Downloads over plain HTTPS: one retry policy and a resumable single-file download.

Why here and not in each source: the DEM tiles (:mod:`cropseg.fetch.dem`) are fetched with this client,
and the Hugging Face source (:mod:`cropseg.fetch.huggingface`), which keeps ``huggingface_hub`` for listing and
transfer (it has its own resume and cache), retries with the same :class:`RetryPolicy`: how many
attempts, and how long to wait before each retry (:func:`backoff_delay`). What counts as worth a
retry stays with each caller (an HTTP status here, :func:`cropseg.fetch.huggingface.is_transient` there), and so
do the error messages. The client is the standard library's ``urllib``: a GET with
``Range: bytes=N-`` resumes into ``NAME.part`` (RFC 9110: Range 14.2, 206 Partial Content
15.3.7, 416 Range Not Satisfiable 15.5.17; a server that ignores the range answers 200 and the
file starts over, a 416 whose Content-Range total equals the part's size means it is complete),
and the finished part is renamed onto the target, so a target that exists is complete.
"""

from __future__ import annotations

import http.client
import os
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20
MAX_BACKOFF_S = 60.0


class DownloadError(RuntimeError):
    """The download failed for good: a final HTTP error, or every retry used up."""


class NotFound(Exception):
    """The server says the file does not exist (HTTP 404)."""


def backoff_delay(base_s: float, retry: int, cap_s: float = MAX_BACKOFF_S) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first): ``base_s`` doubling, capped at ``cap_s``."""
    return min(base_s * 2**retry, cap_s)


@dataclass(frozen=True)
class RetryPolicy:
    """How often to try again and how long to wait first: the policy both download paths share.

    Args:
        retries: retries after the first attempt (so ``retries + 1`` attempts in all).
        backoff_s: wait before the first retry; doubled at each further retry.
        cap_s: the longest wait.
    """

    retries: int
    backoff_s: float = 1.0
    cap_s: float = MAX_BACKOFF_S

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first): :func:`backoff_delay`."""
        return backoff_delay(self.backoff_s, retry, self.cap_s)

    def attempts(self) -> Iterator[int]:
        """Attempt numbers ``0 .. retries``, sleeping :meth:`delay` before each one after the first.

        The caller's loop body makes one attempt and ``return``s (or raises) when it is done; a
        ``continue`` (or falling through) asks for the next attempt. When the loop ends, every
        attempt failed and the caller raises its own error.
        """
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.delay(attempt - 1))
            yield attempt

    def is_last(self, attempt: int) -> bool:
        """Whether ``attempt`` (from :meth:`attempts`) is the final one: no retry follows it."""
        return attempt >= self.retries


def _remote_size(response: http.client.HTTPResponse, offset: int) -> int | None:
    """Total size of the remote file from Content-Range (206) or Content-Length (200)."""
    content_range = response.headers.get("Content-Range", "")
    if response.status == 206 and "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        return int(total) if total.isdigit() else None
    length = response.headers.get("Content-Length")
    if length is None or not length.strip().isdigit():
        return None
    return int(length) + (offset if response.status == 206 else 0)


def download_resumable(url: str, target: Path, retries: int = 5, timeout_s: float = 60.0,
                       backoff_s: float = 1.0, user_agent: str = "cropseg-fetch-dem") -> int:
    """Download ``url`` to ``target`` through ``target.part``, resuming it with HTTP Range.

    Network errors, 5xx/429 answers and short bodies are retried ``retries`` times with exponential
    backoff (:class:`RetryPolicy`: ``backoff_s``, doubling, capped at 60 s); each retry continues
    from the bytes already in the ``.part`` file.

    Args:
        url: the file to fetch.
        target: where the complete file lands; its parent folder is created.
        retries: retries after the first attempt.
        timeout_s: socket timeout of each request.
        backoff_s: wait before the first retry.
        user_agent: the ``User-Agent`` header sent.

    Returns:
        The number of bytes transferred by this call.

    Raises:
        NotFound: the server answered 404.
        DownloadError: another final HTTP error, or the retries are used up (the message says
            whether partial data was kept for the next run to resume).
    """
    part = target.with_name(target.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    transferred = 0
    last_error = "no attempt made"
    for _attempt in RetryPolicy(retries, backoff_s).attempts():
        offset = part.stat().st_size if part.exists() else 0
        request = urllib.request.Request(url, headers={"User-Agent": user_agent})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                if response.status == 200 and offset:
                    offset = 0  # the server ignored the range: start over
                total = _remote_size(response, offset)
                with open(part, "r+b" if offset else "wb") as handle:
                    handle.seek(offset)
                    handle.truncate()
                    while chunk := response.read(_CHUNK):
                        handle.write(chunk)
                        transferred += len(chunk)
                size = part.stat().st_size
            if total is not None and size != total:
                last_error = f"connection closed after {size} of {total} bytes"
                continue
            os.replace(part, target)
            return transferred
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise NotFound(url) from None
            if error.code == 416 and offset:
                # the .part already holds the whole file (or more): check it by its size on the server
                total = _content_range_total(error.headers.get("Content-Range", ""))
                if total is not None and total == offset:
                    os.replace(part, target)
                    return transferred
                part.unlink(missing_ok=True)
                last_error = f"HTTP 416 for a partial file of {offset} bytes; restarting"
                continue
            if error.code < 500 and error.code != 429:
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from None
            last_error = f"HTTP {error.code} {error.reason}"
        except (urllib.error.URLError, http.client.HTTPException, socket.timeout, ConnectionError, OSError) as error:
            last_error = f"{type(error).__name__}: {getattr(error, 'reason', error)}"
    kept = f" (partial data kept in {part}; rerun to resume)" if part.exists() and part.stat().st_size else ""
    raise DownloadError(f"{url}: download failed after {retries + 1} attempt(s): {last_error}{kept}")


def _content_range_total(value: str) -> int | None:
    total = value.rsplit("/", 1)[-1].strip() if "/" in value else ""
    return int(total) if total.isdigit() else None
