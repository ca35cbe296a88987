"""Shared fixtures. Tests never touch the network: the hub is offline, W&B disabled."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from cropseg.core.params import Data, SyntheticData  # noqa: E402


def tiny_data(**synthetic) -> Data:
    """Data params for tiny synthetic patches (61 px, few dates): fast enough for any test."""
    knobs = {"patches": 4, "patch_size": 61, "acquisitions": 6, "empty_months": 2, "parcels": 60}
    knobs.update(synthetic)
    return Data(synthetic=SyntheticData(**knobs))


@pytest.fixture
def tiny_netcdf(tmp_path: Path) -> Path:
    """A fetched ``data/netcdf`` folder of 4 tiny synthetic patches."""
    from cropseg.fetch.stage import fetch_s4a

    out = tmp_path / "netcdf"
    fetch_s4a(tiny_data(), out, workers=1)
    return out
