"""Recording an input's lineage hash: reading every byte vs the memo and DVC's state, in one run.

    python bench/lineage.py                     # 5 GiB sparse file read once, 50 GiB sparse file cached
    python bench/lineage.py --size 1G --files 5000
    python bench/lineage.py --verify-big        # also read the 50 GiB file (minutes) to check its md5

What a stage pays before it starts when W&B is on (``tracking/content_hash.py``):

1. **file, first hash**: a ``--size`` sparse file hashed with an empty memo, i.e. read in full
   (holes read as zeros at page-cache speed, so this is a lower bound on a real disk's cost);
   extrapolated to 50 GiB and to the medians of 15,000 and 250,000 patches (26 MB each);
2. **file, unchanged**: the same call again (memo hit; no byte read, checked);
3. **file, changed**: one byte rewritten in place (same size, new mtime): read again, new md5;
4. **50 GiB, unchanged**: a ``--big`` sparse file whose md5 was computed once (the md5 of 50 GiB of
   zeros is a constant below; other sizes are hashed in memory) is recorded by the memo, then
   hashed with reading forbidden: the cost of the cached path at that size;
5. **directory**: ``--files`` small files: first hash, unchanged (stat + lookup per file, the part
   that grows with the number of files), one file changed (exactly one read, checked);
6. **DVC's state** (skipped with ``--no-dvc`` or without ``dvc``): the directory ``dvc add``-ed in a
   scratch repository, then hashed with an empty memo: the md5s come from DVC, no read.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import cropseg.tracking.content_hash as content_hash  # noqa: E402
from cropseg.tracking.content_hash import dvc_md5  # noqa: E402
from cropseg.tracking.hash_cache import HashCache  # noqa: E402

GIB = 1 << 30
PAST_NS = 1_600_000_000 * 10**9  # an mtime older than the memo's racy window
ZEROS_MD5 = {50 * GIB: "e7f4706922e1edfdb43cd89eb1af606d"}  # md5 of 50 GiB of zero bytes (--verify-big checks it)
PATCH_BYTES = 26e6


def parse_size(text: str) -> int:
    """``5G``, ``500M``, ``1024`` -> bytes (binary units, as ``truncate -s``)."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": GIB, "T": 1 << 40}
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    os.utime(path, ns=(PAST_NS, PAST_NS))
    return path


class Reads:
    """Counts (or forbids) the hasher's file reads."""

    def __init__(self):
        self.paths: list[str] = []
        self.forbid = False
        self.read = content_hash.file_md5  # the real reader
        content_hash.file_md5 = self

    def __call__(self, path) -> str:
        if self.forbid:
            raise AssertionError(f"{path} was read on the cached path")
        self.paths.append(str(path))
        return self.read(path)


def timed(call):
    start = time.perf_counter()
    value = call()
    return value, time.perf_counter() - start


def zeros_md5(size: int) -> str:
    digest, block = hashlib.md5(), bytes(1 << 26)
    for _ in range(size // len(block)):
        digest.update(block)
    digest.update(bytes(size % len(block)))
    return digest.hexdigest()


def row(what: str, seconds: float, note: str = "") -> None:
    print(f"{what:<44} {seconds:>10.4f} s  {note}")


def bench_file(tmp: Path, size: int, reads: Reads, memo: HashCache) -> float:
    path = sparse(tmp / "input.bin", size)
    reads.paths.clear()
    first, cold = timed(lambda: dvc_md5(path, memo))
    rate = size / cold
    row(f"file {size / GIB:g} GiB, first hash (full read)", cold,
        f"{rate / 1e6:.0f} MB/s, {len(reads.paths)} read")
    reads.forbid = True
    again, warm = timed(lambda: dvc_md5(path, memo))
    reads.forbid = False
    assert again == first
    row(f"file {size / GIB:g} GiB, unchanged", warm, "0 read, same md5")
    with open(path, "r+b") as handle:
        handle.seek(size // 2)
        handle.write(b"\x01")
    os.utime(path, ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    reads.paths.clear()
    changed, seconds = timed(lambda: dvc_md5(path, memo))
    assert changed != first and reads.paths == [str(path)]
    row(f"file {size / GIB:g} GiB, one byte changed", seconds, "1 read, new md5")
    path.unlink()
    return rate


def bench_big(tmp: Path, size: int, reads: Reads, memo: HashCache, verify: bool) -> None:
    path = sparse(tmp / "big.bin", size)
    if verify:
        md5, seconds = timed(lambda: reads.read(path))
        assert size not in ZEROS_MD5 or ZEROS_MD5[size] == md5, (md5, ZEROS_MD5[size])
        row(f"file {size / GIB:g} GiB, read in full (--verify-big)", seconds, md5)
    else:
        md5 = ZEROS_MD5.get(size) or zeros_md5(size)
    memo.store([(os.stat(path), md5)])  # the first hash, computed once
    reads.forbid = True
    recorded, seconds = timed(lambda: dvc_md5(path, memo))
    reads.forbid = False
    assert recorded == md5
    row(f"file {size / GIB:g} GiB, unchanged", seconds, "0 read (reading forbidden), md5 of its zeros")
    os.truncate(path, 1 << 20)  # changed, and small so that the re-read is quick
    os.utime(path, ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    reads.paths.clear()
    changed, seconds = timed(lambda: dvc_md5(path, memo))
    assert changed != md5 and reads.paths == [str(path)]
    row(f"file {size / GIB:g} GiB, then changed (1 MiB now)", seconds, "1 read, new md5")
    path.unlink()


def make_dir(folder: Path, files: int) -> Path:
    for i in range(files):
        path = folder / "shards" / f"{i // 1000:03d}" / f"{i:06d}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(i.to_bytes(8, "little") * 8192)  # 64 KiB
        os.utime(path, ns=(PAST_NS, PAST_NS))
    return folder


def bench_dir(tmp: Path, files: int, reads: Reads, memo: HashCache) -> None:
    folder = make_dir(tmp / "medians", files)
    reads.paths.clear()
    first, cold = timed(lambda: dvc_md5(folder, memo))
    row(f"directory of {files} files, first hash", cold, f"{len(reads.paths)} read")
    reads.forbid = True
    again, warm = timed(lambda: dvc_md5(folder, memo))
    reads.forbid = False
    assert again == first
    row(f"directory of {files} files, unchanged", warm,
        f"0 read; {warm / files * 1e6:.0f} µs/file -> {warm / files * 250_000:.1f} s for 250,000 files")
    changed_file = folder / "shards" / "000" / "000003.bin"
    changed_file.write_bytes(b"\xff" * 65536)
    os.utime(changed_file, ns=(PAST_NS + 10**9, PAST_NS + 10**9))
    reads.paths.clear()
    changed, seconds = timed(lambda: dvc_md5(folder, memo))
    assert changed != first and reads.paths == [str(changed_file)]
    row(f"directory of {files} files, one file changed", seconds, "1 read (that file), new md5")


def bench_dvc_state(tmp: Path, files: int, reads: Reads) -> None:
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
    if dvc is None:
        print("(no dvc: DVC state step skipped)")
        return
    repo = tmp / "repo"
    make_dir(repo / "data", files)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DVC_")}
    for args in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"]):
        subprocess.run(args, cwd=repo, env=env, check=True, capture_output=True)
    _, seconds = timed(lambda: subprocess.run([dvc, "add", "-q", "data"], cwd=repo, env=env, check=True,
                                              capture_output=True))
    row(f"`dvc add` of the {files} files (DVC hashes)", seconds)
    recorded = (repo / "data.dvc").read_text().split("md5: ")[1].split()[0]
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        empty = HashCache(tmp / "empty-memo.sqlite")
        reads.forbid = True
        md5, seconds = timed(lambda: dvc_md5("data", empty))
        reads.forbid = False
        empty.close()
    finally:
        os.chdir(cwd)
    assert md5 == recorded
    row(f"directory of {files} files, from DVC's state", seconds, "0 read, = the md5 in data.dvc")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="5G", help="the file read in full (default 5G)")
    parser.add_argument("--big", default="50G", help="the file shown on the cached path (default 50G)")
    parser.add_argument("--files", type=int, default=2000, help="files in the directory (default 2000)")
    parser.add_argument("--verify-big", action="store_true", help="read the big file too (minutes)")
    parser.add_argument("--no-dvc", action="store_true", help="skip the DVC state step")
    parser.add_argument("--tmp", default=None, help="scratch folder (sparse files must be supported)")
    args = parser.parse_args(argv)
    size, big = parse_size(args.size), parse_size(args.big)
    reads = Reads()
    with tempfile.TemporaryDirectory(dir=args.tmp, prefix="bench-lineage-") as scratch:
        tmp = Path(scratch)
        memo = HashCache(tmp / "memo.sqlite")
        print(f"{'step':<44} {'time':>12}  notes")
        rate = bench_file(tmp, size, reads, memo)
        bench_big(tmp, big, reads, memo, args.verify_big)
        bench_dir(tmp, args.files, reads, memo)
        if not args.no_dvc:
            bench_dvc_state(tmp, min(args.files, 2000), reads)
        memo.close()
    print(f"\nfull read at {rate / 1e6:.0f} MB/s (md5 of a sparse file: no disk I/O, so a lower bound):")
    for what, nbytes in ((f"{big / GIB:g} GiB", big), ("15,000 patches x 26 MB", 15_000 * PATCH_BYTES),
                         ("250,000 patches x 26 MB", 250_000 * PATCH_BYTES)):
        print(f"  {what:<26} {nbytes / rate:>8.0f} s on every run without the memo / DVC's state")


if __name__ == "__main__":
    main()
