"""Benchmark of the medians stage: xarray recipe vs the stage's fast path vs read+decompress alone.

On the same generated S4A files (366 x 366, ~65 acquisitions, 4 bands), in one run and
interleaved patch by patch, it times per patch:

* ``read``: netCDF4 reading + decompressing the band variables and the labels, nothing else
  (the lower bound for any implementation that reads these files);
* ``stage``: what the stage does per patch: :func:`cropseg.medians.recipe.read_header` (the plan pass)
  and :func:`cropseg.medians.stage.process_patch`, i.e. read, medians, interpolation, cut, both blocks
  written into their shard and the code counts of the index (``compute`` is the same without
  the header pass, the write and the counts);
* ``xarray``: the authors' recipe (``tests/medians_oracle.py``), on fewer patches (it is slow),
  also checked to give the same numbers as the stage;

then the stage end to end (:func:`cropseg.medians.stage.run_medians`) with 1 and 2 process workers.
Prints seconds per patch (median over repeats) and the ratios. Not a test.

    .venv/bin/python bench/medians.py [--patches 6] [--oracle-patches 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from cropseg.core.executor import make_executor  # noqa: E402
from cropseg.medians.recipe import compute_patch, read_header  # noqa: E402
from cropseg.medians.stage import plan_medians, process_patch, run_medians  # noqa: E402
from cropseg.medians.store_writer import DEFAULT_SHARD_BYTES, create_shards  # noqa: E402
from cropseg.core.params import Medians, SyntheticData  # noqa: E402
from cropseg.s4a.netcdf import PatchInfo, read_index, write_index  # noqa: E402
from cropseg.fetch.synthetic import generate_patch, plan_patches  # noqa: E402
from cropseg.fetch.synthetic_files import write_patch_netcdf  # noqa: E402
from medians_oracle import xarray_medians  # noqa: E402


def make_data(root: Path, patches: int, acquisitions: int) -> list[str]:
    cfg = SyntheticData(patches=patches, patch_size=366, acquisitions=acquisitions, empty_months=2)
    infos = []
    for plan in plan_patches(cfg, [2020], ["31TCG", "31TCJ"]):
        path = root / plan.name.relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        write_patch_netcdf(generate_patch(cfg, plan), path)
        infos.append(PatchInfo(plan.name.relpath, plan.name.year, plan.name.tile, plan.name.x, plan.name.y,
                               "FR", len(plan.dates), 366))
    write_index(infos, root / "index.csv")
    return sorted(i.path for i in infos)


def read_only(path: Path, bands: list[str]) -> int:
    """Read and decompress what the stage reads (bands, their times, labels), nothing else."""
    total = 0
    with netCDF4.Dataset(path, "r") as dataset:
        for band in bands:
            group = dataset[band]
            total += group["time"][:].size
            variable = group[band]
            variable.set_auto_maskandscale(False)
            total += variable[:].size
        labels = dataset["labels"]["labels"]
        labels.set_auto_maskandscale(False)
        total += labels[:].size
    return total


def busy(_: object) -> int:
    """Pure-CPU control task: how well this machine scales at all, whatever the stage does."""
    return sum(i * i for i in range(2_000_000))


def timed(function, *args) -> float:
    start = time.perf_counter()
    function(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patches", type=int, default=6)
    parser.add_argument("--oracle-patches", type=int, default=2, help="patches timed with the slow xarray recipe")
    parser.add_argument("--acquisitions", type=int, default=65)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", default=None, help="where to generate the files (default: a temp dir)")
    args = parser.parse_args()

    params = Medians()  # 4 bands, 1MS, window 61, float32
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-medians-"))
    try:
        netcdf = work / "netcdf"
        t = time.perf_counter()
        if (netcdf / "index.csv").is_file():  # a --workdir from an earlier run: reuse its files
            relpaths = sorted(info.path for info in read_index(netcdf / "index.csv"))
        else:
            relpaths = make_data(netcdf, args.patches, args.acquisitions)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
        print(f"generated {len(relpaths)} patches (366 px, {args.acquisitions} dates, 13 bands) "
              f"in {time.perf_counter() - t:.1f} s; bands timed: {params.bands}")
        scratch = work / "scratch"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir()
        with make_executor("processes", 1) as executor:  # 1 worker: in this process
            plan = plan_medians(netcdf, relpaths, params, executor, DEFAULT_SHARD_BYTES, progress=False)
        create_shards(scratch, plan)
        slot_of = {slot.path: slot for slot in plan.slots}

        def stage(relpath: str) -> None:
            read_header(netcdf / relpath, params.window)
            process_patch(slot_of[relpath], str(netcdf), str(scratch), params)

        read_t, compute_t, stage_t, xarray_t = [], [], [], []
        for relpath in relpaths:  # warm the page cache and the imports
            read_only(netcdf / relpath, params.bands)
        stage(relpaths[0])
        for _ in range(args.repeats):
            for relpath in relpaths:
                path = netcdf / relpath
                read_t.append(timed(read_only, path, params.bands))
                compute_t.append(timed(compute_patch, path, params))
                stage_t.append(timed(stage, relpath))
        worst = 0.0
        for relpath in relpaths[: args.oracle_patches]:
            path = netcdf / relpath
            start = time.perf_counter()
            expected, _ = xarray_medians(path, params.bands, params.freq, params.window)
            xarray_t.append(time.perf_counter() - start)
            got = compute_patch(path, params).medians
            worst = max(worst, float(np.max(np.abs(got.astype(np.float64) - expected) / np.maximum(1, np.abs(expected)))))
            assert np.allclose(got, expected, rtol=2 ** -23, atol=0), relpath

        read_s, compute_s, stage_s = (statistics.median(x) for x in (read_t, compute_t, stage_t))
        xarray_s = statistics.median(xarray_t) if xarray_t else float("nan")
        print()
        print("| per patch (4 bands, 366 px) | s/patch | vs read | xarray / this |")
        print("|---|---:|---:|---:|")
        print(f"| read + decompress alone | {read_s:.3f} | 1.00x | {xarray_s / read_s:.0f}x |")
        print(f"| stage compute (no write) | {compute_s:.3f} | {compute_s / read_s:.2f}x | {xarray_s / compute_s:.0f}x |")
        print(f"| stage (header + compute + write into shard + counts) | {stage_s:.3f} | {stage_s / read_s:.2f}x | {xarray_s / stage_s:.0f}x |")
        print(f"| xarray recipe ({len(xarray_t)} patches) | {xarray_s:.2f} | {xarray_s / read_s:.0f}x | 1x |")
        print(f"max relative difference stage vs xarray: {worst:.1e} (float32 rounding is 6e-08)")

        print()
        print("| run_medians | s | patches/s | speed-up |")
        print("|---|---:|---:|---:|")
        base = None
        for workers in (1, 2):
            best = None
            for _ in range(2):
                out = work / f"out{workers}"
                summary = run_medians(netcdf, out, params.model_copy(update={"workers": workers}), progress=False)
                best = summary.seconds if best is None else min(best, summary.seconds)
                shutil.rmtree(out)
            base = base or best
            print(f"| processes, {workers} worker(s), {len(relpaths)} patches | {best:.2f} | "
                  f"{len(relpaths) / best:.2f} | {base / best:.2f}x |")
        print()
        print("| warm pool, each patch x3 (no start-up) | s | tasks/s | speed-up |")
        print("|---|---:|---:|---:|")
        tasks = relpaths * 3
        stage_task = functools.partial(process_patch, netcdf_root=str(netcdf), out_root=str(scratch), params=params)
        for label, task in (("stage", stage_task), ("control: pure-CPU loop", busy)):
            base = None
            for workers in (1, 2):
                items = [slot_of[r] for r in tasks] if task is stage_task else tasks
                with make_executor("processes", workers) as executor:
                    list(executor.imap_unordered(task, items[:workers]))  # start and warm every worker
                    start = time.perf_counter()
                    list(executor.imap_unordered(task, items))
                    seconds = time.perf_counter() - start
                base = base or seconds
                print(f"| {label}, {workers} worker(s), {len(tasks)} tasks | {seconds:.2f} | "
                      f"{len(tasks) / seconds:.2f} | {base / seconds:.2f}x |")
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
