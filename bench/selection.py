"""Cost of one training step per selection method, relative to uniform, measured side by side.

    python bench/selection.py [--width 16] [--batch 16] [--repeats 5] [--precision auto]

A step = select a batch from a block (scoring the block without gradients when the method needs
it) + one optimiser step on the batch, with the same code the train stage runs (``Selector``,
``parcel_nll``). Block sizes 2 and 8. ``rho_loss (seed)`` is the seed project's way: a second
(holdout) model forward over the block at every step instead of the stored irreducible losses.
FLOP bound for rho_loss at block 2: (2 forwards + 1 forward-backward of 3) / 3 = 5/3.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cropseg.nn.dataset import Batch  # noqa: E402
from cropseg.nn.loss import parcel_nll  # noqa: E402
from cropseg.nn.models import build_model  # noqa: E402
from cropseg.core.params import Selection  # noqa: E402
from cropseg.nn.precision import resolve_precision  # noqa: E402
from cropseg.selection.selector import Selector, per_sample_scores  # noqa: E402

N_CLASSES, MONTHS, BANDS, WINDOW = 12, 6, 4, 61


def random_block(n: int, generator: torch.Generator) -> Batch:
    x = torch.rand(n, MONTHS, BANDS, WINDOW, WINDOW, generator=generator) * 0.5
    y = torch.randint(0, N_CLASSES, (n, WINDOW, WINDOW), generator=generator)
    return Batch(torch.arange(n), x, y)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precision", default="auto", choices=["auto", "32", "bf16"])
    args = parser.parse_args()
    device = torch.device("cpu")
    precision = resolve_precision(args.precision, device)
    torch.manual_seed(0)
    model = build_model("unet", bands=BANDS, months=MONTHS, n_classes=N_CLASSES, width=args.width, depth=args.depth)
    holdout = build_model("unet", bands=BANDS, months=MONTHS, n_classes=N_CLASSES, width=args.width, depth=args.depth)
    if precision.autocasts:
        model, holdout = model.to(memory_format=torch.channels_last), holdout.to(memory_format=torch.channels_last)
    holdout.eval()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = torch.ones(N_CLASSES)
    weights[0] = 0
    generator = torch.Generator().manual_seed(0)

    def optimizer_step(batch: Batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        with precision.autocast(device):
            weighted, weight = parcel_nll(model(batch.x), batch.y, weights)
        (weighted.sum() / weight.sum()).backward()
        optimizer.step()

    with tempfile.TemporaryDirectory() as tmp:
        stored = np.random.default_rng(0).random(8 * args.batch).astype(np.float32)
        np.save(Path(tmp) / "losses.npy", stored)

        def step_fn(method: str, block_size: int):
            if method == "rho_loss (seed)":
                def seed_step(block: Batch) -> None:
                    scores = per_sample_scores(model, block, weights, {"loss"}, physical_batch_size=args.batch,
                                               precision=precision)["loss"]
                    scores = scores - per_sample_scores(holdout, block, weights, {"loss"},
                                                        physical_batch_size=args.batch, precision=precision)["loss"]
                    keep = torch.sort(torch.argsort(scores, descending=True)[: args.batch]).values
                    optimizer_step(block.take(keep))
                return seed_step
            selector = Selector(Selection(method=method, block_size=block_size), weights=weights,
                                physical_batch_size=args.batch, precision=precision, device=device, seed=0,
                                irreducible_path=Path(tmp), truth=None, n_classes=N_CLASSES)

            def step(block: Batch) -> None:
                for batch in selector.select(model, block, args.batch, step=0)[0]:
                    optimizer_step(batch)
            return step

        cases = [("uniform", 1)] + [(m, b) for b in (2, 8) for m in ("random", "loss", "margin", "rho_loss",
                                                                      "rho_loss (seed)")]
        blocks = {b: random_block(b * args.batch, generator) for b in (1, 2, 8)}
        functions = {case: step_fn(*case) for case in cases}
        for case in cases:  # warm-up: allocator, oneDNN kernels
            functions[case](blocks[case[1]])
        timings = {case: [] for case in cases}
        for _ in range(args.repeats):  # interleaved, so drift in machine load hits every case alike
            for case in cases:
                start = time.perf_counter()
                functions[case](blocks[case[1]])
                timings[case].append(time.perf_counter() - start)
    uniform = float(np.median(timings[("uniform", 1)]))
    print(f"U-Net width {args.width} depth {args.depth}, batch {args.batch}, {precision.name}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"  {'method':18s} {'block':>5s} {'s/step':>8s} {'x uniform':>10s}")
    for (method, block), values in timings.items():
        median = float(np.median(values))
        print(f"  {method:18s} {block:5d} {median:8.3f} {median / uniform:10.2f}")


if __name__ == "__main__":
    main()
