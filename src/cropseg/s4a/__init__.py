"""The Sen4AgriNet netCDF patch format: names, layout, validation, the patch index, and where a patch lies on Earth."""
