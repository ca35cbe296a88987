"""Training throughput: the model alone vs the full training loop, samples trained on per second.

    python bench/train_throughput.py                         # CPU, and CUDA (32, bf16, fp16) when present
    python bench/train_throughput.py --device cuda --patches 64 --batch-size 32 --width 64 --steps 50

*Model alone*: the real optimiser step (:func:`cropseg.train.steps.optimizer_step`: forward,
backward, gradient clipping, Adam) on one batch resident on the device: the most the loop can do.
*Full loop*: what the train stage does per step, from disk: a DataLoader over a real medians store
(:class:`~cropseg.nn.dataset.BlockSampler` blocks of :class:`~cropseg.nn.dataset.SubPatchDataset`,
workers, pinned memory, non-blocking copies) -> the :class:`~cropseg.selection.selector.Selector`
(uniform; rho_loss with block 2, which also scores twice the batch) -> the same optimiser step.
*Resident selection* is the selection and the step on resident blocks: full loop / resident
selection is what the loader costs (the target: >= 0.9), full loop / model alone what the loader
and the selection cost together.

The store is written with the medians stage's own writer
(:mod:`cropseg.medians.store_writer`) from random but structured arrays (parcels of S4A codes,
per-class spectra plus noise) in a temporary folder, so the bench needs neither the S4A files nor
netCDF4, pyproj, rasterio, dask, dvc, dvclive or wandb: torch, numpy, pandas, pyyaml, tqdm and
pydantic are enough (checked at the end of the imports).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cropseg.core.params import Run, Selection  # noqa: E402
from cropseg.medians.store_writer import code_counts, create_shards, plan_store, write_block, write_index  # noqa: E402
from cropseg.nn.dataset import Batch, BlockSampler, SubPatchDataset  # noqa: E402
from cropseg.nn.loss import class_weights  # noqa: E402
from cropseg.nn.models import build_model  # noqa: E402
from cropseg.nn.precision import FP32, Precision, loader_workers, resolve_precision  # noqa: E402
from cropseg.nn.prefetch import training_loader  # noqa: E402
from cropseg.selection.selector import IRREDUCIBLE_FILE, Selector  # noqa: E402
from cropseg.split.labels import load_label_set  # noqa: E402
from cropseg.train.steps import optimizer_step  # noqa: E402

NOT_NEEDED = ("netCDF4", "pyproj", "rasterio", "dask", "dvc", "dvclive", "wandb")
YEAR, SIZE, WINDOW, BANDS, MONTHS = 2019, 366, 61, ["B02", "B03", "B04", "B08"], [4, 9]
CODES = [0, 110, 120, 140, 150, 160, 170, 330, 435, 438, 510, 770, 910]  # the s4a11 crops, background, grassland


def write_store(root: Path, patches: int, seed: int = 0) -> list[str]:
    """A float32 medians store of ``patches`` 366 x 366 patches (36 sub-patches each, 12 months, 4 bands).

    Labels are rectangles of S4A codes; each code has its own spectrum per month, plus noise, so
    the model has something to learn and the selection something to rank.
    """
    rng = np.random.default_rng(seed)
    paths = [f"{YEAR}/31TCG/{YEAR}_31TCG_patch_{i // 30:02d}_{i % 30:02d}.nc" for i in range(patches)]
    plan = plan_store([(p, YEAR, "31TCG", SIZE) for p in paths], bands=len(BANDS), window=WINDOW,
                      periods_of_year={YEAR: 12}, dtype="float32")
    root.mkdir(parents=True)
    create_shards(root, plan)
    spectra = rng.uniform(500, 4000, size=(len(CODES), 12, len(BANDS))).astype(np.float32)
    sub = SIZE // WINDOW
    counts = []
    for slot in plan.slots:
        codes = np.zeros((SIZE, SIZE), dtype=np.uint32)
        for _ in range(40):  # parcels
            y, x = rng.integers(0, SIZE - 20, 2)
            h, w = rng.integers(10, 60, 2)
            codes[y:y + h, x:x + w] = CODES[rng.integers(0, len(CODES))]
        kind = np.searchsorted(CODES, codes)  # (SIZE, SIZE) index into CODES
        image = spectra[kind].transpose(2, 3, 0, 1)  # (12, bands, SIZE, SIZE)
        image = image + rng.normal(0, 300, image.shape).astype(np.float32)
        # cut into (sub_y, sub_x, periods, bands, w, w) and (sub_y, sub_x, w, w), as the medians stage does
        medians = image.reshape(12, len(BANDS), sub, WINDOW, sub, WINDOW).transpose(2, 4, 0, 1, 3, 5)
        labels = codes.reshape(sub, WINDOW, sub, WINDOW).transpose(0, 2, 1, 3)
        write_block(root, slot, np.ascontiguousarray(medians), np.ascontiguousarray(labels))
        counts.append(code_counts(labels))
    starts = [f"{YEAR}-{m:02d}-01" for m in range(1, 13)]
    write_index(root, plan, counts, {"bands": BANDS, "freq": "1MS", "window": WINDOW, "dtype": "float32",
                                     "period_date": "start of the right-closed period (bins[i], bins[i+1]]",
                                     "periods": {str(YEAR): starts}})
    return paths


def timed(step, steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step`` over ``steps`` calls after ``warmup`` untimed ones (GPU work included)."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / steps


def endless(loader, sampler: BlockSampler):
    """The loader's blocks epoch after epoch (the sampler reshuffled each time), as the loop reads them."""
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from loader


def bench(device: torch.device, precision: Precision, args, store: Path, paths: list[str], irreducible: Path,
          workers: int) -> list[tuple[str, float, float, float, float]]:
    """``(method, resident selection, full loop, full loop with worker processes, model alone)``
    samples trained on per second; the full loop reads through the train loop's own loader
    (:func:`cropseg.nn.prefetch.training_loader`: threads on CUDA), the other through a
    ``DataLoader`` with ``workers`` processes."""
    torch.manual_seed(0)
    label_set = load_label_set("s4a11", ROOT / "configs" / "labels")
    dataset = SubPatchDataset(store, paths, label_set, months=MONTHS, normalize=10000.0, skip_empty=True)
    weights = class_weights(dataset.class_pixel_counts(), 0.1, weighted=True).to(device)
    run = Run(batch_size=args.batch_size, physical_batch_size=args.batch_size, precision=precision.name)
    model = build_model("unet", bands=dataset.bands, months=dataset.months, n_classes=label_set.n_classes,
                        width=args.width, depth=3, norm="precise").to(device)
    if precision.autocasts:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = precision.grad_scaler(device)
    model.train()

    def step(batch: Batch) -> None:
        optimizer_step(model, optimizer, batch, weights, run, precision, device, 1, scaler=scaler)

    resident = dataset[np.arange(min(len(dataset), 2 * args.batch_size)) % len(dataset)].to(device)
    alone = args.batch_size / timed(lambda: step(resident.take(slice(0, args.batch_size))), args.steps,
                                    args.warmup, device)
    rows = []
    for method, block_size in (("uniform", 1), ("rho_loss", 2)):
        selection = Selection(method=method, block_size=block_size)
        selector = Selector(selection, weights=weights, physical_batch_size=args.batch_size, precision=precision,
                            device=device, seed=0, irreducible_path=irreducible, truth=None,
                            n_classes=label_set.n_classes)
        n_block = selector.block_samples(args.batch_size)
        block = dataset[np.arange(n_block) % len(dataset)].to(device)

        def select_and_step(block: Batch) -> None:
            for batch in selector.select(model, block, args.batch_size, step=0)[0]:
                step(batch)

        in_memory = args.batch_size / timed(lambda: select_and_step(block), args.steps, args.warmup, device)
        rates = []
        for loader_of in (lambda s: training_loader(dataset, s, workers=workers, device=device),
                          lambda s: DataLoader(dataset, sampler=s, batch_size=None, num_workers=workers,
                                               pin_memory=device.type == "cuda", persistent_workers=workers > 0)):
            sampler = BlockSampler(len(dataset), n_block, seed=0)
            blocks = endless(loader_of(sampler), sampler)
            rates.append(args.batch_size / timed(lambda: select_and_step(next(blocks).to(device, non_blocking=True)),
                                                 args.steps, args.warmup, device))
            blocks.close()  # stops the threads or worker processes
        rows.append((f"{method} (block {block_size})", in_memory, rates[0], rates[1], alone))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and CUDA when torch sees a GPU")
    parser.add_argument("--patches", type=int, default=8, help="patches in the store (36 sub-patches each)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--width", type=int, default=16, help="U-Net width (model.width)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimiser steps per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (kernels, workers starting)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: loader.workers "
                                                                   "null's rule, cropseg.nn.precision.loader_workers)")
    parser.add_argument("--precisions", nargs="+", default=None, choices=["32", "bf16", "fp16"],
                        help="CUDA precisions to run (default all three; the CPU runs 32)")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch threads on the CPU (train.cpu_threads; default: torch's, one per core)")
    parser.add_argument("--nondeterministic", action="store_true",
                        help="allow non-deterministic kernels (train.deterministic: false)")
    args = parser.parse_args()
    loaded = [name for name in NOT_NEEDED if name in sys.modules]
    if loaded:
        raise SystemExit(f"the bench imported {loaded}: it must run without them")
    torch.use_deterministic_algorithms(not args.nondeterministic, warn_only=True)
    if args.cpu_threads is not None:
        torch.set_num_threads(args.cpu_threads)

    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda", 0))
    with tempfile.TemporaryDirectory() as tmp:
        store, irreducible = Path(tmp) / "medians", Path(tmp) / "irreducible"
        started = time.perf_counter()
        paths = write_store(store, args.patches)
        irreducible.mkdir()
        rng = np.random.default_rng(0)
        np.save(irreducible / IRREDUCIBLE_FILE, rng.random(args.patches * 36).astype(np.float32))
        print(f"store: {args.patches} patches x 36 sub-patches, written in {time.perf_counter() - started:.1f} s; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads; U-Net width {args.width}, "
              f"batch {args.batch_size}, {args.steps} steps after {args.warmup} warm-up; samples trained on per s")
        print(f"  {'device':24s} {'prec':>4s} {'workers':>7s} {'method':18s} {'alone':>9s} {'resident':>9s} "
              f"{'full loop':>9s} {'full/alone':>10s} {'full/resident':>13s} {'processes':>9s}")
        for device in devices:
            precisions = [FP32] if device.type == "cpu" else \
                [resolve_precision(p, device) for p in (args.precisions or ["32", "bf16", "fp16"])]
            workers = loader_workers(args.workers, device)
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
            for precision in precisions:
                for method, resident, full, processes, alone in bench(device, precision, args, store, paths,
                                                                      irreducible, workers):
                    print(f"  {name[:24]:24s} {precision.name:>4s} {workers:7d} {method:18s} {alone:9.1f} "
                          f"{resident:9.1f} {full:9.1f} {full / alone:10.2f} {full / resident:13.2f} "
                          f"{processes:9.1f}", flush=True)


if __name__ == "__main__":
    main()
