"""Input hashes without rereading: the memo and DVC's state give the md5 a fresh read gives, a changed
file (new mtime, new inode, same size) is read again, and a directory rereads only its changed files."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cropseg.tracking.content_hash as content_hash
from cropseg.tracking.content_hash import dvc_md5
from cropseg.tracking.hash_cache import HashCache
from cropseg.tracking.lineage import input_hashes

BIN = Path(sys.executable).parent
PAST_NS = 1_600_000_000 * 10**9  # mtimes set well in the past: older than the memo's racy window


@pytest.fixture
def reads(tmp_path, monkeypatch) -> list[str]:
    """Paths read by the hasher, in order; the memo lives in tmp_path, outside any DVC repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CROPSEG_LINEAGE_CACHE", str(tmp_path / "memo" / "md5.sqlite"))
    seen: list[str] = []
    read = content_hash.file_md5
    monkeypatch.setattr(content_hash, "file_md5", lambda path: (seen.append(str(path)), read(path))[1])
    return seen


def _write(path: Path, data: bytes, mtime_ns: int = PAST_NS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _fresh_dir_md5(folder: Path) -> str:
    entries = sorted(({"md5": hashlib.md5(p.read_bytes()).hexdigest(), "relpath": p.relative_to(folder).as_posix()}
                      for p in folder.rglob("*") if p.is_file()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def test_the_cached_path_returns_the_md5_of_a_fresh_read(tmp_path, reads):
    _write(tmp_path / "in" / "a.bin", b"a" * 3000)
    _write(tmp_path / "in" / "sub" / "b.bin", b"b" * 5)
    _write(tmp_path / "one.bin", b"single")
    first = input_hashes({"dir": tmp_path / "in", "file": tmp_path / "one.bin", "absent": tmp_path / "no"})
    assert len(reads) == 3
    second = input_hashes({"dir": tmp_path / "in", "file": tmp_path / "one.bin", "absent": tmp_path / "no"})
    assert len(reads) == 3  # nothing read again
    assert first == second == {"dir": _fresh_dir_md5(tmp_path / "in"),
                                "file": hashlib.md5(b"single").hexdigest(), "absent": None}


def test_a_file_modified_with_the_same_size_is_read_again(tmp_path, reads):
    path = tmp_path / "x.bin"
    _write(path, b"old content")
    before = dvc_md5(path)
    assert dvc_md5(path) == before and len(reads) == 1
    _write(path, b"new content", mtime_ns=PAST_NS + 1)  # same size, mtime one nanosecond later
    after = dvc_md5(path)
    assert len(reads) == 2 and after == hashlib.md5(b"new content").hexdigest() != before


def test_a_replaced_file_with_the_same_size_and_mtime_is_read_again(tmp_path, reads):
    path = tmp_path / "x.bin"
    _write(path, b"old content")
    dvc_md5(path)
    keep = tmp_path / "keep.bin"
    os.link(path, keep)  # hold the old inode so the new file cannot reuse it
    _write(tmp_path / "new.bin", b"new content")
    os.replace(tmp_path / "new.bin", path)  # new inode, same size and mtime
    assert dvc_md5(path) == hashlib.md5(b"new content").hexdigest() and len(reads) == 2


def test_a_directory_rereads_only_its_changed_file(tmp_path, reads):
    folder = tmp_path / "medians"
    for i in range(5):
        _write(folder / "shards" / f"{i}.bin", bytes([i]) * 4096)
    _write(folder / "store.json", b"{}")
    before = dvc_md5(folder)
    assert len(reads) == 6
    reads.clear()
    _write(folder / "shards" / "3.bin", b"\xff" * 4096, mtime_ns=PAST_NS + 10**9)
    after = dvc_md5(folder)
    assert reads == [str(folder / "shards" / "3.bin")]
    assert after == _fresh_dir_md5(folder) != before


def test_a_recent_file_is_not_remembered(tmp_path, reads):
    """Its mtime may be shared by a second write in the same clock tick, so it is read every time."""
    path = tmp_path / "now.bin"
    path.write_bytes(b"just written")
    dvc_md5(path)
    dvc_md5(path)
    assert len(reads) == 2


def test_a_broken_memo_still_gives_the_right_md5(tmp_path, reads, monkeypatch, capsys):
    (tmp_path / "blocker").write_text("a file where the memo's folder should be")
    monkeypatch.setenv("CROPSEG_LINEAGE_CACHE", str(tmp_path / "blocker" / "md5.sqlite"))
    _write(tmp_path / "x.bin", b"content")
    assert dvc_md5(tmp_path / "x.bin") == hashlib.md5(b"content").hexdigest()
    assert "not opened" in capsys.readouterr().out
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"not a database" * 100)
    assert dvc_md5(tmp_path / "x.bin", HashCache(corrupt)) == hashlib.md5(b"content").hexdigest()


def test_hashes_dvc_computed_are_reused_without_reading(tmp_path, reads):
    """In a DVC repository, the md5s DVC keeps in its state database (here from `dvc add`) are the ones
    recorded, with no file read, and equal the hash in the .dvc file; a file changed since is read."""
    if shutil.which("dvc", path=str(BIN)) is None:
        pytest.skip("dvc is not installed")
    repo = tmp_path / "repo"
    for i in range(3):
        _write(repo / "data" / f"{i}.bin", os.urandom(1000))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")} | {"HOME": str(tmp_path)}
    for args in (["git", "init", "-q"], [str(BIN / "dvc"), "init", "-q"],
                 [str(BIN / "dvc"), "config", "core.analytics", "false"], [str(BIN / "dvc"), "add", "-q", "data"]):
        subprocess.run(args, cwd=repo, env=env, check=True, capture_output=True, timeout=120)
    os.chdir(repo)
    recorded = (repo / "data.dvc").read_text().split("md5: ")[1].split()[0]
    assert dvc_md5("data") == recorded and reads == []
    _write(repo / "data" / "1.bin", os.urandom(1000), mtime_ns=PAST_NS + 10**9)  # DVC's entry is stale now
    assert dvc_md5("data") == _fresh_dir_md5(repo / "data") != recorded
    assert reads == [str(repo / "data" / "1.bin")]
