"""GPU check (not a test; run by hand on a CUDA machine): precise BN and bf16 autocast on CUDA.

Needs only torch, numpy, pandas, yaml and tqdm (what a stock CUDA image has); no S4A data: inputs
are random tensors shaped like the default loader's (6 months x 4 bands x 61 x 61). Prints:
- whether a sub-patch predicted alone equals the same sub-patch inside a mixed batch, in eval mode
  after precise-BN recalibration, in float32 and under bf16 autocast (max |logit difference|, and
  the share of pixels whose argmax class differs);
- training throughput (samples/s, forward+backward+Adam) in float32 and bf16 at batch 16 and 64.

    PYTHONPATH=src python bench/gpu_check.py
"""

from __future__ import annotations

import time

import numpy as np
import torch

from cropseg.nn.dataset import Batch
from cropseg.nn.loss import parcel_nll
from cropseg.nn.models import build_model
from cropseg.nn.precise_bn import calibration_positions, recalibrate
from cropseg.nn.precision import BF16, FP32

MONTHS, BANDS, SIDE, CLASSES = 6, 4, 61, 12


class RandomSamples:
    """Duck-typed stand-in for SubPatchDataset: ``dataset[positions]`` -> Batch, seeded per position."""

    def __len__(self) -> int:
        return 512

    def __getitem__(self, positions) -> Batch:
        xs, ys = [], []
        for p in np.atleast_1d(positions):
            g = torch.Generator().manual_seed(int(p))
            xs.append(torch.rand(MONTHS, BANDS, SIDE, SIDE, generator=g) * (0.5 + (int(p) % 3)))
            ys.append(torch.randint(0, CLASSES, (SIDE, SIDE), generator=g))
        idx = torch.as_tensor(np.atleast_1d(positions), dtype=torch.int64)
        return Batch(idx, torch.stack(xs), torch.stack(ys))


def batch_independence(model, data, device, precision) -> tuple[float, float]:
    model.eval()
    mixed = data[np.arange(0, 64, 4)].to(device)
    with torch.no_grad(), precision.autocast(device):
        alone = model(mixed.x[:1]).float()
        together = model(mixed.x).float()[:1]
    diff = (alone - together).abs().max().item()
    flips = (alone.argmax(1) != together.argmax(1)).float().mean().item()
    return diff, flips


def throughput(model, data, device, precision, batch: int, steps: int = 20) -> float:
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    weights = torch.ones(CLASSES, device=device)
    b = data[np.arange(batch)].to(device)
    for i in range(steps + 5):
        if i == 5:
            torch.cuda.synchronize()
            start = time.perf_counter()
        with precision.autocast(device):
            out = model(b.x)
        total, count = parcel_nll(out.float(), b.y, weights)
        (total.sum() / count.sum().clamp(min=1)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (this check is for a GPU machine)")
    device = torch.device("cuda")
    print(torch.__version__, torch.cuda.get_device_name(0), "bf16:", torch.cuda.is_bf16_supported())
    torch.manual_seed(0)
    data = RandomSamples()
    for arch in ("unet", "convstar"):
        model = build_model(arch, bands=BANDS, months=MONTHS, n_classes=CLASSES, width=16, depth=3,
                            norm="precise").to(device)
        positions = calibration_positions(len(data), 128, seed=0)
        for precision in (FP32, BF16):
            n = recalibrate(model, data, positions, batch_size=16, device=device, precision=precision)
            diff, flips = batch_independence(model, data, device, precision)
            print(f"{arch} {precision.name}: precise BN over {n} batches; alone vs in batch: "
                  f"max |logit diff| {diff:.2e}, argmax flips {flips:.2e}")
        for precision in (FP32, BF16):
            for batch in (16, 64):
                rate = throughput(model, data, device, precision, batch)
                print(f"{arch} {precision.name} batch {batch}: {rate:,.0f} samples/s (train step)")


if __name__ == "__main__":
    main()
