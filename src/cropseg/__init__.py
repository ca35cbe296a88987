"""cropseg: crop-type segmentation of Sen4AgriNet (S4A) Sentinel-2 time series, with data selection."""

__version__ = "0.1.0"
