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


def copy_without_groups(src: Path, dst: Path, drop: tuple[str, ...] = ("labels", "parcels")) -> Path:
    """A copy of an S4A file without some groups (a season not declared yet): every other group,
    variable and attribute copied with netCDF4, fill values and raw values kept. Returns ``dst``."""
    import netCDF4

    with netCDF4.Dataset(src) as old, netCDF4.Dataset(dst, "w", format="NETCDF4") as new:
        new.setncatts({k: old.getncattr(k) for k in old.ncattrs()})
        for name, group in old.groups.items():
            if name in drop:
                continue
            target = new.createGroup(name)
            target.setncatts({k: group.getncattr(k) for k in group.ncattrs()})
            for dim, size in group.dimensions.items():
                target.createDimension(dim, len(size))
            for vname, var in group.variables.items():
                var.set_auto_maskandscale(False)
                attrs = {k: var.getncattr(k) for k in var.ncattrs()}
                fill = attrs.pop("_FillValue", None)
                out = target.createVariable(vname, var.dtype, var.dimensions, fill_value=fill)
                out.set_auto_maskandscale(False)
                out.setncatts(attrs)
                out[...] = var[...]
    return dst
