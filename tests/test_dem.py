"""fetch_dem: footprints, Copernicus tile names, the synthetic DEM, downloads from a loopback server."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"

import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402
from pathlib import Path  # noqa: E402

import netCDF4  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import rasterio  # noqa: E402
from rasterio.transform import from_origin  # noqa: E402
from rasterio.windows import from_bounds  # noqa: E402

from cropseg.fetch import dem as dem  # noqa: E402

from cropseg.fetch import terrain as terrain  # noqa: E402
from cropseg.s4a.geo import footprint_lonlat, tile_grid  # noqa: E402
from cropseg.core.params import CopernicusDem, Data, Dem, SyntheticData  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def netcdf(tmp_path_factory) -> Path:
    """Three tiny synthetic patches on three MGRS tiles (three 1x1 degree DEM tiles)."""
    from cropseg.fetch.stage import fetch_s4a

    out = tmp_path_factory.mktemp("s4a") / "netcdf"
    data = Data(years=[2019], tiles=["31TCG", "31TCJ", "31TDG"],
                synthetic=SyntheticData(patches=3, patch_size=61, acquisitions=3))
    fetch_s4a(data, out, workers=1)
    return out


@pytest.fixture(scope="module")
def footprints(netcdf) -> dict[str, tuple]:
    return dem.patch_footprints(netcdf, progress=False)


# ----------------------------------------------------------------------------- footprints, names


def test_patch_footprint_matches_the_patch_grid(netcdf, footprints):
    assert len(footprints) == 3
    for relpath, footprint in footprints.items():
        with netCDF4.Dataset(netcdf / relpath) as ds:
            x, y = ds["labels"]["x"][:], ds["labels"]["y"][:]
            tile = ds.getncattr("patch_tile")
        assert x.size == y.size == 61
        # pixel centres +- 5 m: the patch covers 610 m x 610 m of the tile's UTM zone
        expected = footprint_lonlat(tile_grid(tile).epsg, x.min() - 5, y.min() - 5, x.max() + 5, y.max() + 5)
        assert footprint == pytest.approx(expected, abs=1e-12)
        assert dem.patch_footprint(netcdf / relpath) == footprint
        grid = tile_grid(tile)
        tile_box = footprint_lonlat(grid.epsg, grid.x0, grid.y0 - 109800, grid.x0 + 109800, grid.y0)
        lon_min, lat_min, lon_max, lat_max = footprint
        assert tile_box[0] < lon_min < lon_max < tile_box[2] and tile_box[1] < lat_min < lat_max < tile_box[3]
        # 610 m is ~0.0055 degrees of latitude, ~0.0074 of longitude at 42 N
        assert 0.0054 < lat_max - lat_min < 0.0058 and 0.0072 < lon_max - lon_min < 0.0086


def test_copernicus_tile_names_exact():
    name = dem.copernicus_tile_name
    assert name(41, 1) == "Copernicus_DSM_COG_10_N41_00_E001_00_DEM"
    assert name(-1, -1) == "Copernicus_DSM_COG_10_S01_00_W001_00_DEM"
    assert name(0, -73) == "Copernicus_DSM_COG_10_N00_00_W073_00_DEM"
    assert name(-34, 151) == "Copernicus_DSM_COG_10_S34_00_E151_00_DEM"
    # inside one tile
    assert dem.copernicus_tiles([(1.2, 41.5, 1.3, 41.6)]) == ["Copernicus_DSM_COG_10_N41_00_E001_00_DEM"]
    # crossing a parallel and a meridian: four tiles
    assert dem.copernicus_tiles([(0.95, 41.98, 1.05, 42.02)]) == [
        "Copernicus_DSM_COG_10_N41_00_E000_00_DEM", "Copernicus_DSM_COG_10_N41_00_E001_00_DEM",
        "Copernicus_DSM_COG_10_N42_00_E000_00_DEM", "Copernicus_DSM_COG_10_N42_00_E001_00_DEM"]
    # crossing the equator and the prime meridian: S01/N00 x W001/E000
    assert dem.copernicus_tiles([(-0.01, -0.01, 0.01, 0.01)]) == [
        "Copernicus_DSM_COG_10_N00_00_E000_00_DEM", "Copernicus_DSM_COG_10_N00_00_W001_00_DEM",
        "Copernicus_DSM_COG_10_S01_00_E000_00_DEM", "Copernicus_DSM_COG_10_S01_00_W001_00_DEM"]
    # southern and western hemispheres (Buenos Aires area), across 58 W
    assert dem.copernicus_tiles([(-58.1, -34.7, -57.9, -34.5)]) == [
        "Copernicus_DSM_COG_10_S35_00_W058_00_DEM", "Copernicus_DSM_COG_10_S35_00_W059_00_DEM"]
    # an edge that only touches a degree line does not pull in the neighbour; duplicates merge
    assert dem.copernicus_tiles([(1.5, 41.0, 2.0, 41.5), (1.6, 41.1, 1.7, 41.2)]) == [
        "Copernicus_DSM_COG_10_N41_00_E001_00_DEM"]
    # across the antimeridian
    assert dem.copernicus_tiles([(179.9, 10.2, -179.9, 10.3)]) == [
        "Copernicus_DSM_COG_10_N10_00_E179_00_DEM", "Copernicus_DSM_COG_10_N10_00_W180_00_DEM"]


# ----------------------------------------------------------------------------- synthetic


def test_synthetic_dem_covers_footprints_deterministically(netcdf, footprints, tmp_path):
    first = dem.fetch_dem(netcdf, tmp_path / "a", Dem(), progress=False)
    dem.fetch_dem(netcdf, tmp_path / "b", Dem(), progress=False)
    assert first.patches == 3 and [t.status for t in first.tiles] == ["synthetic"]
    assert first.line().startswith("fetch_dem: synthetic, 1 tile, 3 patches, ")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["synthetic.tif", "tiles.csv"]
    assert (tmp_path / "a/tiles.csv").read_text() == "name,status,path\nsynthetic,synthetic,synthetic.tif\n"
    tif_a, tif_b = (tmp_path / "a/synthetic.tif").read_bytes(), (tmp_path / "b/synthetic.tif").read_bytes()
    assert tif_a == tif_b  # byte-identical: no timestamp, seeded terrain

    with rasterio.open(tmp_path / "a/synthetic.tif") as src:
        assert src.crs.to_epsg() == 4326 and src.dtypes == ("float32",) and src.nodata == -9999.0
        assert src.res == pytest.approx((1 / 3600, 1 / 3600))
        assert src.profile["compress"] == "lzw" and src.profile["tiled"]
        for lon_min, lat_min, lon_max, lat_max in footprints.values():
            assert src.bounds.left <= lon_min - 0.009 and src.bounds.right >= lon_max + 0.009
            assert src.bounds.bottom <= lat_min - 0.009 and src.bounds.top >= lat_max + 0.009
            window = from_bounds(lon_min, lat_min, lon_max, lat_max, src.transform).round_offsets().round_lengths()
            values = src.read(1, window=window)
            assert values.shape[0] >= 20 and values.shape[1] >= 27  # ~0.0055 x 0.0075 degrees at 1"
            assert (values != -9999.0).all()
            assert 0.0 <= values.min() and values.max() <= 2000.0
            assert values.std() > 0.01  # not flat
    # blocks far from every patch are sparse: the file stays small although the bbox spans ~2.3 degrees
    assert len(tif_a) < 2_000_000


def test_synthetic_dem_is_a_function_of_lonlat_and_seed(footprints, tmp_path):
    """Overlapping areas agree bit for bit whatever the patch set; another seed gives other terrain."""
    one = [next(iter(footprints.values()))]
    dem.write_synthetic_dem(list(footprints.values()), tmp_path / "all.tif", seed=0, progress=False)
    dem.write_synthetic_dem(one, tmp_path / "one.tif", seed=0, progress=False)
    dem.write_synthetic_dem(one, tmp_path / "seed1.tif", seed=1, progress=False)
    lon_min, lat_min, lon_max, lat_max = one[0]
    values = {}
    for name in ("all", "one", "seed1"):
        with rasterio.open(tmp_path / f"{name}.tif") as src:
            window = from_bounds(lon_min, lat_min, lon_max, lat_max, src.transform).round_offsets().round_lengths()
            values[name] = src.read(1, window=window)
    assert values["all"].shape == values["one"].shape
    np.testing.assert_array_equal(values["all"], values["one"])
    assert np.abs(values["seed1"] - values["one"]).mean() > 1.0

    # the same pixels from the pure function, addressed by global indices
    col0, row_top = 3600 * 10, 3600 * 42
    block = terrain.synthetic_elevation(0, col0, row_top, 300, 200)
    part = terrain.synthetic_elevation(0, col0 + 100, row_top - 50, 50, 70)
    np.testing.assert_array_equal(block[50:120, 100:150], part)
    # smooth: neighbouring 30 m pixels differ by far less than the relief
    assert np.abs(np.diff(block, axis=1)).max() < 30.0 and block.max() - block.min() > 1.0


def test_dem_source_none_writes_only_the_manifest(netcdf, tmp_path):
    summary = dem.fetch_dem(netcdf, tmp_path / "dem", Dem(source="none"), progress=False)
    assert summary.tiles == [] and summary.patches == 3
    assert [p.name for p in (tmp_path / "dem").iterdir()] == ["tiles.csv"]
    assert (tmp_path / "dem/tiles.csv").read_text() == "name,status,path\n"


def test_missing_index_is_a_clear_error(tmp_path):
    with pytest.raises(dem.DemError, match="index.csv.*fetch_s4a"):
        dem.fetch_dem(tmp_path, tmp_path / "dem", Dem(), progress=False)


# ----------------------------------------------------------------------------- copernicus


def _tile_bytes(path: Path, lat: int, lon: int) -> bytes:
    """A small real GeoTIFF covering the 1x1 degree cell with lower-left corner (lat, lon)."""
    values = (np.arange(120 * 120, dtype=np.float32).reshape(120, 120) % 997) + 100
    with rasterio.open(path, "w", driver="GTiff", width=120, height=120, count=1, dtype="float32",
                       crs="EPSG:4326", transform=from_origin(lon, lat + 1, 1 / 120, 1 / 120),
                       nodata=-9999, compress="deflate") as dst:
        dst.write(values, 1)
    return path.read_bytes()


class _TileServer:
    """A loopback HTTP server: serves ``files`` with Range support, 404 for the rest, and cuts the
    body of each name in ``cut_once`` in half (announcing the full length) on its first request."""

    def __init__(self, files: dict[str, bytes], cut_once: set[str] = frozenset()):
        self.files, self.cut_once, self.requests = files, set(cut_once), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_GET(self):  # noqa: N802
                name = self.path.rsplit("/", 1)[-1]
                range_header = self.headers.get("Range")
                server.requests.append((self.path, range_header))
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = int(range_header.split("=")[1].split("-")[0]) if range_header else 0
                if start:
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if name in server.cut_once:
                    server.cut_once.discard(name)
                    self.wfile.write(body[start:len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/dem"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")


def _lat_lon(name: str) -> tuple[int, int]:
    parts = name.split("_")  # Copernicus DSM COG 10 N41 00 E001 00 DEM
    lat = int(parts[4][1:]) * (1 if parts[4][0] == "N" else -1)
    lon = int(parts[6][1:]) * (1 if parts[6][0] == "E" else -1)
    return lat, lon


def test_copernicus_download_resume_missing_and_cache(netcdf, footprints, tmp_path, no_proxy):
    names = dem.copernicus_tiles(footprints.values())
    assert len(names) == 3
    plain, cut, sea = names
    files = {f"{n}.tif": _tile_bytes(tmp_path / f"src_{n}.tif", *_lat_lon(n)) for n in (plain, cut)}
    cache = tmp_path / "cache"
    with _TileServer(files, cut_once={f"{cut}.tif"}) as server:
        cfg = Dem(source="copernicus", copernicus=CopernicusDem(url=server.url, retries=3, timeout_s=5,
                                                                cache_dir=str(cache)))
        summary = dem.fetch_dem(netcdf, tmp_path / "dem", cfg, progress=False, backoff_s=0.01)
        first_requests = list(server.requests)
        # a second run finds both tiles complete in the cache: no request for them, only the sea tile
        again = dem.fetch_dem(netcdf, tmp_path / "dem2", cfg, progress=False, backoff_s=0.01)
        second_requests = server.requests[len(first_requests):]

    assert [(t.name, t.status, t.path) for t in summary.tiles] == [
        (plain, "downloaded", f"{plain}.tif"), (cut, "downloaded", f"{cut}.tif"), (sea, "missing", "")]
    assert summary.cached == 0 and again.cached == 2
    assert "(2 downloaded, 0 cached, 1 missing)" in summary.line()
    # the cut tile was asked for twice, the second time resuming where the first body stopped
    cut_requests = [r for r in first_requests if r[0] == f"/dem/{cut}/{cut}.tif"]
    half = len(files[f"{cut}.tif"]) // 2
    assert cut_requests == [(f"/dem/{cut}/{cut}.tif", None), (f"/dem/{cut}/{cut}.tif", f"bytes={half}-")]
    assert [r[0] for r in first_requests].count(f"/dem/{sea}/{sea}.tif") == 1  # 404 is not retried
    assert second_requests == [(f"/dem/{sea}/{sea}.tif", None)]

    out = tmp_path / "dem"
    for name in (plain, cut):
        assert (out / f"{name}.tif").read_bytes() == files[f"{name}.tif"]
        assert (cache / f"{name}.tif").read_bytes() == files[f"{name}.tif"]
        assert (out / f"{name}.tif").stat().st_ino == (cache / f"{name}.tif").stat().st_ino  # hard link
    assert not list(cache.glob("*.part"))
    assert (out / "tiles.csv").read_text() == (
        f"name,status,path\n{plain},downloaded,{plain}.tif\n{cut},downloaded,{cut}.tif\n{sea},missing,\n")
    assert (tmp_path / "dem2/tiles.csv").read_text() == (out / "tiles.csv").read_text()
    with rasterio.open(out / f"{cut}.tif") as src:
        assert src.read(1)[0, :3].tolist() == [100.0, 101.0, 102.0]


def test_copernicus_corrupt_tile_is_deleted_and_named(netcdf, footprints, tmp_path, no_proxy):
    names = dem.copernicus_tiles(footprints.values())
    files = {f"{n}.tif": b"<html>not a tiff</html>" * 10 for n in names}
    cache = tmp_path / "cache"
    with _TileServer(files) as server:
        cfg = Dem(source="copernicus", copernicus=CopernicusDem(url=server.url, retries=1, timeout_s=5,
                                                                cache_dir=str(cache)))
        with pytest.raises(dem.DemError, match=f"DEM tile {names[0]}: .*not a readable GeoTIFF"):
            dem.fetch_dem(netcdf, tmp_path / "dem", cfg, progress=False, backoff_s=0.01)
    assert not (cache / f"{names[0]}.tif").exists()


def test_copernicus_unreachable_server_fails_after_retries(tmp_path, no_proxy):
    with _TileServer({}) as server:
        url = server.url  # the port is closed once the server stops
    cfg = CopernicusDem(url=url, retries=2, timeout_s=2, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(dem.DemError, match=r"N41_00_E001_00_DEM: .*failed after 3 attempt"):
        dem.fetch_copernicus([(1.2, 41.2, 1.3, 41.3)], tmp_path, cfg, progress=False, backoff_s=0.01)


def test_retry_policy_waits_double_capped_and_only_between_attempts(monkeypatch):
    from cropseg.core import download as download

    slept = []
    monkeypatch.setattr(download.time, "sleep", slept.append)
    policy = download.RetryPolicy(retries=4, backoff_s=1.5, cap_s=5.0)
    seen = []
    for attempt in policy.attempts():
        seen.append((attempt, policy.is_last(attempt), list(slept)))
    assert [(a, last) for a, last, _ in seen] == [(0, False), (1, False), (2, False), (3, False), (4, True)]
    assert seen[0][2] == [] and slept == [1.5, 3.0, 5.0, 5.0]  # no wait before the first or after the last
    assert [policy.delay(r) for r in range(4)] == slept
    slept.clear()
    for _attempt in policy.attempts():
        break  # a caller that succeeds at once never waits
    assert slept == []


# ----------------------------------------------------------------------------- stage script


def test_stage_script(netcdf, tmp_path):
    script = REPO / "stages" / "fetch_dem.py"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "--netcdf" in shown.stdout and "data/dem" in shown.stdout
    params = tmp_path / "params.yaml"
    params.write_text("dem:\n  source: synthetic\n  seed: 3\n")
    run = subprocess.run([sys.executable, script, "--netcdf", netcdf, "--out", tmp_path / "dem",
                          "--params", params], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("fetch_dem: synthetic, 1 tile, 3 patches, ")
    assert sorted(p.name for p in (tmp_path / "dem").iterdir()) == ["synthetic.tif", "tiles.csv"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dem")]  # no temporary left
    params.write_text("dem:\n  source: srtm\n")
    bad = subprocess.run([sys.executable, script, "--netcdf", netcdf, "--out", tmp_path / "dem2",
                          "--params", params], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert bad.returncode == 1 and "dem.source" in bad.stderr and not (tmp_path / "dem2").exists()
