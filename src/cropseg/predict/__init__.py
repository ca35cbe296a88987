"""The predict stage: georeferenced crop maps (Cloud-Optimised GeoTIFFs, mosaics, legend, QGIS style)."""
