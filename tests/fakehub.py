"""A tiny stand-in for the Hugging Face Hub on 127.0.0.1, for tests that must never use the network.

It implements exactly what huggingface_hub 2.4.0 requests for ``HfApi.resolve_revision`` (repo
info), ``HfApi.list_repo_tree`` (cursor pagination through a ``Link: <...>; rel="next"`` header)
and ``hf_hub_download`` (``HEAD``/``GET /datasets/{repo}/resolve/{revision}/{path}`` with
``X-Repo-Commit``, ``ETag``, ``X-Linked-Etag``, ``X-Linked-Size``, ``Content-Length`` and HTTP
``Range``), without Xet headers, so the client takes its plain HTTP path. Files are served as LFS
(etag = sha256 of the content) or as plain git blobs (etag = git blob sha1).

Faults are injected per file and per GET: ``hub.faults[path] = ["drop", "corrupt", None]`` makes
the first GET of ``path`` close the connection half way, the second serve flipped bytes, the rest
serve normally. Every request is recorded in ``hub.requests``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class HubFile:
    content: bytes
    lfs: bool = True

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.content) + self.content).hexdigest()

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_sha1


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FakeHub:
    """One dataset repo at one commit (also reachable by the branch name ``main``)."""

    repo_id: str
    files: dict[str, HubFile]
    page_size: int = 1000
    commit: str = COMMIT
    faults: dict[str, list[str | None]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def revisions(self) -> set[str]:
        return {"main", self.commit}

    def next_fault(self, path: str) -> str | None:
        with self._lock:
            plan = self.faults.get(path)
            return plan.pop(0) if plan else None

    def record(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def gets(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path.endswith("/" + quote(path))]

    def tree(self, recursive: bool) -> list[dict]:
        """Entries as the Hub's tree API lists them: folders then files, with oid/size/lfs."""
        folders = sorted({"/".join(p.split("/")[:i]) for p in self.files for i in range(1, p.count("/") + 1)})
        entries = [{"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
                   for f in folders]
        for path, item in sorted(self.files.items()):
            entry = {"type": "file", "oid": item.git_sha1, "size": len(item.content), "path": path}
            if item.lfs:
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{item.sha256}\nsize {len(item.content)}\n"
                entry["oid"] = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer.encode()).hexdigest()
                entry["lfs"] = {"oid": item.sha256, "size": len(item.content), "pointerSize": len(pointer)}
            entries.append(entry)
        if not recursive:
            entries = [e for e in entries if "/" not in e["path"]]
        return entries


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    api_prefix = f"/api/datasets/{hub.repo_id}/"
    resolve_prefix = f"/datasets/{hub.repo_id}/resolve/"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode(),
                       {"Content-Type": "application/json", "X-Error-Code": code, "X-Error-Message": message})

        def _json(self, payload, headers: dict[str, str] | None = None) -> None:
            self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

        def do_HEAD(self) -> None:
            self._dispatch()

        def do_GET(self) -> None:
            self._dispatch()

        def _dispatch(self) -> None:
            url = urlsplit(self.path)
            hub.record(Request(self.command, url.path, dict(self.headers.items())))
            if url.path.startswith(api_prefix) and self.command == "GET":
                self._api(unquote(url.path[len(api_prefix):]), parse_qs(url.query))
            elif url.path.startswith(resolve_prefix):
                revision, _, path = url.path[len(resolve_prefix):].partition("/")
                self._resolve(unquote(revision), unquote(path))
            else:
                self._error(404, "RepoNotFound", f"Repository not found: {url.path}")

        def _api(self, rest: str, query: dict[str, list[str]]) -> None:
            kind, _, rest = rest.partition("/")
            revision, _, subpath = rest.partition("/")
            if revision not in hub.revisions():
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            elif kind == "revision":
                self._json({"id": hub.repo_id, "sha": hub.commit, "private": False})
            elif kind == "tree" and not subpath:
                entries = hub.tree(query.get("recursive", ["false"])[0] == "true")
                start = int(query.get("cursor", ["0"])[0])
                page = entries[start:start + hub.page_size]
                headers = {}
                if start + hub.page_size < len(entries):
                    host, port = self.server.server_address[:2]
                    recursive = query.get("recursive", ["false"])[0]
                    nxt = (f"http://{host}:{port}{api_prefix}tree/{quote(revision, safe='')}"
                           f"?recursive={recursive}&expand=false&cursor={start + hub.page_size}")
                    headers["Link"] = f'<{nxt}>; rel="next"'
                self._json(page, headers)
            else:
                self._error(404, "EntryNotFound", f"not implemented by the fake hub: {rest}")

        def _resolve(self, revision: str, path: str) -> None:
            if revision not in hub.revisions():
                self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
                return
            item = hub.files.get(path)
            if item is None:
                self._error(404, "EntryNotFound", f"{path} does not exist on {revision}",)
                return
            content = item.content
            headers = {"X-Repo-Commit": hub.commit, "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if item.lfs:
                headers |= {"ETag": f'"{item.git_sha1}"', "X-Linked-Etag": f'"{item.sha256}"',
                            "X-Linked-Size": str(len(content))}
            else:
                headers["ETag"] = f'"{item.git_sha1}"'
            if self.command == "HEAD":
                self._send(200, content, headers)
                return
            fault = hub.next_fault(path)
            if fault == "corrupt":
                content = bytes(b ^ 0xFF for b in content[:64]) + content[64:]
            status, start, end = 200, 0, len(content) - 1
            spec = self.headers.get("Range")
            if spec:
                first, _, last = spec.removeprefix("bytes=").partition("-")
                start, end = int(first), int(last) if last else end
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            body = content[start:end + 1]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if fault == "drop":
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # a dropped connection is the point, not news
        pass


class FakeHubServer:
    """Serve ``hub`` on 127.0.0.1 (a free port) in a background thread; use as a context manager."""

    def __init__(self, hub: FakeHub):
        self.hub = hub
        self.server = _QuietServer(("127.0.0.1", 0), _handler(hub))
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fakehub", daemon=True)

    def __enter__(self) -> FakeHubServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
