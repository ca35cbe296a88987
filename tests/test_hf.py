"""The ``huggingface`` source of fetch_s4a, against a fake hub on 127.0.0.1 (never the network).

The fake serves real S4A files made by the synthetic generator. huggingface_hub reads ``HF_ENDPOINT``
and ``HF_HUB_OFFLINE`` once, at import (``huggingface_hub.constants``): the ``hub`` fixture patches
those constants and installs an HTTP client that refuses any host but 127.0.0.1, so offline mode is
lifted for the loopback server only. Every other test runs with ``HF_HUB_OFFLINE=1`` (conftest).
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import constants
from huggingface_hub.errors import OfflineModeIsEnabled
from huggingface_hub.utils import _http as hf_http
from huggingface_hub.utils import close_session, set_client_factory

from cropseg.fetch import huggingface as hf
from cropseg.core.params import Data, HuggingFaceData, SyntheticData
from cropseg.s4a.netcdf import parse_patch_name, validate_patch
from cropseg.fetch.synthetic import plan_patches
from cropseg.fetch.synthetic_files import write_patch

from fakehub import FakeHub, FakeHubServer, HubFile

REPO = "paren8esis/S4A"
YEARS, TILES = [2019, 2020], ["31TCG", "31TDG"]


@pytest.fixture(scope="module")
def patches(tmp_path_factory) -> dict[str, bytes]:
    """relpath -> bytes of 5 real tiny S4A files: 2019/31TCG x2, 2019/31TDG, 2020/31TCG, 2020/31TDG."""
    cfg = SyntheticData(patches=5, patch_size=61, acquisitions=4)
    root = tmp_path_factory.mktemp("s4a")
    plans = plan_patches(cfg, YEARS, TILES)
    for plan in plans:
        write_patch(cfg, plan, root)
    return {p.name.relpath: (root / p.name.relpath).read_bytes() for p in plans}


def _repo_path(relpath: str) -> str:
    """Where the repo stores a patch: ``data/YYYY/TILE/name``, except one kept in an odd folder."""
    name = parse_patch_name(relpath)
    if (name.year, name.tile) == (2019, "31TDG"):
        return f"extra/{name.filename}"  # selection must go by file name, not folder
    return f"data/{relpath}"


@pytest.fixture
def hub(patches, monkeypatch):
    """The fake hub serving the patches plus non-patch files, with the client pointed at it."""
    files = {_repo_path(rel): HubFile(content) for rel, content in patches.items()}
    # one patch stored as a plain git file (checksum = git blob sha1), the rest as LFS (sha256)
    plain = _repo_path(sorted(patches)[1])
    files[plain] = HubFile(files[plain].content, lfs=False)
    files["README.md"] = HubFile(b"# S4A\n", lfs=False)
    files["data/2019/31TCG/notes.txt"] = HubFile(b"not a patch\n", lfs=False)
    files["data/2019/31TCG/2019_31TCG_patch_1_2.nc"] = HubFile(b"badly named\n", lfs=False)
    fake = FakeHub(REPO, files, page_size=4)  # several pages: pagination is exercised
    with FakeHubServer(fake) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

        def loopback_only(request: httpx2.Request) -> None:
            if request.url.host != "127.0.0.1":
                raise OfflineModeIsEnabled(f"test: only the fake hub may be reached, not {request.url}")
            hf_http.hf_request_event_hook(request)

        set_client_factory(lambda: httpx2.Client(event_hooks={"request": [loopback_only]}, follow_redirects=True,
                                                 timeout=10, trust_env=False))
        try:
            yield fake
        finally:
            set_client_factory(hf_http.default_client_factory)
            close_session()


def _data(tmp_path: Path, years=(2019,), tiles=TILES, limit=None, retries=2, workers=2) -> Data:
    return Data(source="huggingface", years=list(years), tiles=None if tiles is None else list(tiles), limit=limit,
                huggingface=HuggingFaceData(repo_id=REPO, revision="main", retries=retries, backoff_s=0.001,
                                            workers=workers, cache_dir=str(tmp_path / "cache")))


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize(("years", "tiles", "limit", "expected"), [
    ((2019,), TILES, None, ["2019/31TCG/0", "2019/31TCG/1", "2019/31TDG/0"]),
    ((2019, 2020), ["31TDG"], None, ["2019/31TDG/0", "2020/31TDG/0"]),
    ((2019, 2020), TILES, 2, ["2019/31TCG/0", "2019/31TCG/1"]),
    ((2020,), None, None, ["2020/31TCG/0", "2020/31TDG/0"]),  # data.tiles: all -> no tile filter
])
def test_filters_place_exact_files_with_identical_bytes(hub, patches, tmp_path, years, tiles, limit, expected):
    by_group: dict[str, list[str]] = {}
    for rel in sorted(patches):
        by_group.setdefault(rel.rsplit("/", 1)[0], []).append(rel)
    want = [by_group[e.rsplit("/", 1)[0]][int(e.rsplit("/", 1)[1])] for e in expected]

    dest = tmp_path / "netcdf"
    placed = hf.download_patches(_data(tmp_path, years, tiles, limit), dest)

    assert placed == [dest / rel for rel in want]
    assert _tree(dest) == want  # README, notes.txt, the badly named file and filtered patches left out
    for rel in want:
        assert (dest / rel).read_bytes() == patches[rel]
        assert (dest / rel).stat().st_nlink >= 2  # hard-linked from the cache blob, not a second copy
    validate_patch(dest / want[0], dest)  # a real S4A file came through
    tree_calls = [r for r in hub.requests if "/tree/" in r.path]
    assert len(tree_calls) == -(-len(hub.tree(recursive=True)) // 4) > 1  # every page followed


def test_second_fetch_is_served_from_the_cache(hub, patches, tmp_path):
    data = _data(tmp_path)
    first = hf.download_patches(data, tmp_path / "a")
    downloads = [r for r in hub.requests if "/resolve/" in r.path]
    assert len(downloads) == 2 * 3  # HEAD + GET per file
    hub.requests.clear()
    second = hf.download_patches(data, tmp_path / "b")
    assert [p.relative_to(tmp_path / "b") for p in second] == [p.relative_to(tmp_path / "a") for p in first]
    assert [r for r in hub.requests if "/resolve/" in r.path] == []  # pinned commit + cached file: no request
    assert all(p.read_bytes() == patches[p.relative_to(tmp_path / "b").as_posix()] for p in second)


def test_dropped_connection_resumes_with_range_request(hub, patches, tmp_path, monkeypatch):
    # huggingface_hub keeps only whole DOWNLOAD_CHUNK_SIZE (10 MB) chunks of a broken transfer; a file
    # smaller than that restarts from 0. Smaller chunks make the tiny test file resume the way a large one does.
    chunk = 1024
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", chunk)
    rel = sorted(patches)[0]
    hub.faults[_repo_path(rel)] = ["drop"]  # the server closes the connection after half the bytes
    placed = hf.download_patches(_data(tmp_path, tiles=["31TCG"]), tmp_path / "netcdf")

    assert (tmp_path / "netcdf" / rel) in placed
    assert (tmp_path / "netcdf" / rel).read_bytes() == patches[rel]
    gets = hub.gets(_repo_path(rel))
    assert len(gets) == 2
    assert "range" not in {k.lower() for k in gets[0].headers}
    resumed = {k.lower(): v for k, v in gets[1].headers.items()}["range"]
    start = int(resumed.removeprefix("bytes=").removesuffix("-"))
    assert resumed == f"bytes={start}-" and len(patches[rel]) // 2 - chunk < start <= len(patches[rel]) // 2


def test_rerun_after_a_failed_fetch_downloads_only_what_is_missing(hub, patches, tmp_path):
    bad = sorted(patches)[2]  # 2019/31TDG, fetched last
    hub.faults[_repo_path(bad)] = ["corrupt"] * 3
    with pytest.raises(hf.ChecksumMismatch):
        hf.download_patches(_data(tmp_path, retries=2, workers=1), tmp_path / "run1")
    hub.requests.clear()
    placed = hf.download_patches(_data(tmp_path, retries=2, workers=1), tmp_path / "run2")
    assert [p.relative_to(tmp_path / "run2").as_posix() for p in placed] == sorted(patches)[:3]
    fetched = {r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path}
    assert len(fetched) == 1 and fetched.pop().endswith(_repo_path(bad))


@pytest.mark.parametrize("which", [0, 1], ids=["lfs-sha256", "git-blob-sha1"])
def test_persistent_corruption_is_a_clear_checksum_error(hub, patches, tmp_path, which):
    rel = sorted(patches)[which]
    path = _repo_path(rel)
    item = hub.files[path]
    assert item.lfs == (which == 0)
    hub.faults[path] = ["corrupt"] * 10
    bad = bytes(b ^ 0xFF for b in item.content[:64]) + item.content[64:]
    expected, found = ((item.sha256, hashlib.sha256(bad).hexdigest()) if item.lfs else
                       (item.git_sha1, hashlib.sha1(b"blob %d\0" % len(bad) + bad).hexdigest()))

    with pytest.raises(hf.ChecksumMismatch) as error:
        hf.download_patches(_data(tmp_path, retries=2), tmp_path / "netcdf")

    message = str(error.value)
    assert path in message and f"expected {expected}" in message and f"found {found}" in message
    assert "after 3 download(s)" in message
    assert len(hub.gets(path)) == 3
    assert not (tmp_path / "netcdf" / rel).exists()
    blobs = tmp_path / "cache" / "datasets--paren8esis--S4A" / "blobs"
    assert not (blobs / item.etag).exists()  # the bad bytes were evicted, not left for the next run


def test_transient_corruption_is_fixed_by_a_retry(hub, patches, tmp_path):
    rel = sorted(patches)[0]
    hub.faults[_repo_path(rel)] = ["corrupt"]
    hf.download_patches(_data(tmp_path), tmp_path / "netcdf")
    assert (tmp_path / "netcdf" / rel).read_bytes() == patches[rel]
    assert len(hub.gets(_repo_path(rel))) == 2


def test_no_match_names_filters_and_what_the_repo_has(hub, tmp_path):
    with pytest.raises(hf.NoMatchingPatches) as error:
        hf.download_patches(_data(tmp_path, years=(2021,), tiles=["31TCG"]), tmp_path / "netcdf")
    message = str(error.value)
    assert "data.years=[2021]" in message and "data.tiles=['31TCG']" in message
    assert "has 5 S4A patch file(s)" in message and "2019: 3, 2020: 2" in message
    assert not (tmp_path / "netcdf").exists()


def test_copies_when_hard_links_fail(hub, patches, tmp_path, monkeypatch):
    def no_link(src, dst):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(hf.os, "link", no_link)
    placed = hf.download_patches(_data(tmp_path, tiles=["31TDG"]), tmp_path / "netcdf")
    assert len(placed) == 1
    assert placed[0].read_bytes() == patches[placed[0].relative_to(tmp_path / "netcdf").as_posix()]
    assert placed[0].stat().st_nlink == 1


def test_offline_mode_fails_fast_without_retrying(tmp_path):
    assert constants.HF_HUB_OFFLINE  # conftest: no test reaches the network
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE") as raised:
        hf.download_patches(_data(tmp_path, retries=5), tmp_path / "netcdf")
    assert time.perf_counter() - started < 2
    assert not (tmp_path / "netcdf").exists()
    # a domain error: the fetch stage prints one line naming the cause, not a traceback
    from cropseg.core.stage_cli import run_stage

    def body():
        raise raised.value

    assert isinstance(raised.value, hf.HubError)
    assert run_stage("fetch_s4a", body) == 1


def test_file_checksum_matches_the_hub_definitions(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"Hello, World!")
    assert hf.file_checksum(path, "git-sha1") == "b45ef6fec89518d314f546fd6c3025367b721684"  # `git hash-object`
    assert hf.file_checksum(path, "sha256") == hashlib.sha256(b"Hello, World!").hexdigest()


def test_fetch_s4a_stage_validates_and_indexes_hub_files(hub, patches, tmp_path):
    from cropseg.fetch.stage import INDEX_FILE, fetch_s4a

    summary = fetch_s4a(_data(tmp_path, years=(2020,)), tmp_path / "netcdf", workers=1)
    assert summary.patches == 2 and summary.skipped == 0
    index = (tmp_path / "netcdf" / INDEX_FILE).read_text().splitlines()
    assert [row.split(",")[0] for row in index[1:]] == [rel for rel in sorted(patches) if rel.startswith("2020/")]
