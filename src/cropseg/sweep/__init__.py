"""Running a grid of DVC experiments elsewhere than `dvc queue`: one clone per experiment on a Dask cluster."""
