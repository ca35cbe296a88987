"""DVC stage predict: crop maps (Cloud-Optimised GeoTIFFs, VRT mosaics, legend, QGIS style) -> data/predictions/.

    python stages/predict.py                              # models/model.pt on data/split/test.txt
    python stages/predict.py --split data/split/val.txt   # another split list (paths under --netcdf)
    python stages/predict.py --patches /data/S4A/2020 --out /tmp/maps   # any S4A folder: validated,
                                                          # medians computed with params `medians`

Band 1 of every patch GeoTIFF is the predicted class (colour table, class names; 0 = no data),
band 2 the confidence (255 * max probability). Batch size, device and precision follow params
`train.physical_batch_size`, `train.device`, `train.precision` (as the evaluate stage).
"""

import argparse
import sys
import tempfile
from pathlib import Path


def _folder_patches(folder: Path, work: Path, params) -> tuple[Path, Path, list[str]]:
    """An S4A folder through the pipeline's own fetch (validated, indexed, linked) and medians stages."""
    from cropseg.fetch.stage import fetch_s4a
    from cropseg.medians.stage import run_medians
    from cropseg.core.params import Data, LocalData
    from cropseg.s4a.netcdf import find_patches, parse_patch_name

    names = [parse_patch_name(p.name) for p in find_patches(folder)]
    if not names:
        raise FileNotFoundError(f"{folder}: no S4A patch files (YYYY_TILE_patch_XX_YY.nc)")
    data = Data(source="local", local=LocalData(path=str(folder)), years=sorted({n.year for n in names}),
                tiles=sorted({n.tile for n in names}))
    fetch_s4a(data, work / "netcdf")
    run_medians(work / "netcdf", work / "medians", params.medians)
    listed = sorted(p.relative_to(work / "netcdf").as_posix() for p in find_patches(work / "netcdf"))
    return work / "netcdf", work / "medians", listed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--model", default="models/model.pt", help="model file (default: %(default)s)")
    parser.add_argument("--medians", default="data/medians", help="medians store (default: %(default)s)")
    parser.add_argument("--netcdf", default="data/netcdf", help="S4A root the split paths are under "
                                                                "(default: %(default)s)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", default="data/split/test.txt", help="split list (default: %(default)s)")
    source.add_argument("--patches", type=Path, help="an S4A folder (any layout) instead of a split list")
    parser.add_argument("--out", default="data/predictions", help="output folder (default: %(default)s)")
    parser.add_argument("--preview", default="metrics/predict/mosaic.png",
                        help="PNG of a tile-year mosaic beside its labels (default: %(default)s; '' for none)")
    parser.add_argument("--batch-size", type=int, help="sub-patches per forward pass (default: params "
                                                       "train.physical_batch_size, as the evaluate stage)")
    args = parser.parse_args()

    from cropseg.nn.dataset import read_split_list
    from cropseg.core.params import load_params
    from cropseg.predict.stage import predict_patches
    from cropseg.core.stage_cli import run_stage

    def body():
        params = load_params(args.params)
        with tempfile.TemporaryDirectory(prefix="predict-") as work:
            netcdf, medians = Path(args.netcdf), Path(args.medians)
            if args.patches is not None:
                netcdf, medians, patch_list = _folder_patches(args.patches, Path(work), params)
            else:
                patch_list = read_split_list(args.split)
            return predict_patches(model_path=Path(args.model), medians=medians, netcdf=netcdf,
                                   patch_list=patch_list, out=Path(args.out),
                                   preview=Path(args.preview) if args.preview else None,
                                   device=params.train.device, precision=params.train.precision,
                                   batch_size=args.batch_size or params.train.physical_batch_size,
                                   workers=params.loader.workers, label_set_name=params.labels)

    return run_stage("predict", body, errors=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
