"""Seams and parcel decisions: sub-patch tiles vs overlapping windows vs whole-patch inference.

    PYTHONPATH=src nice -n 10 python bench/seams.py            # the pipeline's model on val + test patches

For each way of running the model over a patch (:mod:`cropseg.nn.patch_inference`): the seam
measurement (:mod:`cropseg.predict.seams`: class disagreement of neighbour pixels across the 61 px
sub-patch grid vs elsewhere, all pairs and pairs inside one parcel), pixel accuracy / weighted F1 on
parcel pixels, parcel accuracy with the predicted class by mean probability vs by pixel majority
(:func:`cropseg.nn.parcels.parcel_table`), and seconds. Prints a table (docs/decisions.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from cropseg.nn.checkpoint import load_model
from cropseg.nn.dataset import SubPatchDataset, read_split_list
from cropseg.nn.metrics import scores_from_confusion
from cropseg.nn.parcels import parcel_scores, parcel_table
from cropseg.nn.patch_inference import iter_patches
from cropseg.nn.precision import FP32, fix_cpu_threads
from cropseg.predict.seams import SeamAccumulator
from cropseg.s4a.parcels import read_parcels
from cropseg.split.labels import LabelSet


def run(model_path: Path, medians: Path, netcdf: Path, patches: list[str], stride: int | None) -> dict:
    device = torch.device("cpu")
    model, content = load_model(model_path, device)
    label_set = LabelSet.from_dict(content["labels"], str(model_path))
    dataset = SubPatchDataset(medians, patches, label_set, months=content["loader"]["months"],
                              normalize=content["loader"]["normalize"], skip_empty=False)
    n = label_set.n_classes
    every, in_parcel = SeamAccumulator(dataset.window), SeamAccumulator(dataset.window)
    matrix = np.zeros((n, n), np.int64)
    tables = {"mean": [], "majority": []}
    started = time.perf_counter()
    for maps in iter_patches(model, dataset, device, FP32, stride=stride):
        probs = maps.log_probs.exp().numpy()
        classes = probs.argmax(0)
        labels = maps.labels.numpy()
        parcels = read_parcels(netcdf / patches[maps.position], labels.shape)
        every.add(classes)
        in_parcel.add(classes, parcels)
        keep = labels > 0
        np.add.at(matrix, (labels[keep], classes[keep]), 1)
        for method in tables:
            tables[method].append(parcel_table(parcels, labels, probs, method=method))
    seconds = time.perf_counter() - started
    pixel = scores_from_confusion(matrix)
    return {"seams": every.score(), "seams_in_parcel": in_parcel.score(), "accuracy": pixel["accuracy"],
            "weighted_f1": pixel["weighted_f1"], "seconds": seconds,
            **{f"parcel_{m}": parcel_scores(t, n) for m, t in tables.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/model.pt"))
    parser.add_argument("--medians", type=Path, default=Path("data/medians"))
    parser.add_argument("--netcdf", type=Path, default=Path("data/netcdf"))
    parser.add_argument("--splits", nargs="+", default=["data/split/val.txt", "data/split/test.txt"])
    args = parser.parse_args()
    fix_cpu_threads(2, torch.device("cpu"))
    patches = [p for split in args.splits for p in read_split_list(split)]
    print(f"{len(patches)} patches ({', '.join(args.splits)})")
    print("| inference | edge disagreement | inside | edge − inside [95 % CI] | same, pairs inside one parcel "
          "| pixel acc | pixel wF1 | parcel acc (mean prob) | parcel acc (majority) | s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, stride in (("sub-patch tiles (before)", 61), ("overlapping windows, stride 30", 30),
                         ("overlapping windows, stride 20", 20), ("whole patch (after)", None)):
        r = run(args.model, args.medians, args.netcdf, patches, stride)
        s, p = r["seams"], r["seams_in_parcel"]
        print(f"| {name} | {s.edge_rate:.4f} | {s.inside_rate:.4f} | {s.difference:+.4f} [{s.low:+.4f}, {s.high:+.4f}] "
              f"| {p.edge_rate:.4f} vs {p.inside_rate:.4f}: {p.difference:+.4f} [{p.low:+.4f}, {p.high:+.4f}] "
              f"| {r['accuracy']:.4f} | {r['weighted_f1']:.4f} | {r['parcel_mean']['accuracy']:.4f} "
              f"| {r['parcel_majority']['accuracy']:.4f} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
