"""Params of the whole pipeline at its smallest: what the end-to-end tests run DVC's stages with."""

import copy
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
#: Overrides of params.yaml: 4 patches of 122 px, a 4-channel one-level U-Net, batches of 4.
TINY = {"data": {"years": [2019], "synthetic": {"patches": 4, "patch_size": 122, "acquisitions": 12,
                                                 "parcels": 30}},
        "medians": {"workers": 1}, "split": {"workers": 1},
        "model": {"width": 4, "depth": 1, "precise_bn_samples": 8},
        "holdout": {"epochs": 2, "batch_size": 4, "physical_batch_size": 4},
        "train": {"batch_size": 4, "physical_batch_size": 4, "allow_degenerate_split": True}}


def merge(base: dict, extra: dict) -> dict:
    """``extra`` written into ``base`` key by key (nested sections merged, not replaced)."""
    for key, value in extra.items():
        base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
    return base


def tiny_params(**sections: dict) -> dict:
    """The project's params.yaml with :data:`TINY` and then ``sections`` merged in."""
    return merge(merge(yaml.safe_load((REPO / "params.yaml").read_text()), copy.deepcopy(TINY)), sections)
