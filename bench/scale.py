"""Scale benchmark: the sharded medians store vs the per-patch layout it replaced, at 1,000, 25,000
and 250,000 patches, side by side in one run.

    .venv/bin/python bench/scale.py [--sizes 1000 25000 250000] [--per-patch-max 25000] [--batches 2000]

What it builds (in ``--workdir``, default a temporary folder, removed at the end): synthetic stores
written directly (no netCDF, no medians computation: this measures the store, the index and the
loader, not the medians stage). Per patch the *structure* is the real one: a 6 x 6 grid of
sub-patches (366 / 61), every sub-patch one contiguous block, labels with a few S4A codes per
sub-patch, 20 tile-years. What is scaled down, to fit 250,000 patches on a shared disk: the window
(4 px instead of 61), the periods (6, ``freq: 2MS``, instead of 12) and the bands (1 instead of 4),
so a patch is ~20 kB instead of ~27 MB (6,700 TB -> 5 GB at 250,000). The shard cap is scaled by
the same factor, so a shard holds as many patches (~160) as a 4 GiB shard of real patches and the
*number of files* (what DVC pays for) is the real one. The per-patch layout is today's: two ``.npy``
per patch and a ``meta.json``, read by the previous loader (a memory map per patch, cached for
ever; every label map read at construction), reproduced here as :class:`PerPatchDataset`.

Measured, per size and layout:

* dataset construction (index -> sample list, parcel pixels) and class pixel counts: seconds and
  extra peak memory (``ru_maxrss``), each in a fresh process;
* open file descriptors (``/proc/self/fd``) during ``--batches`` shuffled batches of 16 (the
  first batches of a seeded permutation of every sample: a bounded sample of the epoch);
* random-access samples/s on one core over the same batches, warm page cache (a first pass reads
  them): the loader's own cost, which is what could grow with the number of patches; and the same
  with the *real* payload per sample (357 kB: 6 months x 4 bands x 61 x 61 float32) on a real-size
  store whose shards are sparse files (only the index is written; reads of holes return zeros), a
  tenth of the batches;
* files in the store, and ``dvc status`` on it (a fresh git + DVC repo, ``dvc add``, then
  ``dvc status`` best of 3; the per-patch layout only up to ``--per-patch-max``), also net of
  DVC's own start-up (``dvc status`` in a repo tracking nothing, ~0.6-0.9 s here), which no store
  layout can remove.

The design goals are printed as ratios at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cropseg.medians.store_layout import ALIGN  # noqa: E402
from cropseg.medians.store_writer import DEFAULT_SHARD_BYTES, create_shards, plan_store, write_index  # noqa: E402

WINDOW, GRID, PERIODS, BANDS, FREQ = 4, 6, 6, 1, "2MS"
REAL = {"window": 61, "grid": 6, "periods": 12, "bands": 4}  # S4A defaults: 366 px, 1MS, 4 bands, float32
YEARS, TILES = (2019, 2020), tuple(f"{30 + i // 5}T{'ABCDE'[i % 5]}{'FG'[i % 2]}X" for i in range(10))
#: S4A codes used for labels: some mapped by s4a11, some not, and 0 (background)
CODES = np.array([0, 0, 0, 110, 120, 140, 150, 160, 170, 180, 190, 211, 212, 213, 300, 400, 500, 600, 900],
                 dtype=np.uint32)
BATCH = 16
MONTHS = [4, 9]


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def patch_bytes(window: int, grid: int, periods: int, bands: int) -> int:
    return _aligned(grid * grid * periods * bands * window * window * 4) + _aligned(grid * grid * window * window * 4)


def scaled_shard_bytes() -> int:
    """The cap that gives as many patches per shard as 4 GiB gives real patches."""
    per_shard = DEFAULT_SHARD_BYTES // patch_bytes(**REAL)
    return per_shard * patch_bytes(WINDOW, GRID, PERIODS, BANDS)


def patch_list(n: int) -> list[tuple[str, int, str, int]]:
    out = []
    groups = [(y, t) for y in YEARS for t in TILES]
    for i in range(n):
        year, tile = groups[i % len(groups)]
        k = i // len(groups)
        out.append((f"{year}/{tile}/{year}_{tile}_patch_{k // 100:02d}_{k % 100:02d}_{k:06d}.nc", year, tile,
                    WINDOW * GRID))
    return out


def make_patches(rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Medians (count, 6, 6, periods, bands, w, w) and labels (count, 6, 6, w, w): each label row of
    a sub-patch one code, so a sub-patch holds 1 to 4 codes."""
    medians = rng.random((count, GRID, GRID, PERIODS, BANDS, WINDOW, WINDOW), dtype=np.float32) * 3000
    rows = CODES[rng.integers(0, len(CODES), (count, GRID, GRID, WINDOW))]
    labels = np.repeat(rows[..., None], WINDOW, axis=-1)
    return medians, labels


def chunk_counts(labels: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """:func:`cropseg.medians.store_writer.code_counts` of every patch of ``labels``, vectorised over the chunk."""
    count, per = labels.shape[0], GRID * GRID
    flat = labels.reshape(count * per, -1).astype(np.uint64)
    keys = (np.arange(count * per, dtype=np.uint64)[:, None] << np.uint64(32)) | flat
    unique, pixels = np.unique(keys.ravel(), return_counts=True)
    sample = (unique >> np.uint64(32)).astype(np.int64)
    code = (unique & np.uint64(0xFFFFFFFF)).astype(np.int64)
    bounds = np.searchsorted(sample, np.arange(count + 1) * per)
    return [(sample[a:b] - p * per, code[a:b], pixels[a:b].astype(np.int64))
            for p, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]))]


def store_meta() -> dict:
    from cropseg.medians.recipe import period_starts

    return {"bands": ["B02"][:BANDS], "freq": FREQ, "window": WINDOW, "dtype": "float32",
            "period_date": "start of the right-closed period (bins[i], bins[i+1]]",
            "periods": {str(y): period_starts(y, FREQ) for y in YEARS}}


def build(root: Path, n: int, per_patch: bool, seed: int = 0) -> list[str]:
    """The sharded store at ``root/sharded/medians`` and, when ``per_patch``, the same data in the
    per-patch layout at ``root/per_patch/medians``. Returns the patch paths."""
    patches = patch_list(n)
    plan = plan_store(patches, bands=BANDS, window=WINDOW, periods_of_year={y: PERIODS for y in YEARS},
                      dtype="float32", shard_bytes=scaled_shard_bytes())
    sharded = root / "sharded" / "medians"
    sharded.mkdir(parents=True)
    create_shards(sharded, plan)
    flat = root / "per_patch" / "medians"
    if per_patch:
        flat.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    counts: list = [None] * n
    records = []
    slots_by_shard: dict[int, list] = {}
    for slot in plan.slots:
        slots_by_shard.setdefault(slot.shard, []).append(slot)
    for shard, slots in sorted(slots_by_shard.items()):
        medians, labels = make_patches(rng, len(slots))
        buffer = np.zeros(plan.shards[shard]["bytes"], np.uint8)
        for k, slot in enumerate(slots):
            m = medians[k].view(np.uint8).ravel()
            lab = labels[k].view(np.uint8).ravel()
            buffer[slot.offset:slot.offset + m.size] = m
            buffer[slot.labels_offset:slot.labels_offset + lab.size] = lab
            if per_patch:
                stem = slot.path[:-3]
                (flat / stem).parent.mkdir(parents=True, exist_ok=True)
                np.save(flat / f"{stem}.npy", medians[k])
                np.save(flat / f"{stem}.labels.npy", labels[k])
                records.append({"path": slot.path, "medians": f"{stem}.npy", "labels": f"{stem}.labels.npy",
                                "year": slot.year, "size": slot.size, "sub_y": GRID, "sub_x": GRID,
                                "periods": PERIODS})
        buffer.tofile(sharded / plan.shards[shard]["name"])
        for slot, c in zip(slots, chunk_counts(labels)):
            counts[slot.row] = c
    write_index(sharded, plan, counts, store_meta())
    if per_patch:
        meta = {"format": "cropseg-medians/1", **store_meta(), "labels_dtype": "uint32",
                "patches": sorted(records, key=lambda r: r["path"])}
        (flat / "meta.json").write_text(json.dumps(meta))
    return [p[0] for p in sorted(patches)]


def build_sparse(root: Path, n: int) -> list[str]:
    """A store of *real-size* patches (61 px windows, 12 months, 4 bands: 26 MB each) whose shards
    are sparse files (nothing written: reads return zeros, the disk holds only the index), to time
    random access with the real payload per sample (the scaled store exaggerates fixed costs)."""
    patches = [(path, year, tile, 366) for path, year, tile, _ in patch_list(n)]
    plan = plan_store(patches, bands=4, window=61, periods_of_year={y: 12 for y in YEARS}, dtype="float32")
    medians = root / "medians"
    medians.mkdir(parents=True)
    create_shards(medians, plan)
    one = (np.arange(36, dtype=np.int64), np.zeros(36, np.int64), np.full(36, 61 * 61, np.int64))
    meta = {**store_meta(), "bands": ["B02", "B03", "B04", "B08"], "freq": "1MS", "window": 61}
    from cropseg.medians.recipe import period_starts

    meta["periods"] = {str(y): period_starts(y, "1MS") for y in YEARS}
    write_index(medians, plan, [one] * len(plan.slots), meta)
    return [p[0] for p in sorted(patches)]


# ---------------------------------------------------------------------------------------------
# the previous loader (per-patch layout), as it was before the sharded store


class PerPatchDataset:
    """The loader of the per-patch layout: a memory map per patch, opened on first use and kept;
    parcel pixels counted by reading every label map at construction."""

    def __init__(self, root: Path, split: list[str], label_set, months: list[int], normalize: float):
        from cropseg.nn.dataset import period_slice

        self.root = Path(root)
        self.meta = json.loads((self.root / "meta.json").read_text())
        by_path = {r["path"]: r for r in self.meta["patches"]}
        self.records = [by_path[p] for p in split]
        self.label_set, self.normalize = label_set, normalize
        self.sub_x, self.per_patch = GRID, GRID * GRID
        self.periods = period_slice(self.meta, YEARS[0], months)
        self._maps: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        counts = np.zeros(len(self.records) * self.per_patch, dtype=np.int64)
        for p in range(len(self.records)):
            labels = self.label_set.map(np.asarray(self._open(p)[1]))
            counts[p * self.per_patch:(p + 1) * self.per_patch] = (labels > 0).reshape(self.per_patch, -1).sum(1)
        self.parcel_pixels = counts
        self.indices = np.flatnonzero(counts > 0)

    def _open(self, patch: int):
        if patch not in self._maps:
            record = self.records[patch]
            self._maps[patch] = (np.load(self.root / record["medians"], mmap_mode="r"),
                                 np.load(self.root / record["labels"], mmap_mode="r"))
        return self._maps[patch]

    def class_pixel_counts(self) -> np.ndarray:
        total = np.zeros(len(self.label_set.class_names), dtype=np.int64)
        chosen = np.zeros(len(self.records) * self.per_patch, dtype=bool)
        chosen[self.indices] = True
        for p in range(len(self.records)):
            keep = chosen[p * self.per_patch:(p + 1) * self.per_patch].reshape(GRID, GRID)
            labels = self.label_set.map(np.asarray(self._open(p)[1])[keep])
            total += np.bincount(labels.ravel(), minlength=len(total))[: len(total)]
        return total

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, positions):
        index = self.indices[np.asarray(positions, dtype=np.int64)]
        months = self.periods.stop - self.periods.start
        x = np.empty((len(index), months, BANDS, WINDOW, WINDOW), dtype=np.float32)
        y = np.empty((len(index), WINDOW, WINDOW), dtype=np.int64)
        patch, within = np.divmod(index, self.per_patch)
        sub_y, sub_x = np.divmod(within, self.sub_x)
        for p in np.unique(patch):
            rows = np.flatnonzero(patch == p)
            images, labels = self._open(int(p))
            x[rows] = images[sub_y[rows], sub_x[rows], self.periods]
            y[rows] = self.label_set.map(labels[sub_y[rows], sub_x[rows]])
        x *= np.float32(1.0 / self.normalize)
        return index, x, y


# ---------------------------------------------------------------------------------------------
# measurements (each in a fresh process)


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _reset_peak() -> float:
    """Reset the peak RSS (VmHWM) to the current RSS and return it. ``ru_maxrss`` cannot be used:
    it survives fork + exec, so a child started by a big parent inherits the parent's peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def measure_real(medians: Path, split: Path, batches: int) -> dict:
    """Random-access samples/s with the real payload (sparse real-size store, every sample kept)."""
    import torch

    from cropseg.nn.dataset import SubPatchDataset, read_split_list
    from cropseg.split.labels import load_label_set

    torch.set_num_threads(1)
    dataset = SubPatchDataset(medians, read_split_list(split), load_label_set("s4a11", ROOT / "configs" / "labels"),
                              months=MONTHS, normalize=1e4, skip_empty=False)
    order = np.random.default_rng(0).permutation(len(dataset))
    chosen = [order[i:i + BATCH] for i in range(0, batches * BATCH, BATCH)]
    for positions in chosen:  # first pass: page cache (zero pages of the holes)
        dataset[positions]
    start = time.perf_counter()
    for positions in chosen:
        dataset[positions]
    return {"real_samples_per_s": len(chosen) * BATCH / (time.perf_counter() - start),
            "real_kb_per_sample": dataset.months * dataset.bands * dataset.window ** 2 * 4 / 1e3}


def measure(layout: str, medians: Path, split: Path, batches: int) -> dict:
    """Construction, class counts, descriptors and throughput of one store, in this process."""
    import torch

    from cropseg.nn.dataset import SubPatchDataset, read_split_list
    from cropseg.split.labels import load_label_set

    torch.set_num_threads(1)
    paths = read_split_list(split)
    label_set = load_label_set("s4a11", ROOT / "configs" / "labels")
    result: dict = {"layout": layout, "patches": len(paths)}
    fds0, rss0 = _fds(), _reset_peak()
    start = time.perf_counter()
    try:
        if layout == "sharded":
            dataset = SubPatchDataset(medians, paths, label_set, months=MONTHS, normalize=1e4, skip_empty=True)
        else:
            dataset = PerPatchDataset(medians, paths, label_set, MONTHS, 1e4)
        result["construct_s"] = time.perf_counter() - start
        start = time.perf_counter()
        dataset.class_pixel_counts()
        result["class_counts_s"] = time.perf_counter() - start
    except OSError as error:  # the per-patch loader runs out of descriptors or maps
        result["error"] = f"{type(error).__name__}: {error.strerror or error} after {time.perf_counter() - start:.1f} s"
        result["error_fds"] = _fds() - fds0
        return result
    result["extra_peak_mib"] = _status_mib("VmHWM") - rss0
    order = np.random.default_rng(0).permutation(len(dataset))
    chosen = [order[i:i + BATCH] for i in range(0, min(len(order), batches * BATCH), BATCH)]
    most = 0
    for positions in chosen:  # first pass: warms the page cache, counts descriptors
        dataset[positions]
        most = max(most, _fds())
    result["max_fds"] = most
    result["max_fds_opened"] = most - fds0
    start = time.perf_counter()
    for positions in chosen:
        dataset[positions]
    seconds = time.perf_counter() - start
    result["samples_per_s"] = sum(len(p) for p in chosen) / seconds
    result["samples_timed"] = sum(len(p) for p in chosen)
    return result


def measure_in_child(layout: str, medians: Path, split: Path, batches: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", layout, str(medians), str(split), str(batches)],
                          capture_output=True, text=True)
    if done.returncode:
        return {"layout": layout, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def dvc_status_seconds(folder: Path, dvc: str) -> tuple[float, float]:
    """(``dvc add`` seconds, best-of-3 ``dvc status`` seconds) on ``folder/medians`` in a fresh repo."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    run = lambda *cmd: subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env=env)  # noqa: E731
    run("git", "init", "-q")
    run(dvc, "init", "-q")
    run(dvc, "config", "core.analytics", "false")
    run(dvc, "config", "cache.type", "hardlink,symlink,copy")  # as .dvc/config
    start = time.perf_counter()
    run(dvc, "add", "-q", "medians")
    added = time.perf_counter() - start
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run(dvc, "status", "-q", "medians.dvc")
        best = min(best, time.perf_counter() - start)
    return added, best


def dvc_noop_seconds(folder: Path, dvc: str) -> float:
    """Best-of-3 ``dvc status`` in a fresh repo tracking nothing: DVC's own start-up, paid by any
    store, to subtract when comparing what each layout costs."""
    folder.mkdir(parents=True)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "config", "core.analytics", "false"]):
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True, env=env)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([dvc, "status", "-q"], cwd=folder, capture_output=True, env=env)
        best = min(best, time.perf_counter() - start)
    shutil.rmtree(folder)
    return best


def files_in(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 25000, 250000])
    parser.add_argument("--per-patch-max", type=int, default=25000, help="largest size built in the per-patch layout")
    parser.add_argument("--batches", type=int, default=2000, help="shuffled batches of 16 timed per store")
    parser.add_argument("--no-dvc", action="store_true", help="skip dvc add / dvc status")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()
    dvc = str(Path(sys.executable).with_name("dvc"))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scale-"))
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; ulimit -n {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}; "
          f"scaled patch {patch_bytes(WINDOW, GRID, PERIODS, BANDS) / 1e3:.0f} kB (real {patch_bytes(**REAL) / 1e6:.1f} MB), "
          f"shard cap {scaled_shard_bytes() / 1e6:.2f} MB (= 4 GiB of real patches); batches of {BATCH}", flush=True)
    rows = []
    noop = None if args.no_dvc else dvc_noop_seconds(work / "noop", dvc)
    try:
        for n in args.sizes:
            folder = work / str(n)
            start = time.perf_counter()
            paths = build(folder, n, per_patch=n <= args.per_patch_max)
            split = folder / "train.txt"
            split.write_text("\n".join(paths) + "\n")
            print(f"built {n} patches in {time.perf_counter() - start:.0f} s", flush=True)
            for layout in ("sharded", "per_patch"):
                medians = folder / layout / "medians"
                if not medians.exists():
                    rows.append({"n": n, "layout": layout, "skipped": True})
                    continue
                if layout == "sharded":  # just written, but 5 GB at 250,000: make sure it is in the page cache
                    subprocess.run(["cat", *map(str, (medians / "shards").glob("*.bin"))], stdout=subprocess.DEVNULL)
                row = {"n": n, **measure_in_child(layout, medians, split, args.batches), "files": files_in(medians),
                       "bytes": sum(p.stat().st_size for p in medians.rglob("*") if p.is_file())}
                if not args.no_dvc:
                    row["dvc_add_s"], row["dvc_status_s"] = dvc_status_seconds(folder / layout, dvc)
                rows.append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(folder / layout)
            real = folder / "real"
            build_sparse(real, n)
            real_batches = max(1, args.batches // 10)
            done = subprocess.run([sys.executable, __file__, "--child-real", str(real / "medians"), str(split),
                                   str(real_batches)], capture_output=True, text=True)
            measured = json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else \
                {"real_error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
            rows[-2 if rows[-1]["layout"] == "per_patch" else -1].update(measured)
            print(json.dumps({"n": n, **measured, "batches": real_batches}), flush=True)
            shutil.rmtree(folder)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    report(rows, noop)


def _fmt(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def report(rows: list[dict], noop: float | None = None) -> None:
    print()
    print("| patches | layout | files | construct s | class counts s | extra peak MiB | max fds | samples/s | "
          "samples/s, real size | dvc add s | dvc status s |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r.get("skipped"):
            print(f"| {r['n']:,} | {r['layout']} | not built (too large for the shared disk / time) ||||||||| ")
            continue
        if "error" in r:
            print(f"| {r['n']:,} | {r['layout']} | {r.get('files', 0):,} | fails: {r['error']} "
                  f"({r.get('error_fds')} descriptors) |||||| {_fmt(r.get('dvc_add_s'), '.1f')} | "
                  f"{_fmt(r.get('dvc_status_s'), '.2f')} |")
            continue
        print(f"| {r['n']:,} | {r['layout']} | {r['files']:,} | {r['construct_s']:.2f} | {r['class_counts_s']:.2f} | "
              f"{r['extra_peak_mib']:.0f} | {r['max_fds']} | {r['samples_per_s']:,.0f} | "
              f"{_fmt(r.get('real_samples_per_s'), ',.0f')} | "
              f"{_fmt(r.get('dvc_add_s'), '.1f')} | {_fmt(r.get('dvc_status_s'), '.2f')} |")
    by = {(r["n"], r["layout"]): r for r in rows if not r.get("skipped")}
    sizes = sorted({r["n"] for r in rows})
    big, small = sizes[-1], sizes[0]
    s_big, s_small = by.get((big, "sharded"), {}), by.get((small, "sharded"), {})
    print()
    print(f"goals at {big:,} patches (sharded store):")
    if "construct_s" in s_big:
        print(f"  construction {s_big['construct_s']:.2f} s (+ class counts {s_big['class_counts_s']:.2f} s) "
              f"vs goal 5 s: {(s_big['construct_s'] + s_big['class_counts_s']) / 5:.2f}x of the budget")
        print(f"  extra peak memory {s_big['extra_peak_mib']:.0f} MiB vs goal 1024 MiB: "
              f"{s_big['extra_peak_mib'] / 1024:.2f}x of the budget")
        print(f"  open descriptors {s_big['max_fds']} per process (vs goal 64)")
        print(f"  files {s_big['files']:,} vs goal {big // 100 + 10:,} (patches / 100 + 10)")
        if "samples_per_s" in s_small:
            print(f"  random access {s_big['samples_per_s']:,.0f} vs {s_small['samples_per_s']:,.0f} samples/s at "
                  f"{small:,}: {s_big['samples_per_s'] / s_small['samples_per_s']:.2f}x (goal >= 0.8x), scaled-down samples")
        if "real_samples_per_s" in s_big and "real_samples_per_s" in s_small:
            print(f"  random access, real-size samples ({s_big['real_kb_per_sample']:.0f} kB): "
                  f"{s_big['real_samples_per_s']:,.0f} vs {s_small['real_samples_per_s']:,.0f} samples/s at {small:,}: "
                  f"{s_big['real_samples_per_s'] / s_small['real_samples_per_s']:.2f}x (goal >= 0.8x)")
    mid = max((n for n in sizes if (n, "per_patch") in by and "dvc_status_s" in by[(n, "per_patch")]), default=None)
    if mid is not None and "dvc_status_s" in by.get((mid, "sharded"), {}):
        a, b = by[(mid, "per_patch")]["dvc_status_s"], by[(mid, "sharded")]["dvc_status_s"]
        print(f"  dvc status at {mid:,}: per-patch {a:.2f} s vs sharded {b:.2f} s: {a / b:.1f}x faster (goal >= 10x)")
        if noop is not None:
            print(f"  the same net of DVC's start-up ({noop:.2f} s, dvc status tracking nothing): per-patch "
                  f"{a - noop:.2f} s vs sharded {max(b - noop, 0.01):.2f} s: {(a - noop) / max(b - noop, 0.01):.0f}x")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-real":
        medians, split, batches = sys.argv[2:5]
        print(json.dumps(measure_real(Path(medians), Path(split), int(batches))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        layout, medians, split, batches = sys.argv[2:6]
        print(json.dumps(measure(layout, Path(medians), Path(split), int(batches))))
    else:
        main()
