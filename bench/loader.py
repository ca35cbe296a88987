"""Loader throughput: sub-patches per second per core, ours vs a per-patch .npz loader, in one run.

    python bench/loader.py                      # generates a small synthetic store in a temp dir
    python bench/loader.py --medians data/medians --split data/split/train.txt

The baseline is the seed project's way: one uncompressed ``.npz`` per patch holding the whole
(periods, bands, size, size) medians and the label map, opened for every sample, the sub-patch
cut out, and labels mapped with a Python loop over the classes. Ours gathers whole batches from
memory-mapped per-patch arrays (only the months needed) and maps labels with one table lookup.
Both produce identical tensors (checked). Single-threaded, so the figures are per core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cropseg.nn.dataset import SubPatchDataset, read_split_list  # noqa: E402
from cropseg.split.labels import load_label_set  # noqa: E402
from cropseg.medians.store_reader import open_patch  # noqa: E402

MONTHS = [4, 9]


def make_store(tmp: Path, patches: int) -> tuple[Path, list[str]]:
    from cropseg.fetch.stage import fetch_s4a
    from cropseg.medians.stage import run_medians
    from cropseg.core.params import Data, Medians, SyntheticData

    data = Data(synthetic=SyntheticData(patches=patches, acquisitions=30))
    fetch_s4a(data, tmp / "netcdf", workers=2)
    run_medians(tmp / "netcdf", tmp / "medians", Medians(workers=2), progress=False)
    paths = sorted(p.relative_to(tmp / "netcdf").as_posix() for p in (tmp / "netcdf").rglob("*.nc"))
    return tmp / "medians", paths


class NpzLoader:
    """The baseline: per sample, open the patch's .npz, cut the sub-patch, loop over classes."""

    def __init__(self, dataset: SubPatchDataset, folder: Path):
        self.dataset, self.files = dataset, []
        for p, record in enumerate(dataset.records):
            images, labels = open_patch(dataset.root, record)
            sy, sx, periods, bands, w, _ = images.shape
            whole = np.asarray(images).transpose(2, 3, 0, 4, 1, 5).reshape(periods, bands, sy * w, sx * w)
            path = folder / f"{p}.npz"
            np.savez(path, image=whole, labels=np.asarray(labels).transpose(0, 2, 1, 3).reshape(sy * w, sx * w))
            self.files.append(path)
        self.mapping = [(code, cls) for cls, codes in enumerate(dataset.label_set.codes) for code in codes]

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.dataset
        patch, within = divmod(index, d.per_patch)
        sub_y, sub_x = divmod(within, d.sub_x)
        w = d.window
        with np.load(self.files[patch]) as npz:
            image, labels = npz["image"], npz["labels"]
        window = np.s_[sub_y * w:(sub_y + 1) * w, sub_x * w:(sub_x + 1) * w]
        x = image[d.periods, :, window[0], window[1]].astype(np.float32) / d.normalize
        raw, y = labels[window], np.zeros((w, w), dtype=np.int64)
        for code, cls in self.mapping:
            y[raw == code] = cls
        return x, y


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--medians", type=Path)
    parser.add_argument("--split", type=Path, help="split list of the patches to read")
    parser.add_argument("--patches", type=int, default=4, help="generated patches when no store is given")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.medians:
            medians, paths = args.medians, read_split_list(args.split)
        else:
            medians, paths = make_store(tmp, args.patches)
        labels = load_label_set("s4a11", ROOT / "configs" / "labels")
        dataset = SubPatchDataset(medians, paths, labels, months=MONTHS, normalize=10000.0, skip_empty=False)
        baseline = NpzLoader(dataset, tmp)
        order = np.random.default_rng(0).permutation(len(dataset))
        batches = [order[i:i + args.batch] for i in range(0, len(order), args.batch)]

        first = dataset[batches[0]]
        for row, index in enumerate(first.index.tolist()):
            x, y = baseline.sample(index)
            np.testing.assert_allclose(first.x[row].numpy(), x, rtol=1e-6)
            np.testing.assert_array_equal(first.y[row].numpy(), y)

        def ours() -> None:
            for positions in batches:
                dataset[positions]

        def npz() -> None:
            for positions in batches:
                pairs = [baseline.sample(int(i)) for i in dataset.indices[positions]]
                torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))

        timings = {}
        for name, function in (("memmap batches (ours)", ours), ("per-patch npz (seed)", npz)):
            function()  # warm the page cache
            best = min(_timed(function) for _ in range(args.repeats))
            timings[name] = len(dataset) / best
        print(f"{len(dataset)} sub-patches, {dataset.months} months x {dataset.bands} bands x "
              f"{dataset.window}^2, batch {args.batch}, 1 thread")
        for name, rate in timings.items():
            print(f"  {name:24s} {rate:10.0f} samples/s per core")
        ours_rate, npz_rate = timings.values()
        print(f"  ratio ours / npz: {ours_rate / npz_rate:.1f}x")


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
